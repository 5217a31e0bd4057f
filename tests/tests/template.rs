//! Wiring of `template.yaml`: what cfn-lint, `sam validate` and checkov cannot know.
//!
//! Each check is a function over the parsed template. The tests run every check on the real
//! template, and `each_check_rejects_a_template_broken_for_it` runs each one on a copy broken
//! on purpose, so none of them can pass vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};
use system_tests::cfn::{Template, one_or_many, strings, text};

type CheckResult = Result<(), String>;

const ONBOARD: &str = "onboard-eni";
const RECONCILE: &str = "reconcile-mirrors";
const SIZE_FLEET: &str = "size-fleet";

/// What each function reads (functions/mirror/src/settings.rs): `MirrorSettings` for
/// onboard-eni and reconcile-mirrors, `FleetSettings` for size-fleet. Optional ones included:
/// a deployment must be able to set them.
const MIRROR_SETTINGS: &[&str] = &[
    "MIRROR_TARGET_ID",
    "MIRROR_FILTER_ID",
    "MIRROR_VNI",
    "MIRROR_PACKET_LENGTH",
    "MIRROR_ENI_FILTERS",
    "MIRROR_INSTANCE_FILTERS",
    "MIRROR_EXCLUDE_TAG",
    "MIRROR_OWNER",
    "FLEET_ASG_NAME",
    "DRY_RUN",
];
const FLEET_SETTINGS: &[&str] = &[
    "FLEET_ASG_NAME",
    "MIRROR_TARGET_ID",
    "FLEET_MIN",
    "FLEET_MAX",
    "FLEET_SESSIONS_PER_INSTANCE",
    "FLEET_SCALE_IN_AFTER",
    "DRY_RUN",
];

const OWNER_TAG: &str = "mirrorfleet:owner";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

fn template() -> Template {
    let path = repo_root().join("template.yaml");
    Template::load(&path).unwrap_or_else(|e| panic!("{e:#}"))
}

fn passes(check: fn(&Template) -> CheckResult) {
    if let Err(e) = check(&template()) {
        panic!("template.yaml: {e}");
    }
}

// ---------------------------------------------------------------------------------- helpers

fn err<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

/// A port or count that may be written as a number or a string.
fn num(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn s(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or_default()
}

/// Logical id behind a `Ref` or a `GetAtt`.
fn points_at(v: &Value) -> Option<&str> {
    Template::ref_target(v).or_else(|| v.get("Fn::GetAtt")?.get(0)?.as_str())
}

/// `(logical id, binary)` of every serverless function.
fn functions(t: &Template) -> Vec<(String, String)> {
    t.of_type("AWS::Serverless::Function")
        .map(|(id, r)| {
            let bin = s(r.pointer("/Metadata/BuildProperties/Binary")).to_owned();
            (id.to_owned(), bin)
        })
        .collect()
}

fn function_for(t: &Template, binary: &str) -> Result<String, String> {
    functions(t)
        .into_iter()
        .find(|(_, b)| b == binary)
        .map(|(id, _)| id)
        .ok_or_else(|| format!("no function builds the binary {binary}"))
}

/// The data path: `(listener, NLB, target group)` of the UDP/4789 listener.
fn mirror_listener(t: &Template) -> Result<(String, String, String), String> {
    let mut found = Vec::new();
    for (id, r) in t.of_type("AWS::ElasticLoadBalancingV2::Listener") {
        let p = &r["Properties"];
        if s(p.get("Protocol")) == "UDP" && num(p.get("Port")) == Some(4789) {
            found.push((id.to_owned(), p.clone()));
        }
    }
    let [(id, p)] = found.as_slice() else {
        return err(format!(
            "expected exactly one UDP/4789 listener, found {}",
            found.len()
        ));
    };
    let nlb = p
        .get("LoadBalancerArn")
        .and_then(Template::ref_target)
        .ok_or("the UDP/4789 listener does not Ref its load balancer")?;
    let actions = p.get("DefaultActions").map(one_or_many).unwrap_or_default();
    let tg = actions
        .iter()
        .find(|a| s(a.get("Type")) == "forward")
        .and_then(|a| a.get("TargetGroupArn"))
        .and_then(Template::ref_target)
        .ok_or("the UDP/4789 listener does not forward to a target group of the stack")?;
    Ok((id.clone(), nlb.to_owned(), tg.to_owned()))
}

/// The rebuilder Auto Scaling group: registered in the UDP/4789 target group.
fn fleet_group(t: &Template) -> Result<String, String> {
    let (_, _, tg) = mirror_listener(t)?;
    let groups: Vec<&str> = t
        .of_type("AWS::AutoScaling::AutoScalingGroup")
        .filter(|(_, r)| {
            r.pointer("/Properties/TargetGroupARNs")
                .map(one_or_many)
                .unwrap_or_default()
                .iter()
                .any(|v| Template::ref_target(v) == Some(tg.as_str()))
        })
        .map(|(id, _)| id)
        .collect();
    match groups.as_slice() {
        [one] => Ok((*one).to_owned()),
        other => err(format!(
            "expected one Auto Scaling group in target group {tg}, found {other:?}"
        )),
    }
}

fn fleet_launch_template(t: &Template) -> Result<String, String> {
    let asg = fleet_group(t)?;
    t.prop(&asg, "LaunchTemplate/LaunchTemplateId")
        .and_then(Template::ref_target)
        .map(str::to_owned)
        .ok_or_else(|| format!("{asg} does not use a launch template of the stack"))
}

fn user_data(t: &Template, launch_template: &str) -> Result<String, String> {
    t.prop(launch_template, "LaunchTemplateData/UserData")
        .and_then(text)
        .ok_or_else(|| format!("{launch_template} has no readable user data"))
}

fn the_only(t: &Template, ty: &str) -> Result<String, String> {
    let ids: Vec<&str> = t.of_type(ty).map(|(id, _)| id).collect();
    match ids.as_slice() {
        [one] => Ok((*one).to_owned()),
        other => err(format!("expected exactly one {ty}, found {other:?}")),
    }
}

/// Names of the binaries of the workspace, from `cargo metadata`.
fn workspace_binaries() -> &'static BTreeSet<String> {
    static BINS: OnceLock<BTreeSet<String>> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ])
            .arg("--manifest-path")
            .arg(repo_root().join("Cargo.toml"))
            .output()
            .expect("running cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
        let mut bins = BTreeSet::new();
        for pkg in meta["packages"].as_array().into_iter().flatten() {
            for target in pkg["targets"].as_array().into_iter().flatten() {
                if strings(target.get("kind")).iter().any(|k| k == "bin") {
                    bins.insert(s(target.get("name")).to_owned());
                }
            }
        }
        bins
    })
}

