//! deploy/cloudwatch-agent.json and deploy/cloudwatch-prometheus.yaml against a running
//! `rebuilder run`: the configuration parses, uses only keys the agent's schema has, and every
//! CloudWatch metric it produces comes from a series the daemon's /metrics really exposes, with
//! the labels its dimensions name and a type the agent forwards (counter or gauge: the agent
//! drops histograms, "Prometheus metric type conversion by the CloudWatch agent").
//!
//! The contract with size-fleet (issue: the fleet sized by its traffic): `DatagramsReceived` and
//! `KernelDrops`, from counters (sent as per-scrape deltas, so a per-minute Sum over the fleet
//! is the fleet's count in that minute), with exactly the dimension `AutoScalingGroupName`.

use rebuilder_testkit::daemon::RebuilderProc;
use rebuilder_testkit::frames::TcpConn;
use rebuilder_testkit::system::wait_until;

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn agent_config() -> Value {
    let text = std::fs::read_to_string(deploy_dir().join("cloudwatch-agent.json")).unwrap();
    serde_json::from_str(&text).expect("deploy/cloudwatch-agent.json is JSON")
}

fn scrape_config() -> serde_yaml::Value {
    let text = std::fs::read_to_string(deploy_dir().join("cloudwatch-prometheus.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("deploy/cloudwatch-prometheus.yaml is YAML")
}

/// Keys of an object, which must all be in `allowed` (the agent's schema rejects others:
/// translator/config/schema.json has `"additionalProperties": false` for these objects).
fn keys_within(v: &Value, what: &str, allowed: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object"));
    for k in obj.keys() {
        assert!(allowed.contains(&k.as_str()), "{what}: unknown key {k:?}");
    }
}

/// One declaration of the EMF processor: which metrics, with which dimension sets.
#[derive(Debug)]
struct Declaration {
    dimensions: Vec<Vec<String>>,
    metrics: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is not a list"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn declarations(agent: &Value) -> Vec<Declaration> {
    keys_within(
        agent,
        "the agent configuration",
        &["agent", "logs", "metrics"],
    );
    let prom = agent
        .pointer("/logs/metrics_collected/prometheus")
        .expect("logs.metrics_collected.prometheus");
    keys_within(
        prom,
        "prometheus",
        &[
            "cluster_name",
            "log_group_name",
            "prometheus_config_path",
            "emf_processor",
            "ecs_service_discovery",
            "disable_metric_extraction",
        ],
    );
    let emf = &prom["emf_processor"];
    keys_within(
        emf,
        "emf_processor",
        &[
            "metric_declaration_dedup",
            "metric_namespace",
            "metric_unit",
            "metric_declaration",
        ],
    );
    let mut out = Vec::new();
    for d in emf["metric_declaration"]
        .as_array()
        .expect("metric_declaration")
    {
        keys_within(
            d,
            "metric_declaration",
            &[
                "source_labels",
                "label_matcher",
                "label_separator",
                "metric_selectors",
                "dimensions",
            ],
        );
        assert_eq!(strings(&d["source_labels"]), ["job"]);
        assert_eq!(d["label_matcher"], "^rebuilder$", "only the rebuilder job");
        let dimensions: Vec<Vec<String>> = d["dimensions"]
            .as_array()
            .expect("dimensions")
            .iter()
            .map(strings)
            .collect();
        // Selectors are anchored literals, so what they select is exactly their names.
        let metrics = strings(&d["metric_selectors"])
            .into_iter()
            .map(|sel| {
                let name = sel
                    .strip_prefix('^')
                    .and_then(|s| s.strip_suffix('$'))
                    .unwrap_or_else(|| panic!("selector {sel:?} is not ^Name$"));
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric()),
                    "selector {sel:?} is not a literal name"
                );
                name.to_owned()
            })
            .collect();
        out.push(Declaration {
            dimensions,
            metrics,
        });
    }
    out
}

/// The scrape job's static labels and its renames (rebuilder series name -> CloudWatch name),
/// checking that everything else is dropped.
fn scrape_job() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let cfg = scrape_config();
    let jobs = cfg["scrape_configs"].as_sequence().expect("scrape_configs");
    assert_eq!(jobs.len(), 1, "one scrape job");
    let job = &jobs[0];
    assert_eq!(job["job_name"].as_str(), Some("rebuilder"));
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let statics = job["static_configs"].as_sequence().expect("static_configs");
    assert_eq!(statics.len(), 1);
    assert_eq!(
        statics[0]["targets"].as_sequence().map(Vec::len),
        Some(1),
        "one target: this host's admin listener"
    );
    let labels: BTreeMap<String, String> =
        serde_yaml::from_value(statics[0]["labels"].clone()).expect("static labels");
    let mut renames = BTreeMap::new();
    let rules = job["metric_relabel_configs"]
        .as_sequence()
        .expect("metric_relabel_configs");
    let (last, renaming) = rules.split_last().expect("relabel rules");
    for r in renaming {
        assert_eq!(
            r["source_labels"].as_sequence().map(|s| s.len()),
            Some(1),
            "{r:?}"
        );
        assert_eq!(r["source_labels"][0].as_str(), Some("__name__"), "{r:?}");
        assert_eq!(r["target_label"].as_str(), Some("__name__"), "{r:?}");
        let from = r["regex"].as_str().expect("regex").to_owned();
        assert!(
            from.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "rename source {from:?} must be a literal series name"
        );
        let to = r["replacement"].as_str().expect("replacement").to_owned();
        assert!(
            renames.insert(from.clone(), to).is_none(),
            "{from} renamed twice"
        );
    }
    // The last rule keeps only the renamed (CamelCase) series.
    assert_eq!(last["action"].as_str(), Some("keep"), "{last:?}");
    assert_eq!(last["regex"].as_str(), Some("[A-Z][A-Za-z]*"), "{last:?}");
    for to in renames.values() {
        assert!(
            to.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && to.chars().all(|c| c.is_ascii_alphanumeric()),
            "{to} would not survive the keep rule"
        );
    }
    (labels, renames)
}

