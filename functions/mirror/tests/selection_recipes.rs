//! The recipes of `docs/selection-recipes.md` against resources shaped exactly as AWS returns
//! them (the fields moto cannot produce: `RequesterId`, `RequesterManaged` and
//! `Attachment.InstanceOwnerId` of load-balancer ENIs). The moto tests
//! (`functions/reconcile-mirrors/tests/moto_selection_recipes.rs`) run the same recipes end
//! to end.

use mirror::model::tags;
use mirror::{Eni, EniFilters, Instance, InstanceFilters, Tags};

/// An ALB ENI as `DescribeNetworkInterfaces` returns it.
fn alb_eni(name: &str) -> Eni {
    Eni {
        id: format!("eni-{name}"),
        subnet_id: "subnet-a".into(),
        vpc_id: "vpc-1".into(),
        interface_type: "interface".into(),
        description: format!("ELB app/{name}/50dc6c495c0c9188"),
        status: Some("in-use".into()),
        requester_id: Some("amazon-elb".into()),
        requester_managed: Some(true),
        attachment_instance_id: None,
        attachment_instance_owner_id: Some("amazon-elb".into()),
        tags: Tags::new(),
        ..Eni::default()
    }
}

/// An NLB ENI: `InterfaceType` `network_load_balancer`.
fn nlb_eni(name: &str) -> Eni {
    Eni {
        description: format!("ELB net/{name}/fedcba9876543210"),
        interface_type: "network_load_balancer".into(),
        ..alb_eni(name)
    }
}

/// An instance's primary ENI.
fn instance_eni(instance: &str) -> Eni {
    Eni {
        id: format!("eni-of-{instance}"),
        subnet_id: "subnet-a".into(),
        vpc_id: "vpc-1".into(),
        interface_type: "interface".into(),
        description: String::new(),
        status: Some("in-use".into()),
        requester_id: Some("AIDAEXAMPLE".into()),
        requester_managed: Some(false),
        attachment_instance_id: Some(instance.into()),
        attachment_instance_owner_id: Some("123456789012".into()),
        tags: Tags::new(),
        ..Eni::default()
    }
}

fn eni_recipe(recipe: &str) -> EniFilters {
    EniFilters::parse(recipe).unwrap_or_else(|e| panic!("{recipe}: {e}"))
}

#[test]
fn load_balancer_enis_by_requester_or_owner_match_every_balancer_and_no_instance() {
    for recipe in [
        "Name=requester-id,Values=amazon-elb",
        "Name=attachment.instance-owner-id,Values=amazon-elb",
        "Name=requester-managed,Values=true Name=description,Values=\"ELB *\"",
    ] {
        let f = eni_recipe(recipe);
        assert!(f.matches(&alb_eni("my-alb")), "{recipe}");
        assert!(f.matches(&nlb_eni("my-nlb")), "{recipe}");
        assert!(!f.matches(&instance_eni("i-1")), "{recipe}");
    }
}

#[test]
fn one_balancers_enis_by_description() {
    let f = eni_recipe(r#"Name=description,Values="ELB app/my-alb/*""#);
    assert!(f.matches(&alb_eni("my-alb")));
    // The trailing `/` keeps a balancer whose name starts the same out.
    assert!(!f.matches(&alb_eni("my-alb-2")));
    assert!(!f.matches(&nlb_eni("my-alb")));
    assert!(!f.matches(&instance_eni("i-1")));
}

#[test]
fn a_description_without_the_elb_prefix_or_in_the_wrong_case_selects_nothing() {
    // What AWS writes is `ELB app/<name>/<id>`: filters are case-sensitive and anchored.
    for wrong in [
        "Name=description,Values=app/my-alb/*",
        "Name=description,Values=\"elb app/my-alb/*\"",
        "Name=requester-id,Values=elasticloadbalancing.amazonaws.com",
    ] {
        assert!(!eni_recipe(wrong).matches(&alb_eni("my-alb")), "{wrong}");
    }
}

fn instance(id: &str, state: &str, tags_: &[(&str, &str)]) -> Instance {
    Instance {
        id: id.into(),
        instance_type: "m5.large".into(),
        state: Some(state.into()),
        tags: tags(tags_),
        ..Instance::default()
    }
}

#[test]
fn eks_nodes_by_cluster_tag() {
    let f = InstanceFilters::parse(
        "Name=tag:eks:cluster-name,Values=prod Name=instance-state-name,Values=running",
    )
    .unwrap();
    assert!(f.matches(&instance("i-1", "running", &[("eks:cluster-name", "prod")])));
    assert!(!f.matches(&instance(
        "i-2",
        "running",
        &[("eks:cluster-name", "staging")]
    )));
    assert!(!f.matches(&instance("i-3", "stopped", &[("eks:cluster-name", "prod")])));
    // Managed node groups also carry this one; either tag works.
    let g = InstanceFilters::parse("Name=tag:eks:nodegroup-name,Values=web-*").unwrap();
    assert!(g.matches(&instance(
        "i-4",
        "running",
        &[("eks:nodegroup-name", "web-a")]
    )));
}

#[test]
fn auto_scaling_group_instances_by_the_group_tag() {
    let f = InstanceFilters::parse(
        "Name=tag:aws:autoscaling:groupName,Values=web-asg Name=instance-state-name,Values=running",
    )
    .unwrap();
    assert!(f.matches(&instance(
        "i-1",
        "running",
        &[("aws:autoscaling:groupName", "web-asg")]
    )));
    assert!(!f.matches(&instance(
        "i-2",
        "running",
        &[("aws:autoscaling:groupName", "web-asg-2")]
    )));
    assert!(!f.matches(&instance("i-3", "running", &[])));
}

#[test]
fn plain_tags_any_value_or_one_of_several_values() {
    let key = eni_recipe("Name=tag-key,Values=mirror");
    let mut e = instance_eni("i-1");
    assert!(!key.matches(&e));
    e.tags = tags(&[("mirror", "")]);
    assert!(key.matches(&e));
    let teams = InstanceFilters::parse("Name=tag:team,Values=payments,checkout").unwrap();
    assert!(teams.matches(&instance("i-1", "running", &[("team", "checkout")])));
    assert!(!teams.matches(&instance("i-2", "running", &[("team", "search")])));
}