/// Setting names the control-plane sources read: string literals such as `"MIRROR_VNI"`.
fn settings_read_by_the_functions() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&p).unwrap_or_default();
                for piece in src.split('"') {
                    let is_name = (piece.starts_with("MIRROR_") || piece.starts_with("FLEET_"))
                        && piece.len() > 7
                        && piece
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                    if is_name || piece == "DRY_RUN" {
                        out.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    let functions = repo_root().join("functions");
    for e in std::fs::read_dir(&functions)
        .into_iter()
        .flatten()
        .flatten()
    {
        walk(&e.path().join("src"), &mut out);
    }
    out
}

/// A minimal EventBridge pattern matcher: exact values in arrays, nested objects.
fn pattern_matches(pattern: &Value, event: &Value) -> bool {
    let Some(p) = pattern.as_object() else {
        return false;
    };
    p.iter().all(|(key, want)| {
        let got = event.get(key);
        match want {
            Value::Object(_) => got.is_some_and(|g| pattern_matches(want, g)),
            Value::Array(allowed) => allowed.iter().any(|a| match a {
                // Content filter `{"exists": bool}`; other content filters are not used here.
                Value::Object(f) => f.get("exists").and_then(Value::as_bool) == Some(got.is_some()),
                scalar => match got {
                    Some(Value::Array(values)) => values.contains(scalar),
                    Some(v) => v == scalar,
                    None => false,
                },
            }),
            _ => false,
        }
    })
}

/// EventBridge patterns that invoke a function: its SAM events and `AWS::Events::Rule`s
/// targeting it.
fn patterns_for(t: &Template, function: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(events) = t.prop(function, "Events").and_then(Value::as_object) {
        for e in events.values() {
            if matches!(s(e.get("Type")), "EventBridgeRule" | "CloudWatchEvent") {
                out.extend(e.pointer("/Properties/Pattern").cloned());
            }
        }
    }
    for (_, r) in t.of_type("AWS::Events::Rule") {
        let targets = r.pointer("/Properties/Targets").map(one_or_many);
        if targets
            .unwrap_or_default()
            .iter()
            .any(|tg| tg.get("Arn").and_then(points_at) == Some(function))
        {
            out.extend(r.pointer("/Properties/EventPattern").cloned());
        }
    }
    out
}

fn has_schedule(t: &Template, function: &str) -> bool {
    t.prop(function, "Events")
        .and_then(Value::as_object)
        .is_some_and(|ev| {
            ev.values()
                .any(|e| matches!(s(e.get("Type")), "Schedule" | "ScheduleV2"))
        })
}

fn actions(stmt: &Value) -> Vec<String> {
    strings(stmt.get("Action"))
}

fn resources(stmt: &Value) -> Vec<String> {
    stmt.get("Resource")
        .map(one_or_many)
        .unwrap_or_default()
        .into_iter()
        .map(|r| text(r).unwrap_or_else(|| format!("<unreadable {r}>")))
        .collect()
}

fn allows(stmt: &Value, action: &str) -> bool {
    s(stmt.get("Effect")) == "Allow" && actions(stmt).iter().any(|a| a == action)
}

fn condition(stmt: &Value, op: &str, key: &str) -> Option<Value> {
    stmt.get("Condition")?.get(op)?.get(key).cloned()
}

fn is_read_only(action: &str) -> bool {
    let name = action.split_once(':').map_or(action, |(_, n)| n);
    ["Describe", "Get", "List"]
        .iter()
        .any(|p| name.starts_with(p))
}

// ----------------------------------------------------------------------------------- checks

fn check_function_binaries(t: &Template) -> CheckResult {
    let fns = functions(t);
    for want in [ONBOARD, RECONCILE, SIZE_FLEET] {
        function_for(t, want)?;
    }
    let bins = workspace_binaries();
    for (id, bin) in &fns {
        let r = t.resource(id).unwrap();
        if s(r.pointer("/Metadata/BuildMethod")) != "rust-cargolambda" {
            return err(format!(
                "{id}: Metadata.BuildMethod must be rust-cargolambda"
            ));
        }
        if !bins.contains(bin) {
            return err(format!(
                "{id}: Binary {bin:?} is not a binary of the workspace ({bins:?})"
            ));
        }
        if s(t.function_prop(id, "Runtime")) != "provided.al2023" {
            return err(format!("{id}: Runtime must be provided.al2023"));
        }
        let arch = strings(t.function_prop(id, "Architectures"));
        if arch != ["x86_64"] {
            return err(format!("{id}: Architectures must be [x86_64], is {arch:?}"));
        }
    }
    Ok(())
}

fn check_function_settings(t: &Template) -> CheckResult {
    let asg = fleet_group(t)?;
    let mut set_anywhere = BTreeSet::new();
    for (binary, needed) in [
        (ONBOARD, MIRROR_SETTINGS),
        (RECONCILE, MIRROR_SETTINGS),
        (SIZE_FLEET, FLEET_SETTINGS),
    ] {
        let id = function_for(t, binary)?;
        let env = t.function_environment(&id);
        set_anywhere.extend(env.keys().cloned());
        for var in needed {
            match env.get(*var) {
                None => return err(format!("{binary}: {var} is not set")),
                Some(Value::String(v)) if v.trim().is_empty() => {
                    return err(format!("{binary}: {var} is set to an empty string"));
                }
                Some(_) => {}
            }
        }
        let wired_to = |var: &str, ty: &str| -> CheckResult {
            let Some(v) = env.get(var) else {
                return Ok(());
            };
            match Template::ref_target(v).and_then(|target| t.resource_type(target)) {
                Some(actual) if actual == ty => Ok(()),
                _ => err(format!("{binary}: {var} must Ref the stack's {ty}, is {v}")),
            }
        };
        wired_to("MIRROR_TARGET_ID", "AWS::EC2::TrafficMirrorTarget")?;
        wired_to("MIRROR_FILTER_ID", "AWS::EC2::TrafficMirrorFilter")?;
        if env.get("FLEET_ASG_NAME").and_then(Template::ref_target) != Some(asg.as_str()) {
            return err(format!(
                "{binary}: FLEET_ASG_NAME must Ref {asg}, the group in the UDP/4789 target group"
            ));
        }
        for (var, prop) in [("FLEET_MIN", "MinSize"), ("FLEET_MAX", "MaxSize")] {
            if let Some(v) = env.get(var)
                && t.prop(&asg, prop) != Some(v)
            {
                return err(format!("{binary}: {var} ({v}) differs from {asg}.{prop}"));
            }
        }
        if let Some(owner) = env.get("MIRROR_OWNER") {
            let mut used = 0;
            for (res, stmt) in t.iam_statements() {
                for key in [
                    format!("aws:ResourceTag/{OWNER_TAG}"),
                    format!("aws:RequestTag/{OWNER_TAG}"),
                ] {
                    if let Some(v) = condition(&stmt, "StringEquals", &key) {
                        used += 1;
                        if &v != owner {
                            return err(format!(
                                "{binary}: MIRROR_OWNER ({owner}) differs from {key} ({v}) in {res}"
                            ));
                        }
                    }
                }
            }
            if used == 0 {
                return err("no IAM condition restricts sessions to the MIRROR_OWNER tag");
            }
        }
    }
    for var in settings_read_by_the_functions() {
        if !set_anywhere.contains(&var) {
            return err(format!(
                "the control plane reads {var} but no function sets it"
            ));
        }
    }
    Ok(())
}

fn check_udp_listener(t: &Template) -> CheckResult {
    let (listener, nlb, tg) = mirror_listener(t)?;
    if t.resource_type(&nlb) != Some("AWS::ElasticLoadBalancingV2::LoadBalancer")
        || s(t.prop(&nlb, "Type")) != "network"
    {
        return err(format!("{listener}: {nlb} must be a network load balancer"));
    }
    if s(t.prop(&nlb, "Scheme")) != "internal" {
        return err(format!("{nlb} must be internal"));
    }
    let cross_zone = t
        .prop(&nlb, "LoadBalancerAttributes")
        .map(one_or_many)
        .unwrap_or_default()
        .iter()
        .any(|a| {
            s(a.get("Key")) == "load_balancing.cross_zone.enabled" && s(a.get("Value")) == "true"
        });
    if !cross_zone {
        return err(format!("{nlb}: cross-zone load balancing must be on"));
    }
    if s(t.prop(&tg, "Protocol")) != "UDP" || num(t.prop(&tg, "Port")) != Some(4789) {
        return err(format!("{tg} must be a UDP/4789 target group"));
    }
    fleet_group(t)?;
    Ok(())
}

fn check_health_check(t: &Template) -> CheckResult {
    let (_, _, tg) = mirror_listener(t)?;
    if s(t.prop(&tg, "HealthCheckProtocol")) != "HTTP" {
        return err(format!("{tg}: the health check must be HTTP"));
    }
    if s(t.prop(&tg, "HealthCheckPath")) != "/healthz" {
        return err(format!("{tg}: the health check path must be /healthz"));
    }
    let port = num(t.prop(&tg, "HealthCheckPort"))
        .ok_or_else(|| format!("{tg}: HealthCheckPort must be the rebuilder's admin port"))?;
    let lt = fleet_launch_template(t)?;
    let ud = user_data(t, &lt)?;
    if !ud.contains(&format!("--admin 0.0.0.0:{port}")) {
        return err(format!(
            "{lt}: the rebuilder's --admin port is not {port}, the health check port"
        ));
    }
    if !ud.contains("--listen 0.0.0.0:4789") {
        return err(format!("{lt}: the rebuilder must --listen 0.0.0.0:4789"));
    }
    // The rebuilders' security group lets both in, and nothing else (no SSH).
    let sgs = t
        .prop(&lt, "LaunchTemplateData/SecurityGroupIds")
        .map(one_or_many)
        .unwrap_or_default();
    let [sg] = sgs.as_slice() else {
        return err(format!("{lt}: expected one security group"));
    };
    let sg = points_at(sg).ok_or("the rebuilder security group is not in the stack")?;
    let mut open = BTreeSet::new();
    for rule in t
        .prop(sg, "SecurityGroupIngress")
        .map(one_or_many)
        .unwrap_or_default()
    {
        let (from, to) = (num(rule.get("FromPort")), num(rule.get("ToPort")));
        if from != to {
            return err(format!("{sg}: ingress must be single ports, found {rule}"));
        }
        open.insert((s(rule.get("IpProtocol")).to_owned(), from.unwrap_or(-1)));
    }
    let want = BTreeSet::from([("udp".to_owned(), 4789), ("tcp".to_owned(), port)]);
    if open != want {
        return err(format!(
            "{sg}: ingress must be exactly {want:?}, is {open:?}"
        ));
    }
    Ok(())
}

fn check_mirror_target(t: &Template) -> CheckResult {
    let (_, nlb, _) = mirror_listener(t)?;
    let target = the_only(t, "AWS::EC2::TrafficMirrorTarget")?;
    if t.prop(&target, "NetworkLoadBalancerArn")
        .and_then(Template::ref_target)
        != Some(nlb.as_str())
    {
        return err(format!(
            "{target} must point at {nlb}, the NLB with the UDP/4789 listener"
        ));
    }
    Ok(())
}

fn check_filter_rules(t: &Template) -> CheckResult {
    let filter = the_only(t, "AWS::EC2::TrafficMirrorFilter")?;
    if t.prop(&filter, "NetworkServices").is_some() {
        return err(format!("{filter}: no network services (DNS) are mirrored"));
    }
    let rules: Vec<(&str, &Value)> = t.of_type("AWS::EC2::TrafficMirrorFilterRule").collect();
    if rules.is_empty() {
        return err("a filter without rules mirrors nothing");
    }
    let mut directions = BTreeSet::new();
    let mut numbers = BTreeMap::new();
    for (id, r) in &rules {
        let p = &r["Properties"];
        if p.get("TrafficMirrorFilterId")
            .and_then(Template::ref_target)
            != Some(filter.as_str())
        {
            return err(format!("{id} is not a rule of {filter}"));
        }
        if s(p.get("RuleAction")) != "accept" {
            return err(format!(
                "{id}: only accept rules (anything not accepted is not mirrored)"
            ));
        }
        if num(p.get("Protocol")) != Some(6) {
            return err(format!("{id}: only TCP (protocol 6) is mirrored"));
        }
        if p.pointer("/DestinationPortRange/FromPort").is_none()
            || p.pointer("/DestinationPortRange/ToPort").is_none()
        {
            return err(format!("{id}: a rule must name destination ports"));
        }
        directions.insert(
            p.get("TrafficDirection")
                .cloned()
                .unwrap_or(Value::Null)
                .to_string(),
        );
        let n = num(p.get("RuleNumber")).ok_or_else(|| format!("{id}: RuleNumber"))?;
        if let Some(other) = numbers.insert(n, *id) {
            return err(format!("{id} and {other} share rule number {n}"));
        }
    }
    if directions.len() != 1 {
        return err(format!(
            "all rules must use the one chosen direction, found {directions:?}"
        ));
    }
    if rules.len() > 10 {
        return err("a filter holds at most 10 rules per direction");
    }
    Ok(())
}

fn check_event_patterns(t: &Template) -> CheckResult {
    let onboard = function_for(t, ONBOARD)?;
    let patterns = patterns_for(t, &onboard);
    let wanted = [
        json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
               "detail": {"instance-id": "i-0123456789abcdef0", "state": "running"}}),
        json!({"source": "aws.ec2", "detail-type": "AWS API Call via CloudTrail",
               "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "CreateNetworkInterface"}}),
        json!({"source": "aws.ec2", "detail-type": "AWS API Call via CloudTrail",
               "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "AttachNetworkInterface"}}),
        json!({"source": "aws.tag", "detail-type": "Tag Change on Resource",
               "detail": {"service": "ec2", "resource-type": "instance"}}),
        json!({"source": "aws.tag", "detail-type": "Tag Change on Resource",
               "detail": {"service": "ec2", "resource-type": "network-interface"}}),
    ];
    let unwanted = [
        json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
               "detail": {"state": "stopped"}}),
        json!({"source": "aws.ec2", "detail-type": "AWS API Call via CloudTrail",
               "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances"}}),
        json!({"source": "aws.tag", "detail-type": "Tag Change on Resource",
               "detail": {"service": "s3", "resource-type": "bucket"}}),
        json!({"source": "aws.ec2", "detail-type": "AWS API Call via CloudTrail",
               "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "CreateNetworkInterface",
                          "errorCode": "Client.UnauthorizedOperation"}}),
    ];
    let mut samples: Vec<(String, Value)> =
        wanted.iter().map(|e| (format!("{e}"), e.clone())).collect();
    // The repository's sample events (used by the function tests) must reach the function too.
    let dir = repo_root().join("events");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let ev: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            if s(ev.get("detail-type")) != "Scheduled Event" {
                samples.push((path.display().to_string(), ev));
            }
        }
    }
    for (name, ev) in &samples {
        if !patterns.iter().any(|p| pattern_matches(p, ev)) {
            return err(format!(
                "no EventBridge pattern of {onboard} matches {name}"
            ));
        }
    }
    for ev in &unwanted {
        if patterns.iter().any(|p| pattern_matches(p, ev)) {
            return err(format!("{onboard} is invoked for an unrelated event {ev}"));
        }
    }
    for binary in [RECONCILE, SIZE_FLEET] {
        let id = function_for(t, binary)?;
        if !has_schedule(t, &id) {
            return err(format!("{binary} has no schedule"));
        }
    }
    Ok(())
}

