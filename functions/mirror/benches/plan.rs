//! Measures selection + planning on a generated account: 5,000 ENIs (half attached to
//! instances), 2,500 instances, ~4,000 existing sessions of three owners, some drifted, plus
//! owned sessions of deleted ENIs. Prints the time per run for a full reconcile, a replan after
//! applying, and an event-scoped run.
//!
//! `cargo bench -p mirror --bench plan` (or `-- 20000` for another ENI count).

use std::hint::black_box;
use std::time::{Duration, Instant};

use mirror::filters::{EniFilters, InstanceFilters};
use mirror::model::{ASG_NAME_TAG, MirrorTarget, OWNER_TAG_KEY};
use mirror::sim::apply_to;
use mirror::{Eni, Instance, MirrorSpec, Observed, Scope, Selector, Session, reconcile};

fn world(n: usize) -> (Observed, Selector, MirrorSpec) {
    let spec = MirrorSpec {
        target_id: "tmt-0".into(),
        filter_id: "tmf-0".into(),
        vni: 4242,
        packet_length: Some(8500),
        owner: "prod".into(),
        ..MirrorSpec::default()
    };
    let selector = Selector {
        eni_filters: EniFilters::parse(
            "Name=tag:mirror,Values=true Name=subnet-id,Values=subnet-*",
        )
        .unwrap(),
        instance_filters: InstanceFilters::parse("Name=tag:team,Values=payments,search").unwrap(),
        exclude_tag: "mirrorfleet:exclude".into(),
        fleet_asg_name: Some("rebuilders".into()),
        ..Selector::default()
    };
    let mut o = Observed {
        observed_at_unix: 1_700_000_000,
        targets: vec![MirrorTarget {
            id: "tmt-0".into(),
            network_load_balancer_arn: Some(
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/mirror/abc"
                    .into(),
            ),
            ..MirrorTarget::default()
        }],
        ..Observed::default()
    };
    for i in 0..n / 2 {
        let mut inst = Instance {
            id: format!("i-{i:08x}"),
            instance_type: "m5.large".into(),
            state: Some("running".into()),
            ..Instance::default()
        };
        match i % 10 {
            0..=3 => {
                inst.tags.insert("team".into(), "payments".into());
            }
            4 => {
                inst.tags.insert(ASG_NAME_TAG.into(), "rebuilders".into());
            }
            _ => {}
        }
        o.instances.push(inst);
    }
    for i in 0..n {
        let mut eni = Eni {
            id: format!("eni-{i:08x}"),
            subnet_id: format!("subnet-{}", i % 6),
            vpc_id: "vpc-1".into(),
            interface_type: "interface".into(),
            description: if i % 97 == 0 {
                "ELB net/mirror/abc".into()
            } else {
                String::new()
            },
            attachment_instance_id: (i % 2 == 0).then(|| format!("i-{:08x}", i / 2)),
            ..Eni::default()
        };
        if i % 3 == 0 {
            eni.tags.insert("mirror".into(), "true".into());
        }
        if i % 50 == 0 {
            eni.tags.insert("mirrorfleet:exclude".into(), "true".into());
        }
        o.enis.push(eni);
        let owners = [Some("prod"), None, Some("other")];
        for k in 0..(i % 3) {
            let mut s = Session {
                id: format!("tms-{i:08x}-{k}"),
                eni_id: format!("eni-{i:08x}"),
                target_id: "tmt-0".into(),
                filter_id: "tmf-0".into(),
                number: 1 + k as u32,
                vni: Some(if i % 11 == 0 { 1 } else { 4242 }),
                packet_length: Some(8500),
                ..Session::default()
            };
            if let Some(owner) = owners[(i + k) % 3] {
                s.tags.insert(OWNER_TAG_KEY.into(), owner.into());
            }
            o.sessions.push(s);
        }
    }
    for i in 0..n / 20 {
        let mut s = Session {
            id: format!("tms-gone-{i}"),
            eni_id: format!("eni-gone-{i}"),
            target_id: "tmt-0".into(),
            filter_id: "tmf-0".into(),
            number: 1,
            vni: Some(4242),
            ..Session::default()
        };
        s.tags.insert(OWNER_TAG_KEY.into(), "prod".into());
        o.sessions.push(s);
    }
    (o, selector, spec)
}

fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..runs {
        black_box(f());
    }
    start.elapsed() / runs
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5_000);
    let (observed, selector, spec) = world(n);
    let plan = reconcile(&Scope::All, &selector, &observed, &spec);
    println!(
        "{n} ENIs, {} instances, {} sessions: create {}, delete {}, modify {}, unchanged {}, skipped {}",
        observed.instances.len(),
        observed.sessions.len(),
        plan.create.len(),
        plan.delete.len(),
        plan.modify.len(),
        plan.unchanged.len(),
        plan.skipped.len(),
    );
    let full = time(20, || reconcile(&Scope::All, &selector, &observed, &spec));
    println!(
        "full reconcile (select + plan): {:.2} ms",
        full.as_secs_f64() * 1e3
    );

    let after = apply_to(&observed, &plan).expect("the plan applies");
    let replan = reconcile(&Scope::All, &selector, &after, &spec);
    assert!(replan.is_noop(), "replan after apply is empty");
    let steady = time(20, || reconcile(&Scope::All, &selector, &after, &spec));
    println!(
        "steady-state reconcile (nothing to do): {:.2} ms",
        steady.as_secs_f64() * 1e3
    );

    let scope = Scope::enis(["eni-00000003"]);
    let event = time(20, || reconcile(&scope, &selector, &observed, &spec));
    println!(
        "event-scoped run over the full observation: {:.2} ms",
        event.as_secs_f64() * 1e3
    );
}
