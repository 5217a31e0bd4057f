//! The AWS CLI `--filters` shorthand (`Name=tag:mirror,Values=true Name=subnet-id,Values=a,b`),
//! parsed into typed [`Filter`]s, and evaluated locally on the model with the server's rules:
//! values of one filter are OR-ed, filters are AND-ed, `*` matches any run of characters and
//! `?` any single character (`\*`, `\?`, `\\` match themselves), comparisons are case-sensitive.
//!
//! The same filters are passed to the server by the adapter (`Filters` of
//! `DescribeNetworkInterfaces` / `DescribeInstances`); evaluating them here too keeps selection
//! checkable without a server and keeps an event run honest about its scope.
//!
//! Quoting: a value (or name) may be written in double quotes (`\"` and `\\` escape inside) or
//! single quotes (literal), e.g. `Name=tag:Name,Values="web server",'a,b'`. The JSON form the CLI
//! also accepts (`[{"Name":"subnet-id","Values":["subnet-a"]}]`) is accepted too.

use serde::{Deserialize, Serialize};

use crate::model::{Eni, Instance};

/// One filter: a name and the values any of which may match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Filter {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Values")]
    pub values: Vec<String>,
}

impl Filter {
    /// A filter from a name and values.
    pub fn new(
        name: impl Into<String>,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

/// Which API a filter list is for (the set of valid filter names differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterResource {
    /// `DescribeNetworkInterfaces`.
    NetworkInterface,
    /// `DescribeInstances`.
    Instance,
}

impl FilterResource {
    /// Human name used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterResource::NetworkInterface => "network interface",
            FilterResource::Instance => "instance",
        }
    }
}

/// Why a filter string (or a filter) was rejected. Every variant names the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unterminated quote in `{token}`")]
    UnterminatedQuote { token: String },
    #[error("expected `Name=...` or `Values=...` at `{token}`")]
    ExpectedKey { token: String },
    #[error("unknown key `{key}` in `{token}` (expected `Name` or `Values`)")]
    UnknownKey { key: String, token: String },
    #[error("key `{key}` given twice in `{token}`")]
    DuplicateKey { key: String, token: String },
    #[error("filter `{token}` has no `Name=`")]
    MissingName { token: String },
    #[error("filter `{token}` has no `Values=`")]
    MissingValues { token: String },
    #[error("filter `{token}` has an empty name")]
    EmptyName { token: String },
    #[error("filter `{token}` has an empty value")]
    EmptyValue { token: String },
    #[error("invalid JSON filter list: {message}")]
    Json { message: String },
    #[error("unknown {} filter name `{name}`", resource.as_str())]
    UnknownName {
        name: String,
        resource: FilterResource,
    },
}

/// Parses the CLI shorthand (or the JSON form). An empty or blank string is an empty list.
pub fn parse_filters(input: &str) -> Result<Vec<Filter>, FilterError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    if trimmed.starts_with('[') {
        return parse_json(trimmed);
    }
    let mut filters = Vec::new();
    for token in split_unquoted(trimmed, char::is_whitespace)? {
        if token.is_empty() {
            continue;
        }
        filters.push(parse_token(token)?);
    }
    Ok(filters)
}

fn parse_json(input: &str) -> Result<Vec<Filter>, FilterError> {
    let filters: Vec<Filter> = serde_json::from_str(input).map_err(|e| FilterError::Json {
        message: e.to_string(),
    })?;
    for f in &filters {
        let token = format_filter(f);
        if f.name.is_empty() {
            return Err(FilterError::EmptyName { token });
        }
        if f.values.is_empty() {
            return Err(FilterError::MissingValues { token });
        }
        if f.values.iter().any(String::is_empty) {
            return Err(FilterError::EmptyValue { token });
        }
    }
    Ok(filters)
}

