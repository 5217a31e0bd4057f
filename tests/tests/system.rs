//! End-to-end system tests: the story of `make demo`, as assertions.
//!
//! - `moto_*`: the control-plane Lambda binaries, each run through the Lambda Runtime API
//!   (`cargo lambda watch --only-lambda-apis` + `cargo lambda invoke`) against a moto server
//!   seeded with the demo VPC (`scripts/demo/seed.py`); each test has its own moto and runtime
//!   API on free ports.
//! - `netns_*`: the kernel mirrors a web server's traffic as VXLAN (tc mirred) from one network
//!   namespace to another where the real `rebuilder run` forwards each request to an analyzer;
//!   `netns_moto_*` joins both (the VNI comes from the session the control plane created, and
//!   `scripts/demo.sh` itself runs and must leave nothing behind).
//! - `loopback_*`: the demo's path without namespaces (a generated capture sent over loopback
//!   UDP to `rebuilder run`).
//!
//! Missing prerequisites (root, namespaces, moto, cargo-lambda, built binaries) fail the test
//! under `MIRRORFLEET_REQUIRE_SYSTEM=1` (as `make test` sets it) and skip it otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use system_tests::demo::control::{ControlPlane, OWNER_TAG, Settings};
use system_tests::demo::dataplane::{self, HttpRecorder, Recorded, Topology, UdpSink};
use system_tests::demo::harness::{self, TempDir};

macro_rules! require {
    ($name:expr, $($check:expr),+ $(,)?) => {
        $(
            if let Err(why) = $check {
                harness::missing($name, &why);
                return;
            }
        )+
    };
}

fn sorted(v: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().map(Into::into).collect();
    v.sort();
    v
}

/// `count` of a report list (`{"count": n, "items": [...]}`).
fn report_count(report: &Value, key: &str) -> u64 {
    report[key]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("report without {key}.count: {report}"))
}

fn assert_owned_sessions_exactly_on(cp: &ControlPlane, expected: &[String]) {
    let owned = cp.owned_sessions().expect("list sessions");
    assert_eq!(
        owned.keys().cloned().collect::<Vec<_>>(),
        sorted(expected.iter().cloned()),
        "owned sessions are on the wrong ENIs: {owned:#?}"
    );
    for (eni, sessions) in &owned {
        assert_eq!(
            sessions.len(),
            1,
            "{eni} has {} owned sessions",
            sessions.len()
        );
        let s = &sessions[0];
        assert_eq!(s.vni, Some(cp.settings.vni), "VNI of {}", s.session_id);
        assert_eq!(
            s.target_id, cp.world.target_id,
            "target of {}",
            s.session_id
        );
        assert_eq!(
            s.filter_id, cp.world.filter_id,
            "filter of {}",
            s.session_id
        );
        assert!(
            (1..=32766).contains(&s.session_number.unwrap_or(0)),
            "session number of {}: {:?}",
            s.session_id,
            s.session_number
        );
    }
}

fn assert_foreign_session_untouched(cp: &ControlPlane) {
    let all = cp.moto.sessions().expect("list sessions");
    let foreign = all
        .iter()
        .find(|s| s.session_id == cp.world.foreign_session_id)
        .unwrap_or_else(|| panic!("the unowned session was deleted: {all:#?}"));
    assert_eq!(foreign.vni, Some(777), "the unowned session was modified");
    assert!(
        !foreign.tags.contains_key(OWNER_TAG),
        "the unowned session was tagged as ours"
    );
    assert_eq!(foreign.eni_id, cp.world.eni("batch-1"));
}

#[test]
fn moto_onboard_eni_mirrors_exactly_the_enis_its_events_name() {
    require!(
        "moto_onboard_eni_mirrors_exactly_the_enis_its_events_name",
        system_tests::demo::control::prerequisites()
    );
    let cp = ControlPlane::start(Settings::default()).expect("moto, seed, runtime API");

    let reports = cp
        .run(
            "onboard-eni",
            &[
                "01-web-1-running.json",
                "02-api-eni-created.json",
                "03-web-3-tagged.json",
                "04-web-1-running-again.json",
            ],
        )
        .expect("onboard-eni through the runtime API");
    assert_eq!(
        report_count(&reports[0], "created"),
        1,
        "web-1 running: {}",
        reports[0]
    );
    assert_eq!(
        report_count(&reports[1], "created"),
        1,
        "api-eni created: {}",
        reports[1]
    );
    assert_eq!(
        report_count(&reports[2], "created"),
        0,
        "web-3 is excluded: {}",
        reports[2]
    );
    assert_eq!(
        report_count(&reports[3], "created"),
        0,
        "a repeated event: {}",
        reports[3]
    );

    // Only what the events named: web-2 (tagged, but no event) waits for the reconcile.
    assert_owned_sessions_exactly_on(&cp, &cp.world.expected_after_events);
    assert_foreign_session_untouched(&cp);
}

