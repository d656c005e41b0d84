//! Sweeps: results independent of thread count and sharding, resumable, merged by run id.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn qsafe(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn jobs_and_shards_do_not_change_results() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep");
    let _ = fs::remove_dir_all(&base);
    let sweep = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/sweep-loss.toml");
    let dir = |n: &str| base.join(n).to_str().unwrap().to_string();
    qsafe(&[
        "sweep",
        sweep,
        "--out",
        &dir("j1"),
        "--jobs",
        "1",
        "--quiet",
    ]);
    qsafe(&[
        "sweep",
        sweep,
        "--out",
        &dir("j2"),
        "--jobs",
        "2",
        "--quiet",
    ]);
    qsafe(&[
        "sweep",
        sweep,
        "--out",
        &dir("s0"),
        "--shard-index",
        "0",
        "--shard-count",
        "2",
        "--quiet",
    ]);
    qsafe(&[
        "sweep",
        sweep,
        "--out",
        &dir("s1"),
        "--shard-index",
        "1",
        "--shard-count",
        "2",
        "--quiet",
    ]);
    Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["merge", &dir("merged"), &dir("s0"), &dir("s1")])
        .output()
        .unwrap();
    let read = |n: &str| fs::read_to_string(base.join(n).join("summary.csv")).unwrap();
    let one = read("j1");
    assert_eq!(one.lines().count(), 1 + 18, "{one}");
    assert_eq!(read("j2"), one);
    assert_eq!(read("merged"), one);
    assert_eq!(read("s0").lines().count(), 1 + 9);
    // Every row carries its parameters; loss shows in retransmissions.
    assert!(
        one.lines()
            .nth(1)
            .unwrap()
            .starts_with("00000,1,\"0.0\",\"optional\","),
        "{one}"
    );
    // A finished sweep resumes by skipping every run.
    let again = qsafe(&["sweep", sweep, "--out", &dir("j1"), "--quiet"]);
    assert!(again.contains("0 to run (18 already done)"), "{again}");
}