fn parse_token(token: &str) -> Result<Filter, FilterError> {
    let mut name: Option<String> = None;
    let mut values: Option<Vec<String>> = None;
    let mut current: Option<&'static str> = None;
    for item in split_unquoted(token, |c| c == ',')? {
        let (key, raw_value) = match key_prefix(item) {
            Some((key, rest)) => {
                let key: &'static str = match key {
                    "Name" => "Name",
                    "Values" => "Values",
                    other => {
                        return Err(FilterError::UnknownKey {
                            key: other.to_owned(),
                            token: token.to_owned(),
                        });
                    }
                };
                let seen = match key {
                    "Name" => name.is_some(),
                    _ => values.is_some(),
                };
                if seen {
                    return Err(FilterError::DuplicateKey {
                        key: key.to_owned(),
                        token: token.to_owned(),
                    });
                }
                current = Some(key);
                (key, rest)
            }
            None => match current {
                // Further comma-separated items continue the Values list.
                Some("Values") => ("Values", item),
                _ => {
                    return Err(FilterError::ExpectedKey {
                        token: token.to_owned(),
                    });
                }
            },
        };
        let value = unquote(raw_value);
        match key {
            "Name" => {
                if value.is_empty() {
                    return Err(FilterError::EmptyName {
                        token: token.to_owned(),
                    });
                }
                name = Some(value);
            }
            _ => {
                if value.is_empty() {
                    return Err(FilterError::EmptyValue {
                        token: token.to_owned(),
                    });
                }
                values.get_or_insert_with(Vec::new).push(value);
            }
        }
    }
    let name = name.ok_or_else(|| FilterError::MissingName {
        token: token.to_owned(),
    })?;
    let values = values.ok_or_else(|| FilterError::MissingValues {
        token: token.to_owned(),
    })?;
    Ok(Filter { name, values })
}

/// `Key=rest` when the item starts with an unquoted identifier followed by `=`.
fn key_prefix(item: &str) -> Option<(&str, &str)> {
    let eq = item.find('=')?;
    let key = &item[..eq];
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()) {
        Some((key, &item[eq + 1..]))
    } else {
        None
    }
}

/// Splits on unquoted separator characters, keeping quotes in the pieces.
fn split_unquoted(input: &str, is_sep: impl Fn(char) -> bool) -> Result<Vec<&str>, FilterError> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = input.char_indices();
    let mut quote: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('"') => match c {
                '\\' => {
                    chars.next();
                }
                '"' => quote = None,
                _ => {}
            },
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else if is_sep(c) {
                    pieces.push(&input[start..i]);
                    start = i + c.len_utf8();
                }
            }
        }
    }
    if quote.is_some() {
        let token_start = input[..start]
            .rfind(char::is_whitespace)
            .map_or(0, |i| i + 1);
        return Err(FilterError::UnterminatedQuote {
            token: input[token_start..].to_owned(),
        });
    }
    pieces.push(&input[start..]);
    Ok(pieces)
}

/// Removes quotes (already known to be balanced) and resolves `\` escapes inside `"…"`.
fn unquote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some('"') => match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                }
                '"' => quote = None,
                _ => out.push(c),
            },
            Some(q) => {
                if c == q {
                    quote = None;
                } else {
                    out.push(c);
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else {
                    out.push(c);
                }
            }
        }
    }
    out
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || matches!(c, ',' | '"' | '\'' | '\\' | '='))
}

fn quote_if_needed(s: &str, out: &mut String) {
    if needs_quotes(s) {
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Renders one filter in the shorthand (`Name=…,Values=…,…`), quoting where needed.
pub fn format_filter(filter: &Filter) -> String {
    let mut out = String::from("Name=");
    quote_if_needed(&filter.name, &mut out);
    out.push_str(",Values=");
    for (i, v) in filter.values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote_if_needed(v, &mut out);
    }
    out
}

/// Renders a filter list in the shorthand; `parse_filters(&format_filters(f)) == Ok(f)` for
/// any list with non-empty names and values.
pub fn format_filters(filters: &[Filter]) -> String {
    filters
        .iter()
        .map(format_filter)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A compiled value pattern (AWS wildcard semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Glob(Vec<GlobTok>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobTok {
    Lit(char),
    One,
    Many,
}

impl Pattern {
    fn compile(value: &str) -> Pattern {
        if !value.contains(['*', '?', '\\']) {
            return Pattern::Exact(value.to_owned());
        }
        let mut toks = Vec::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if toks.last() != Some(&GlobTok::Many) {
                        toks.push(GlobTok::Many);
                    }
                }
                '?' => toks.push(GlobTok::One),
                '\\' => match chars.next() {
                    Some(n) => toks.push(GlobTok::Lit(n)),
                    None => toks.push(GlobTok::Lit('\\')),
                },
                c => toks.push(GlobTok::Lit(c)),
            }
        }
        Pattern::Glob(toks)
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == text,
            Pattern::Glob(toks) => glob_match(toks, text),
        }
    }
}

