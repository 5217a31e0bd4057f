//! Wiring of `template.yaml`: what cfn-lint, `sam validate` and checkov cannot know.
//!
//! Each check is a function over the parsed template. The tests run every check on the real
//! template, and `each_check_rejects_a_template_broken_for_it` runs each one on a copy broken
//! on purpose, so none of them can pass vacuously.
//!
//! The template has two data paths (`MirrorTargetType`: nlb, gwlb) and optional layers behind
//! conditions, so checks run on renderings: the template as CloudFormation would deploy it with
//! given parameters (`Template::with_parameters`: conditions evaluated, `Fn::If` resolved).
//! `template()` is NLB mode with the analyzer, `gwlb_template()` the Gateway Load Balancer mode;
//! checks about parameters read the file as it is (`raw_template()`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mirror::permissions::actions_of;
use mirror::settings::{FUNCTION_VARS, all_vars, vars_of};
use serde_json::{Value, json};
use system_tests::cfn::{Template, one_or_many, strings, text};

type CheckResult = Result<(), String>;

const ONBOARD: &str = "onboard-eni";
const RECONCILE: &str = "reconcile-mirrors";
const SIZE_FLEET: &str = "size-fleet";
const TEARDOWN: &str = "teardown";

/// What the stack sets for the functions that is not one of their settings.
const NOT_SETTINGS: &[&str] = &[
    // The log filter of tracing's EnvFilter.
    "RUST_LOG",
];

const OWNER_TAG: &str = mirror::model::OWNER_TAG_KEY;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