fn check_no_mutation_on_any_resource(t: &Template) -> CheckResult {
    // Roles SAM would generate (and their managed policies) are invisible here: require
    // every function to use a role defined in the template.
    for (id, _) in functions(t) {
        let role = t.function_prop(&id, "Role").and_then(points_at);
        if role.and_then(|r| t.resource_type(r)) != Some("AWS::IAM::Role") {
            return err(format!("{id} must use an AWS::IAM::Role of the template"));
        }
    }
    let statements = t.iam_statements();
    if statements.is_empty() {
        return err("no IAM statements found");
    }
    for (owner, stmt) in statements {
        if s(stmt.get("Effect")) != "Allow" {
            continue;
        }
        if stmt.get("NotAction").is_some() || stmt.get("NotResource").is_some() {
            return err(format!("{owner}: NotAction/NotResource in {stmt}"));
        }
        let acts = actions(&stmt);
        if acts.is_empty() {
            return err(format!("{owner}: no readable Action in {stmt}"));
        }
        if let Some(a) = acts.iter().find(|a| a.contains('*')) {
            return err(format!("{owner}: wildcard action {a}"));
        }
        if resources(&stmt).iter().any(|r| r == "*")
            && let Some(a) = acts.iter().find(|a| !is_read_only(a))
        {
            return err(format!("{owner}: {a} is allowed on every resource (*)"));
        }
    }
    Ok(())
}