#[test]
fn moto_reconcile_mirrors_every_wanted_eni_once_and_follows_tag_removal() {
    require!(
        "moto_reconcile_mirrors_every_wanted_eni_once_and_follows_tag_removal",
        system_tests::demo::control::prerequisites()
    );
    let cp = ControlPlane::start(Settings::default()).expect("moto, seed, runtime API");

    let first = cp
        .run("reconcile-mirrors", &["scheduled.json", "scheduled.json"])
        .expect("reconcile-mirrors through the runtime API");
    assert_eq!(
        report_count(&first[0], "created"),
        3,
        "first run: {}",
        first[0]
    );
    assert_eq!(
        report_count(&first[1], "created"),
        0,
        "second run: {}",
        first[1]
    );
    assert_eq!(
        report_count(&first[1], "deleted"),
        0,
        "second run: {}",
        first[1]
    );
    assert_owned_sessions_exactly_on(&cp, &cp.world.expected_mirrored);
    assert_foreign_session_untouched(&cp);
    // The ASG's instance carries mirror=true (propagated at launch): it is ours, never mirrored.
    assert!(
        cp.world
            .expected_untouched
            .contains(&cp.world.eni("rebuilder-1").to_owned()),
        "the seed has no tagged rebuilder instance"
    );
    let untouched: Vec<&String> = cp.world.expected_untouched.iter().collect();
    let owned = cp.owned_sessions().unwrap();
    for eni in untouched {
        assert!(!owned.contains_key(eni), "{eni} must not be mirrored");
    }

    // The mirror tag comes off web-2: the next reconcile deletes its session, nothing else.
    let web2 = cp.world.by_name["web-2"].clone();
    cp.moto
        .untag(&[web2.instance_id.as_deref().unwrap()], "mirror")
        .expect("untag web-2");
    let after = cp
        .run("reconcile-mirrors", &["scheduled.json"])
        .expect("reconcile-mirrors after the tag removal");
    assert_eq!(
        report_count(&after[0], "deleted"),
        1,
        "after untag: {}",
        after[0]
    );
    assert_eq!(
        report_count(&after[0], "created"),
        0,
        "after untag: {}",
        after[0]
    );
    let expected: Vec<String> = cp
        .world
        .expected_mirrored
        .iter()
        .filter(|e| **e != web2.eni_id)
        .cloned()
        .collect();
    assert_owned_sessions_exactly_on(&cp, &expected);
    assert_foreign_session_untouched(&cp);
}

#[test]
fn moto_size_fleet_sets_desired_capacity_from_the_sessions_within_min_and_max() {
    require!(
        "moto_size_fleet_sets_desired_capacity_from_the_sessions_within_min_and_max",
        system_tests::demo::control::prerequisites()
    );
    let mut cp = ControlPlane::start(Settings::default()).expect("moto, seed, runtime API");
    cp.run("reconcile-mirrors", &["scheduled.json"])
        .expect("reconcile-mirrors");
    assert_eq!(cp.owned_sessions().unwrap().len(), 3);
    let asg = cp.world.asg_name.clone();
    assert_eq!(
        cp.moto.desired_capacity(&asg).unwrap(),
        1,
        "seeded capacity"
    );

    // 3 sessions, 2 per instance -> 2 rebuilders.
    cp.run("size-fleet", &["scheduled.json"])
        .expect("size-fleet");
    assert_eq!(cp.moto.desired_capacity(&asg).unwrap(), 2);

    // 1 per instance would need 3 (and 4 counting the unowned session), but max is 2.
    cp.settings.sessions_per_instance = 1;
    cp.settings.fleet_max = 2;
    cp.run("size-fleet", &["scheduled.json"])
        .expect("size-fleet");
    assert_eq!(cp.moto.desired_capacity(&asg).unwrap(), 2, "clamped to max");

    // A minimum above the need wins.
    cp.settings.sessions_per_instance = 10;
    cp.settings.fleet_min = 3;
    cp.settings.fleet_max = 4;
    cp.run("size-fleet", &["scheduled.json"])
        .expect("size-fleet");
    assert_eq!(cp.moto.desired_capacity(&asg).unwrap(), 3, "raised to min");
}