/// Iterative wildcard match with single backtrack point: O(len(p) * len(t)) worst case.
fn glob_match(pattern: &[GlobTok], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(GlobTok::Many) => {
                star = Some((p, t));
                p += 1;
            }
            Some(GlobTok::One) => {
                p += 1;
                t += 1;
            }
            Some(GlobTok::Lit(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == GlobTok::Many)
}

/// Filter names understood for network interfaces (`DescribeNetworkInterfaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum EniKey {
    NetworkInterfaceId,
    SubnetId,
    VpcId,
    AvailabilityZone,
    InterfaceType,
    Description,
    Status,
    RequesterId,
    RequesterManaged,
    AttachmentInstanceId,
    AttachmentInstanceOwnerId,
    Tag(String),
    TagKey,
}

/// Filter names understood for instances (`DescribeInstances`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum InstanceKey {
    InstanceId,
    InstanceType,
    AvailabilityZone,
    SubnetId,
    VpcId,
    InstanceStateName,
    Tag(String),
    TagKey,
}

/// The network-interface filter names evaluated locally (plus `tag:<key>`).
pub const ENI_FILTER_NAMES: &[&str] = &[
    "network-interface-id",
    "subnet-id",
    "vpc-id",
    "availability-zone",
    "interface-type",
    "description",
    "status",
    "requester-id",
    "requester-managed",
    "attachment.instance-id",
    "attachment.instance-owner-id",
    "tag-key",
];

/// The instance filter names evaluated locally (plus `tag:<key>`).
pub const INSTANCE_FILTER_NAMES: &[&str] = &[
    "instance-id",
    "instance-type",
    "availability-zone",
    "subnet-id",
    "vpc-id",
    "instance-state-name",
    "tag-key",
];

fn tag_key(name: &str) -> Option<&str> {
    name.strip_prefix("tag:").filter(|k| !k.is_empty())
}

impl EniKey {
    fn parse(name: &str) -> Option<EniKey> {
        if let Some(k) = tag_key(name) {
            return Some(EniKey::Tag(k.to_owned()));
        }
        Some(match name {
            "network-interface-id" => EniKey::NetworkInterfaceId,
            "subnet-id" => EniKey::SubnetId,
            "vpc-id" => EniKey::VpcId,
            "availability-zone" => EniKey::AvailabilityZone,
            "interface-type" => EniKey::InterfaceType,
            "description" => EniKey::Description,
            "status" => EniKey::Status,
            "requester-id" => EniKey::RequesterId,
            "requester-managed" => EniKey::RequesterManaged,
            "attachment.instance-id" => EniKey::AttachmentInstanceId,
            "attachment.instance-owner-id" => EniKey::AttachmentInstanceOwnerId,
            "tag-key" => EniKey::TagKey,
            _ => return None,
        })
    }
}

impl InstanceKey {
    fn parse(name: &str) -> Option<InstanceKey> {
        if let Some(k) = tag_key(name) {
            return Some(InstanceKey::Tag(k.to_owned()));
        }
        Some(match name {
            "instance-id" => InstanceKey::InstanceId,
            "instance-type" => InstanceKey::InstanceType,
            "availability-zone" => InstanceKey::AvailabilityZone,
            "subnet-id" => InstanceKey::SubnetId,
            "vpc-id" => InstanceKey::VpcId,
            "instance-state-name" => InstanceKey::InstanceStateName,
            "tag-key" => InstanceKey::TagKey,
            _ => return None,
        })
    }
}

fn any_matches(patterns: &[Pattern], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

fn bool_str(b: Option<bool>) -> Option<&'static str> {
    b.map(|b| if b { "true" } else { "false" })
}

/// A validated, compiled list of network-interface filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EniFilters {
    raw: Vec<Filter>,
    compiled: Vec<(EniKey, Vec<Pattern>)>,
}