fn check_session_permissions(t: &Template) -> CheckResult {
    let target = the_only(t, "AWS::EC2::TrafficMirrorTarget")?;
    let filter = the_only(t, "AWS::EC2::TrafficMirrorFilter")?;
    let asg = fleet_group(t)?;
    let owner_request = format!("aws:RequestTag/{OWNER_TAG}");
    let owner_resource = format!("aws:ResourceTag/{OWNER_TAG}");
    let statements = t.iam_statements();
    let target_arn = format!(":traffic-mirror-target/${{{target}}}");
    let filter_arn = format!(":traffic-mirror-filter/${{{filter}}}");

    let mut create_resources = Vec::new();
    for (owner, stmt) in &statements {
        let res = resources(stmt);
        let on_sessions = res.iter().any(|r| r.contains(":traffic-mirror-session/"));
        if allows(stmt, "ec2:CreateTrafficMirrorSession") {
            create_resources.extend(res.iter().cloned());
            if on_sessions && condition(stmt, "StringEquals", &owner_request).is_none() {
                return err(format!(
                    "{owner}: creating sessions must require the {OWNER_TAG} tag"
                ));
            }
        }
        for action in [
            "ec2:DeleteTrafficMirrorSession",
            "ec2:ModifyTrafficMirrorSession",
        ] {
            if allows(stmt, action)
                && on_sessions
                && condition(stmt, "StringEquals", &owner_resource).is_none()
            {
                return err(format!(
                    "{owner}: {action} must be limited to sessions tagged {OWNER_TAG}"
                ));
            }
        }
        if allows(stmt, "ec2:ModifyTrafficMirrorSession") {
            for r in &res {
                if (r.contains(":traffic-mirror-target/") && !r.ends_with(&target_arn))
                    || (r.contains(":traffic-mirror-filter/") && !r.ends_with(&filter_arn))
                {
                    return err(format!(
                        "{owner}: sessions may only be pointed at the stack's target and filter, not {r}"
                    ));
                }
            }
        }
        if allows(stmt, "ec2:CreateTags") {
            if res.iter().any(|r| !r.contains(":traffic-mirror-session/")) {
                return err(format!(
                    "{owner}: CreateTags only on traffic-mirror-session"
                ));
            }
            if condition(stmt, "StringEquals", "ec2:CreateAction")
                != Some(json!("CreateTrafficMirrorSession"))
            {
                return err(format!(
                    "{owner}: CreateTags only when creating a session (ec2:CreateAction)"
                ));
            }
        }
        for action in [
            "autoscaling:SetDesiredCapacity",
            "autoscaling:CreateOrUpdateTags",
        ] {
            if allows(stmt, action)
                && res
                    .iter()
                    .any(|r| !r.contains(&format!(":autoScalingGroupName/${{{asg}}}")))
            {
                return err(format!("{owner}: {action} only on the fleet group {asg}"));
            }
        }
    }
    for (kind, want) in [
        ("session", ":traffic-mirror-session/".to_owned()),
        ("network interface", ":network-interface/".to_owned()),
        ("target", target_arn.clone()),
        ("filter", filter_arn.clone()),
    ] {
        if !create_resources.iter().any(|r| r.contains(&want)) {
            return err(format!(
                "CreateTrafficMirrorSession needs the {kind} resource ({want}); allowed: {create_resources:?}"
            ));
        }
    }
    for r in &create_resources {
        if (r.contains(":traffic-mirror-target/") && !r.ends_with(&target_arn))
            || (r.contains(":traffic-mirror-filter/") && !r.ends_with(&filter_arn))
        {
            return err(format!(
                "CreateTrafficMirrorSession only to the stack's target and filter, not {r}"
            ));
        }
    }
    Ok(())
}