#[test]
fn netns_kernel_mirror_delivers_the_servers_traffic_as_vxlan_with_the_vni() {
    require!(
        "netns_kernel_mirror_delivers_the_servers_traffic_as_vxlan_with_the_vni",
        dataplane::prerequisites()
    );
    let dir = TempDir::new("mfnk").unwrap();
    let topo = Topology::up(31337, true).expect("topology");
    let web = HttpRecorder::start(&topo.server(), "0.0.0.0:80", "web", dir.path()).expect("web");
    let sink = UdpSink::start(&topo, dir.path()).expect("udp sink");
    let sent = dataplane::drive_traffic(&topo).expect("traffic");
    assert_eq!(
        web.requests().unwrap().len(),
        sent,
        "the web server got every request"
    );
    // Each request and response is at least one TCP segment each way: the mirror of both
    // directions carries more datagrams than requests, all with the session's VNI.
    assert!(
        harness::wait_until(Duration::from_secs(5), || sink.counts().datagrams
            >= 2 * sent as u64),
        "too few VXLAN datagrams: {:?}",
        sink.counts()
    );
    let counts = sink.counts();
    assert_eq!(
        counts.per_vni.keys().cloned().collect::<Vec<_>>(),
        vec![31337],
        "{counts:?}"
    );
}

/// Sends the demo traffic through the mirror and checks the analyzer got exactly the web
/// server's requests: same method, target, end-to-end headers in order, body; the client's
/// address in X-Forwarded-For; nothing missing, nothing twice.
fn mirrored_requests_reach_the_analyzer_exactly_once(test: &str, vni: u32) {
    let dir = TempDir::new("mfnr").unwrap();
    let topo = Topology::up(vni, true).expect("topology");
    let web = HttpRecorder::start(&topo.server(), "0.0.0.0:80", "web", dir.path()).expect("web");
    let analyzer = HttpRecorder::start(
        &topo.collector(),
        dataplane::ANALYZER_ADDR,
        "analyzer",
        dir.path(),
    )
    .expect("analyzer");
    let mut rebuilder = dataplane::start_rebuilder(&topo, dir.path()).expect("rebuilder run");

    let sent = dataplane::drive_traffic(&topo).expect("traffic");
    let truth = web.requests().unwrap();
    assert_eq!(
        truth.len(),
        sent,
        "{test}: the web server got every request"
    );
    harness::wait_until(Duration::from_secs(15), || {
        analyzer.requests().map(|r| r.len()).unwrap_or(0) >= sent
    });
    std::thread::sleep(Duration::from_secs(1)); // a duplicate would arrive now
    let got = analyzer.requests().unwrap();
    let metrics = dataplane::rebuilder_metrics(&topo).unwrap_or_default();
    let context = format!(
        "\nrebuilder log:\n{}\nmetrics:\n{}",
        rebuilder.log_tail(30),
        metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        rebuilder.exited().is_none(),
        "{test}: the rebuilder died{context}"
    );

    let key = |r: &Recorded| (r.method.clone(), r.target.clone(), r.body_b64.clone());
    let mut want: BTreeMap<_, Vec<&Recorded>> = BTreeMap::new();
    for r in &truth {
        want.entry(key(r)).or_default().push(r);
    }
    let mut have: BTreeMap<_, Vec<&Recorded>> = BTreeMap::new();
    for r in &got {
        have.entry(key(r)).or_default().push(r);
    }
    let summary = |m: &BTreeMap<(String, String, String), Vec<&Recorded>>| {
        m.iter()
            .map(|((method, target, _), v)| format!("{method} {target} x{}", v.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(&have),
        summary(&want),
        "{test}: the analyzer did not get exactly the requests sent{context}"
    );
    for (k, sent_reqs) in &want {
        for (s, g) in sent_reqs.iter().zip(&have[k]) {
            assert_eq!(
                g.end_to_end_headers(),
                s.end_to_end_headers(),
                "{test}: headers of {} {}",
                s.method,
                s.target
            );
            let xff = g.header("x-forwarded-for").join(",");
            assert!(
                xff.split(',').any(|p| p.trim() == dataplane::CLIENT_IP),
                "{test}: X-Forwarded-For '{xff}' of {} {} lacks the client {}",
                s.method,
                s.target,
                dataplane::CLIENT_IP
            );
            assert_eq!(s.peer_ip(), dataplane::CLIENT_IP);
        }
    }
    assert!(
        truth.iter().any(|r| r.chunked) && truth.iter().any(|r| r.target.contains("%27%20OR")),
        "{test}: the traffic lacks its chunked upload or its SQL-injection-looking request"
    );
}

#[test]
fn netns_mirrored_requests_reach_the_analyzer_exactly_once_through_the_rebuilder() {
    let name = "netns_mirrored_requests_reach_the_analyzer_exactly_once_through_the_rebuilder";
    require!(name, dataplane::prerequisites(), {
        if dataplane::rebuilder_has_run() {
            Ok(())
        } else {
            Err("the built rebuilder has no `run` sub-command".to_owned())
        }
    });
    mirrored_requests_reach_the_analyzer_exactly_once(name, 5150);
}

#[test]
fn netns_moto_the_session_the_control_plane_creates_carries_requests_to_the_analyzer() {
    let name = "netns_moto_the_session_the_control_plane_creates_carries_requests_to_the_analyzer";
    require!(
        name,
        dataplane::prerequisites(),
        system_tests::demo::control::prerequisites(),
        {
            if dataplane::rebuilder_has_run() {
                Ok(())
            } else {
                Err("the built rebuilder has no `run` sub-command".to_owned())
            }
        }
    );
    // An unusual VNI, so that only the session's value can make the VXLAN match.
    let settings = Settings {
        vni: 1_048_573,
        ..Settings::default()
    };
    let cp = ControlPlane::start(settings).expect("moto, seed, runtime API");
    cp.run("onboard-eni", &["01-web-1-running.json"])
        .expect("onboard-eni");
    let owned = cp.owned_sessions().unwrap();
    let web1 = &owned
        .get(cp.world.eni("web-1"))
        .unwrap_or_else(|| panic!("web-1 has no owned session: {owned:#?}"))[0];
    let vni = web1.vni.expect("the session has a VNI");
    assert_eq!(vni, 1_048_573);
    mirrored_requests_reach_the_analyzer_exactly_once(name, vni);
}

#[test]
fn loopback_replay_of_a_generated_capture_reaches_the_analyzer_exactly_once() {
    // The demo's path on machines without network namespaces: `rebuilder generate`, its VXLAN
    // datagrams sent over loopback UDP to `rebuilder run`, forwarded to the analyzer.
    let name = "loopback_replay_of_a_generated_capture_reaches_the_analyzer_exactly_once";
    require!(name, {
        if dataplane::rebuilder_has_run() {
            Ok(())
        } else {
            Err("the built rebuilder has no `run` sub-command".to_owned())
        }
    });
    let dir = TempDir::new("mflr").unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(harness::demo_script("replay.sh"))
        .arg(harness::workspace_bin("rebuilder").unwrap())
        .arg(dir.path())
        .arg("6001");
    let out = harness::run(cmd, Duration::from_secs(120)).expect("replay.sh");
    let truth = std::fs::read_to_string(dir.path().join("replay-truth.jsonl")).unwrap();
    let expected = truth
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["expected"] != false)
        .count();
    let got = std::fs::read_to_string(dir.path().join("analyzer.jsonl")).unwrap_or_default();
    assert!(
        expected >= 12,
        "the capture has too few requests: {expected}"
    );
    assert!(
        out.status.success(),
        "the analyzer did not receive exactly the generated requests ({} of {expected}):\n{}{}",
        got.lines().count(),
        out.stdout,
        out.stderr
    );
    assert_eq!(got.lines().count(), expected);
}

/// Processes whose command line or open files mention `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let open_files = std::fs::read_dir(entry.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| target.to_string_lossy().contains(needle));
            if text.contains(needle) || open_files {
                found.push(format!("{name}: {text}"));
            }
        }
    }
    found
}

