//! The `rebuilder generate` and `rebuilder replay` command lines, end to end through files.

use rebuilder_testkit::system::TempDir;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory of the test kit (removed on drop).
fn temp_dir() -> TempDir {
    TempDir::new("mf-cli").expect("a temporary directory")
}

fn rebuilder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rebuilder"))
        .args(args)
        .output()
        .expect("run rebuilder")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The fields both files share, as a comparable string.
fn ident(v: &serde_json::Value) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {}",
        v["vni"],
        v["client"],
        v["server"],
        v["method"],
        v["target"],
        v["version"],
        v["headers"],
        v["body_len"],
        v["body_b64"]
    )
}

fn generate(dir: &Path, extra: &[&str]) -> (PathBuf, Vec<serde_json::Value>) {
    let pcap = dir.join("cap.pcap");
    let truth = dir.join("truth.jsonl");
    let mut args = vec![
        "generate",
        "--out",
        pcap.to_str().unwrap(),
        "--truth",
        truth.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(rebuilder(&args));
    let truth = lines(&std::fs::read(&truth).unwrap());
    (pcap, truth)
}

#[test]
fn replay_jsonl_output_equals_the_generated_truth() {
    let dir = temp_dir();
    let (pcap, truth) = generate(
        dir.path(),
        &[
            "--connections",
            "40",
            "--chunked",
            "0.4",
            "--pipelining",
            "0.3",
            "--ipv6",
            "0.3",
        ],
    );
    assert!(truth.iter().all(|t| t["expected"] == true));
    let out = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--format",
        "jsonl",
        "--with-body",
    ]));
    let got = lines(&out.stdout);
    for v in &got {
        for field in [
            "ts",
            "vni",
            "client",
            "server",
            "method",
            "target",
            "version",
            "headers",
            "body_len",
            "body_truncated",
            "body_b64",
        ] {
            assert!(v.get(field).is_some(), "field {field} missing in {v}");
        }
    }
    let got_set: Vec<String> = got.iter().map(ident).collect();
    let want: Vec<String> = truth.iter().map(ident).collect();
    assert_eq!(got_set.len(), want.len(), "request count");
    assert_eq!(
        got_set.iter().collect::<BTreeSet<_>>(),
        want.iter().collect::<BTreeSet<_>>()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("requests {}", want.len())),
        "{stderr}"
    );
}

/// `generate --geneve` writes the mirror's VXLAN datagrams inside GWLB GENEVE (UDP/6081);
/// `replay` finds the same requests as in the VXLAN capture of the same seed, each naming its
/// GWLB endpoint (`gwlbe`) and the mirrored ENI (`mirror_source`, the VXLAN datagram's
/// source); the VXLAN capture's requests have no `gwlbe`.
#[test]
fn a_geneve_capture_replays_like_its_vxlan_twin_and_names_the_endpoint() {
    let dir = temp_dir();
    let common = ["--connections", "30", "--ipv6", "0.3", "--chunked", "0.3"];
    let (vx_pcap, _) = generate(dir.path(), &common);
    let vx_pcap = {
        let p = dir.path().join("vxlan.pcap");
        std::fs::rename(&vx_pcap, &p).unwrap();
        p
    };
    let mut args = common.to_vec();
    args.extend([
        "--geneve",
        "--gwlb-endpoints",
        "vpce-0ab1c2d3e4f5a6b7c,vpce-00000000000000001",
    ]);
    let (gn_pcap, truth) = generate(dir.path(), &args);
    let replay =
        |p: &Path| lines(&ok(rebuilder(&["replay", p.to_str().unwrap(), "--with-body"])).stdout);
    let (vx, gn) = (replay(&vx_pcap), replay(&gn_pcap));
    assert!(!vx.is_empty());
    assert!(
        vx.iter()
            .all(|v| v.get("gwlbe").is_none() && v["mirror_source"].is_string())
    );
    for v in gn.iter().chain(&truth) {
        let g = v["gwlbe"].as_str().unwrap_or_default();
        assert!(
            g == "vpce-0ab1c2d3e4f5a6b7c" || g == "vpce-00000000000000001",
            "gwlbe {g:?} in {v}"
        );
        assert!(
            v["mirror_source"].as_str().unwrap().starts_with("172.31."),
            "{v}"
        );
    }
    let set = |l: &[serde_json::Value]| {
        l.iter()
            .map(|v| format!("{} {}", ident(v), v["mirror_source"]))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(set(&gn), set(&vx));
    assert_eq!(set(&gn), set(&truth));
    assert_eq!(gn.len(), truth.len());
    // No GENEVE datagram was refused, and every packet was read as GENEVE.
    let summary = ok(rebuilder(&[
        "replay",
        gn_pcap.to_str().unwrap(),
        "--format",
        "summary",
    ]));
    let stderr = String::from_utf8_lossy(&summary.stderr);
    for line in stderr
        .lines()
        .filter(|l| l.starts_with("drop_geneve") || l.contains("_port "))
    {
        assert!(line.ends_with(" 0"), "{line}\n{stderr}");
    }
    assert!(
        stderr.contains(&format!("requests {}", truth.len())),
        "{stderr}"
    );
}

#[test]
fn replay_without_body_flag_leaves_bodies_out() {
    let dir = temp_dir();
    let (pcap, _) = generate(dir.path(), &["--connections", "5", "--methods", "POST"]);
    let out = ok(rebuilder(&["replay", pcap.to_str().unwrap()]));
    let got = lines(&out.stdout);
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|v| v.get("body_b64").is_none() && v["body_len"].as_u64().is_some())
    );
}