fn raw_template() -> Template {
    let path = repo_root().join("template.yaml");
    Template::load(&path).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Values for the parameters a deployment must give, as a user would pass them, plus the
/// analyzer layer. `MirrorVni` is set so MIRROR_VNI is wired (`check_vni` covers it unset).
const DEPLOYMENT: &[(&str, &str)] = &[
    ("VpcId", "vpc-0123456789abcdef0"),
    ("VpcCidrs", "10.0.0.0/16,100.64.0.0/16"),
    (
        "SubnetIds",
        "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    ),
    (
        "RebuilderArtifactUri",
        "s3://my-bucket/mirrorfleet/rebuilder-x86_64-linux.tar.gz",
    ),
    (
        "RebuilderArtifactVersionId",
        "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
    ),
    (
        "RebuilderArtifactSha256",
        "9da9d7732a150722994f1532e1a7d0511b8af86d839761560f278d3e1e5d827a",
    ),
    ("S3PrefixListId", "pl-63a5400a"),
    ("DeployAnalyzer", "true"),
    ("AnalyzerImageId", "ami-0123456789abcdef0"),
    ("AnalyzerNodeTokenParameter", "/mirrorfleet/wallarm-token"),
    ("MirrorVni", "4242"),
    // Set so MIRROR_REQUESTER_MANAGED is wired and the session permission names two VPCs.
    ("RequesterManagedSources", "amazon-elb"),
    ("SourceVpcIds", "vpc-0fedcba9876543210"),
    // Set so MIRROR_PACKET_LENGTH is wired (unset, the functions leave the AWS default) and
    // every filter rule exists.
    ("PacketLength", "1500"),
    ("FilterPortRange3", "8443"),
];

/// The template rendered with `DEPLOYMENT` and `extra` (later values win).
fn rendered(raw: &Template, extra: &[(&str, &str)]) -> Result<Template, String> {
    let mut values: Vec<(&str, &str)> = DEPLOYMENT.to_vec();
    for (k, v) in extra {
        values.retain(|(name, _)| name != k);
        values.push((k, v));
    }
    raw.with_parameters(&values).map_err(|e| format!("{e:#}"))
}

/// NLB mode (the default), with the analyzer.
fn template() -> Template {
    rendered(&raw_template(), &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// Gateway Load Balancer mode, with the analyzer.
fn gwlb_template() -> Template {
    rendered(&raw_template(), &[("MirrorTargetType", "gwlb")]).unwrap_or_else(|e| panic!("{e}"))
}

fn passes(check: fn(&Template) -> CheckResult) {
    if let Err(e) = check(&template()) {
        panic!("template.yaml: {e}");
    }
}

/// The check holds in both mirror target modes.
fn passes_in_both_modes(check: fn(&Template) -> CheckResult) {
    for (mode, t) in [("nlb", template()), ("gwlb", gwlb_template())] {
        if let Err(e) = check(&t) {
            panic!("template.yaml ({mode} mode): {e}");
        }
    }
}

/// The check holds on the template file itself.
fn passes_raw(check: fn(&Template) -> CheckResult) {
    if let Err(e) = check(&raw_template()) {
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

/// Where `make build` puts the Lambda bundles: `dist/lambda/<binary>/bootstrap`.
const LAMBDA_DIST: &str = "dist/lambda/";

/// `(logical id, binary)` of every serverless function: the binary is the bundle its CodeUri
/// names (`dist/lambda/<binary>/`).
fn functions(t: &Template) -> Vec<(String, String)> {
    t.of_type("AWS::Serverless::Function")
        .map(|(id, r)| {
            let uri = s(r.pointer("/Properties/CodeUri"));
            let bin = uri
                .strip_prefix(LAMBDA_DIST)
                .map(|b| b.trim_end_matches('/'))
                .unwrap_or_default()
                .to_owned();
            (id.to_owned(), bin)
        })
        .collect()
}

/// The `LAMBDAS` list of the Makefile (what `make build` builds and copies).
fn makefile_lambdas() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("Makefile")).expect("Makefile");
    text.lines()
        .find_map(|l| l.strip_prefix("LAMBDAS := "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
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

/// How mirrored traffic reaches the rebuilders.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// VXLAN on UDP/4789 through an internal NLB.
    Nlb,
    /// GENEVE on UDP/6081 from a Gateway Load Balancer.
    Gwlb,
}

struct DataPath {
    mode: Mode,
    listener: String,
    load_balancer: String,
    target_group: String,
    /// The UDP port the rebuilders receive on.
    port: i64,
}

/// The one data path of a rendering: the NLB's UDP/4789 listener, or a Gateway Load Balancer's
/// listener forwarding to a GENEVE/6081 target group.
fn data_path(t: &Template) -> Result<DataPath, String> {
    let mut found = Vec::new();
    for (id, r) in t.of_type("AWS::ElasticLoadBalancingV2::Listener") {
        let p = &r["Properties"];
        let Some(lb) = p.get("LoadBalancerArn").and_then(Template::ref_target) else {
            continue;
        };
        let tg = p
            .get("DefaultActions")
            .map(one_or_many)
            .unwrap_or_default()
            .iter()
            .find(|a| s(a.get("Type")) == "forward")
            .and_then(|a| a.get("TargetGroupArn"))
            .and_then(Template::ref_target)
            .map(str::to_owned);
        let Some(tg) = tg else { continue };
        let mode = match (s(t.prop(lb, "Type")), s(t.prop(&tg, "Protocol"))) {
            ("network", "UDP") if num(p.get("Port")) == Some(4789) => Mode::Nlb,
            ("gateway", "GENEVE") => Mode::Gwlb,
            _ => continue,
        };
        let port = if mode == Mode::Nlb { 4789 } else { 6081 };
        found.push(DataPath {
            mode,
            listener: id.to_owned(),
            load_balancer: lb.to_owned(),
            target_group: tg,
            port,
        });
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => err(format!(
            "expected one data path (NLB UDP/4789 or GWLB GENEVE), found {n}"
        )),
    }
}

/// The rebuilder Auto Scaling group: registered in the data path's target group.
fn fleet_group(t: &Template) -> Result<String, String> {
    let tg = data_path(t)?.target_group;
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
    for want in [ONBOARD, RECONCILE, SIZE_FLEET, TEARDOWN] {
        function_for(t, want)?;
    }
    let bins = workspace_binaries();
    for (id, bin) in &fns {
        let r = t.resource(id).unwrap();
        // SAM must deploy what `make build` built, never build again (a second, per-function
        // build of the SDK, or a stale binary).
        if r.pointer("/Metadata/BuildMethod").is_some() {
            return err(format!("{id}: no BuildMethod (SAM must not build)"));
        }
        if !bins.contains(bin) {
            return err(format!(
                "{id}: CodeUri must be {LAMBDA_DIST}<binary>/ of a workspace binary ({bins:?})"
            ));
        }
        if s(t.function_prop(id, "Handler")) != "bootstrap" {
            return err(format!("{id}: Handler must be bootstrap"));
        }
        if s(t.function_prop(id, "Runtime")) != "provided.al2023" {
            return err(format!("{id}: Runtime must be provided.al2023"));
        }
        let arch = strings(t.function_prop(id, "Architectures"));
        if arch != ["x86_64"] {
            return err(format!("{id}: Architectures must be [x86_64], is {arch:?}"));
        }
    }
    let deployed: BTreeSet<String> = fns.into_iter().map(|(_, b)| b).collect();
    if deployed != makefile_lambdas() {
        return err(format!(
            "the Makefile's LAMBDAS {:?} must be the template's functions {deployed:?}",
            makefile_lambdas()
        ));
    }
    Ok(())
}

fn check_function_settings(t: &Template) -> CheckResult {
    let asg = fleet_group(t)?;
    let mut set_anywhere = BTreeSet::new();
    // What each function reads, as `mirror::settings` lists it (optional ones included: a
    // deployment must be able to set them).
    for (binary, _) in FUNCTION_VARS {
        let needed = vars_of(binary);
        let id = function_for(t, binary)?;
        let env = t.function_environment(&id);
        set_anywhere.extend(env.keys().cloned());
        for var in needed.iter().map(|v| v.name) {
            match env.get(var) {
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
    // And nothing else: a variable no function reads is a typo or a leftover.
    let read = all_vars();
    for var in &set_anywhere {
        if !read.contains(var.as_str()) && !NOT_SETTINGS.contains(&var.as_str()) {
            return err(format!("the stack sets {var}, which no function reads"));
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

/// Security group rules of `sg` in one direction (`Ingress` or `Egress`): inline, and the
/// separate `AWS::EC2::SecurityGroupIngress` / `Egress` resources naming the group.
fn sg_rules(t: &Template, sg: &str, direction: &str) -> Vec<Value> {
    let mut rules: Vec<Value> = t
        .prop(sg, &format!("SecurityGroup{direction}"))
        .map(one_or_many)
        .unwrap_or_default()
        .into_iter()
        .cloned()
        .collect();
    for (_, r) in t.of_type(&format!("AWS::EC2::SecurityGroup{direction}")) {
        let p = &r["Properties"];
        if p.get("GroupId").and_then(points_at) == Some(sg) {
            rules.push(p.clone());
        }
    }
    rules
}

/// A rule's peer, as text: `sg:<id>`, `pl:<prefix list>` or `cidr:<cidr>`.
fn peer(rule: &Value, direction: &str) -> String {
    let (sg_key, pl_key) = if direction == "Ingress" {
        ("SourceSecurityGroupId", "SourcePrefixListId")
    } else {
        ("DestinationSecurityGroupId", "DestinationPrefixListId")
    };
    if let Some(v) = rule.get(sg_key) {
        return format!("sg:{}", points_at(v).unwrap_or("?"));
    }
    if let Some(v) = rule.get(pl_key) {
        return format!("pl:{}", text(v).unwrap_or_default());
    }
    if let Some(v) = rule.get("CidrIp") {
        return format!("cidr:{}", text(v).unwrap_or_default());
    }
    format!("other:{rule}")
}

/// The rebuilders' one security group.
fn rebuilder_sg(t: &Template) -> Result<String, String> {
    let lt = fleet_launch_template(t)?;
    let sgs = t
        .prop(&lt, "LaunchTemplateData/SecurityGroupIds")
        .map(one_or_many)
        .unwrap_or_default();
    let [sg] = sgs.as_slice() else {
        return err(format!("{lt}: expected one security group"));
    };
    points_at(sg)
        .map(str::to_owned)
        .ok_or_else(|| "the rebuilder security group is not in the stack".to_owned())
}

/// `(protocol, port, peer)` of every ingress rule of the rebuilders, single ports only.
fn rebuilder_ingress(t: &Template) -> Result<BTreeSet<(String, i64, String)>, String> {
    let sg = rebuilder_sg(t)?;
    let mut open = BTreeSet::new();
    for rule in sg_rules(t, &sg, "Ingress") {
        let (from, to) = (num(rule.get("FromPort")), num(rule.get("ToPort")));
        if from != to {
            return err(format!("{sg}: ingress must be single ports, found {rule}"));
        }
        open.insert((
            s(rule.get("IpProtocol")).to_owned(),
            from.unwrap_or(-1),
            peer(&rule, "Ingress"),
        ));
    }
    Ok(open)
}

fn check_health_check(t: &Template) -> CheckResult {
    let path = data_path(t)?;
    let tg = &path.target_group;
    if s(t.prop(tg, "HealthCheckProtocol")) != "HTTP" {
        return err(format!("{tg}: the health check must be HTTP"));
    }
    if s(t.prop(tg, "HealthCheckPath")) != "/healthz" {
        return err(format!("{tg}: the health check path must be /healthz"));
    }
    let port = num(t.prop(tg, "HealthCheckPort"))
        .ok_or_else(|| format!("{tg}: HealthCheckPort must be the rebuilder's admin port"))?;
    let lt = fleet_launch_template(t)?;
    let ud = user_data(t, &lt)?;
    // The admin listener is bound to the instance's address (not 0.0.0.0).
    if !ud.contains(&format!("--admin \"$ip:{port}\"")) {
        return err(format!(
            "{lt}: the rebuilder's --admin is not the instance address on {port}, the health check port"
        ));
    }
    if !ud.contains("--listen 0.0.0.0:4789") {
        return err(format!("{lt}: the rebuilder must --listen 0.0.0.0:4789"));
    }
    let geneve = ud.contains("REBUILDER_GENEVE_LISTEN=0.0.0.0:6081");
    if geneve != (path.mode == Mode::Gwlb) {
        return err(format!(
            "{lt}: REBUILDER_GENEVE_LISTEN=0.0.0.0:6081 must be set in GWLB mode and only there"
        ));
    }
    // The rebuilders' security group lets the data port and the health port in, and nothing
    // else (no SSH).
    let ports: BTreeSet<(String, i64)> = rebuilder_ingress(t)?
        .into_iter()
        .map(|(proto, port, _)| (proto, port))
        .collect();
    let want = BTreeSet::from([("udp".to_owned(), path.port), ("tcp".to_owned(), port)]);
    if ports != want {
        return err(format!(
            "rebuilder ingress must be exactly {want:?}, is {ports:?}"
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
            // CloudFormation's requests go to the teardown, the schedule to reconcile; failed
            // CloudTrail calls are filtered out by the rule (and ignored by the function).
            let is_event = ev.get("detail-type").is_some();
            let failed = ev.pointer("/detail/errorCode").is_some();
            if failed && patterns.iter().any(|p| pattern_matches(p, &ev)) {
                return err(format!(
                    "{onboard} is invoked for the failed call {}",
                    path.display()
                ));
            }
            if is_event && !failed && s(ev.get("detail-type")) != "Scheduled Event" {
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
    let tg = data_path(t)?.target_group;
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
    let path = data_path(t)?;
    let mut want = vec![
        json!({"Ref": the_only(t, "AWS::EC2::TrafficMirrorTarget")?}),
        json!({"Ref": the_only(t, "AWS::EC2::TrafficMirrorFilter")?}),
        json!({"Ref": fleet_group(t)?}),
        json!({"Ref": path.target_group}),
    ];
    match path.mode {
        Mode::Nlb => want.push(json!({"Fn::GetAtt": [path.load_balancer, "DNSName"]})),
        Mode::Gwlb => {
            // What another VPC or account needs to add its own endpoint.
            let service = the_only(t, "AWS::EC2::VPCEndpointService")?;
            want.push(
                json!({"Fn::Sub": format!("com.amazonaws.vpce.${{AWS::Region}}.${{{service}}}")}),
            );
            want.push(json!({"Ref": the_only(t, "AWS::EC2::VPCEndpoint")?}));
        }
    }
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

// --------------------------------------------------- network, host, supply chain (the threat model)

/// `(protocol, from, to, peer)` of rules, for exact comparisons.
fn rule_set(rules: &[Value], direction: &str) -> BTreeSet<(String, i64, i64, String)> {
    rules
        .iter()
        .map(|r| {
            (
                s(r.get("IpProtocol")).to_owned(),
                num(r.get("FromPort")).unwrap_or(-1),
                num(r.get("ToPort")).unwrap_or(-1),
                peer(r, direction),
            )
        })
        .collect()
}

/// The managed prefix list built from `VpcCidrs` (the mirror sources), as a rule peer.
fn sources_peer(t: &Template) -> Result<String, String> {
    let ids: Vec<&str> = t
        .of_type("AWS::EC2::PrefixList")
        .filter(|(_, r)| {
            r.pointer("/Properties/Entries")
                .is_some_and(|e| e.to_string().contains("VpcCidrs"))
        })
        .map(|(id, _)| id)
        .collect();
    match ids.as_slice() {
        [one] => Ok(format!("pl:${{{one}}}")),
        other => err(format!(
            "expected one prefix list of VpcCidrs, found {other:?}"
        )),
    }
}

fn health_port(t: &Template) -> Result<i64, String> {
    let tg = data_path(t)?.target_group;
    num(t.prop(&tg, "HealthCheckPort")).ok_or_else(|| format!("{tg}: HealthCheckPort"))
}

fn check_nlb_security_groups(t: &Template) -> CheckResult {
    let path = data_path(t)?;
    if path.mode != Mode::Nlb {
        return err("not NLB mode");
    }
    let nlb = &path.load_balancer;
    let sgs = t
        .prop(nlb, "SecurityGroups")
        .map(one_or_many)
        .unwrap_or_default();
    let [nlb_sg] = sgs.as_slice() else {
        return err(format!(
            "{nlb} must have one security group (an NLB created without one can never get one)"
        ));
    };
    let nlb_sg = points_at(nlb_sg)
        .ok_or("the NLB's security group is not in the stack")?
        .to_owned();
    let rebuilders = rebuilder_sg(t)?;
    let sources = sources_peer(t)?;
    let health = health_port(t)?;
    let ingress = rule_set(&sg_rules(t, &nlb_sg, "Ingress"), "Ingress");
    let want = BTreeSet::from([("udp".to_owned(), 4789, 4789, sources.clone())]);
    if ingress != want {
        return err(format!(
            "{nlb_sg}: ingress must be VXLAN from the mirror sources only ({want:?}), is {ingress:?}"
        ));
    }
    let egress = rule_set(&sg_rules(t, &nlb_sg, "Egress"), "Egress");
    let to_rebuilders = format!("sg:{rebuilders}");
    let want = BTreeSet::from([
        ("udp".to_owned(), 4789, 4789, to_rebuilders.clone()),
        ("tcp".to_owned(), health, health, to_rebuilders),
    ]);
    if egress != want {
        return err(format!(
            "{nlb_sg}: egress must be VXLAN and health checks to the rebuilders ({want:?}), is {egress:?}"
        ));
    }
    // The rebuilders take VXLAN and health checks from the NLB's group only (documented to hold
    // with client IP preservation): no other host of the VPC reaches them.
    let ingress = rebuilder_ingress(t)?;
    let from_nlb = format!("sg:{nlb_sg}");
    let want = BTreeSet::from([
        ("udp".to_owned(), 4789, from_nlb.clone()),
        ("tcp".to_owned(), health, from_nlb),
    ]);
    if ingress != want {
        return err(format!(
            "rebuilder ingress must come from the NLB's security group only ({want:?}), is {ingress:?}"
        ));
    }
    Ok(())
}

/// The documented fallback (`AllowVxlanFromVpcCidrs=true`) adds VXLAN from the mirror sources
/// to the rebuilders, in NLB mode only, and nothing else.
fn check_vxlan_fallback(raw: &Template) -> CheckResult {
    let on = rendered(raw, &[("AllowVxlanFromVpcCidrs", "true")])?;
    let off = template_from(raw)?;
    let extra: BTreeSet<_> = rebuilder_ingress(&on)?
        .difference(&rebuilder_ingress(&off)?)
        .cloned()
        .collect();
    let want = BTreeSet::from([("udp".to_owned(), 4789, sources_peer(&on)?)]);
    if extra != want {
        return err(format!(
            "AllowVxlanFromVpcCidrs=true must add exactly {want:?}, adds {extra:?}"
        ));
    }
    let gwlb = rendered(
        raw,
        &[
            ("AllowVxlanFromVpcCidrs", "true"),
            ("MirrorTargetType", "gwlb"),
        ],
    )?;
    if rebuilder_ingress(&gwlb)?
        .iter()
        .any(|(_, port, _)| *port == 4789)
    {
        return err("in GWLB mode nothing may open UDP/4789");
    }
    Ok(())
}

/// NLB-mode rendering of a (possibly mutated) raw template.
fn template_from(raw: &Template) -> Result<Template, String> {
    rendered(raw, &[])
}

fn check_gwlb_path(t: &Template) -> CheckResult {
    let path = data_path(t)?;
    if path.mode != Mode::Gwlb {
        return err("not GWLB mode");
    }
    let (lb, tg, listener) = (&path.load_balancer, &path.target_group, &path.listener);
    if t.prop(listener, "Protocol").is_some() || t.prop(listener, "Port").is_some() {
        return err(format!(
            "{listener}: a Gateway Load Balancer listener has no protocol or port"
        ));
    }
    if num(t.prop(tg, "Port")) != Some(6081) {
        return err(format!("{tg}: GENEVE target groups use port 6081"));
    }
    let attrs: BTreeMap<String, String> = t
        .prop(tg, "TargetGroupAttributes")
        .map(one_or_many)
        .unwrap_or_default()
        .iter()
        .map(|a| (s(a.get("Key")).to_owned(), s(a.get("Value")).to_owned()))
        .collect();
    for key in [
        "target_failover.on_deregistration",
        "target_failover.on_unhealthy",
    ] {
        if attrs.get(key).map(String::as_str) != Some("rebalance") {
            return err(format!(
                "{tg}: {key} must be rebalance (mirrored UDP flows rarely idle out)"
            ));
        }
    }
    if t.of_type("AWS::ElasticLoadBalancingV2::LoadBalancer")
        .any(|(_, r)| s(r.pointer("/Properties/Type")) == "network")
    {
        return err("GWLB mode creates no Network Load Balancer");
    }
    let service = the_only(t, "AWS::EC2::VPCEndpointService")?;
    let lbs = t
        .prop(&service, "GatewayLoadBalancerArns")
        .map(one_or_many)
        .unwrap_or_default();
    if lbs.len() != 1 || Template::ref_target(lbs[0]) != Some(lb.as_str()) {
        return err(format!("{service} must serve {lb}"));
    }
    let perms = the_only(t, "AWS::EC2::VPCEndpointServicePermissions")?;
    let principals = t
        .prop(&perms, "AllowedPrincipals")
        .map(|v| v.to_string())
        .unwrap_or_default();
    if t.prop(&perms, "ServiceId").and_then(Template::ref_target) != Some(service.as_str())
        || !principals.contains(":root")
    {
        return err(format!("{perms} must allow this account on {service}"));
    }
    let endpoint = the_only(t, "AWS::EC2::VPCEndpoint")?;
    if s(t.prop(&endpoint, "VpcEndpointType")) != "GatewayLoadBalancer" {
        return err(format!("{endpoint} must be a GatewayLoadBalancer endpoint"));
    }
    let name = t
        .prop(&endpoint, "ServiceName")
        .and_then(text)
        .unwrap_or_default();
    if name != format!("com.amazonaws.vpce.${{AWS::Region}}.${{{service}}}") {
        return err(format!(
            "{endpoint}: ServiceName must name {service}, is {name}"
        ));
    }
    if t.prop(&endpoint, "VpcId").and_then(Template::ref_target) != Some("VpcId") {
        return err(format!("{endpoint} must be in the mirrored VPC"));
    }
    if t.prop(&endpoint, "SubnetIds")
        .map(one_or_many)
        .map(|v| v.len())
        != Some(1)
    {
        return err(format!(
            "{endpoint}: a Gateway Load Balancer endpoint has exactly one subnet"
        ));
    }
    let target = the_only(t, "AWS::EC2::TrafficMirrorTarget")?;
    if t.prop(&target, "GatewayLoadBalancerEndpointId")
        .and_then(Template::ref_target)
        != Some(endpoint.as_str())
        || t.prop(&target, "NetworkLoadBalancerArn").is_some()
        || t.prop(&target, "NetworkInterfaceId").is_some()
    {
        return err(format!("{target} must point at {endpoint} only"));
    }
    // GWLB has no security group: the rebuilders admit its nodes' addresses (the VPC's CIDRs),
    // GENEVE and health checks only.
    let sources = sources_peer(t)?;
    let health = health_port(t)?;
    let want = BTreeSet::from([
        ("udp".to_owned(), 6081, sources.clone()),
        ("tcp".to_owned(), health, sources),
    ]);
    let ingress = rebuilder_ingress(t)?;
    if ingress != want {
        return err(format!(
            "rebuilder ingress must be {want:?}, is {ingress:?}"
        ));
    }
    Ok(())
}

/// The `Sink` parameter: exactly the two sinks the rebuilder knows, the default one being
/// today's behaviour, and it reaches the rebuilders as REBUILDER_SINK.
fn check_sink(raw: &Template) -> CheckResult {
    let param = raw
        .section("Parameters")
        .get("Sink")
        .ok_or("no Sink parameter")?;
    if param.get("AllowedValues") != Some(&json!(["http-replay", "ndjson"])) {
        return err("Sink must allow exactly http-replay and ndjson");
    }
    if param.get("Default") != Some(&json!("http-replay")) {
        return err("Sink must default to http-replay");
    }
    for value in ["http-replay", "ndjson"] {
        let t = rendered(raw, &[("Sink", value)])?;
        let ud = user_data(&t, &fleet_launch_template(&t)?)?;
        if !ud.contains("--env 'REBUILDER_SINK=${Sink}'") {
            return err("the rebuilders must get REBUILDER_SINK from the Sink parameter");
        }
    }
    Ok(())
}

fn check_allow_from(t: &Template) -> CheckResult {
    let lt = fleet_launch_template(t)?;
    let ud = user_data(t, &lt)?;
    if !ud.contains("--env 'REBUILDER_ALLOW_FROM=${VpcCidrs}'") {
        return err(format!(
            "{lt}: the rebuilders must drop datagrams from outside VpcCidrs (REBUILDER_ALLOW_FROM)"
        ));
    }
    Ok(())
}

/// The AllowedPattern of a parameter, anchored as CloudFormation applies it (whole value).
fn allowed_pattern(t: &Template, param: &str) -> Result<regex_lite::Regex, String> {
    let p = s(t
        .section("Parameters")
        .get(param)
        .and_then(|p| p.get("AllowedPattern")));
    if p.is_empty() {
        return err(format!("parameter {param} has no AllowedPattern"));
    }
    regex_lite::Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("{param}: {e}"))
}

fn check_vni(raw: &Template) -> CheckResult {
    let param = raw
        .section("Parameters")
        .get("MirrorVni")
        .ok_or("no MirrorVni parameter")?;
    if param.get("Default") != Some(&json!("")) {
        return err("MirrorVni must default to empty (derived from the stack id)");
    }
    let re = allowed_pattern(raw, "MirrorVni")?;
    for ok in ["", "0", "4242", "9999999", "16777215"] {
        if !re.is_match(ok) {
            return err(format!("MirrorVni must accept {ok:?}"));
        }
    }
    for bad in ["16777216", "99999999", "-1", "1 2", "4242'"] {
        if re.is_match(bad) {
            return err(format!("MirrorVni must refuse {bad:?} (24 bits)"));
        }
    }
    for (value, env_vni, ud_vni) in [
        (
            "4242",
            Some(json!({"Ref": "MirrorVni"})),
            "--env REBUILDER_VNI_ALLOW=${MirrorVni}",
        ),
        ("", None, "--vni-seed ${AWS::StackId}"),
    ] {
        let t = rendered(raw, &[("MirrorVni", value)])?;
        for (_, binary) in functions(&t) {
            let id = function_for(&t, &binary)?;
            let env = t.function_environment(&id);
            if !matches!(binary.as_str(), ONBOARD | RECONCILE) {
                continue;
            }
            if env.get("MIRROR_VNI").cloned() != env_vni {
                return err(format!(
                    "{binary}: with MirrorVni={value:?} MIRROR_VNI must be {env_vni:?}, is {:?}",
                    env.get("MIRROR_VNI")
                ));
            }
            if env.get("MIRROR_VNI_SEED") != Some(&json!({"Ref": "AWS::StackId"})) {
                return err(format!("{binary}: MIRROR_VNI_SEED must be the stack id"));
            }
        }
        let ud = user_data(&t, &fleet_launch_template(&t)?)?;
        if !ud.contains(ud_vni) {
            return err(format!(
                "with MirrorVni={value:?} the rebuilders need {ud_vni:?}"
            ));
        }
        let other = if value.is_empty() {
            "REBUILDER_VNI_ALLOW"
        } else {
            "--vni-seed"
        };
        if ud.contains(other) {
            return err(format!(
                "with MirrorVni={value:?} the user data must not use {other}"
            ));
        }
    }
    Ok(())
}

/// IAM statements of one role: its inline policies and `AWS::IAM::RolePolicy` resources on it.
fn role_statements(t: &Template, role: &str) -> Vec<Value> {
    t.iam_statements()
        .into_iter()
        .filter(|(owner, _)| {
            owner == role || t.prop(owner, "RoleName").and_then(Template::ref_target) == Some(role)
        })
        .map(|(_, st)| st)
        .collect()
}

fn denies(stmt: &Value, action: &str) -> bool {
    s(stmt.get("Effect")) == "Deny" && actions(stmt).iter().any(|a| a == action)
}

fn check_rebuilder_role(t: &Template) -> CheckResult {
    let lt = fleet_launch_template(t)?;
    let profile = t
        .prop(&lt, "LaunchTemplateData/IamInstanceProfile/Arn")
        .and_then(points_at)
        .ok_or("the rebuilders' instance profile")?;
    let roles = t
        .prop(profile, "Roles")
        .map(one_or_many)
        .unwrap_or_default();
    let role = roles
        .first()
        .and_then(|r| Template::ref_target(r))
        .ok_or("the rebuilders' role")?;
    let managed = t
        .prop(role, "ManagedPolicyArns")
        .map(|v| v.to_string())
        .unwrap_or_default();
    if !managed.contains("AmazonSSMManagedInstanceCore") {
        return err(format!(
            "{role}: Session Manager needs AmazonSSMManagedInstanceCore"
        ));
    }
    let stmts = role_statements(t, role);
    if !stmts
        .iter()
        .any(|st| denies(st, "ssm:GetParameter*") && resources(st) == ["*"])
    {
        return err(format!(
            "{role}: an explicit Deny of ssm:GetParameter* on * must override the managed policy"
        ));
    }
    for st in &stmts {
        if s(st.get("Effect")) != "Allow" {
            continue;
        }
        for a in actions(st) {
            if a.starts_with("ssm:GetParameter")
                || a.starts_with("kms:")
                || a.starts_with("secretsmanager:")
            {
                return err(format!("{role}: allows {a}"));
            }
        }
    }
    Ok(())
}

fn check_token_key(t: &Template) -> CheckResult {
    let key = the_only(t, "AWS::KMS::Key")?;
    if t.prop(&key, "EnableKeyRotation") != Some(&json!(true)) {
        return err(format!("{key}: rotation on"));
    }
    let role = json!({"Fn::GetAtt": ["AnalyzerRole", "Arn"]});
    let principal_is_role = |st: &Value| {
        st.pointer("/Principal/AWS") == Some(&role)
            || condition(st, "ArnEquals", "aws:PrincipalArn") == Some(role.clone())
    };
    let statements: Vec<Value> = t
        .prop(&key, "KeyPolicy/Statement")
        .map(one_or_many)
        .unwrap_or_default()
        .into_iter()
        .cloned()
        .collect();
    let decrypts = |st: &Value| {
        actions(st)
            .iter()
            .any(|a| a == "kms:Decrypt" || a == "kms:*" || a == "*")
    };
    let mut granted = false;
    for st in &statements {
        if s(st.get("Effect")) == "Allow" && decrypts(st) {
            if !principal_is_role(st) || condition(st, "StringEquals", "kms:ViaService").is_none() {
                return err(format!(
                    "{key}: kms:Decrypt may only be allowed to the analyzer role through SSM: {st}"
                ));
            }
            granted = true;
        }
    }
    let denied_to_others = statements.iter().any(|st| {
        denies(st, "kms:Decrypt")
            && st.get("Principal") == Some(&json!("*"))
            && condition(st, "ArnNotEquals", "aws:PrincipalArn") == Some(role.clone())
    });
    if !granted || !denied_to_others {
        return err(format!(
            "{key}: the analyzer role decrypts, and an explicit Deny stops every other principal"
        ));
    }
    let stmts = role_statements(t, "AnalyzerRole");
    let key_arn = json!({"Fn::GetAtt": [key, "Arn"]});
    if !stmts
        .iter()
        .any(|st| denies(st, "kms:Decrypt") && st.get("NotResource") == Some(&key_arn))
    {
        return err("AnalyzerRole: decrypting with any other key (aws/ssm) must be denied");
    }
    // The token goes from SSM into the environment and into cloud-init.py's argument list
    // inside the interpreter: never onto a command line.
    let ud = user_data(t, "AnalyzerLaunchTemplate")?;
    if !ud.contains("WALLARM_NODE_TOKEN=$(aws ssm get-parameter")
        || !ud.contains("--with-decryption")
    {
        return err("the analyzer reads the token with aws ssm get-parameter --with-decryption");
    }
    if !ud.contains("os.environ.pop(\"WALLARM_NODE_TOKEN\")") {
        return err(
            "cloud-init.py must get the token from the environment, inside the interpreter",
        );
    }
    for expansion in [
        "$WALLARM_NODE_TOKEN",
        "${WALLARM_NODE_TOKEN}",
        "-t \"$",
        "-t $",
    ] {
        if ud.contains(expansion) {
            return err(format!(
                "the token is expanded onto a command line ({expansion})"
            ));
        }
    }
    Ok(())
}

fn check_supply_chain(t: &Template) -> CheckResult {
    for param in ["RebuilderArtifactSha256", "RebuilderArtifactVersionId"] {
        let p = t
            .section("Parameters")
            .get(param)
            .ok_or_else(|| format!("no parameter {param}"))?;
        if p.get("Default").is_some() {
            return err(format!("{param} must be required (no Default)"));
        }
    }
    let re = allowed_pattern(t, "RebuilderArtifactSha256")?;
    let hex = "9da9d7732a150722994f1532e1a7d0511b8af86d839761560f278d3e1e5d827a";
    if !re.is_match(hex)
        || re.is_match(&hex[1..])
        || re.is_match(&format!("{hex}0"))
        || re.is_match("")
    {
        return err("RebuilderArtifactSha256 must be exactly 64 hex digits");
    }
    let lt = fleet_launch_template(t)?;
    let ud = user_data(t, &lt)?;
    for needle in [
        "--version-id '${RebuilderArtifactVersionId}'",
        "--sha256 '${RebuilderArtifactSha256}'",
    ] {
        if !ud.contains(needle) {
            return err(format!("{lt}: the user data lacks {needle:?}"));
        }
    }
    // Verified before anything of the tarball is unpacked or run.
    let check = ud
        .find("sha256sum --check")
        .ok_or("the user data never checks the SHA-256")?;
    let unpack = ud
        .find("tar -x")
        .ok_or("the user data never unpacks the release")?;
    if check > unpack || !ud[check..unpack].contains("|| fail") {
        return err(
            "the SHA-256 must be checked, and a mismatch must stop, before the tarball is unpacked",
        );
    }
    let reads_version = t.iam_statements().into_iter().any(|(_, st)| {
        allows(&st, "s3:GetObjectVersion")
            && resources(&st)
                .iter()
                .any(|r| r.contains("rebuilder-x86_64-linux.tar.gz"))
    });
    if !reads_version {
        return err("the rebuilders' role needs s3:GetObjectVersion on the artifact");
    }
    Ok(())
}

/// A value each parameter reaching user data must accept (as a user would pass it).
const USER_DATA_SAMPLES: &[(&str, &str)] = &[
    (
        "UpstreamUrl",
        "http://internal-wallarm-123.us-east-1.elb.amazonaws.com:8445/",
    ),
    ("MirrorVni", "4242"),
    ("SourceMetricsTop", "120"),
    ("VpcCidrs", "10.0.0.0/16,100.64.0.0/16"),
    (
        "RebuilderArtifactUri",
        "s3://my-bucket/mirrorfleet/rebuilder-x86_64-linux.tar.gz",
    ),
    (
        "RebuilderArtifactVersionId",
        "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
    ),
    (
        "RebuilderArtifactSha256",
        "9da9d7732a150722994f1532e1a7d0511b8af86d839761560f278d3e1e5d827a",
    ),
    ("AnalyzerNodeTokenParameter", "/mirrorfleet/wallarm-token"),
];

/// Characters that would let a value leave its quotes or start another command.
const HOSTILE: &[char] = &[
    '\'', '"', '\n', '\\', '$', '`', ' ', ';', '&', '|', '<', '>', '(', ')',
];

/// `${Name}` references in a text.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        out.insert(after[..end].to_owned());
        rest = &after[end..];
    }
    out
}

fn check_user_data_parameters(raw: &Template) -> CheckResult {
    let params = raw.section("Parameters");
    let mut used = BTreeSet::new();
    for (id, _) in raw.of_type("AWS::EC2::LaunchTemplate") {
        let ud = user_data(raw, id)?;
        used.extend(
            references(&ud)
                .into_iter()
                .filter(|r| params.contains_key(r)),
        );
    }
    if used.len() < 5 {
        return err(format!("too few parameters found in user data: {used:?}"));
    }
    for name in &used {
        let p = &params[name];
        if let Some(values) = p.get("AllowedValues").and_then(Value::as_array) {
            for v in values {
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                if v.contains(HOSTILE) {
                    return err(format!("{name}: allowed value {v:?} has a shell character"));
                }
            }
            continue;
        }
        let re = allowed_pattern(raw, name)?;
        let sample = USER_DATA_SAMPLES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                format!("{name} reaches user data: add a sample value to USER_DATA_SAMPLES")
            })?;
        if !re.is_match(sample) {
            return err(format!(
                "{name}: the pattern refuses the valid value {sample:?}"
            ));
        }
        let mid = sample.len() / 2;
        for c in HOSTILE {
            for bad in [
                format!("{c}{sample}"),
                format!("{sample}{c}"),
                format!("{}{c}{}", &sample[..mid], &sample[mid..]),
            ] {
                if re.is_match(&bad) {
                    return err(format!("{name}: the pattern accepts {bad:?}"));
                }
            }
        }
    }
    Ok(())
}

fn check_bootstrap_waits_for_200(t: &Template) -> CheckResult {
    let lt = fleet_launch_template(t)?;
    let ud = user_data(t, &lt)?;
    if !ud.contains("\"$code\" = 200") || !ud.contains("/healthz") {
        return err(format!(
            "{lt}: the bootstrap must wait for /healthz to answer 200"
        ));
    }
    if ud.contains("503") {
        return err(format!("{lt}: a 503 is not up"));
    }
    Ok(())
}

/// `(port, peer)` of the rebuilders' egress; every rule is TCP on one port.
fn rebuilder_egress(t: &Template) -> Result<BTreeSet<(i64, String)>, String> {
    let sg = rebuilder_sg(t)?;
    let mut out = BTreeSet::new();
    for r in sg_rules(t, &sg, "Egress") {
        let (from, to) = (num(r.get("FromPort")), num(r.get("ToPort")));
        if s(r.get("IpProtocol")) != "tcp" || from != to || from.is_none() {
            return err(format!("{sg}: egress must be TCP to one port, found {r}"));
        }
        out.insert((from.unwrap_or(-1), peer(&r, "Egress")));
    }
    Ok(out)
}

fn check_egress(raw: &Template) -> CheckResult {
    let vpc = |t: &Template| sources_peer(t);
    // Default: AWS APIs through the VPC's endpoints, S3 through its gateway, the stack's analyzer.
    let t = template_from(raw)?;
    let want = BTreeSet::from([
        (443, vpc(&t)?),
        (443, "pl:${S3PrefixListId}".to_owned()),
        (8445, "sg:AnalyzerLoadBalancerSecurityGroup".to_owned()),
    ]);
    let got = rebuilder_egress(&t)?;
    if got != want {
        return err(format!("default egress must be {want:?}, is {got:?}"));
    }
    // An analyzer elsewhere: exactly its port, to UpstreamCidr (or the VPC); AWS APIs via NAT.
    let t = rendered(
        raw,
        &[
            ("DeployAnalyzer", "false"),
            (
                "UpstreamUrl",
                "https://analyzer.example.internal:9443/ingest",
            ),
            ("UpstreamCidr", "192.0.2.0/24"),
            ("AwsApiEgress", "https-anywhere"),
        ],
    )?;
    let want = BTreeSet::from([
        (443, "cidr:0.0.0.0/0".to_owned()),
        (9443, "cidr:${UpstreamCidr}".to_owned()),
    ]);
    let got = rebuilder_egress(&t)?;
    if got != want {
        return err(format!(
            "egress with an external analyzer must be {want:?}, is {got:?}"
        ));
    }
    let t = rendered(
        raw,
        &[
            ("DeployAnalyzer", "false"),
            ("UpstreamUrl", "http://10.0.1.10:8080"),
        ],
    )?;
    if !rebuilder_egress(&t)?.contains(&(8080, vpc(&t)?)) {
        return err("an analyzer without UpstreamCidr is reached inside VpcCidrs on its port");
    }
    Ok(())
}

// ---------------------------------------------------------------------- CloudWatch (metrics)

/// CloudWatch metrics the rebuilders' agent sends (deploy/cloudwatch-agent.json): name ->
/// dimension sets.
fn agent_metrics() -> BTreeMap<String, Vec<Vec<String>>> {
    let path = repo_root().join("deploy/cloudwatch-agent.json");
    let agent: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let decls = agent
        .pointer("/logs/metrics_collected/prometheus/emf_processor/metric_declaration")
        .and_then(Value::as_array)
        .expect("metric_declaration");
    for d in decls {
        let dims: Vec<Vec<String>> = d["dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| strings(Some(set)))
            .collect();
        for sel in strings(d.get("metric_selectors")) {
            let name = sel.trim_start_matches('^').trim_end_matches('$').to_owned();
            out.entry(name).or_default().extend(dims.iter().cloned());
        }
    }
    out
}

/// The value after `flag '` in a user data text, up to the closing quote.
fn quoted_arg<'a>(ud: &'a str, flag: &str) -> Option<&'a str> {
    let start = ud.find(&format!("{flag} '"))? + flag.len() + 2;
    let len = ud[start..].find('\'')?;
    Some(&ud[start..start + len])
}

fn check_cloudwatch(t: &Template) -> CheckResult {
    let lt = fleet_launch_template(t)?;
    let ud = user_data(t, &lt)?;
    if !ud
        .lines()
        .any(|l| l.contains("dnf install") && l.contains("amazon-cloudwatch-agent"))
    {
        return err(format!(
            "{lt}: the CloudWatch agent (amazon-cloudwatch-agent) is not installed"
        ));
    }
    let namespace = quoted_arg(&ud, "--metrics-namespace").ok_or("no --metrics-namespace")?;
    let asg = fleet_group(t)?;
    let group_name = t
        .prop(&asg, "AutoScalingGroupName")
        .and_then(text)
        .unwrap_or_default();
    if quoted_arg(&ud, "--asg-name") != Some(group_name.as_str()) || group_name.is_empty() {
        return err(format!(
            "the agent's AutoScalingGroupName label must be {asg}'s name ({group_name:?})"
        ));
    }
    for flag in ["--log-group", "--metrics-log-group"] {
        let arg = quoted_arg(&ud, flag).ok_or_else(|| format!("no {flag}"))?;
        let id = arg.trim_start_matches("${").trim_end_matches('}');
        if t.resource_type(id) != Some("AWS::Logs::LogGroup")
            || t.prop(id, "RetentionInDays").is_none()
        {
            return err(format!(
                "{flag} must be a log group of the stack with a retention"
            ));
        }
        let arn = format!("${{{id}.Arn}}");
        let writes = t
            .iam_statements()
            .into_iter()
            .any(|(_, st)| allows(&st, "logs:PutLogEvents") && resources(&st).contains(&arn));
        if !writes {
            return err(format!("the rebuilders may not write to {id}"));
        }
    }
    // size-fleet reads exactly what the agent writes.
    let size_fleet = function_for(t, SIZE_FLEET)?;
    let env = t.function_environment(&size_fleet);
    if env.get("FLEET_METRICS_NAMESPACE").and_then(text).as_deref() != Some(namespace) {
        return err(format!(
            "size-fleet's FLEET_METRICS_NAMESPACE must be the agent's namespace {namespace}"
        ));
    }
    let rate = env
        .get("FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE")
        .and_then(Template::ref_target)
        .ok_or("FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE must Ref a parameter")?;
    let p = t
        .section("Parameters")
        .get(rate)
        .ok_or("the rate parameter")?;
    if s(p.get("Type")) != "Number" || p.get("Default").is_none() {
        return err(format!("{rate} must be a Number with a default"));
    }
    let metrics = agent_metrics();
    for name in ["DatagramsReceived", "KernelDrops"] {
        if metrics.get(name) != Some(&vec![vec!["AutoScalingGroupName".to_owned()]]) {
            return err(format!(
                "the agent must send {name} with the dimension AutoScalingGroupName"
            ));
        }
    }
    let role = t
        .function_prop(&size_fleet, "Role")
        .and_then(points_at)
        .unwrap_or_default()
        .to_owned();
    if !role_statements(t, &role)
        .iter()
        .any(|st| allows(st, "cloudwatch:GetMetricData"))
    {
        return err("size-fleet may not read metrics (cloudwatch:GetMetricData)");
    }
    // Alarms on the fleet's metrics use the agent's names and dimensions.
    let group_dim = json!({"Ref": asg});
    let mut used = BTreeSet::new();
    for (id, r) in t.of_type("AWS::CloudWatch::Alarm") {
        let p = &r["Properties"];
        let mut stats: Vec<&Value> = vec![p];
        for m in p.get("Metrics").map(one_or_many).unwrap_or_default() {
            stats.extend(m.pointer("/MetricStat/Metric"));
        }
        for m in stats {
            if m.get("Namespace").and_then(text).as_deref() != Some(namespace) {
                continue;
            }
            let name = s(m.get("MetricName")).to_owned();
            let dims = m.get("Dimensions").map(one_or_many).unwrap_or_default();
            let names: Vec<String> = dims.iter().map(|d| s(d.get("Name")).to_owned()).collect();
            let declared = metrics
                .get(&name)
                .ok_or_else(|| format!("{id}: the agent sends no {name}"))?;
            if !declared.contains(&names) {
                return err(format!(
                    "{id}: {name} has dimensions {declared:?}, not {names:?}"
                ));
            }
            if !dims.iter().any(|d| d.get("Value") == Some(&group_dim)) {
                return err(format!("{id}: {name} must be read for {asg}"));
            }
            used.insert(name);
        }
    }
    for needed in ["KernelDrops", "UpstreamErrors", "UpstreamProbes"] {
        if !used.contains(needed) {
            return err(format!("no alarm on {needed}"));
        }
    }
    Ok(())
}

fn check_dashboard(t: &Template) -> CheckResult {
    let dash = the_only(t, "AWS::CloudWatch::Dashboard")?;
    let body = t
        .prop(&dash, "DashboardBody")
        .and_then(text)
        .ok_or("unreadable DashboardBody")?;
    // ${Name} placeholders become Name, which keeps the body JSON and the references readable.
    let mut plain = String::new();
    let mut rest = body.as_str();
    while let Some(start) = rest.find("${") {
        plain.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or("unclosed ${")?;
        plain.push_str(&rest[start + 2..start + end]);
        rest = &rest[start + end + 1..];
    }
    plain.push_str(rest);
    let body: Value =
        serde_json::from_str(&plain).map_err(|e| format!("{dash}: not JSON ({e})"))?;
    let size_fleet = function_for(t, SIZE_FLEET)?;
    let namespace = t
        .function_environment(&size_fleet)
        .get("FLEET_METRICS_NAMESPACE")
        .and_then(text)
        .ok_or("FLEET_METRICS_NAMESPACE")?
        .replace("${", "")
        .replace('}', "");
    let metrics = agent_metrics();
    let mut seen = BTreeSet::new();
    for w in body["widgets"].as_array().ok_or("no widgets")? {
        for line in w
            .pointer("/properties/metrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let items = line.as_array().ok_or("a metric line is not a list")?;
            if let Some(expr) = items
                .first()
                .and_then(|i| i.get("expression"))
                .and_then(Value::as_str)
            {
                // Metric math over other lines' ids (`latency / SUM(forwarded)`) names no metric.
                if !expr.contains("SEARCH(") {
                    continue;
                }
                // SEARCH('{"ns",Dim1,Dim2} MetricName="X" ...', 'Sum', 60)
                let schema = expr
                    .split('{')
                    .nth(1)
                    .and_then(|r| r.split('}').next())
                    .unwrap_or_default();
                let parts: Vec<&str> = schema.split(',').map(|p| p.trim_matches('"')).collect();
                let name = expr
                    .split("MetricName=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_default();
                if parts.first() != Some(&namespace.as_str()) {
                    return err(format!(
                        "{dash}: SEARCH outside the fleet's namespace: {expr}"
                    ));
                }
                let dims: Vec<String> = parts[1..].iter().map(|p| (*p).to_owned()).collect();
                if !metrics.get(name).is_some_and(|d| d.contains(&dims)) {
                    return err(format!("{dash}: the agent sends no {name} with {dims:?}"));
                }
                seen.insert(name.to_owned());
                continue;
            }
            let ns = items.first().and_then(Value::as_str).unwrap_or_default();
            let name = items
                .get(1)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let dims: Vec<String> = items[2..]
                .iter()
                .filter_map(Value::as_str)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            if ns == namespace {
                if !metrics.get(&name).is_some_and(|d| d.contains(&dims)) {
                    return err(format!("{dash}: the agent sends no {name} with {dims:?}"));
                }
            } else if !ns.starts_with("AWS/") {
                return err(format!("{dash}: unknown namespace {ns}"));
            }
            if ns == "AWS/Lambda" {
                let f = items.get(3).and_then(Value::as_str).unwrap_or_default();
                seen.insert(format!("errors of {f}"));
            }
            seen.insert(name);
        }
    }
    let mut needed: Vec<String> = [
        "DatagramsReceived",
        "KernelDrops",
        "DecodeDrops",
        "RequestsDropped",
        "RequestsExtracted",
        "RequestsForwarded",
        "UpstreamErrors",
        "UpstreamResponseSeconds",
        "SourceRequestsCompleteRatio",
        "SourceRequests",
        "GroupDesiredCapacity",
        "GroupInServiceInstances",
        "HealthyHostCount",
    ]
    .map(str::to_owned)
    .to_vec();
    needed.extend(
        functions(t)
            .into_iter()
            .map(|(id, _)| format!("errors of {id}")),
    );
    for n in needed {
        if !seen.contains(&n) {
            return err(format!("{dash}: no widget shows {n}"));
        }
    }
    Ok(())
}

fn check_source_map(t: &Template) -> CheckResult {
    let uri = "s3://${SourceMapBucket}/sources.json";
    let object = "${SourceMapBucket.Arn}/sources.json";
    let reconcile = function_for(t, RECONCILE)?;
    if t.function_environment(&reconcile)
        .get("MIRROR_SOURCES_S3_URI")
        .and_then(text)
        .as_deref()
        != Some(uri)
    {
        return err(format!(
            "reconcile-mirrors: MIRROR_SOURCES_S3_URI must be {uri}"
        ));
    }
    let lt = fleet_launch_template(t)?;
    if !user_data(t, &lt)?.contains(&format!("--sources-uri '{uri}'")) {
        return err(format!("{lt}: the rebuilders must fetch {uri}"));
    }
    if t.resource_type("SourceMapBucket") != Some("AWS::S3::Bucket") {
        return err("SourceMapBucket must be a bucket of the stack");
    }
    let block = t
        .prop("SourceMapBucket", "PublicAccessBlockConfiguration")
        .cloned()
        .unwrap_or_default();
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        if block.get(k) != Some(&json!(true)) {
            return err(format!("SourceMapBucket: {k} must be true"));
        }
    }
    let role_of = |id: &str| {
        t.function_prop(id, "Role")
            .and_then(points_at)
            .unwrap_or_default()
            .to_owned()
    };
    let reconcile_role = role_of(&reconcile);
    // reconcile-mirrors also keeps the refused ENIs next to the map (never where the
    // rebuilders read).
    let refusals = "${SourceMapBucket.Arn}/state/refusals.json";
    for (owner, st) in t.iam_statements() {
        if allows(&st, "s3:PutObject")
            && (owner != reconcile_role
                || resources(&st).iter().any(|r| r != object && r != refusals))
        {
            return err(format!(
                "{owner}: s3:PutObject only for reconcile-mirrors on {object} (and {refusals})"
            ));
        }
    }
    let writes = role_statements(t, &reconcile_role)
        .iter()
        .any(|st| allows(st, "s3:PutObject"));
    let reads = t.iam_statements().into_iter().any(|(owner, st)| {
        owner == "RebuilderRole" && allows(&st, "s3:GetObject") && resources(&st) == [object]
    });
    if !writes || !reads {
        return err("reconcile-mirrors writes the map, the rebuilders read it");
    }
    Ok(())
}

/// Every launch template's user data, rendered with sample values, passes shellcheck.
fn user_data_scripts(t: &Template) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (id, _) in t.of_type("AWS::EC2::LaunchTemplate") {
        let Ok(ud) = user_data(t, id) else { continue };
        let mut script = String::new();
        let mut rest = ud.as_str();
        while let Some(start) = rest.find("${") {
            script.push_str(&rest[..start]);
            let end = rest[start..].find('}').unwrap();
            let name = &rest[start + 2..start + end];
            match name.strip_prefix('!') {
                Some(literal) => script.push_str(&format!("${{{literal}}}")),
                None => {
                    let sample = USER_DATA_SAMPLES
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| *v);
                    script.push_str(sample.unwrap_or("sample-value"));
                }
            }
            rest = &rest[start + end + 1..];
        }
        script.push_str(rest);
        out.push((id.to_owned(), script));
    }
    out
}

/// The actions the role of `function` allows: its inline policies and the template's managed
/// policies it attaches.
fn role_actions(t: &Template, function: &str) -> Result<BTreeSet<String>, String> {
    let role = t
        .function_prop(function, "Role")
        .and_then(points_at)
        .ok_or_else(|| format!("{function} has no role of the template"))?
        .to_owned();
    let mut owners: BTreeSet<String> = [role.clone()].into();
    for arn in t
        .prop(&role, "ManagedPolicyArns")
        .map(one_or_many)
        .unwrap_or_default()
    {
        owners.extend(Template::ref_target(arn).map(str::to_owned));
    }
    Ok(t.iam_statements()
        .into_iter()
        .filter(|(owner, stmt)| owners.contains(owner) && s(stmt.get("Effect")) == "Allow")
        .flat_map(|(_, stmt)| actions(&stmt))
        .collect())
}

/// Issue 15 item 10: each function may do exactly what its code needs
/// (`mirror::permissions`), creating sessions is limited to the source VPCs, and the fleet's
/// tags to the scale-in history.
fn check_least_privilege(t: &Template) -> CheckResult {
    for (binary, _) in FUNCTION_VARS {
        let id = function_for(t, binary)?;
        let allowed = role_actions(t, &id)?;
        let needed: BTreeSet<String> = actions_of(binary).into_iter().map(str::to_owned).collect();
        if let Some(extra) = allowed.difference(&needed).next() {
            return err(format!("{binary}: {extra} is allowed but never used"));
        }
        if let Some(missing) = needed.difference(&allowed).next() {
            return err(format!("{binary}: {missing} is needed but not allowed"));
        }
    }
    let statements = t.iam_statements();
    let on_enis: Vec<&Value> = statements
        .iter()
        .filter(|(_, st)| allows(st, "ec2:CreateTrafficMirrorSession"))
        .map(|(_, st)| st)
        .filter(|st| {
            resources(st)
                .iter()
                .any(|r| r.contains(":network-interface/"))
        })
        .collect();
    if on_enis.is_empty() {
        return err("no statement lets the functions create sessions on network interfaces");
    }
    for st in on_enis {
        // The rendering computes the list from DEPLOYMENT's VpcId and SourceVpcIds.
        let vpcs = condition(st, "StringLike", "ec2:Vpc")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let names = |param: &str| {
            vpcs.contains(param)
                || DEPLOYMENT
                    .iter()
                    .any(|(k, v)| *k == param && vpcs.contains(v))
        };
        if !(vpcs.contains("*:vpc/") && names("VpcId") && names("SourceVpcIds")) {
            return err(format!(
                "sessions on network interfaces must be limited to VpcId and SourceVpcIds (ec2:Vpc), found {vpcs:?}"
            ));
        }
    }
    let tagging: Vec<&Value> = statements
        .iter()
        .filter(|(_, st)| allows(st, "autoscaling:CreateOrUpdateTags"))
        .map(|(_, st)| st)
        .collect();
    if tagging.is_empty() {
        return err("size-fleet cannot keep its scale-in history");
    }
    for st in tagging {
        if actions(st).len() != 1
            || condition(st, "ForAllValues:StringEquals", "aws:TagKeys")
                != Some(json!([mirror::capacity::SCALE_IN_HISTORY_TAG]))
            || condition(st, "Null", "aws:TagKeys") != Some(json!("false"))
        {
            return err(format!(
                "CreateOrUpdateTags must be limited to the tag key {} (aws:TagKeys, not null): {st}",
                mirror::capacity::SCALE_IN_HISTORY_TAG
            ));
        }
    }
    Ok(())
}

/// Issue 15 item 7: the teardown custom resource runs on stack delete after the functions that
/// create sessions and before the target, the filter and the bucket, and never makes the stack
/// wait an hour.
fn check_teardown(t: &Template) -> CheckResult {
    let function = function_for(t, TEARDOWN)?;
    let custom: Vec<&str> = t
        .resources()
        .iter()
        .filter(|(_, r)| {
            let ty = s(r.get("Type"));
            ty == "AWS::CloudFormation::CustomResource" || ty.starts_with("Custom::")
        })
        .filter(|(_, r)| {
            r.pointer("/Properties/ServiceToken").and_then(points_at) == Some(function.as_str())
        })
        .map(|(id, _)| id.as_str())
        .collect();
    let [resource] = custom.as_slice() else {
        return err(format!(
            "expected one custom resource served by {function}, found {custom:?}"
        ));
    };
    let props = &t.resource(resource).unwrap()["Properties"];
    let referenced: BTreeSet<&str> = props
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Template::ref_target)
        .collect();
    let target = the_only(t, "AWS::EC2::TrafficMirrorTarget")?;
    let filter = the_only(t, "AWS::EC2::TrafficMirrorFilter")?;
    for needed in [target.as_str(), filter.as_str(), "SourceMapBucket"] {
        if !referenced.contains(needed) {
            return err(format!(
                "{resource} must reference {needed} so that it is deleted first"
            ));
        }
    }
    let timeout = num(t.function_prop(&function, "Timeout")).unwrap_or(3);
    match num(props.get("ServiceTimeout")) {
        Some(st) if st > timeout && st < 3600 => {}
        other => {
            return err(format!(
                "{resource}: ServiceTimeout must be above the function's Timeout ({timeout} s) and below the hour CloudFormation waits by default, is {other:?}"
            ));
        }
    }
    for binary in [ONBOARD, RECONCILE] {
        let id = function_for(t, binary)?;
        let depends = strings(t.resource(&id).and_then(|r| r.get("DependsOn")));
        if !depends.iter().any(|d| d == resource) {
            return err(format!(
                "{id} creates sessions: it must DependsOn {resource} (deleted before it runs)"
            ));
        }
    }
    let bucket = t.resource("SourceMapBucket").ok_or("SourceMapBucket")?;
    if s(bucket.get("DeletionPolicy")) == "Retain" {
        return err("SourceMapBucket: the teardown empties it, so it is deleted with the stack");
    }
    Ok(())
}

/// A Rule assertion evaluated for these parameter values (`Fn::Not`, `Fn::And`, `Fn::Or`,
/// `Fn::Equals`, `Fn::Contains`, `Ref`, literals).
fn rule_value(v: &Value, params: &BTreeMap<&str, String>) -> Result<Value, String> {
    let Some(obj) = v.as_object() else {
        return Ok(match v {
            Value::Number(n) => Value::String(n.to_string()),
            other => other.clone(),
        });
    };
    let (f, args) = obj.iter().next().ok_or("empty intrinsic")?;
    let arg = |i: usize| -> Result<Value, String> {
        rule_value(
            args.get(i).ok_or_else(|| format!("{f}: argument {i}"))?,
            params,
        )
    };
    let truth = |v: Value| v.as_bool().ok_or_else(|| format!("{f}: not a boolean {v}"));
    Ok(match f.as_str() {
        "Ref" => Value::String(
            params
                .get(args.as_str().unwrap_or_default())
                .cloned()
                .ok_or_else(|| format!("Ref {args}"))?,
        ),
        "Fn::Not" => Value::Bool(!truth(arg(0)?)?),
        "Fn::And" | "Fn::Or" => {
            let mut all = Vec::new();
            for i in 0..args.as_array().map_or(0, Vec::len) {
                all.push(truth(arg(i)?)?);
            }
            Value::Bool(if f == "Fn::And" {
                all.iter().all(|b| *b)
            } else {
                all.iter().any(|b| *b)
            })
        }
        "Fn::Equals" => Value::Bool(arg(0)? == arg(1)?),
        "Fn::Contains" => {
            let list = args
                .get(0)
                .and_then(Value::as_array)
                .ok_or("Fn::Contains list")?;
            let needle = arg(1)?;
            let mut found = false;
            for item in list {
                found |= rule_value(item, params)? == needle;
            }
            Value::Bool(found)
        }
        other => return err(format!("unsupported rule function {other}")),
    })
}

/// Issue 15 item 10: a CloudFormation Rule rejects FleetMin > FleetMax — evaluated here for
/// every pair the parameters allow.
fn check_fleet_bounds_rule(t: &Template) -> CheckResult {
    let range = |name: &str| -> Result<(i64, i64), String> {
        let p = &t.section("Parameters")[name];
        Ok((
            num(p.get("MinValue")).ok_or_else(|| format!("{name}.MinValue"))?,
            num(p.get("MaxValue")).ok_or_else(|| format!("{name}.MaxValue"))?,
        ))
    };
    let ((min_lo, min_hi), (max_lo, max_hi)) = (range("FleetMin")?, range("FleetMax")?);
    let assertions: Vec<&Value> = t
        .section("Rules")
        .values()
        .filter(|r| {
            let text = r.to_string();
            text.contains("FleetMin")
                && text.contains("FleetMax")
                && r.get("RuleCondition").is_none()
        })
        .flat_map(|r| r.get("Assertions").map(one_or_many).unwrap_or_default())
        .collect();
    if assertions.is_empty() {
        return err("no Rule compares FleetMin and FleetMax");
    }
    for fleet_min in min_lo..=min_hi {
        for fleet_max in max_lo..=max_hi {
            let params: BTreeMap<&str, String> = [
                ("FleetMin", fleet_min.to_string()),
                ("FleetMax", fleet_max.to_string()),
            ]
            .into();
            let mut accepted = true;
            for a in &assertions {
                let v = rule_value(a.get("Assert").ok_or("Assert")?, &params)?;
                accepted &= v.as_bool().ok_or("an assertion that is not a boolean")?;
            }
            if accepted != (fleet_min <= fleet_max) {
                return err(format!(
                    "FleetMin={fleet_min} FleetMax={fleet_max} is {} by the rules",
                    if accepted { "accepted" } else { "rejected" }
                ));
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------ tests

#[test]
fn each_function_may_do_exactly_what_its_code_needs_and_sessions_stay_in_the_source_vpcs() {
    passes_in_both_modes(check_least_privilege);
}

#[test]
fn the_teardown_runs_after_the_session_creators_and_before_the_target_filter_and_bucket() {
    passes_in_both_modes(check_teardown);
}

/// Issue 15 item 9: `make build` builds every Lambda in one cargo lambda build and `make
/// deploy` ships exactly that (no `sam build`, the template itself), with the caller's region.
#[test]
fn make_deploy_ships_the_one_build_of_make_build_in_the_callers_region() {
    let make = std::fs::read_to_string(repo_root().join("Makefile")).expect("Makefile");
    let recipe = |target: &str| -> String {
        make.lines()
            .skip_while(|l| !l.starts_with(&format!("{target}:")))
            .take_while(|l| l.starts_with(&format!("{target}:")) || l.starts_with('\t'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let lambdas = recipe("lambdas");
    assert_eq!(
        lambdas.matches("cargo lambda build").count(),
        1,
        "one build of all: {lambdas}"
    );
    assert!(
        lambdas.contains("$(addprefix --bin ,$(LAMBDAS))"),
        "{lambdas}"
    );
    // The bundle profile: no per-binary LTO of the SDK, parallel codegen (Cargo.toml says why).
    assert!(lambdas.contains("--profile lambda-bundle"), "{lambdas}");
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let profile: String = manifest
        .lines()
        .skip_while(|l| *l != "[profile.lambda-bundle]")
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    for line in [
        "inherits = \"release\"",
        "lto = false",
        "codegen-units = 16",
    ] {
        assert!(profile.contains(line), "{line} in {profile}");
    }
    assert!(
        lambdas.contains("$(LAMBDA_DIST)/$$f/bootstrap"),
        "{lambdas}"
    );
    assert!(
        recipe("build").starts_with("build: setup lambdas"),
        "{}",
        recipe("build")
    );
    let deploy = recipe("deploy");
    assert!(deploy.starts_with("deploy: build"), "{deploy}");
    assert!(
        deploy.contains("sam deploy --template-file template.yaml"),
        "{deploy}"
    );
    assert!(
        deploy.contains("$(ARGS)"),
        "non-interactive with ARGS: {deploy}"
    );
    let code: Vec<&str> = make
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        !code.iter().any(|l| l.contains("sam build")),
        "SAM must not build again"
    );
    assert!(
        !code.iter().any(|l| l.contains("AWS_DEFAULT_REGION")),
        "the Makefile must not choose a region for the caller"
    );
    assert_eq!(
        makefile_lambdas(),
        FUNCTION_VARS.iter().map(|(f, _)| (*f).to_owned()).collect(),
        "every function is built"
    );
}

#[test]
fn a_rule_rejects_a_fleet_min_above_the_fleet_max() {
    passes_raw(check_fleet_bounds_rule);
}

#[test]
fn each_function_builds_a_binary_of_the_workspace() {
    passes(check_function_binaries);
}

#[test]
fn each_function_gets_every_setting_it_reads_wired_to_the_stack() {
    passes_in_both_modes(check_function_settings);
}

#[test]
fn the_nlb_has_a_udp_4789_listener_forwarding_to_the_rebuilder_group() {
    passes(check_udp_listener);
}

#[test]
fn the_health_check_is_http_healthz_on_the_rebuilder_admin_port() {
    passes_in_both_modes(check_health_check);
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
    passes_in_both_modes(check_launch_template);
}

#[test]
fn the_optional_analyzer_reads_its_token_from_ssm_at_boot() {
    passes(check_analyzer);
}

#[test]
fn every_function_has_a_log_group_a_dead_letter_queue_and_an_error_alarm() {
    passes_in_both_modes(check_operations);
}

#[test]
fn outputs_give_the_target_filter_load_balancer_group_and_function_names() {
    passes_in_both_modes(check_outputs);
}

#[test]
fn the_nlb_has_a_security_group_and_only_it_reaches_the_rebuilders() {
    passes(check_nlb_security_groups);
}

#[test]
fn the_documented_fallback_adds_vxlan_from_the_vpc_cidrs_in_nlb_mode_only() {
    passes_raw(check_vxlan_fallback);
}

#[test]
fn in_gwlb_mode_the_mirror_target_is_an_endpoint_of_the_fleets_gateway_load_balancer() {
    if let Err(e) = check_gwlb_path(&gwlb_template()) {
        panic!("template.yaml (gwlb mode): {e}");
    }
}

#[test]
fn the_rebuilders_drop_datagrams_from_outside_the_vpc_cidrs() {
    passes_in_both_modes(check_allow_from);
}

#[test]
fn the_sink_parameter_allows_the_two_sinks_and_reaches_the_rebuilders() {
    passes_raw(check_sink);
}

#[test]
fn the_vni_is_the_parameter_or_derived_from_the_stack_id_on_both_sides() {
    passes_raw(check_vni);
}

#[test]
fn the_rebuilder_role_cannot_read_parameters_but_keeps_session_manager() {
    passes_in_both_modes(check_rebuilder_role);
}

#[test]
fn only_the_analyzer_role_decrypts_the_node_token_and_it_never_reaches_a_command_line() {
    passes(check_token_key);
}

#[test]
fn the_release_is_pinned_to_an_s3_version_and_verified_before_it_is_unpacked() {
    passes_in_both_modes(check_supply_chain);
}

#[test]
fn every_parameter_reaching_user_data_refuses_quotes_newlines_and_shell_characters() {
    passes_raw(check_user_data_parameters);
}

#[test]
fn the_bootstrap_counts_only_a_200_from_healthz_as_up() {
    passes_in_both_modes(check_bootstrap_waits_for_200);
}

#[test]
fn rebuilder_egress_goes_only_to_aws_endpoints_and_the_analyzer() {
    passes_raw(check_egress);
}

#[test]
fn the_agent_size_fleet_and_the_alarms_share_one_namespace_and_the_metric_names() {
    passes_in_both_modes(check_cloudwatch);
}

#[test]
fn the_dashboard_shows_only_metrics_the_fleet_sends() {
    passes_in_both_modes(check_dashboard);
    // Without the stack's analyzer (no ALB latency widget) as well.
    let t = rendered(
        &raw_template(),
        &[
            ("DeployAnalyzer", "false"),
            ("UpstreamUrl", "http://10.0.1.10:8080"),
        ],
    )
    .unwrap();
    check_dashboard(&t).unwrap_or_else(|e| panic!("template.yaml (external analyzer): {e}"));
}

#[test]
fn the_source_map_is_written_by_reconcile_and_read_by_the_rebuilders() {
    passes_in_both_modes(check_source_map);
}

#[test]
fn the_user_data_scripts_are_shellcheck_clean() {
    if std::process::Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: shellcheck not installed");
        return;
    }
    let dir = Scratch::new("user-data");
    for (mode, t) in [("nlb", template()), ("gwlb", gwlb_template())] {
        for (id, script) in user_data_scripts(&t) {
            let path = dir.0.join(format!("{mode}-{id}.sh"));
            std::fs::write(&path, &script).unwrap();
            let out = std::process::Command::new("shellcheck")
                .args(["--shell=bash", "--severity=style"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{id} ({mode} mode):\n{}\n{script}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// Adds a resource (the id must be new).
fn add_resource(t: &mut Template, id: &str, resource: Value) {
    let resources = t
        .root
        .pointer_mut("/Resources")
        .and_then(Value::as_object_mut)
        .unwrap();
    assert!(
        resources.insert(id.to_owned(), resource).is_none(),
        "{id} exists"
    );
}

fn ssh_ingress() -> Value {
    json!({"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
        "GroupId": {"Fn::GetAtt": ["RebuilderSecurityGroup", "GroupId"]},
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "10.0.0.0/8"}})
}

/// The README's table of Lambda settings names exactly the variables `mirror::settings` lists.
#[test]
fn the_readme_documents_every_setting_the_functions_read() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("**Lambdas**"))
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let documented: BTreeSet<&str> = table
        .iter()
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .collect();
    assert_eq!(documented, all_vars(), "README.md's Lambda settings table");
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
                    "/Resources/OnboardEniFunction/Properties/CodeUri",
                    json!("dist/lambda/onboard-enis/"),
                )
            }),
        ),
        (
            "a function SAM would build itself",
            check_function_binaries,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/TeardownFunction/Metadata",
                    json!({"BuildMethod": "rust-cargolambda"}),
                )
            }),
        ),
        (
            "a role allowed an action its function never calls",
            check_least_privilege,
            Box::new(|t| {
                let p = statement(t, "TeardownRole", "DescribeCannotBeScoped");
                set(
                    t,
                    &format!("{p}/Action"),
                    json!([
                        "ec2:DescribeTrafficMirrorSessions",
                        "ec2:DescribeTrafficMirrorFilters"
                    ]),
                );
            }),
        ),
        (
            "a role missing an action its function calls",
            check_least_privilege,
            Box::new(|t| {
                let p = statement(t, "ReconcileMirrorsRole", "TellMissingObjectsApart");
                let (list, index) = p.rsplit_once('/').unwrap();
                t.root
                    .pointer_mut(list)
                    .and_then(Value::as_array_mut)
                    .unwrap()
                    .remove(index.parse().unwrap());
            }),
        ),
        (
            "sessions on ENIs of any VPC",
            check_least_privilege,
            Box::new(|t| {
                let p = statement(
                    t,
                    "MirrorSessionsPolicy",
                    "CreateSessionsOnEnisOfTheSourceVpcs",
                );
                remove(t, &format!("{p}/Condition"));
            }),
        ),
        (
            "any tag on the fleet group",
            check_least_privilege,
            Box::new(|t| {
                let p = statement(t, "SizeFleetRole", "KeepOnlyTheScaleInHistoryTag");
                remove(t, &format!("{p}/Condition/ForAllValues:StringEquals"));
            }),
        ),
        (
            "onboard-eni not depending on the teardown",
            check_teardown,
            Box::new(|t| remove(t, "/Resources/OnboardEniFunction/DependsOn")),
        ),
        (
            "the teardown not referencing the filter",
            check_teardown,
            Box::new(|t| remove(t, "/Resources/SessionTeardown/Properties/FilterId")),
        ),
        (
            "the teardown waited for an hour",
            check_teardown,
            Box::new(|t| remove(t, "/Resources/SessionTeardown/Properties/ServiceTimeout")),
        ),
        (
            "the bucket retained",
            check_teardown,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/SourceMapBucket/DeletionPolicy",
                    json!("Retain"),
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
            "a variable no function reads",
            check_function_settings,
            Box::new(move |t| {
                t.root
                    .pointer_mut(env)
                    .and_then(Value::as_object_mut)
                    .expect("the functions' environment")
                    .insert("MIRROR_FILTER".into(), json!("tmf-1"));
            }),
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
            Box::new(|t| add_resource(t, "Ssh", ssh_ingress())),
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
                    "CreateSessionsOnEnisOfTheSourceVpcs",
                );
                set(
                    t,
                    &format!("{p}/Resource"),
                    json!({"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:traffic-mirror-session/*"}),
                );
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

// ------------------------------------------- mutations for the network, host and CloudWatch checks

/// Removes the item at a JSON pointer of the template, in an array or an object.
fn remove_at(t: &mut Template, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = t
        .root
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("mutation target {pointer} not in template.yaml"));
    match parent {
        Value::Array(a) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        Value::Object(m) => {
            m.remove(key).expect(pointer);
        }
        _ => panic!("{pointer}: not in a list or a map"),
    }
}

/// Replaces text in a string of the template (which must contain it).
fn edit_text(t: &mut Template, pointer: &str, from: &str, to: &str) {
    let v = t
        .root
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("mutation target {pointer} not in template.yaml"));
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string"));
    assert!(text.contains(from), "{pointer} does not contain {from:?}");
    *v = json!(text.replace(from, to));
}

/// Pointer to the statement with `sid` in a KMS key's policy.
fn key_statement(t: &Template, key: &str, sid: &str) -> String {
    let idx = t
        .prop(key, "KeyPolicy/Statement")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().position(|st| s(st.get("Sid")) == sid))
        .unwrap_or_else(|| panic!("{key} has no statement {sid}"));
    format!("/Resources/{key}/Properties/KeyPolicy/Statement/{idx}")
}

const REBUILDER_USER_DATA: &str = "/Resources/RebuilderLaunchTemplate/Properties/LaunchTemplateData/UserData/Fn::Base64/Fn::Sub/0";
const ANALYZER_USER_DATA: &str =
    "/Resources/AnalyzerLaunchTemplate/Properties/LaunchTemplateData/UserData/Fn::Base64/Fn::Sub";

#[derive(Clone, Copy, Debug)]
enum Base {
    /// NLB mode with the analyzer (`template()`).
    Nlb,
    /// GWLB mode with the analyzer (`gwlb_template()`).
    Gwlb,
    /// The file as it is (checks that render it themselves, or read parameters).
    Raw,
}

#[test]
fn each_network_host_and_cloudwatch_check_rejects_a_template_broken_for_it() {
    type Mutation = Box<dyn Fn(&mut Template)>;
    type Check = fn(&Template) -> CheckResult;
    let size_env = "/Resources/SizeFleetFunction/Properties/Environment/Variables";
    let cases: Vec<(&str, Base, Check, Mutation)> = vec![
        (
            "a fleet bounds rule missing one pair",
            Base::Raw,
            check_fleet_bounds_rule,
            Box::new(|t| {
                t.root
                    .pointer_mut("/Rules/FleetBounds/Assertions")
                    .and_then(Value::as_array_mut)
                    .expect("the FleetBounds assertions")
                    .remove(40);
            }),
        ),
        (
            "an NLB without a security group",
            Base::Nlb,
            check_nlb_security_groups,
            Box::new(|t| remove(t, "/Resources/MirrorLoadBalancer/Properties/SecurityGroups")),
        ),
        (
            "VXLAN to the rebuilders from the whole VPC",
            Base::Nlb,
            check_nlb_security_groups,
            Box::new(|t| {
                let p = "/Resources/RebuilderIngressVxlanFromNlb/Properties";
                remove(t, &format!("{p}/SourceSecurityGroupId"));
                t.root.pointer_mut(p).unwrap()["CidrIp"] = json!("10.0.0.0/16");
            }),
        ),
        (
            "the NLB open to the internet",
            Base::Nlb,
            check_nlb_security_groups,
            Box::new(|t| {
                let p =
                    "/Resources/MirrorLoadBalancerSecurityGroup/Properties/SecurityGroupIngress/0";
                remove(t, &format!("{p}/SourcePrefixListId"));
                t.root.pointer_mut(p).unwrap()["CidrIp"] = json!("0.0.0.0/0");
            }),
        ),
        (
            "the NLB sending anywhere",
            Base::Nlb,
            check_nlb_security_groups,
            Box::new(|t| {
                let rules = t
                    .root
                    .pointer_mut(
                        "/Resources/MirrorLoadBalancerSecurityGroup/Properties/SecurityGroupEgress",
                    )
                    .unwrap();
                rules
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"IpProtocol": "-1", "CidrIp": "0.0.0.0/0"}));
            }),
        ),
        (
            "the VXLAN fallback in both modes",
            Base::Raw,
            check_vxlan_fallback,
            Box::new(|t| remove(t, "/Resources/RebuilderIngressVxlanFromVpcCidrs/Condition")),
        ),
        (
            "GENEVE flows kept on failed targets",
            Base::Gwlb,
            check_gwlb_path,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/GeneveTargetGroup/Properties/TargetGroupAttributes/1/Value",
                    json!("no_rebalance"),
                )
            }),
        ),
        (
            "a GWLB-mode target that also names a load balancer",
            Base::Gwlb,
            check_gwlb_path,
            Box::new(|t| {
                t.root
                    .pointer_mut("/Resources/TrafficMirrorTarget/Properties")
                    .unwrap()["NetworkLoadBalancerArn"] = json!({"Ref": "GatewayLoadBalancer"});
            }),
        ),
        (
            "GENEVE accepted from anywhere",
            Base::Gwlb,
            check_gwlb_path,
            Box::new(|t| {
                let p = "/Resources/RebuilderIngressGeneve/Properties";
                remove(t, &format!("{p}/SourcePrefixListId"));
                t.root.pointer_mut(p).unwrap()["CidrIp"] = json!("0.0.0.0/0");
            }),
        ),
        (
            "an endpoint service nobody may use",
            Base::Gwlb,
            check_gwlb_path,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/GatewayEndpointServicePermissions/Properties/AllowedPrincipals",
                    json!([]),
                )
            }),
        ),
        (
            "no GENEVE listener on the rebuilders",
            Base::Gwlb,
            check_health_check,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/RebuilderLaunchTemplate/Properties/LaunchTemplateData/UserData/Fn::Base64/Fn::Sub/1/GeneveListen",
                    json!(""),
                )
            }),
        ),
        (
            "rebuilders accepting datagrams from anyone",
            Base::Nlb,
            check_allow_from,
            Box::new(|t| {
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "--env 'REBUILDER_ALLOW_FROM=${VpcCidrs}' \\\n",
                    "",
                )
            }),
        ),
        (
            "a Sink parameter that admits any value",
            Base::Raw,
            check_sink,
            Box::new(|t| remove(t, "/Parameters/Sink/AllowedValues")),
        ),
        (
            "rebuilders that never get the sink",
            Base::Raw,
            check_sink,
            Box::new(|t| {
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "--env 'REBUILDER_SINK=${Sink}' \\\n",
                    "",
                )
            }),
        ),
        (
            "a fixed default VNI",
            Base::Raw,
            check_vni,
            Box::new(|t| set(t, "/Parameters/MirrorVni/Default", json!("1377"))),
        ),
        (
            "functions without the VNI seed",
            Base::Raw,
            check_vni,
            Box::new(|t| remove(t, "/Globals/Function/Environment/Variables/MIRROR_VNI_SEED")),
        ),
        (
            "rebuilders without the derived VNI",
            Base::Raw,
            check_vni,
            Box::new(|t| {
                let p = "/Resources/RebuilderLaunchTemplate/Properties/LaunchTemplateData/UserData/Fn::Base64/Fn::Sub/1/Vni/Fn::If/2";
                set(t, p, json!(""));
            }),
        ),
        (
            "no Deny of parameter reads on the rebuilder role",
            Base::Nlb,
            check_rebuilder_role,
            Box::new(|t| {
                let p = statement(t, "RebuilderRole", "NoParameterStoreReads");
                remove_at(t, &p);
            }),
        ),
        (
            "the rebuilder role decrypting with KMS",
            Base::Nlb,
            check_rebuilder_role,
            Box::new(|t| {
                let p = statement(t, "RebuilderRole", "ReadTheSourceMap");
                set(
                    t,
                    &format!("{p}/Action"),
                    json!(["s3:GetObject", "kms:Decrypt"]),
                );
            }),
        ),
        (
            "the whole account may decrypt the token",
            Base::Nlb,
            check_token_key,
            Box::new(|t| {
                let p = key_statement(t, "AnalyzerTokenKey", "DecryptOnlyTheTokenOnlyForTheNodes");
                remove(t, &format!("{p}/Condition/ArnEquals"));
            }),
        ),
        (
            "no deny for other principals",
            Base::Nlb,
            check_token_key,
            Box::new(|t| {
                let p = key_statement(t, "AnalyzerTokenKey", "NoOtherPrincipalDecrypts");
                remove_at(t, &p);
            }),
        ),
        (
            "a token stored under aws/ssm accepted",
            Base::Nlb,
            check_token_key,
            Box::new(|t| {
                let p = statement(t, "AnalyzerTokenKeyPolicy", "NoTokenUnderAnotherKey");
                remove_at(t, &p);
            }),
        ),
        (
            "the token on cloud-init.py's command line",
            Base::Nlb,
            check_token_key,
            Box::new(|t| {
                edit_text(
                    t,
                    ANALYZER_USER_DATA,
                    "$interpreter - \"$cloud_init\"",
                    "\"$cloud_init\" -t \"$WALLARM_NODE_TOKEN\"; $interpreter - \"$cloud_init\"",
                )
            }),
        ),
        (
            "the release unpacked before its digest is checked",
            Base::Nlb,
            check_supply_chain,
            Box::new(|t| {
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "echo '${RebuilderArtifactSha256}",
                    "tar -xzf \"$tarball\" -C \"$work\" install.sh\necho '${RebuilderArtifactSha256}",
                )
            }),
        ),
        (
            "a digest mismatch that does not stop",
            Base::Nlb,
            check_supply_chain,
            Box::new(|t| {
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "|| fail \"the release does not have",
                    "|| echo \"the release does not have",
                )
            }),
        ),
        (
            "a default digest",
            Base::Nlb,
            check_supply_chain,
            Box::new(|t| {
                t.root
                    .pointer_mut("/Parameters/RebuilderArtifactSha256")
                    .unwrap()["Default"] =
                    json!("0000000000000000000000000000000000000000000000000000000000000000");
            }),
        ),
        (
            "the latest object instead of the pinned version",
            Base::Nlb,
            check_supply_chain,
            Box::new(|t| {
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "--version-id '${RebuilderArtifactVersionId}' ",
                    "",
                )
            }),
        ),
        (
            "a URL pattern that admits a quote",
            Base::Raw,
            check_user_data_parameters,
            Box::new(|t| {
                set(
                    t,
                    "/Parameters/UpstreamUrl/AllowedPattern",
                    json!("^$|^https?://[^\\s]+$"),
                )
            }),
        ),
        (
            "a parameter in user data without a pattern",
            Base::Raw,
            check_user_data_parameters,
            Box::new(|t| {
                t.root.pointer_mut("/Parameters").unwrap()["ExtraArgs"] =
                    json!({"Type": "String", "Default": ""});
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "--env REBUILDER_LOG_FORMAT=json",
                    "--env REBUILDER_LOG_FORMAT=json ${ExtraArgs}",
                );
            }),
        ),
        (
            "an unavailable rebuilder counted as up",
            Base::Nlb,
            check_bootstrap_waits_for_200,
            Box::new(|t| {
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "if [ \"$code\" = 200 ]; then",
                    "if [ \"$code\" = 200 ] || [ \"$code\" = 503 ]; then",
                )
            }),
        ),
        (
            "egress to anywhere on every port",
            Base::Raw,
            check_egress,
            Box::new(|t| {
                let rules = t
                    .root
                    .pointer_mut("/Resources/RebuilderSecurityGroup/Properties/SecurityGroupEgress")
                    .unwrap();
                rules.as_array_mut().unwrap().push(json!({"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "CidrIp": "0.0.0.0/0"}));
            }),
        ),
        (
            "every port open to an external analyzer",
            Base::Raw,
            check_egress,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/RebuilderEgressToUpstream/Properties/FromPort",
                    json!(0),
                )
            }),
        ),
        (
            "size-fleet reading another namespace",
            Base::Nlb,
            check_cloudwatch,
            Box::new(move |t| {
                set(
                    t,
                    &format!("{size_env}/FLEET_METRICS_NAMESPACE"),
                    json!("mirrorfleet"),
                )
            }),
        ),
        (
            "size-fleet without GetMetricData",
            Base::Nlb,
            check_cloudwatch,
            Box::new(|t| {
                let p = statement(t, "SizeFleetRole", "ReadTheFleetMetrics");
                remove_at(t, &p);
            }),
        ),
        (
            "a kernel-drop alarm on a dimension the agent does not send",
            Base::Nlb,
            check_cloudwatch,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/KernelDropsAlarm/Properties/Dimensions",
                    json!([{"Name": "InstanceId", "Value": "i-0123"}]),
                )
            }),
        ),
        (
            "no CloudWatch agent on the rebuilders",
            Base::Nlb,
            check_cloudwatch,
            Box::new(|t| {
                edit_text(
                    t,
                    REBUILDER_USER_DATA,
                    "amazon-cloudwatch-agent aws-cfn-bootstrap",
                    "aws-cfn-bootstrap",
                )
            }),
        ),
        (
            "a group label that is not the group's name",
            Base::Nlb,
            check_cloudwatch,
            Box::new(|t| {
                set(
                    t,
                    "/Resources/RebuilderGroup/Properties/AutoScalingGroupName",
                    json!({"Fn::Sub": "${AWS::StackName}-fleet"}),
                )
            }),
        ),
        (
            "a widget on a metric the agent does not send",
            Base::Nlb,
            check_dashboard,
            Box::new(|t| {
                edit_text(
                    t,
                    "/Resources/FleetDashboard/Properties/DashboardBody/Fn::Join/1/0/Fn::Sub/0",
                    "\"DatagramBytesReceived\"",
                    "\"BytesReceived\"",
                )
            }),
        ),
        (
            "no widget on size-fleet's errors",
            Base::Nlb,
            check_dashboard,
            Box::new(|t| {
                edit_text(
                    t,
                    "/Resources/FleetDashboard/Properties/DashboardBody/Fn::Join/1/2/Fn::Sub",
                    "${SizeFleetFunction}",
                    "${OnboardEniFunction}",
                )
            }),
        ),
        (
            "the rebuilders allowed to rewrite the source map",
            Base::Nlb,
            check_source_map,
            Box::new(|t| {
                let p = statement(t, "RebuilderRole", "ReadTheSourceMap");
                set(
                    t,
                    &format!("{p}/Action"),
                    json!(["s3:GetObject", "s3:PutObject"]),
                );
            }),
        ),
        (
            "reconcile-mirrors without the map's location",
            Base::Nlb,
            check_source_map,
            Box::new(|t| {
                remove(
                    t,
                    "/Globals/Function/Environment/Variables/MIRROR_SOURCES_S3_URI",
                )
            }),
        ),
    ];
    let bases = [
        (Base::Nlb, template()),
        (Base::Gwlb, gwlb_template()),
        (Base::Raw, raw_template()),
    ];
    let mut survived = Vec::new();
    for (what, base, check, mutate) in &cases {
        let original = &bases
            .iter()
            .find(|(b, _)| std::mem::discriminant(b) == std::mem::discriminant(base))
            .unwrap()
            .1;
        if let Err(e) = check(original) {
            panic!("{what}: the check fails on the unbroken template ({base:?}): {e}");
        }
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