#[test]
fn netns_moto_make_demo_passes_and_leaves_nothing_behind() {
    let name = "netns_moto_make_demo_passes_and_leaves_nothing_behind";
    require!(
        name,
        dataplane::prerequisites(),
        system_tests::demo::control::prerequisites(),
        {
            if dataplane::rebuilder_has_run() {
                Ok(())
            } else {
                Err("the built rebuilder has no `run` sub-command".to_owned())
            }
        }
    );
    let demo_namespaces = || -> Vec<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("mfdemo"))
            .map(str::to_owned)
            .collect()
    };
    let before = demo_namespaces();
    // The demo's work directory goes under this TMPDIR: afterwards it must be empty and no
    // process may still refer to it.
    let tmp = TempDir::new("mfdemo-tmp").unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(harness::workspace_root().join("scripts/demo.sh"))
        .current_dir(harness::workspace_root())
        .env("PATH", harness::venv_path())
        .env("TMPDIR", tmp.path())
        .env("MIRRORFLEET_DEMO_SKIP_BUILD", "1")
        .env("MIRRORFLEET_BIN_DIR", harness::bin_dir());
    let out = harness::run(cmd, Duration::from_secs(400)).expect("scripts/demo.sh");
    assert!(
        out.status.success(),
        "make demo failed ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    for line in [
        "sessions created by mirrorfleet : 3 (expected 3)",
        "rebuilder ASG desired capacity  : 2 (expected 2)",
        "requests sent / at the analyzer : 11 / 11",
        "make demo: ok",
    ] {
        assert!(
            out.stdout.contains(line),
            "the summary lacks '{line}':\n{}",
            out.stdout
        );
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "the demo left files behind: {left:?}");
    let procs = processes_mentioning(&tmp.path().to_string_lossy());
    assert!(
        procs.is_empty(),
        "the demo left processes behind: {procs:#?}"
    );
    let new_namespaces: Vec<String> = demo_namespaces()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(
        new_namespaces.is_empty(),
        "the demo left namespaces behind: {new_namespaces:?}"
    );
}
