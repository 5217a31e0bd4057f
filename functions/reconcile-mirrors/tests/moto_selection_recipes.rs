//! The selection recipes of `docs/selection-recipes.md`, each run end to end: the
//! reconcile-mirrors binary (behind `cargo lambda watch`) with exactly the recipe's
//! `MIRROR_ENI_FILTERS` / `MIRROR_INSTANCE_FILTERS`, invoked with `events/scheduled.json`
//! against moto, then the set of ENIs carrying one of our sessions is compared with the
//! intended set — exactly, so an over-broad recipe fails as surely as a too-narrow one.

use std::collections::BTreeSet;
use std::path::Path;

use mirror_testkit::sdk::autoscaling;
use mirror_testkit::sdk::ec2::types::Filter;
use mirror_testkit::{Harness, Seed, is_owned, sample_event};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_reconcile-mirrors");

/// The seed's settings without its filters, plus the recipe's.
fn recipe_env(seed: &Seed, recipe: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = seed
        .mirror_env(&[])
        .into_iter()
        .filter(|(k, _)| k != "MIRROR_ENI_FILTERS" && k != "MIRROR_INSTANCE_FILTERS")
        .collect();
    env.extend(
        recipe
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// Runs reconcile once with the recipe and returns the ENIs that carry one of our sessions.
async fn mirrored_with(h: &Harness, seed: &Seed, recipe: &[(&str, &str)]) -> BTreeSet<String> {
    let f = h.function(Path::new(BIN), &recipe_env(seed, recipe));
    let r: Value = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(r["errors"]["count"].as_u64(), Some(0), "{r}");
    let sessions = seed.all_sessions().await;
    let owned: Vec<_> = sessions.iter().filter(|s| is_owned(s)).collect();
    let enis: BTreeSet<String> = owned
        .iter()
        .map(|s| s.network_interface_id().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(enis.len(), owned.len(), "one session per ENI: {owned:?}");
    enis
}

fn set(enis: &[&String]) -> BTreeSet<String> {
    enis.iter().map(|s| (*s).clone()).collect()
}

/// An ENI shaped like the ones a load balancer creates (moto creates none for its load
/// balancers, so the description is seeded the way AWS writes it).
async fn eni_with_description(seed: &Seed, subnet: usize, description: &str) -> String {
    seed.eni_described(subnet, description, &[]).await
}

/// The id part of the mirror target's NLB ARN (`.../loadbalancer/net/<name>/<id>`).
fn nlb_description(seed: &Seed) -> String {
    let tail = seed
        .nlb_arn
        .split(":loadbalancer/")
        .nth(1)
        .expect("NLB ARN");
    format!("ELB {tail}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_recipe_the_enis_of_one_application_load_balancer() {
    let Some(h) = Harness::start("recipe-alb") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let alb_a = eni_with_description(&seed, 0, "ELB app/my-alb/50dc6c495c0c9188").await;
    let alb_b = eni_with_description(&seed, 1, "ELB app/my-alb/50dc6c495c0c9188").await;
    let _other_alb = eni_with_description(&seed, 0, "ELB app/my-alb-2/0123456789abcdef").await;
    let _nlb = eni_with_description(&seed, 1, "ELB net/my-nlb/fedcba9876543210").await;
    let _instance = seed.instance(&[]).await;

    let got = mirrored_with(
        &h,
        &seed,
        &[(
            "MIRROR_ENI_FILTERS",
            r#"Name=description,Values="ELB app/my-alb/*""#,
        )],
    )
    .await;
    assert_eq!(got, set(&[&alb_a, &alb_b]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_recipe_every_load_balancer_eni_but_the_mirror_targets_own_nlb() {
    let Some(h) = Harness::start("recipe-elb") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let alb = eni_with_description(&seed, 0, "ELB app/my-alb/50dc6c495c0c9188").await;
    let nlb = eni_with_description(&seed, 1, "ELB net/my-nlb/fedcba9876543210").await;
    let classic = eni_with_description(&seed, 0, "ELB my-classic-elb").await;
    // The rebuilders' NLB (the mirror target): never a source.
    let _target_nlb = eni_with_description(&seed, 1, &nlb_description(&seed)).await;
    let _app = seed.eni(0, &[]).await;
    let _instance = seed.instance(&[]).await;

    let got = mirrored_with(
        &h,
        &seed,
        &[("MIRROR_ENI_FILTERS", r#"Name=description,Values="ELB *""#)],
    )
    .await;
    assert_eq!(got, set(&[&alb, &nlb, &classic]));
}

async fn attach_secondary_eni(seed: &Seed, instance: &str, description: &str) -> String {
    let eni = eni_with_description(seed, 0, description).await;
    seed.attach(&eni, instance, 1).await;
    eni
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_recipe_the_nodes_of_one_eks_cluster() {
    let Some(h) = Harness::start("recipe-eks") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let cluster = [("eks:cluster-name", "prod"), ("kubernetes.io/os", "linux")];
    let (node_a, node_a_eni) = seed.instance(&cluster).await;
    let (_, node_b_eni) = seed.instance(&cluster).await;
    // The VPC CNI gives nodes secondary ENIs (pod IPs): attached to the node, selected too.
    let pods_eni = attach_secondary_eni(&seed, &node_a, &format!("aws-K8S-{node_a}")).await;
    let (_, _staging) = seed.instance(&[("eks:cluster-name", "staging")]).await;
    let _plain = seed.instance(&[]).await;
    let _standalone = seed.eni(0, &[]).await;

    let got = mirrored_with(
        &h,
        &seed,
        &[(
            "MIRROR_INSTANCE_FILTERS",
            "Name=tag:eks:cluster-name,Values=prod Name=instance-state-name,Values=running",
        )],
    )
    .await;
    assert_eq!(got, set(&[&node_a_eni, &node_b_eni, &pods_eni]));
}

/// The primary ENIs of the running instances carrying `tag`.
async fn enis_of_instances_tagged(seed: &Seed, key: &str, value: &str) -> Vec<String> {
    let out = seed
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
                .build(),
        )
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .flat_map(|i| i.network_interfaces())
        .filter_map(|n| n.network_interface_id().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_recipe_the_instances_of_one_auto_scaling_group() {
    let Some(h) = Harness::start("recipe-asg") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let asg: autoscaling::Client = h.moto.autoscaling();
    // `aws:` tags cannot be set by hand: the groups tag the instances they launch.
    seed.fleet_group(&asg, "web-asg", 0, 4, 2).await;
    seed.fleet_group(&asg, "batch-asg", 0, 2, 1).await;
    let _plain = seed.instance(&[]).await;
    let web = enis_of_instances_tagged(&seed, "aws:autoscaling:groupName", "web-asg").await;
    assert_eq!(web.len(), 2, "moto launched the web group's instances");
    let batch = enis_of_instances_tagged(&seed, "aws:autoscaling:groupName", "batch-asg").await;
    assert_eq!(batch.len(), 1);

    let got = mirrored_with(
        &h,
        &seed,
        &[(
            "MIRROR_INSTANCE_FILTERS",
            "Name=tag:aws:autoscaling:groupName,Values=web-asg Name=instance-state-name,Values=running",
        )],
    )
    .await;
    assert_eq!(got, web.iter().cloned().collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_recipe_plain_tags_on_enis_and_instances() {
    let Some(h) = Harness::start("recipe-tags") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let tagged_eni = seed.eni(0, &[("mirror", "yes")]).await;
    let other_value_eni = seed.eni(1, &[("mirror", "")]).await;
    let _excluded_eni = seed
        .eni(0, &[("mirror", "yes"), ("mirrorfleet:exclude", "true")])
        .await;
    let _untagged_eni = seed.eni(1, &[]).await;
    let (_, payments) = seed.instance(&[("team", "payments")]).await;
    let (_, checkout) = seed.instance(&[("team", "checkout")]).await;
    let (_, _search) = seed.instance(&[("team", "search")]).await;
    let (stopped, _stopped_eni) = seed.instance(&[("team", "payments")]).await;
    seed.ec2
        .stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .expect("stop instance");

    let got = mirrored_with(
        &h,
        &seed,
        &[
            ("MIRROR_ENI_FILTERS", "Name=tag-key,Values=mirror"),
            (
                "MIRROR_INSTANCE_FILTERS",
                "Name=tag:team,Values=payments,checkout Name=instance-state-name,Values=running",
            ),
        ],
    )
    .await;
    assert_eq!(
        got,
        set(&[&tagged_eni, &other_value_eni, &payments, &checkout])
    );
}

/// A recipe that would mirror a load balancer and its targets is warned about in the report
/// (every request would reach the analyzer twice), and one side alone is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_recipe_a_load_balancer_with_its_targets_is_warned_about() {
    let Some(h) = Harness::start("recipe-both-legs") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    eni_with_description(&seed, 0, "ELB app/shop/50dc6c495c0c9188").await;
    seed.instance(&[("team", "shop")]).await;
    seed.instance(&[("team", "shop")]).await;
    let both = [
        (
            "MIRROR_ENI_FILTERS",
            r#"Name=description,Values="ELB app/shop/*""#,
        ),
        (
            "MIRROR_INSTANCE_FILTERS",
            "Name=tag:team,Values=shop Name=instance-state-name,Values=running",
        ),
    ];
    let f = h.function(Path::new(BIN), &recipe_env(&seed, &both));
    let r: Value = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(r["warnings"]["count"], 1, "{r}");
    let warning = r["warnings"]["items"][0].as_str().unwrap();
    assert!(
        warning.contains("app shop") && warning.contains("twice"),
        "{warning}"
    );
    // Only one function polls the Runtime API at a time.
    drop(f);
    let targets_only = [(
        "MIRROR_INSTANCE_FILTERS",
        "Name=tag:team,Values=shop Name=instance-state-name,Values=running",
    )];
    let f = h.function(Path::new(BIN), &recipe_env(&seed, &targets_only));
    let r: Value = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(r["warnings"]["count"], 0, "{r}");
}
