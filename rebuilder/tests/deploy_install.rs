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
    let stage = dir.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_rebuilder"), stage.join("rebuilder")).unwrap();
    std::fs::copy(deploy_dir().join("install.sh"), stage.join("install.sh")).unwrap();
    std::fs::copy(
        deploy_dir().join("rebuilder.service"),
        stage.join("rebuilder.service"),
    )
    .unwrap();
    let tgz = dir.join("rebuilder-x86_64-linux.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&stage)
        .args(["rebuilder", "install.sh", "rebuilder.service"])
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
        .output()
        .expect("shellcheck runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