fn check_launch_template(t: &Template) -> CheckResult {
    let lt = fleet_launch_template(t)?;
    let data = t
        .prop(&lt, "LaunchTemplateData")
        .ok_or("launch template data")?;
    if s(data.pointer("/MetadataOptions/HttpTokens")) != "required" {
        return err(format!("{lt}: IMDSv2 must be required"));
    }
    let volumes = data
        .get("BlockDeviceMappings")
        .map(one_or_many)
        .unwrap_or_default();
    if volumes.is_empty()
        || volumes
            .iter()
            .any(|v| v.pointer("/Ebs/Encrypted") != Some(&json!(true)))
    {
        return err(format!("{lt}: every volume must be encrypted"));
    }
    let ud = user_data(t, &lt)?;
    for needle in [
        "${RebuilderArtifactUri}",
        "install.sh",
        "--upstream ",
        "rebuilder.service",
    ] {
        if !ud.contains(needle) {
            return err(format!("{lt}: the user data does not contain {needle:?}"));
        }
    }
    // The fleet's own interfaces must never be mirrored: tagged with the exclude tag the
    // functions read.
    let onboard = function_for(t, ONBOARD)?;
    let exclude = t
        .function_environment(&onboard)
        .get("MIRROR_EXCLUDE_TAG")
        .cloned()
        .ok_or("MIRROR_EXCLUDE_TAG")?;
    let eni_tagged = data
        .get("TagSpecifications")
        .map(one_or_many)
        .unwrap_or_default()
        .iter()
        .any(|spec| {
            s(spec.get("ResourceType")) == "network-interface"
                && spec
                    .get("Tags")
                    .map(one_or_many)
                    .unwrap_or_default()
                    .iter()
                    .any(|tag| tag.get("Key") == Some(&exclude))
        });
    if !eni_tagged {
        return err(format!(
            "{lt}: the rebuilders' ENIs must carry the exclude tag {exclude}"
        ));
    }
    Ok(())
}