#[test]
fn summary_format_prints_counters_on_stderr_only() {
    let dir = temp_dir();
    let (pcap, truth) = generate(dir.path(), &["--connections", "10"]);
    let out = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--format",
        "summary",
    ]));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("requests {}", truth.len())),
        "{stderr}"
    );
    assert!(stderr.contains("drop_message_gap 0"), "{stderr}");
    assert!(stderr.contains("capture_format pcap"), "{stderr}");
}

#[test]
fn http_format_prints_one_message_per_request() {
    let dir = temp_dir();
    let (pcap, truth) = generate(dir.path(), &["--connections", "10", "--chunked", "1"]);
    let out = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--format",
        "http",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("\n### ").count() + usize::from(text.starts_with("### ")),
        truth.len()
    );
    for t in &truth {
        let line = format!(
            "{} {} {}\r\n",
            t["method"].as_str().unwrap(),
            t["target"].as_str().unwrap(),
            t["version"].as_str().unwrap()
        );
        assert!(text.contains(&line), "missing {line:?}");
    }
}

#[test]
fn vni_filter_keeps_only_the_chosen_vnis() {
    let dir = temp_dir();
    let (pcap, truth) = generate(dir.path(), &["--connections", "30", "--vnis", "5,6,7"]);
    let out = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--vni",
        "5",
        "--vni",
        "7",
    ]));
    let got = lines(&out.stdout);
    let want = truth
        .iter()
        .filter(|t| t["vni"] == 5 || t["vni"] == 7)
        .count();
    assert!(want > 0 && want < truth.len());
    assert_eq!(got.len(), want);
    assert!(got.iter().all(|v| v["vni"] == 5 || v["vni"] == 7));
}

#[test]
fn a_truncated_file_prints_what_was_found_names_the_offset_and_fails() {
    let dir = temp_dir();
    let (pcap, truth) = generate(dir.path(), &["--connections", "20"]);
    let mut bytes = std::fs::read(&pcap).unwrap();
    let cut = bytes.len() * 2 / 3;
    bytes.truncate(cut);
    let broken = dir.path().join("broken.pcap");
    std::fs::write(&broken, &bytes).unwrap();
    let out = rebuilder(&["replay", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("byte offset"), "{stderr}");
    let got = lines(&out.stdout);
    assert!(!got.is_empty(), "requests before the cut are printed");
    assert!(got.len() < truth.len());
    let want: BTreeSet<String> = truth
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.as_object_mut().unwrap().remove("body_b64");
            ident(&t)
        })
        .collect();
    for v in &got {
        assert!(want.contains(&ident(v)), "not in the truth: {v}");
    }
}

