//! The binary's allocator setting (`rebuilder/src/main.rs`): mimalloc's arenas committed on
//! demand unless `MIMALLOC_ARENA_EAGER_COMMIT` is set, read back from mimalloc's own report
//! of its options (`MIMALLOC_VERBOSE=1`, printed on stderr).

use std::process::Command;

/// The value mimalloc reports for `arena_eager_commit` when the binary runs with `env`.
fn arena_eager_commit(env: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rebuilder"));
    cmd.arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT");
    if let Some(v) = env {
        cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", v);
    }
    let out = cmd.output().expect("run rebuilder --version");
    assert!(out.status.success(), "{}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("mimalloc: option 'arena_eager_commit': "))
        .unwrap_or_else(|| panic!("mimalloc did not report arena_eager_commit:\n{stderr}"))
        .trim()
        .to_string()
}

#[test]
fn arenas_are_committed_on_demand_by_default() {
    assert_eq!(arena_eager_commit(None), "0");
}

#[test]
fn the_environment_still_chooses_eager_commit_and_its_huge_pages() {
    assert_eq!(arena_eager_commit(Some("2")), "2");
    assert_eq!(arena_eager_commit(Some("1")), "1");
}