fn check_analyzer(t: &Template) -> CheckResult {
    // Every analyzer resource is optional.
    for (id, r) in t.resources() {
        if id.starts_with("Analyzer") && r.get("Condition").is_none() {
            return err(format!("{id} must be under the analyzer condition"));
        }
    }
    let lt = "AnalyzerLaunchTemplate";
    let ud = user_data(t, lt)?;
    if ud.contains("{{resolve:") {
        return err(format!("{lt}: no dynamic references in user data"));
    }
    for needle in [
        "ssm get-parameter",
        "--with-decryption",
        "${AnalyzerNodeTokenParameter}",
    ] {
        if !ud.contains(needle) {
            return err(format!(
                "{lt}: the node token must be read from SSM at boot ({needle:?} missing)"
            ));
        }
    }
    let reads: Vec<String> = t
        .iam_statements()
        .into_iter()
        .filter(|(_, st)| allows(st, "ssm:GetParameter"))
        .flat_map(|(_, st)| resources(&st))
        .collect();
    if reads.is_empty()
        || reads
            .iter()
            .any(|r| !r.ends_with(":parameter${AnalyzerNodeTokenParameter}"))
    {
        return err(format!(
            "ssm:GetParameter only on the token parameter, is {reads:?}"
        ));
    }
    for (id, p) in t.section("Parameters") {
        if id.to_ascii_lowercase().contains("token")
            && !id.ends_with("TokenParameter")
            && !id.ends_with("TokenKmsKeyArn")
        {
            return err(format!(
                "parameter {id}: the token must not be a parameter ({p})"
            ));
        }
    }
    let listener = t
        .of_type("AWS::ElasticLoadBalancingV2::Listener")
        .find(|(_, r)| num(r.pointer("/Properties/Port")) == Some(8445))
        .map(|(id, _)| id.to_owned())
        .ok_or("no analyzer listener on 8445")?;
    let tg = t
        .prop(&listener, "DefaultActions")
        .map(one_or_many)
        .unwrap_or_default()
        .first()
        .and_then(|a| a.get("TargetGroupArn"))
        .and_then(Template::ref_target)
        .ok_or("the analyzer listener forwards nowhere")?
        .to_owned();
    if num(t.prop(&tg, "Port")) != Some(8445) || num(t.prop(&tg, "HealthCheckPort")) != Some(9445) {
        return err(format!("{tg}: traffic on 8445, health check on 9445"));
    }
    Ok(())
}

