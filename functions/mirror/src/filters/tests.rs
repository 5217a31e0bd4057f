use super::pattern::{GlobTok, Pattern};
use super::*;
use proptest::prelude::*;

fn eni() -> Eni {
    let mut tags = Tags::new();
    tags.insert("mirror".into(), "true".into());
    tags.insert("Name".into(), "web server".into());
    Eni {
        id: "eni-1".into(),
        subnet_id: "subnet-a".into(),
        vpc_id: "vpc-1".into(),
        interface_type: "interface".into(),
        description: "ELB net/mirror-nlb/50dc6c495c0c9188".into(),
        attachment_instance_id: Some("i-1".into()),
        tags,
        ..Eni::default()
    }
}

#[test]
fn shorthand_parses_into_typed_filters() {
    let f = parse_filters("Name=tag:mirror,Values=true Name=subnet-id,Values=subnet-a,subnet-b")
        .unwrap();
    assert_eq!(
        f,
        vec![
            Filter::new("tag:mirror", ["true"]),
            Filter::new("subnet-id", ["subnet-a", "subnet-b"]),
        ]
    );
}

#[test]
fn blank_input_is_an_empty_list() {
    assert_eq!(parse_filters("  \t ").unwrap(), vec![]);
}

#[test]
fn values_may_come_before_the_name_and_extra_spaces_are_ignored() {
    let f = parse_filters("  Values=a,b,Name=vpc-id   Name=tag-key,Values=x ").unwrap();
    assert_eq!(
        f,
        vec![
            Filter::new("vpc-id", ["a", "b"]),
            Filter::new("tag-key", ["x"])
        ]
    );
}