#[test]
fn a_file_that_is_not_a_capture_is_a_clear_error() {
    let dir = temp_dir();
    let f = dir.path().join("x.pcap");
    std::fs::write(&f, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let out = rebuilder(&["replay", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a pcap or pcapng file"), "{stderr}");
    let missing = rebuilder(&["replay", dir.path().join("nope.pcap").to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open"));
}

#[test]
fn pcapng_replays_like_pcap() {
    let dir = temp_dir();
    let cfg = rebuilder::offline::synth::SynthConfig {
        connections: 15,
        ..Default::default()
    };
    let (frames, truth) = rebuilder::offline::synth::generate(cfg);
    let ng = dir.path().join("cap.pcapng");
    let pcap = dir.path().join("cap.pcap");
    rebuilder::offline::capture::write_pcapng(
        frames.clone(),
        std::fs::File::create(&ng).unwrap(),
        true,
    )
    .unwrap();
    rebuilder::offline::capture::write_pcap(frames, std::fs::File::create(&pcap).unwrap()).unwrap();
    let a = ok(rebuilder(&["replay", ng.to_str().unwrap(), "--with-body"]));
    let b = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--with-body",
    ]));
    assert_eq!(lines(&a.stdout), lines(&b.stdout));
    assert_eq!(lines(&a.stdout).len(), truth.len());
    assert!(String::from_utf8_lossy(&a.stderr).contains("capture_format pcapng"));
}

#[test]
fn replay_reads_stdin_and_cuts_bodies_over_the_cap() {
    let dir = temp_dir();
    let (pcap, truth) = generate(
        dir.path(),
        &[
            "--connections",
            "12",
            "--methods",
            "POST,PUT",
            "--min-body",
            "50",
            "--max-body",
            "3000",
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rebuilder"))
        .args(["replay", "-", "--max-body-bytes", "1000", "--with-body"])
        .stdin(std::fs::File::open(&pcap).unwrap())
        .output()
        .unwrap();
    let out = ok(out);
    let got = lines(&out.stdout);
    assert_eq!(got.len(), truth.len());
    let mut cut = 0;
    for v in &got {
        let t = truth
            .iter()
            .find(|t| t["headers"] == v["headers"] && t["client"] == v["client"])
            .expect("in the truth");
        let full = t["body_len"].as_u64().unwrap();
        assert_eq!(v["body_len"].as_u64().unwrap(), full.min(1000));
        assert_eq!(v["body_truncated"], full > 1000, "{v}");
        cut += usize::from(full > 1000);
    }
    assert!(cut > 0, "no body over the cap");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("bodies_truncated {cut}")),
        "{stderr}"
    );
}

#[test]
fn replay_prints_the_proxy_protocol_client_and_the_tcp_peer() {
    let dir = temp_dir();
    let (pcap, truth) = generate(
        dir.path(),
        &[
            "--connections",
            "30",
            "--proxy-v1",
            "0.5",
            "--proxy-v2",
            "1",
            "--ipv6",
            "0.5",
        ],
    );
    // The generator's connections (the balancer's, here) come from 10.64.0.0/10 and fd00:c::/32.
    let out = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--with-body",
        "--keep-health-checks",
        "--proxy-protocol-from",
        "10.64.0.0/10,fd00:c::/32",
    ]));
    let got = lines(&out.stdout);
    let with_peer = |v: &serde_json::Value| format!("{} peer {}", ident(v), v["peer"]);
    assert!(
        got.iter().map(with_peer).collect::<BTreeSet<_>>()
            == truth.iter().map(with_peer).collect::<BTreeSet<_>>(),
        "replay differs from the truth"
    );
    assert_eq!(got.len(), truth.len());
    assert!(
        got.iter().all(|v| v["client"] != v["peer"]),
        "every connection carried a PROXY header"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("proxy_headers 30\n"), "{stderr}");
    assert!(
        stderr.contains("drop_proxy_header_malformed 0\n"),
        "{stderr}"
    );
    assert!(stderr.contains("drop_health_check 0\n"), "{stderr}");
    assert!(
        stderr.contains("drop_proxy_header_untrusted 0\n"),
        "{stderr}"
    );

    // Without trusted peers (the default) every header is stripped, counted as untrusted,
    // and the TCP peer is the client: a direct client cannot name another address.
    let out = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--with-body",
    ]));
    let got = lines(&out.stdout);
    assert_eq!(got.len(), truth.len(), "every request is still seen");
    assert!(got.iter().all(|v| v["client"] == v["peer"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("proxy_headers 0\n"), "{stderr}");
    assert!(
        stderr.contains("drop_proxy_header_untrusted 30\n"),
        "{stderr}"
    );
}

#[test]
fn health_checks_are_dropped_only_for_configured_paths_from_balancer_ranges() {
    let dir = temp_dir();
    let (pcap, truth) = generate(
        dir.path(),
        &[
            "--connections",
            "40",
            "--health-checks",
            "0.4",
            "--seed",
            "9",
        ],
    );
    let is_hc = |v: &serde_json::Value| v["target"] == "/health";
    let checks = truth.iter().filter(|v| is_hc(v)).count();
    assert!(
        checks > 0 && checks < truth.len(),
        "{checks} of {}",
        truth.len()
    );
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", pcap.to_str().unwrap(), "--with-body"];
        args.extend_from_slice(extra);
        let out = ok(rebuilder(&args));
        let got: BTreeSet<String> = lines(&out.stdout).iter().map(ident).collect();
        (got, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let all: BTreeSet<String> = truth.iter().map(ident).collect();
    let without: BTreeSet<String> = truth.iter().filter(|v| !is_hc(v)).map(ident).collect();

    // No rule by default: a claimed health checker is a request like any other.
    let (got, stderr) = replay(&[]);
    assert!(got == all, "nothing is dropped without configuration");
    assert!(stderr.contains("drop_health_check 0\n"), "{stderr}");

    // The balancer's path from the balancer's ranges (the generator's connections come from
    // 10.64.0.0/10 and fd00:c::/32): exactly the health checks are dropped.
    let rule = [
        "--health-check-paths",
        "/health",
        "--health-check-from",
        "10.64.0.0/10,fd00:c::/32",
    ];
    let (got, stderr) = replay(&rule);
    assert!(got == without, "the rule drops exactly the health checks");
    assert!(
        stderr.contains(&format!("drop_health_check {checks}\n")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("requests {}\n", without.len())),
        "{stderr}"
    );
    let mut keep = rule.to_vec();
    keep.push("--keep-health-checks");
    let (got, stderr) = replay(&keep);
    assert!(got == all, "--keep-health-checks keeps everything");
    assert!(stderr.contains("drop_health_check 0\n"), "{stderr}");

    // Another path, other ranges, another agent: nothing is dropped.
    let (got, _) = replay(&[
        "--health-check-paths",
        "/healthz",
        "--health-check-from",
        "10.0.0.0/8,fd00::/8",
    ]);
    assert!(got == all);
    let (got, _) = replay(&[
        "--health-check-paths",
        "/health",
        "--health-check-from",
        "192.0.2.0/24",
    ]);
    assert!(got == all);
    let mut ua = rule.to_vec();
    ua.extend(["--health-check-user-agents", "kube-probe/"]);
    let (got, _) = replay(&ua);
    assert!(got == all);
    let mut ua = rule.to_vec();
    ua.extend(["--health-check-user-agents", "ELB-HealthChecker/"]);
    let (got, _) = replay(&ua);
    assert!(got == without);

    // Half a rule is refused: a path alone would let a client hide requests.
    let out = rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--health-check-paths",
        "/health",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--health-check-from"));
}

/// A source map (`docs/sources.md`) naming `sources` (sender, VNI, GWLB endpoint) as
/// `eni-<sender's last octet>`.
fn source_map(sources: &[(String, u64, Option<String>)]) -> String {
    let entries: Vec<serde_json::Value> = sources
        .iter()
        .map(|(ip, vni, gwlbe)| {
            let last = ip.rsplit('.').next().unwrap();
            serde_json::json!({
                "eni": format!("eni-{last:0>17}"), "session": format!("tms-{last}"),
                "vni": vni, "sender_ip": ip, "vpc": "vpc-1", "subnet": "subnet-1",
                "az": null, "gwlbe": gwlbe, "instance": {"id": format!("i-{last}"), "name": null},
                "load_balancer": null, "eks_cluster": null, "asg": null, "tags": {}
            })
        })
        .collect();
    serde_json::json!({"version": 1, "generated_at": "2026-12-03T00:00:00Z", "owner": "t",
        "target": {"id": "tmt-1", "kind": "network_load_balancer", "gwlbe": null},
        "sources": entries})
    .to_string()
}

/// Sums `field=` of the `source …` summary lines.
fn source_sum(stderr: &str, field: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.starts_with("source "))
        .map(|l| {
            l.split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// The value of a summary line `name N`.
fn summary(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

#[test]
fn replay_attributes_every_record_of_a_capture_with_several_sources() {
    for geneve in [false, true] {
        let dir = temp_dir();
        let mut extra = vec![
            "--connections",
            "30",
            "--vnis",
            "7,8",
            "--loss",
            "0.01",
            "--seed",
            "5",
        ];
        if geneve {
            extra.extend([
                "--geneve",
                "--gwlb-endpoints",
                "vpce-0000000000000000a,vpce-0000000000000000b",
            ]);
        }
        let (pcap, truth) = generate(dir.path(), &extra);
        // Every key of the capture.
        let keys: BTreeSet<(String, u64, Option<String>)> = truth
            .iter()
            .map(|t| {
                (
                    t["mirror_source"].as_str().unwrap().to_owned(),
                    t["vni"].as_u64().unwrap(),
                    t["gwlbe"].as_str().map(str::to_owned),
                )
            })
            .collect();
        assert!(keys.len() >= 10, "{keys:?}");
        // The map names every other key; in GWLB mode one named key has the other endpoint.
        let mut named: Vec<(String, u64, Option<String>)> =
            keys.iter().step_by(2).cloned().collect();
        if geneve {
            let g = named[0].2.as_deref().unwrap();
            let other = if g.ends_with('a') {
                "vpce-0000000000000000b"
            } else {
                "vpce-0000000000000000a"
            };
            named[0].2 = Some(other.to_owned());
        }
        let map_path = dir.path().join("sources.json");
        std::fs::write(&map_path, source_map(&named)).unwrap();
        let out = ok(rebuilder(&[
            "replay",
            pcap.to_str().unwrap(),
            "--sources-file",
            map_path.to_str().unwrap(),
        ]));
        let records = lines(&out.stdout);
        assert!(records.len() > 30, "{}", records.len());
        let (mut known, mut unknown) = (0, 0);
        for r in &records {
            let sender = r["mirror_source"].as_str().unwrap();
            let key = (
                sender.to_owned(),
                r["vni"].as_u64().unwrap(),
                r["gwlbe"].as_str().map(str::to_owned),
            );
            let src = &r["source"];
            if named.contains(&key) {
                known += 1;
                let last = sender.rsplit('.').next().unwrap();
                assert_eq!(src["eni"], format!("eni-{last:0>17}"), "{r}");
                assert_eq!(src["sender_ip"], sender);
            } else {
                unknown += 1;
                assert_eq!(
                    *src,
                    serde_json::json!({"eni": null, "sender_ip": sender, "vni": key.1,
                        "gwlbe": key.2}),
                    "{r}"
                );
            }
        }
        assert!(known > 0 && unknown > 0, "{known} {unknown}");
        // The per-source summary adds up to the totals.
        let stderr = String::from_utf8(out.stderr).unwrap();
        for (per_source, total) in [
            ("datagrams", "packets"),
            ("bytes", "bytes"),
            ("requests", "requests"),
            ("responses", "responses"),
            ("paired", "responses_paired"),
            ("gaps", "gaps"),
            ("truncated_packets", "truncated_packets"),
        ] {
            assert_eq!(
                source_sum(&stderr, per_source),
                summary(&stderr, total),
                "{per_source}\n{stderr}"
            );
        }
        let named_lines = stderr
            .lines()
            .filter(|l| l.starts_with("source eni=eni-"))
            .count();
        assert_eq!(
            named_lines,
            if geneve { named.len() - 1 } else { named.len() }
        );
    }
}

#[test]
fn replay_refuses_a_source_map_of_an_unknown_version() {
    let dir = temp_dir();
    let (pcap, _) = generate(dir.path(), &["--connections", "2"]);
    let map_path = dir.path().join("sources.json");
    std::fs::write(&map_path, r#"{"version":2,"sources":[]}"#).unwrap();
    let out = rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--sources-file",
        map_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("version 2") && err.contains("version 1"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn replay_with_dedup_collapses_a_request_mirrored_at_the_load_balancer_and_its_target() {
    use rebuilder::offline::capture::write_pcap;
    use rebuilder::offline::synth::Frame;
    use rebuilder_testkit::frames::{TcpConn, vxlan_frame};
    let dir = temp_dir();
    // The ALB's ENI (10.0.0.5, a load balancer in the map) and the target's (10.0.1.7).
    let alb: std::net::IpAddr = "10.0.0.5".parse().unwrap();
    let web: std::net::IpAddr = "10.0.1.7".parse().unwrap();
    let mut front = TcpConn::new(7, "203.0.113.9:51000", "10.0.0.5:80", 1000).plain();
    let mut back = TcpConn::new(7, "10.0.0.5:33000", "10.0.1.7:8080", 9000).plain();
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let client_req = b"GET /pay?x=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n";
    let target_req = b"GET /pay?x=1 HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\nHost: shop.example\r\nX-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678\r\n\r\n";
    let other_req =
        b"GET /other HTTP/1.1\r\nHost: shop.example\r\nX-Amzn-Trace-Id: Root=1-1-2\r\n\r\n";
    let mut inner: Vec<(std::net::IpAddr, Vec<u8>)> = Vec::new();
    inner.extend(front.open().into_iter().map(|f| (alb, f)));
    inner.push((alb, front.send(client_req)));
    inner.extend(back.open().into_iter().map(|f| (web, f)));
    inner.push((web, back.send(target_req)));
    inner.push((web, back.respond(answer)));
    inner.push((alb, front.respond(answer)));
    // A request only the target saw: out alone once the window has passed.
    inner.push((web, back.send(other_req)));
    inner.push((web, back.respond(answer)));
    let frames: Vec<Frame> = inner
        .into_iter()
        .enumerate()
        .map(|(i, (sender, f))| {
            let data = vxlan_frame(sender, 7, &f);
            Frame {
                ts_us: 1_000_000 + i as u64 * 1000,
                orig_len: data.len() as u32,
                data,
            }
        })
        .collect();
    let pcap = dir.path().join("alb.pcap");
    write_pcap(frames, std::fs::File::create(&pcap).unwrap()).unwrap();
    let map = serde_json::json!({"version": 1, "sources": [
        {"eni": "eni-0a1b", "sender_ip": "10.0.0.5", "vni": 7, "instance": null,
         "load_balancer": {"type": "app", "name": "shop", "id": "50dc6c495c0c9188"}},
        {"eni": "eni-0c2d", "sender_ip": "10.0.1.7", "vni": 7,
         "instance": {"id": "i-1", "name": "web-1"}, "load_balancer": null}
    ]});
    let map_path = dir.path().join("sources.json");
    std::fs::write(&map_path, map.to_string()).unwrap();
    let run = |dedup: bool| {
        let mut args = vec![
            "replay",
            pcap.to_str().unwrap(),
            "--sources-file",
            map_path.to_str().unwrap(),
        ];
        if dedup {
            args.push("--dedup");
        }
        let out = ok(rebuilder(&args));
        (lines(&out.stdout), String::from_utf8(out.stderr).unwrap())
    };
    let (without, _) = run(false);
    assert_eq!(without.len(), 3, "both copies without --dedup: {without:?}");
    let (with, stderr) = run(true);
    assert_eq!(with.len(), 2, "{with:?}");
    let pay = with.iter().find(|r| r["target"] == "/pay?x=1").unwrap();
    assert_eq!(pay["source"]["eni"], "eni-0c2d");
    assert_eq!(pay["via"]["eni"], "eni-0a1b");
    assert_eq!(pay["via"]["load_balancer"]["name"], "shop");
    assert_eq!(pay["response"]["status"], 200);
    let other = with.iter().find(|r| r["target"] == "/other").unwrap();
    assert!(other.get("via").is_none());
    assert_eq!(summary(&stderr, "dedup_collapsed"), 1);
    assert_eq!(summary(&stderr, "dedup_released"), 1);
    assert_eq!(summary(&stderr, "dedup_held"), 2);
}

#[test]
fn responses_whose_heads_pass_the_caps_are_paired_in_their_places_and_flagged() {
    use rebuilder::offline::capture::write_pcap;
    use rebuilder::offline::synth::Frame;
    use rebuilder_testkit::frames::TcpConn;
    let dir = temp_dir();
    // What curl reads from an origin: an 80 KB Set-Cookie (over the 64 KiB head cap, the
    // length after it), 1,500 fields (over the 1,000 kept), a tab after the status code.
    let mut big = b"HTTP/1.1 200 OK\r\nSet-Cookie: s=".to_vec();
    big.extend(std::iter::repeat_n(b'c', 80_000));
    big.extend(b"\r\nContent-Length: 5\r\n\r\nhello");
    let mut many = b"HTTP/1.1 201 Created\r\n".to_vec();
    for i in 0..1500 {
        many.extend(format!("X-{i}: {i}\r\n").as_bytes());
    }
    many.extend(b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
    let tab = b"HTTP/1.1 404\tNot Found\r\nContent-Length: 2\r\n\r\nno".to_vec();
    let mut conn = TcpConn::new(7, "10.0.0.1:40000", "10.0.0.2:80", 1000).plain();
    let mut packets = conn.open();
    for t in ["/big", "/many", "/tab"] {
        packets.push(conn.send(format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()));
    }
    for answer in [&big, &many, &tab] {
        for piece in answer.chunks(1448) {
            packets.push(conn.respond(piece));
        }
    }
    let frames: Vec<Frame> = packets
        .into_iter()
        .enumerate()
        .map(|(i, data)| Frame {
            ts_us: 1_000_000 + i as u64 * 100,
            orig_len: data.len() as u32,
            data,
        })
        .collect();
    let pcap = dir.path().join("heads.pcap");
    write_pcap(frames, std::fs::File::create(&pcap).unwrap()).unwrap();
    let out = ok(rebuilder(&[
        "replay",
        pcap.to_str().unwrap(),
        "--with-body",
    ]));
    let records = lines(&out.stdout);
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            let resp = &r["response"];
            (
                r["target"].as_str().unwrap().to_owned(),
                resp["status"].as_u64(),
                resp["body_b64"].as_str().map(str::to_owned),
                resp["headers"].as_array().map(Vec::len),
                resp.get("head_truncated").cloned(),
            )
        })
        .collect();
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    assert_eq!(
        got,
        [
            (
                "/big".into(),
                Some(200),
                Some(b64("hello")),
                Some(1),
                Some(true.into())
            ),
            (
                "/many".into(),
                Some(201),
                Some(b64("hi")),
                Some(1001),
                Some(true.into())
            ),
            ("/tab".into(), Some(404), Some(b64("no")), Some(1), None),
        ]
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(summary(&stderr, "response_heads_truncated"), 2);
    assert_eq!(records[2]["response"]["reason"], "Not Found");
}