fn check_operations(t: &Template) -> CheckResult {
    let alarms: Vec<&Value> = t
        .of_type("AWS::CloudWatch::Alarm")
        .map(|(_, r)| &r["Properties"])
        .collect();
    let dims = |a: &Value| -> Vec<(String, Value)> {
        a.get("Dimensions")
            .map(one_or_many)
            .unwrap_or_default()
            .iter()
            .map(|d| {
                (
                    s(d.get("Name")).to_owned(),
                    d.get("Value").cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    };
    for (id, bin) in functions(t) {
        let lg = t
            .function_prop(&id, "LoggingConfig/LogGroup")
            .and_then(Template::ref_target)
            .ok_or_else(|| format!("{bin}: LoggingConfig.LogGroup must Ref a log group"))?;
        if t.resource_type(lg) != Some("AWS::Logs::LogGroup")
            || t.prop(lg, "RetentionInDays").is_none()
        {
            return err(format!("{bin}: {lg} must be a log group with a retention"));
        }
        let dlq = t.function_prop(&id, "DeadLetterQueue");
        let queue = dlq.and_then(|d| d.get("TargetArn")).and_then(points_at);
        if s(dlq.and_then(|d| d.get("Type"))) != "SQS"
            || queue.and_then(|q| t.resource_type(q)) != Some("AWS::SQS::Queue")
        {
            return err(format!(
                "{bin}: failed async invocations must go to an SQS queue"
            ));
        }
        let has_alarm = alarms.iter().any(|a| {
            s(a.get("MetricName")) == "Errors"
                && dims(a).contains(&("FunctionName".to_owned(), json!({"Ref": id})))
        });
        if !has_alarm {
            return err(format!("{bin}: no alarm on its Errors metric"));
        }
    }
    let (_, _, tg) = mirror_listener(t)?;
    let healthy = alarms.iter().any(|a| {
        s(a.get("MetricName")) == "HealthyHostCount"
            && dims(a).iter().any(|(n, v)| {
                n == "TargetGroup" && v == &json!({"Fn::GetAtt": [tg, "TargetGroupFullName"]})
            })
    });
    if !healthy {
        return err(format!("no alarm on {tg}'s HealthyHostCount"));
    }
    Ok(())
}

fn check_outputs(t: &Template) -> CheckResult {
    let (_, nlb, _) = mirror_listener(t)?;
    let mut want = vec![
        json!({"Ref": the_only(t, "AWS::EC2::TrafficMirrorTarget")?}),
        json!({"Ref": the_only(t, "AWS::EC2::TrafficMirrorFilter")?}),
        json!({"Fn::GetAtt": [nlb, "DNSName"]}),
        json!({"Ref": fleet_group(t)?}),
    ];
    want.extend(functions(t).into_iter().map(|(id, _)| json!({"Ref": id})));
    let values: Vec<&Value> = t
        .section("Outputs")
        .values()
        .filter_map(|o| o.get("Value"))
        .collect();
    for w in want {
        if !values.contains(&&w) {
            return err(format!("no output gives {w}"));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------ tests

#[test]
fn each_function_builds_a_binary_of_the_workspace() {
    passes(check_function_binaries);
}

#[test]
fn each_function_gets_every_setting_it_reads_wired_to_the_stack() {
    passes(check_function_settings);
}

#[test]
fn the_nlb_has_a_udp_4789_listener_forwarding_to_the_rebuilder_group() {
    passes(check_udp_listener);
}

#[test]
fn the_health_check_is_http_healthz_on_the_rebuilder_admin_port() {
    passes(check_health_check);
}

#[test]
fn the_mirror_target_is_the_nlb() {
    passes(check_mirror_target);
}

#[test]
fn the_filter_accepts_only_tcp_to_chosen_ports_in_one_direction() {
    passes(check_filter_rules);
}

#[test]
fn eventbridge_routes_instance_running_cloudtrail_eni_calls_and_tag_changes_to_onboard_eni() {
    passes(check_event_patterns);
}

#[test]
fn no_iam_statement_allows_a_mutating_action_on_every_resource() {
    passes(check_no_mutation_on_any_resource);
}

#[test]
fn session_and_fleet_permissions_are_scoped_to_what_the_stack_owns() {
    passes(check_session_permissions);
}

#[test]
fn rebuilders_boot_with_imdsv2_encrypted_volumes_and_excluded_enis() {
    passes(check_launch_template);
}

#[test]
fn the_optional_analyzer_reads_its_token_from_ssm_at_boot() {
    passes(check_analyzer);
}

#[test]
fn every_function_has_a_log_group_a_dead_letter_queue_and_an_error_alarm() {
    passes(check_operations);
}

#[test]
fn outputs_give_the_target_filter_nlb_group_and_function_names() {
    passes(check_outputs);
}

/// Sets `value` at a JSON pointer of the template (which must exist).
fn set(t: &mut Template, pointer: &str, value: Value) {
    *t.root
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("mutation target {pointer} not in template.yaml")) = value;
}

fn remove(t: &mut Template, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let removed = t
        .root
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove(key));
    assert!(
        removed.is_some(),
        "mutation target {pointer} not in template.yaml"
    );
}

/// Pointer to the statement with `sid` in the first policy document of `resource`.
fn statement(t: &Template, resource: &str, sid: &str) -> String {
    let props = &t.resource(resource).expect(resource)["Properties"];
    let (base, doc) = match props.get("PolicyDocument") {
        Some(doc) => ("PolicyDocument".to_owned(), doc),
        None => (
            "Policies/0/PolicyDocument".to_owned(),
            &props["Policies"][0]["PolicyDocument"],
        ),
    };
    let idx = doc["Statement"]
        .as_array()
        .and_then(|a| a.iter().position(|st| s(st.get("Sid")) == sid))
        .unwrap_or_else(|| panic!("{resource} has no statement {sid}"));
    format!("/Resources/{resource}/Properties/{base}/Statement/{idx}")
}

#[test]
fn each_check_rejects_a_template_broken_for_it() {
    type Mutation = Box<dyn Fn(&mut Template)>;
    type Check = fn(&Template) -> CheckResult;
    let env = "/Globals/Function/Environment/Variables";
    let cases: Vec<(&str, Check, Mutation)> = vec![
        (
            "a binary name that no workspace package builds",
            check_function_binaries,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/OnboardEniFunction/Metadata/BuildProperties/Binary",
                    json!("onboard-enis"),
                )
            }),
        ),
        (
            "arm64 functions",
            check_function_binaries,
            Box::new(|t| set(t, "/Globals/Function/Architectures", json!(["arm64"]))),
        ),
        (
            "a missing FLEET_SCALE_IN_AFTER",
            check_function_settings,
            Box::new(move |t| remove(t, &format!("{env}/FLEET_SCALE_IN_AFTER"))),
        ),
        (
            "MIRROR_TARGET_ID pointing at the filter",
            check_function_settings,
            Box::new(move |t| {
                set(
                    t,
                    &format!("{env}/MIRROR_TARGET_ID"),
                    json!({"Ref": "TrafficMirrorFilter"}),
                )
            }),
        ),
        (
            "MIRROR_OWNER differing from the IAM owner condition",
            check_function_settings,
            Box::new(move |t| set(t, &format!("{env}/MIRROR_OWNER"), json!("someone-else"))),
        ),
        (
            "FLEET_MAX not the group's MaxSize",
            check_function_settings,
            Box::new(move |t| set(t, &format!("{env}/FLEET_MAX"), json!("10"))),
        ),
        (
            "a TCP listener",
            check_udp_listener,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/MirrorListener/Properties/Protocol",
                    json!("TCP"),
                )
            }),
        ),
        (
            "cross-zone off",
            check_udp_listener,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/MirrorLoadBalancer/Properties/LoadBalancerAttributes/0/Value",
                    json!("false"),
                )
            }),
        ),
        (
            "a health check on /",
            check_health_check,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/RebuilderTargetGroup/Properties/HealthCheckPath",
                    json!("/"),
                )
            }),
        ),
        (
            "a health check on another port than --admin",
            check_health_check,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/RebuilderTargetGroup/Properties/HealthCheckPort",
                    json!("9446"),
                )
            }),
        ),
        (
            "SSH open on the rebuilders",
            check_health_check,
            Box::new(|t| {
                let rules = t
                    .root
                    .pointer_mut(
                        "/Resources/RebuilderSecurityGroup/Properties/SecurityGroupIngress",
                    )
                    .unwrap();
                rules.as_array_mut().unwrap().push(json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "10.0.0.0/8"}));
            }),
        ),
        (
            "a mirror target that is not the NLB",
            check_mirror_target,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/TrafficMirrorTarget/Properties/NetworkLoadBalancerArn",
                    json!({"Ref": "AnalyzerLoadBalancer"}),
                )
            }),
        ),
        (
            "a UDP filter rule",
            check_filter_rules,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/FilterRulePorts2/Properties/Protocol",
                    json!(17),
                )
            }),
        ),
        (
            "rules in two directions",
            check_filter_rules,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/FilterRulePorts3/Properties/TrafficDirection",
                    json!("egress"),
                )
            }),
        ),
        (
            "no AttachNetworkInterface in the CloudTrail pattern",
            check_event_patterns,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/OnboardEniFunction/Properties/Events/EniCreatedOrAttached/Properties/Pattern/detail/eventName",
                    json!(["CreateNetworkInterface"]),
                )
            }),
        ),
        (
            "a pattern matching every EC2 event",
            check_event_patterns,
            Box::new(|t| {
                remove(
                    t,
                    "/Resources/OnboardEniFunction/Properties/Events/InstanceRunning/Properties/Pattern/detail",
                )
            }),
        ),
        (
            "failed CloudTrail calls invoking onboard-eni",
            check_event_patterns,
            Box::new(|t| {
                remove(
                    t,
                    "/Resources/OnboardEniFunction/Properties/Events/EniCreatedOrAttached/Properties/Pattern/detail/errorCode",
                )
            }),
        ),
        (
            "no reconcile schedule",
            check_event_patterns,
            Box::new(|t| {
                remove(
                    t,
                    "/Resources/ReconcileMirrorsFunction/Properties/Events/Schedule",
                )
            }),
        ),
        (
            "session deletion on *",
            check_no_mutation_on_any_resource,
            Box::new(|t| {
                let p = statement(t, "MirrorSessionsPolicy", "ChangeOnlyOwnedSessions");
                set(t, &format!("{p}/Resource"), json!("*"));
            }),
        ),
        (
            "a function with a role SAM would generate",
            check_no_mutation_on_any_resource,
            Box::new(|t| remove(t, "/Resources/SizeFleetFunction/Properties/Role")),
        ),
        (
            "deleting sessions without the owner condition",
            check_session_permissions,
            Box::new(|t| {
                let p = statement(t, "MirrorSessionsPolicy", "ChangeOnlyOwnedSessions");
                remove(t, &format!("{p}/Condition"));
            }),
        ),
        (
            "tagging without the CreateAction condition",
            check_session_permissions,
            Box::new(|t| {
                let p = statement(t, "MirrorSessionsPolicy", "TagSessionsOnlyAtCreation");
                remove(t, &format!("{p}/Condition"));
            }),
        ),
        (
            "no network-interface resource for CreateTrafficMirrorSession",
            check_session_permissions,
            Box::new(|t| {
                let p = statement(
                    t,
                    "MirrorSessionsPolicy",
                    "CreateSessionsOnAnyEniToOurTargetAndFilter",
                );
                let r = t.root.pointer_mut(&format!("{p}/Resource")).unwrap();
                r.as_array_mut().unwrap().remove(0);
            }),
        ),
        (
            "SetDesiredCapacity on every group",
            check_session_permissions,
            Box::new(|t| {
                let p = statement(t, "SizeFleetRole", "SizeOnlyTheRebuilderGroup");
                set(
                    t,
                    &format!("{p}/Resource"),
                    json!({"Fn::Sub": "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:autoScalingGroup:*:autoScalingGroupName/*"}),
                );
            }),
        ),
        (
            "IMDSv1 allowed",
            check_launch_template,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/RebuilderLaunchTemplate/Properties/LaunchTemplateData/MetadataOptions/HttpTokens",
                    json!("optional"),
                )
            }),
        ),
        (
            "rebuilder ENIs without the exclude tag",
            check_launch_template,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/RebuilderLaunchTemplate/Properties/LaunchTemplateData/TagSpecifications/1/ResourceType",
                    json!("spot-instances-request"),
                )
            }),
        ),
        (
            "the token readable from every parameter",
            check_analyzer,
            Box::new(|t| {
                let p = statement(t, "AnalyzerRole", "ReadOnlyTheTokenParameter");
                set(t, &format!("{p}/Resource"), json!("*"));
            }),
        ),
        (
            "an analyzer resource outside the condition",
            check_analyzer,
            Box::new(|t| remove(t, "/Resources/AnalyzerTargetGroup/Condition")),
        ),
        (
            "no error alarm for size-fleet",
            check_operations,
            Box::new(|t| remove(t, "/Resources/SizeFleetErrorsAlarm")),
        ),
        (
            "no healthy-host alarm",
            check_operations,
            Box::new(|t| remove(t, "/Resources/RebuilderHealthyHostsAlarm")),
        ),
        (
            "no mirror target output",
            check_outputs,
            Box::new(|t| remove(t, "/Outputs/MirrorTargetId")),
        ),
    ];
    let original = template();
    let mut survived = Vec::new();
    for (what, check, mutate) in &cases {
        let mut broken = original.clone();
        mutate(&mut broken);
        if check(&broken).is_ok() {
            survived.push(*what);
        }
    }
    assert!(
        survived.is_empty(),
        "checks passed on templates broken with: {survived:?}"
    );
}

