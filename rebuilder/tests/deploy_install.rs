//! deploy/install.sh: installs from a tarball or a bare binary, writes the env file, is
//! idempotent, keeps values not given again, refuses bad input. Runs under INSTALL_ROOT (no
//! systemd needed). shellcheck-clean when shellcheck is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mf-install-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn install(root: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(deploy_dir().join("install.sh"))
        .args(args)
        .env("INSTALL_ROOT", root)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tarball(dir: &Path) -> PathBuf {
    // As scripts/package-rebuilder.sh packs it: the binary and every file of deploy/.
    let stage = dir.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_rebuilder"), stage.join("rebuilder")).unwrap();
    let mut names = vec!["rebuilder".to_owned()];
    for entry in std::fs::read_dir(deploy_dir()).unwrap().flatten() {
        if entry.path().is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            std::fs::copy(entry.path(), stage.join(&name)).unwrap();
            names.push(name);
        }
    }
    let tgz = dir.join("rebuilder-x86_64-linux.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&stage)
        .args(&names)
        .status()
        .unwrap();
    assert!(st.success());
    tgz
}

/// The env file as the shell (and systemd) reads it.
fn sourced(env_file: &Path, var: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -a; . '{}'; printf %s \"${var}\"",
            env_file.display()
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn install_from_a_tarball_writes_binary_unit_and_env_file_and_is_idempotent() {
    let dir = scratch("tar");
    let tgz = tarball(&dir);
    let root = dir.join("root");
    let args = [
        "--artifact",
        tgz.to_str().unwrap(),
        "--upstream",
        "http://analyzer.internal:80",
        "--listen",
        "0.0.0.0:4789",
        "--admin",
        "0.0.0.0:9445",
        "--env",
        "REBUILDER_VNI_ALLOW=4242",
        "--env",
        "REBUILDER_LOG_FORMAT=json",
        "--env",
        "REBUILDER_EXTRA_HEADERS=X-Tag: \"a b\" \\ c",
    ];
    let o = install(&root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("(changed)"));
    let bin = root.join("usr/local/bin/rebuilder");
    let unit = root.join("etc/systemd/system/rebuilder.service");
    let env = root.join("etc/mirrorfleet/rebuilder.env");
    assert!(bin.exists() && unit.exists() && env.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("EnvironmentFile=/etc/mirrorfleet/rebuilder.env"));
    assert!(unit_text.contains("ExecStart=/usr/local/bin/rebuilder run"));
    assert_eq!(
        sourced(&env, "REBUILDER_UPSTREAM"),
        "http://analyzer.internal:80"
    );
    assert_eq!(sourced(&env, "REBUILDER_LISTEN"), "0.0.0.0:4789");
    assert_eq!(sourced(&env, "REBUILDER_ADMIN"), "0.0.0.0:9445");
    assert_eq!(sourced(&env, "REBUILDER_VNI_ALLOW"), "4242");
    assert_eq!(
        sourced(&env, "REBUILDER_EXTRA_HEADERS"),
        "X-Tag: \"a b\" \\ c"
    );

    // The installed binary accepts the env file as its configuration.
    let help = Command::new(&bin).args(["run", "--help"]).output().unwrap();
    assert!(help.status.success());

    // Same arguments again: nothing changes.
    let before = std::fs::read(&env).unwrap();
    let o = install(&root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already up to date"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&env).unwrap(), before);

    // A bare binary, one new variable: the others are kept (and the parsing round-trips).
    let o = install(
        &root,
        &[
            "--artifact",
            env!("CARGO_BIN_EXE_rebuilder"),
            "--env",
            "REBUILDER_WORKERS=2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sourced(&env, "REBUILDER_WORKERS"), "2");
    assert_eq!(
        sourced(&env, "REBUILDER_UPSTREAM"),
        "http://analyzer.internal:80"
    );
    assert_eq!(
        sourced(&env, "REBUILDER_EXTRA_HEADERS"),
        "X-Tag: \"a b\" \\ c"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_refuses_bad_input_with_a_clear_message() {
    let dir = scratch("bad");
    let root = dir.join("root");
    let bin = env!("CARGO_BIN_EXE_rebuilder");

    let o = install(&root, &["--upstream", "http://a"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--artifact is required"));

    let o = install(&root, &["--artifact", bin]);
    assert!(!o.status.success(), "no upstream anywhere");
    assert!(stderr(&o).contains("no upstream"), "{}", stderr(&o));

    let o = install(
        &root,
        &["--artifact", "http://x/rebuilder", "--upstream", "http://a"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("https"));

    let junk = dir.join("junk");
    std::fs::write(&junk, b"not a binary").unwrap();
    let o = install(
        &root,
        &[
            "--artifact",
            junk.to_str().unwrap(),
            "--upstream",
            "http://a",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("neither a tarball nor an ELF"));

    let o = install(
        &root,
        &[
            "--artifact",
            bin,
            "--env",
            "lower=1",
            "--upstream",
            "http://a",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid variable name"));
    assert!(!root.join("etc/mirrorfleet/rebuilder.env").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_script_is_shellcheck_clean() {
    if !rebuilder_testkit::system::require(
        "install_script_is_shellcheck_clean",
        rebuilder_testkit::system::tools(&["shellcheck"]),
    ) {
        return;
    }
    let out = Command::new("shellcheck")
        .arg(deploy_dir().join("install.sh"))
        .arg(deploy_dir().join("fetch-sources.sh"))
        .output()
        .expect("shellcheck runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ------------------------------------------------------------------ supply chain and host

/// Runs install.sh, which must refuse with a message containing `why`.
fn assert_refused(root: &Path, args: &[&str], why: &str) {
    let o = install(root, args);
    assert!(!o.status.success(), "accepted: {args:?}");
    assert!(stderr(&o).contains(why), "{}", stderr(&o));
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn an_artifact_whose_sha256_differs_installs_nothing_and_fails() {
    let dir = scratch("sha-bad");
    let tgz = tarball(&dir);
    let root = dir.join("root");
    let good = sha256_hex(&tgz);
    // One digit changed: the expected digest of another file.
    let bad = format!(
        "{}{}",
        &good[..63],
        if good.ends_with('0') { '1' } else { '0' }
    );
    let o = install(
        &root,
        &[
            "--artifact",
            tgz.to_str().unwrap(),
            "--sha256",
            &bad,
            "--upstream",
            "http://a:80",
        ],
    );
    assert!(!o.status.success(), "a mismatching artifact was accepted");
    assert!(stderr(&o).contains("sha256 mismatch"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&good), "the actual digest is reported");
    assert_eq!(
        files_under(&root),
        Vec::<String>::new(),
        "something was installed"
    );

    // A digest that is not 64 hex digits is refused before anything is fetched.
    let args = ["--artifact", tgz.to_str().unwrap(), "--sha256", "abc"];
    assert_refused(&root, &args, "64 hexadecimal digits");
    assert_eq!(files_under(&root), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_artifact_with_the_expected_sha256_installs() {
    let dir = scratch("sha-good");
    let tgz = tarball(&dir);
    let root = dir.join("root");
    // Upper case as some tools print it: the same digest.
    let good = sha256_hex(&tgz).to_uppercase();
    let o = install(
        &root,
        &[
            "--artifact",
            tgz.to_str().unwrap(),
            "--sha256",
            &good,
            "--upstream",
            "http://a:80",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("sha256 verified"), "{}", stderr(&o));
    let bin = root.join("usr/local/bin/rebuilder");
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_rebuilder")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The VNI derivation documented in docs/deploy.md ("Mirror VNI"), which the control plane
/// implements too: 1 + (first 24 bits of SHA-256(stack id)) mod 16777215. The expected values
/// were computed independently (Python hashlib) from the documented formula.
#[test]
fn the_vni_derived_from_the_stack_id_is_the_documented_one() {
    let dir = scratch("vni");
    let root = dir.join("root");
    for (seed, vni) in [
        (
            "arn:aws:cloudformation:us-east-1:123456789012:stack/mirrorfleet/1c2fa620-982a-11e3-aff7-50e2416294e0",
            "14049789",
        ),
        (
            "arn:aws:cloudformation:eu-west-1:210987654321:stack/mf-prod/6b2f5f10-4a1e-11ef-9a3b-0a1b2c3d4e5f",
            "15251097",
        ),
    ] {
        let o = install(
            &root,
            &[
                "--artifact",
                env!("CARGO_BIN_EXE_rebuilder"),
                "--upstream",
                "http://a:80",
                "--vni-seed",
                seed,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let env = root.join("etc/mirrorfleet/rebuilder.env");
        assert_eq!(sourced(&env, "REBUILDER_VNI_ALLOW"), vni, "seed {seed}");
    }
    // A seed that could break out of the env file or a shell is refused.
    let args = [
        "--artifact",
        env!("CARGO_BIN_EXE_rebuilder"),
        "--vni-seed",
        "x'; rm -rf /",
    ];
    assert_refused(&root, &args, "invalid --vni-seed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_raises_rmem_max_to_the_receive_buffer_the_daemon_asks_for() {
    let dir = scratch("rmem");
    let root = dir.join("root");
    let bin = env!("CARGO_BIN_EXE_rebuilder");
    let conf = root.join("etc/sysctl.d/90-mirrorfleet-rebuilder.conf");
    let o = install(&root, &["--artifact", bin, "--upstream", "http://a:80"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The daemon's default REBUILDER_RCVBUF_BYTES (32 MiB).
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("net.core.rmem_max = 33554432\n"), "{text}");
    let help = Command::new(bin).args(["run", "--help"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("33554432"),
        "the daemon's default receive buffer is no longer 32 MiB: update install.sh"
    );
    let o = install(
        &root,
        &[
            "--artifact",
            bin,
            "--env",
            "REBUILDER_RCVBUF_BYTES=67108864",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("net.core.rmem_max = 67108864\n"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Key=value` lines of a unit file (the last one wins, as systemd reads single-value keys).
fn unit_settings(text: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    out
}

#[test]
fn the_unit_has_no_capabilities_no_metadata_access_and_bounded_memory_and_tasks() {
    let text = std::fs::read_to_string(deploy_dir().join("rebuilder.service")).unwrap();
    let u = unit_settings(&text);
    let last = |k: &str| u.get(k).and_then(|v| v.last()).map(String::as_str);
    assert_eq!(
        last("CapabilityBoundingSet"),
        Some(""),
        "no capability at all"
    );
    assert_eq!(last("AmbientCapabilities"), Some(""));
    assert!(
        !text
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("CAP_")),
        "a capability is granted"
    );
    assert_eq!(last("NoNewPrivileges"), Some("yes"));
    let deny: Vec<&str> = u
        .get("IPAddressDeny")
        .into_iter()
        .flatten()
        .flat_map(|v| v.split_whitespace())
        .collect();
    for imds in ["169.254.169.254/32", "fd00:ec2::254/128"] {
        assert!(
            deny.contains(&imds),
            "IPAddressDeny must hold {imds}: {deny:?}"
        );
    }
    assert!(
        !u.contains_key("IPAddressAllow"),
        "an allow list would override the deny"
    );
    let mem = last("MemoryMax").expect("MemoryMax");
    assert!(
        mem.ends_with('%') || mem.chars().last().is_some_and(|c| "KMGT".contains(c)),
        "MemoryMax={mem}"
    );
    let tasks: u32 = last("TasksMax")
        .expect("TasksMax")
        .parse()
        .expect("a number");
    assert!((16..=4096).contains(&tasks), "TasksMax={tasks}");
    assert_eq!(last("DynamicUser"), Some("yes"));
}

#[test]
fn every_shipped_unit_is_valid_for_systemd() {
    // systemd-analyze verify reports unknown keys and bad values; executables that only exist on
    // an installed host are not a finding here.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    }
    let dir = scratch("units");
    let mut checked = 0;
    for e in std::fs::read_dir(deploy_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        std::fs::copy(e.path(), dir.join(&name)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.join(&name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let findings: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("is not executable") && !l.contains("not found"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(findings.is_empty(), "{name}: {findings:#?}");
        checked += 1;
    }
    assert!(checked >= 3, "units of deploy/ not found");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `@NAME@` placeholders left in a rendered file.
fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('@') {
        let rest = &text[i + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        if !name.is_empty() && rest[name.len()..].starts_with('@') {
            out.push(format!("@{name}@"));
        }
    }
    out
}

#[test]
fn install_renders_the_cloudwatch_agent_configuration_for_this_host() {
    let dir = scratch("cw");
    let tgz = tarball(&dir);
    let root = dir.join("root");
    let cw = [
        "--metrics-namespace",
        "mirrorfleet/prod",
        "--log-group",
        "prod-RebuilderLogGroup-ABC",
        "--metrics-log-group",
        "prod-RebuilderMetricsLogGroup-DEF",
        "--asg-name",
        "prod-rebuilders",
    ];
    let mut args = vec![
        "--artifact",
        tgz.to_str().unwrap(),
        "--upstream",
        "http://a:80",
        "--admin",
        "0.0.0.0:9445",
    ];
    args.extend(cw);
    let o = install(&root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let etc = root.join("opt/aws/amazon-cloudwatch-agent/etc");
    let agent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(etc.join("mirrorfleet-agent.json")).unwrap())
            .expect("the rendered agent configuration is JSON");
    let prom = agent.pointer("/logs/metrics_collected/prometheus").unwrap();
    assert_eq!(
        prom["emf_processor"]["metric_namespace"],
        "mirrorfleet/prod"
    );
    assert_eq!(prom["log_group_name"], "prod-RebuilderMetricsLogGroup-DEF");
    assert_eq!(
        prom["prometheus_config_path"],
        "/opt/aws/amazon-cloudwatch-agent/etc/mirrorfleet-prometheus.yaml"
    );
    assert_eq!(
        agent.pointer("/logs/logs_collected/files/collect_list/0/log_group_name"),
        Some(&serde_json::json!("prod-RebuilderLogGroup-ABC"))
    );
    let scrape = std::fs::read_to_string(etc.join("mirrorfleet-prometheus.yaml")).unwrap();
    // An admin listener on every address is scraped on loopback; the group is the label.
    assert!(scrape.contains("targets: ['127.0.0.1:9445']"), "{scrape}");
    assert!(
        scrape.contains("AutoScalingGroupName: 'prod-rebuilders'"),
        "{scrape}"
    );
    for text in [scrape.as_str(), &agent.to_string()] {
        assert!(placeholders(text).is_empty(), "{:?}", placeholders(text));
    }
    assert!(
        root.join("etc/systemd/system/rebuilder-log-export.service")
            .exists()
    );
    let log = root.join("var/log/mirrorfleet/rebuilder.log");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // A value that would break out of the JSON or YAML strings is refused; nothing changes.
    let before = files_under(&root);
    let mut bad = args.clone();
    let pos = bad.iter().position(|a| *a == "mirrorfleet/prod").unwrap();
    bad[pos] = "prod\",\"x";
    assert_refused(&root, &bad, "invalid --metrics-namespace");
    assert_eq!(files_under(&root), before);
    // The four values go together.
    let args = [
        "--artifact",
        tgz.to_str().unwrap(),
        "--metrics-namespace",
        "mirrorfleet/prod",
    ];
    assert_refused(&root, &args, "go together");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_sets_up_the_source_map_refresh_for_the_daemon() {
    let dir = scratch("sources");
    let tgz = tarball(&dir);
    let root = dir.join("root");
    let o = install(
        &root,
        &[
            "--artifact",
            tgz.to_str().unwrap(),
            "--upstream",
            "http://a:80",
            "--sources-uri",
            "s3://prod-sourcemapbucket-1x2y3z/sources.json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let env = root.join("etc/mirrorfleet/rebuilder.env");
    assert_eq!(
        sourced(&env, "REBUILDER_SOURCES_FILE"),
        "/var/lib/mirrorfleet/sources.json"
    );
    let sources = root.join("etc/mirrorfleet/sources.env");
    assert_eq!(
        sourced(&sources, "MIRROR_SOURCES_S3_URI"),
        "s3://prod-sourcemapbucket-1x2y3z/sources.json"
    );
    assert_eq!(
        sourced(&sources, "REBUILDER_SOURCES_FILE"),
        "/var/lib/mirrorfleet/sources.json"
    );
    for f in [
        "usr/local/libexec/mirrorfleet/fetch-sources",
        "etc/systemd/system/rebuilder-sources.service",
        "etc/systemd/system/rebuilder-sources.timer",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    let args = [
        "--artifact",
        tgz.to_str().unwrap(),
        "--sources-uri",
        "https://example.com/sources.json",
    ];
    assert_refused(&root, &args, "s3://bucket/key");
    let _ = std::fs::remove_dir_all(&dir);
}