#[test]
fn quoted_values_keep_spaces_commas_and_equals() {
    let f = parse_filters(r#"Name=tag:Name,Values="web server",'a,b',"x=\"y\"""#).unwrap();
    assert_eq!(
        f,
        vec![Filter::new("tag:Name", ["web server", "a,b", "x=\"y\""])]
    );
}

#[test]
fn an_unterminated_quote_names_its_token() {
    let e = parse_filters(r#"Name=vpc-id,Values=a Name=tag:Name,Values="web server"#).unwrap_err();
    assert_eq!(
        e,
        FilterError::UnterminatedQuote {
            token: r#"Name=tag:Name,Values="web server"#.into()
        }
    );
    assert!(e.to_string().contains("Name=tag:Name"), "{e}");
}

#[test]
fn each_malformed_token_is_a_typed_error_naming_it() {
    let cases: Vec<(&str, FilterError)> = vec![
        (
            "Name=vpc-id",
            FilterError::MissingValues {
                token: "Name=vpc-id".into(),
            },
        ),
        (
            "Values=a,b",
            FilterError::MissingName {
                token: "Values=a,b".into(),
            },
        ),
        (
            "Name=vpc-id,Values=",
            FilterError::EmptyValue {
                token: "Name=vpc-id,Values=".into(),
            },
        ),
        (
            "Name=vpc-id,Values=a,,b",
            FilterError::EmptyValue {
                token: "Name=vpc-id,Values=a,,b".into(),
            },
        ),
        (
            "Name=,Values=a",
            FilterError::EmptyName {
                token: "Name=,Values=a".into(),
            },
        ),
        (
            "Name=vpc-id,Value=a",
            FilterError::UnknownKey {
                key: "Value".into(),
                token: "Name=vpc-id,Value=a".into(),
            },
        ),
        (
            "Name=a,Name=b,Values=c",
            FilterError::DuplicateKey {
                key: "Name".into(),
                token: "Name=a,Name=b,Values=c".into(),
            },
        ),
        (
            "tag:mirror",
            FilterError::ExpectedKey {
                token: "tag:mirror".into(),
            },
        ),
        (
            "Name=vpc-id,x,Values=a",
            FilterError::ExpectedKey {
                token: "Name=vpc-id,x,Values=a".into(),
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse_filters(input), Err(want), "input {input:?}");
    }
}

#[test]
fn the_json_form_is_accepted_and_checked() {
    let f = parse_filters(r#"[{"Name":"subnet-id","Values":["subnet-a","subnet-b"]}]"#).unwrap();
    assert_eq!(f, vec![Filter::new("subnet-id", ["subnet-a", "subnet-b"])]);
    assert!(matches!(
        parse_filters(r#"[{"Name":"subnet-id","Values":[]}]"#),
        Err(FilterError::MissingValues { .. })
    ));
    assert!(matches!(
        parse_filters(r#"[{"Name":"subnet-id"#),
        Err(FilterError::Json { .. })
    ));
}

#[test]
fn unknown_filter_names_are_rejected_per_resource() {
    let e = EniFilters::parse("Name=instance-type,Values=m5.large").unwrap_err();
    assert_eq!(
        e,
        FilterError::UnknownName {
            name: "instance-type".into(),
            resource: FilterResource::NetworkInterface
        }
    );
    assert!(InstanceFilters::parse("Name=instance-type,Values=m5.large").is_ok());
    assert!(matches!(
        InstanceFilters::parse("Name=description,Values=x"),
        Err(FilterError::UnknownName { .. })
    ));
    assert!(matches!(
        EniFilters::parse("Name=tag:,Values=x"),
        Err(FilterError::UnknownName { .. })
    ));
    for name in EniFilters::names() {
        assert!(
            EniFilters::new(vec![Filter::new(name, ["x"])]).is_ok(),
            "{name}"
        );
    }
    for name in InstanceFilters::names() {
        assert!(
            InstanceFilters::new(vec![Filter::new(name, ["x"])]).is_ok(),
            "{name}"
        );
    }
}

#[test]
fn values_of_one_filter_are_ored_and_filters_are_anded() {
    let e = eni();
    assert!(
        EniFilters::parse("Name=subnet-id,Values=subnet-b,subnet-a")
            .unwrap()
            .matches(&e)
    );
    assert!(
        EniFilters::parse("Name=subnet-id,Values=subnet-a Name=tag:mirror,Values=true")
            .unwrap()
            .matches(&e)
    );
    assert!(
        !EniFilters::parse("Name=subnet-id,Values=subnet-a Name=tag:mirror,Values=false")
            .unwrap()
            .matches(&e)
    );
}

#[test]
fn tag_filters_match_the_key_and_value() {
    let e = eni();
    assert!(
        EniFilters::parse("Name=tag:Name,Values='web *'")
            .unwrap()
            .matches(&e)
    );
    assert!(
        !EniFilters::parse("Name=tag:mirror,Values=TRUE")
            .unwrap()
            .matches(&e)
    );
    assert!(
        !EniFilters::parse("Name=tag:other,Values=*")
            .unwrap()
            .matches(&e)
    );
    assert!(
        EniFilters::parse("Name=tag-key,Values=mir*")
            .unwrap()
            .matches(&e)
    );
    assert!(
        !EniFilters::parse("Name=tag-key,Values=nope")
            .unwrap()
            .matches(&e)
    );
}

#[test]
fn description_wildcards_follow_aws_rules() {
    let e = eni();
    let m = |v: &str| {
        EniFilters::new(vec![Filter::new("description", [v])])
            .unwrap()
            .matches(&e)
    };
    assert!(m("ELB net/mirror-nlb/*"));
    assert!(m("ELB net/*/50dc6c495c0c918?"));
    assert!(m("*"));
    assert!(!m("ELB net/other/*"));
    assert!(!m("ELB net/mirror-nlb/50dc6c495c0c918"));
    assert!(!m(r"ELB net/mirror-nlb/\*"));
}

#[test]
fn escaped_wildcards_match_themselves() {
    let mut e = eni();
    e.description = "a*b?".into();
    let m = |v: &str| {
        EniFilters::new(vec![Filter::new("description", [v])])
            .unwrap()
            .matches(&e)
    };
    assert!(m(r"a\*b\?"));
    assert!(!m(r"a\*bc"));
}

#[test]
fn a_filter_on_an_absent_field_never_matches() {
    let e = eni();
    assert!(
        !EniFilters::parse("Name=availability-zone,Values=*")
            .unwrap()
            .matches(&e)
    );
    assert!(
        !EniFilters::parse("Name=requester-managed,Values=false")
            .unwrap()
            .matches(&e)
    );
    let mut e2 = e.clone();
    e2.requester_managed = Some(true);
    e2.attachment_instance_owner_id = Some("amazon-elb".into());
    assert!(
        EniFilters::parse("Name=requester-managed,Values=true")
            .unwrap()
            .matches(&e2)
    );
    assert!(
        EniFilters::parse("Name=attachment.instance-owner-id,Values=amazon-elb")
            .unwrap()
            .matches(&e2)
    );
}

#[test]
fn instance_filters_evaluate_on_instances() {
    let mut tags = Tags::new();
    tags.insert("team".into(), "payments".into());
    let i = Instance {
        id: "i-1".into(),
        instance_type: "m5.large".into(),
        state: Some("running".into()),
        tags,
        ..Instance::default()
    };
    let m = |s: &str| InstanceFilters::parse(s).unwrap().matches(&i);
    assert!(m("Name=instance-type,Values=m5.*"));
    assert!(m(
        "Name=tag:team,Values=payments Name=instance-state-name,Values=running"
    ));
    assert!(!m("Name=instance-id,Values=i-2"));
    assert!(!m("Name=vpc-id,Values=*"));
}

/// Reference matcher: plain recursion over the pattern.
fn reference(p: &[GlobTok], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((GlobTok::Many, rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
        Some((GlobTok::One, rest)) => !t.is_empty() && reference(rest, &t[1..]),
        Some((GlobTok::Lit(c), rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
    }
}

fn filter_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[a-z0-9:/.*?=, "'\\-]{1,12}"#).unwrap()
}

proptest! {
    #[test]
    fn formatted_filters_parse_back_to_the_same_filters(
        filters in prop::collection::vec(
            (filter_text(), prop::collection::vec(filter_text(), 1..4)),
            0..4,
        )
    ) {
        let filters: Vec<Filter> = filters
            .into_iter()
            .map(|(name, values)| Filter { name, values })
            .collect();
        let text = format_filters(&filters);
        prop_assert_eq!(parse_filters(&text), Ok(filters), "text {}", text);
    }

    #[test]
    fn the_parser_never_panics(input in r#"[A-Za-z=,"' \\:-]{0,40}"#) {
        let _ = parse_filters(&input);
    }

    #[test]
    fn wildcard_matching_agrees_with_the_reference(
        pattern in "[ab*?]{0,8}",
        text in "[ab]{0,10}",
    ) {
        let compiled = Pattern::compile(&pattern);
        let toks: Vec<GlobTok> = pattern
            .chars()
            .map(|c| match c {
                '*' => GlobTok::Many,
                '?' => GlobTok::One,
                c => GlobTok::Lit(c),
            })
            .collect();
        let chars: Vec<char> = text.chars().collect();
        prop_assert_eq!(compiled.matches(&text), reference(&toks, &chars));
    }
}