// ------------------------------------------------------------------------- release tarball

/// A scratch directory removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("mirrorfleet-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("target/release")).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The 64-byte header of a static ELF64 executable for `machine` (0x3e x86-64, 0xb7 aarch64):
/// enough for the packaging checks, and independent of the glibc of the machine running them.
fn elf_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h[16] = 2; // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20] = 1; // EV_CURRENT
    h
}

/// Runs scripts/package-rebuilder.sh --no-build on a fake release binary; the tarball listing
/// (`tar -tvzf`) on success.
fn package(scratch: &Scratch, binary: &[u8]) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let bin = scratch.0.join("target/release/rebuilder");
    std::fs::write(&bin, binary).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let out_dir = scratch.0.join("dist");
    let run = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/package-rebuilder.sh"))
        .args(["--no-build", "--out"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", scratch.0.join("target"))
        .output()
        .map_err(|e| e.to_string())?;
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    let list = std::process::Command::new("tar")
        .arg("-tvzf")
        .arg(out_dir.join("rebuilder-x86_64-linux.tar.gz"))
        .output()
        .map_err(|e| e.to_string())?;
    assert!(list.status.success(), "tar -tvzf failed");
    Ok(String::from_utf8_lossy(&list.stdout).into_owned())
}

#[test]
fn the_release_tarball_holds_the_binary_and_every_deploy_file_at_top_level() {
    let scratch = Scratch::new("package");
    let listing = package(&scratch, &elf_header(0x3e)).unwrap_or_else(|e| panic!("{e}"));
    let mut entries: Vec<(String, String)> = listing
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[cols.len() - 1].to_owned(), cols[0].to_owned())
        })
        .collect();
    entries.sort();
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    // install.sh finds the unit, the agent configuration and the timer beside itself.
    let mut want: Vec<String> = std::fs::read_dir(repo_root().join("deploy"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    want.push("rebuilder".to_owned());
    want.sort();
    assert_eq!(names, want);
    for needed in ["install.sh", "rebuilder.service", "cloudwatch-agent.json"] {
        assert!(names.contains(&needed), "{needed} is not shipped");
    }
    for (name, mode) in &entries {
        let executable = mode.starts_with("-rwx");
        assert_eq!(
            executable,
            name == "rebuilder" || name.ends_with(".sh"),
            "{name} has mode {mode}"
        );
    }
    // The user data downloads and unpacks exactly this file name.
    let lt = fleet_launch_template(&template()).unwrap();
    assert!(
        user_data(&template(), &lt)
            .unwrap()
            .contains("rebuilder-x86_64-linux.tar.gz")
    );
}

#[test]
fn the_release_tarball_refuses_a_binary_that_is_not_x86_64() {
    let scratch = Scratch::new("package-arm");
    let err = package(&scratch, &elf_header(0xb7)).expect_err("an aarch64 binary was packaged");
    assert!(err.contains("not an x86_64 binary"), "{err}");
    let err = package(&scratch, b"#!/bin/sh\n").expect_err("a script was packaged");
    assert!(err.contains("not an ELF file"), "{err}");
}