/// A sample of the Prometheus text format: name and label names.
struct Sample {
    name: String,
    labels: BTreeSet<String>,
}

/// Samples and `# TYPE` of every family in an exposition.
fn exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, ty) = (it.next().unwrap(), it.next().unwrap());
            types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let series = line.rsplit_once(' ').expect("name value").0;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.split_once('=').expect("label=value").0.to_owned())
                    .collect(),
            ),
            None => (series, BTreeSet::new()),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
        });
    }
    (samples, types)
}

#[test]
fn the_cloudwatch_agent_configuration_names_only_what_the_rebuilder_exposes() {
    let agent = agent_config();
    let decls = declarations(&agent);
    let (static_labels, renames) = scrape_job();
    assert_eq!(
        static_labels.keys().collect::<Vec<_>>(),
        ["AutoScalingGroupName"],
        "the group name is the one static label"
    );

    // A real daemon on loopback (the upstream need not exist for /metrics), given one
    // mirrored exchange so that the per-source series exist (labelled `unknown`: no map).
    let rebuilder = RebuilderProc::start("http://127.0.0.1:9", &[]);
    let mut conn = TcpConn::new(7, "10.1.0.1:40000", "10.1.0.9:80", 1000);
    let mut datagrams = conn.open();
    datagrams.push(conn.send(b"GET /cw HTTP/1.1\r\nHost: h\r\n\r\n"));
    datagrams.push(conn.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &datagrams {
        sock.send_to(d, rebuilder.udp).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(15), || {
            rebuilder
                .metrics()
                .get("rebuilder_source_requests_total{eni=\"unknown\"}")
                >= 1
        }),
        "the mirrored request was not counted per source:\n{}",
        rebuilder.metrics().text
    );
    let text = rebuilder.metrics().text;
    let (samples, types) = exposition(&text);

    // What CloudWatch would receive: renamed series with their labels plus the static one.
    let mut cloudwatch: BTreeMap<String, Vec<BTreeSet<String>>> = BTreeMap::new();
    let mut family_of: BTreeMap<String, String> = BTreeMap::new();
    for s in &samples {
        if let Some(to) = renames.get(&s.name) {
            let mut labels = s.labels.clone();
            labels.extend(static_labels.keys().cloned());
            cloudwatch.entry(to.clone()).or_default().push(labels);
            family_of.insert(to.clone(), s.name.clone());
        }
    }
    for (from, to) in &renames {
        assert!(
            cloudwatch.contains_key(to),
            "{from} (renamed {to}) is not on the rebuilder's /metrics:\n{text}"
        );
        let ty = types.get(from).map(String::as_str);
        assert!(
            matches!(ty, Some("counter" | "gauge")),
            "{from} is a {ty:?}: the CloudWatch agent forwards counters and gauges only"
        );
    }

    let units = agent
        .pointer("/logs/metrics_collected/prometheus/emf_processor/metric_unit")
        .and_then(Value::as_object)
        .expect("metric_unit");
    let mut selected = BTreeSet::new();
    for d in &decls {
        for m in &d.metrics {
            assert!(selected.insert(m.clone()), "{m} selected twice");
            let series = cloudwatch.get(m).unwrap_or_else(|| {
                panic!("{m} is selected but no rebuilder series is renamed to it")
            });
            for dims in &d.dimensions {
                for dim in dims {
                    assert!(
                        series.iter().all(|labels| labels.contains(dim)),
                        "{m}: dimension {dim} is not a label of every {} series",
                        family_of[m]
                    );
                }
            }
            assert!(units.contains_key(m), "{m} has no metric_unit");
        }
    }
    let renamed: BTreeSet<String> = renames.values().cloned().collect();
    assert_eq!(selected, renamed, "renamed but never sent, or the reverse");
    assert_eq!(
        units.keys().cloned().collect::<BTreeSet<_>>(),
        selected,
        "metric_unit names a metric that is not sent"
    );

    // size-fleet's inputs: counters, fleet-wide (the group is the only dimension).
    for m in ["DatagramsReceived", "KernelDrops"] {
        let d = decls
            .iter()
            .find(|d| d.metrics.iter().any(|x| x == m))
            .unwrap_or_else(|| panic!("{m} is not sent"));
        assert_eq!(
            d.dimensions,
            vec![vec!["AutoScalingGroupName".to_owned()]],
            "{m}: size-fleet reads it with the one dimension AutoScalingGroupName"
        );
        assert_eq!(
            types.get(&family_of[m]).map(String::as_str),
            Some("counter"),
            "{m} must come from a counter (sent as deltas, summed per minute)"
        );
    }
}