impl EniFilters {
    /// Validates the names (an unknown name is [`FilterError::UnknownName`]) and compiles.
    pub fn new(filters: Vec<Filter>) -> Result<Self, FilterError> {
        let compiled = filters
            .iter()
            .map(|f| {
                let key = EniKey::parse(&f.name).ok_or_else(|| FilterError::UnknownName {
                    name: f.name.clone(),
                    resource: FilterResource::NetworkInterface,
                })?;
                Ok((key, f.values.iter().map(|v| Pattern::compile(v)).collect()))
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(Self {
            raw: filters,
            compiled,
        })
    }

    /// Parses the shorthand and validates it.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        Self::new(parse_filters(input)?)
    }

    /// The filters as given: what the adapter passes to the server.
    pub fn filters(&self) -> &[Filter] {
        &self.raw
    }

    /// True when no filter is configured.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Server semantics: every filter matches (an empty list matches everything — the
    /// selection treats an empty list as "not configured" instead).
    pub fn matches(&self, eni: &Eni) -> bool {
        self.compiled.iter().all(|(key, pats)| match key {
            EniKey::NetworkInterfaceId => any_matches(pats, Some(&eni.id)),
            EniKey::SubnetId => any_matches(pats, Some(&eni.subnet_id)),
            EniKey::VpcId => any_matches(pats, Some(&eni.vpc_id)),
            EniKey::AvailabilityZone => any_matches(pats, eni.availability_zone.as_deref()),
            EniKey::InterfaceType => any_matches(pats, Some(&eni.interface_type)),
            EniKey::Description => any_matches(pats, Some(&eni.description)),
            EniKey::Status => any_matches(pats, eni.status.as_deref()),
            EniKey::RequesterId => any_matches(pats, eni.requester_id.as_deref()),
            EniKey::RequesterManaged => any_matches(pats, bool_str(eni.requester_managed)),
            EniKey::AttachmentInstanceId => {
                any_matches(pats, eni.attachment_instance_id.as_deref())
            }
            EniKey::AttachmentInstanceOwnerId => {
                any_matches(pats, eni.attachment_instance_owner_id.as_deref())
            }
            EniKey::Tag(k) => any_matches(pats, eni.tags.get(k).map(String::as_str)),
            EniKey::TagKey => eni.tags.keys().any(|k| any_matches(pats, Some(k))),
        })
    }
}

/// A validated, compiled list of instance filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceFilters {
    raw: Vec<Filter>,
    compiled: Vec<(InstanceKey, Vec<Pattern>)>,
}

impl InstanceFilters {
    /// Validates the names (an unknown name is [`FilterError::UnknownName`]) and compiles.
    pub fn new(filters: Vec<Filter>) -> Result<Self, FilterError> {
        let compiled = filters
            .iter()
            .map(|f| {
                let key = InstanceKey::parse(&f.name).ok_or_else(|| FilterError::UnknownName {
                    name: f.name.clone(),
                    resource: FilterResource::Instance,
                })?;
                Ok((key, f.values.iter().map(|v| Pattern::compile(v)).collect()))
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(Self {
            raw: filters,
            compiled,
        })
    }

    /// Parses the shorthand and validates it.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        Self::new(parse_filters(input)?)
    }

    /// The filters as given: what the adapter passes to the server.
    pub fn filters(&self) -> &[Filter] {
        &self.raw
    }

    /// True when no filter is configured.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Server semantics: every filter matches (an empty list matches everything).
    pub fn matches(&self, instance: &Instance) -> bool {
        self.compiled.iter().all(|(key, pats)| match key {
            InstanceKey::InstanceId => any_matches(pats, Some(&instance.id)),
            InstanceKey::InstanceType => any_matches(pats, Some(&instance.instance_type)),
            InstanceKey::AvailabilityZone => {
                any_matches(pats, instance.availability_zone.as_deref())
            }
            InstanceKey::SubnetId => any_matches(pats, instance.subnet_id.as_deref()),
            InstanceKey::VpcId => any_matches(pats, instance.vpc_id.as_deref()),
            InstanceKey::InstanceStateName => any_matches(pats, instance.state.as_deref()),
            InstanceKey::Tag(k) => any_matches(pats, instance.tags.get(k).map(String::as_str)),
            InstanceKey::TagKey => instance.tags.keys().any(|k| any_matches(pats, Some(k))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tags;
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
        let f =
            parse_filters("Name=tag:mirror,Values=true Name=subnet-id,Values=subnet-a,subnet-b")
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
        let e =
            parse_filters(r#"Name=vpc-id,Values=a Name=tag:Name,Values="web server"#).unwrap_err();
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
        let f =
            parse_filters(r#"[{"Name":"subnet-id","Values":["subnet-a","subnet-b"]}]"#).unwrap();
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
        for name in ENI_FILTER_NAMES {
            assert!(
                EniFilters::new(vec![Filter::new(*name, ["x"])]).is_ok(),
                "{name}"
            );
        }
        for name in INSTANCE_FILTER_NAMES {
            assert!(
                InstanceFilters::new(vec![Filter::new(*name, ["x"])]).is_ok(),
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
}
