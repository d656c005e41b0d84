//! Golden snapshots of summary tables for a fixed-seed run and a fixed sweep. When a
//! change is meant to alter them, regenerate with `QSAFE_BLESS=1 cargo test --test golden`
//! and review the diff.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn qsafe(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("QSAFE_BLESS").is_ok() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "{name} changed; if intended, rerun with QSAFE_BLESS=1 and review the diff"
    );
}

#[test]
fn run_summary_table() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("golden-run");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/p2p-hybrid-qkd.toml");
    qsafe(&[
        "run",
        scenario,
        "--seed",
        "1",
        "--quiet",
        "--no-report",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let mut data: reports::Results =
        serde_json::from_str(&fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    data.rows = results::Rows::read_csv(&dir).unwrap();
    check("p2p-hybrid-qkd-seed1.md", &reports::tunnel_table(&data));
}

#[test]
fn sweep_summary_table() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("golden-sweep");
    let _ = fs::remove_dir_all(&dir);
    let sweep = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/sweep-loss.toml");
    qsafe(&["sweep", sweep, "--quiet", "--out", dir.to_str().unwrap()]);
    check(
        "sweep-loss-runs.csv",
        &fs::read_to_string(dir.join("runs.csv")).unwrap(),
    );
    check(
        "sweep-loss-summary.csv",
        &fs::read_to_string(dir.join("summary.csv")).unwrap(),
    );
    let points: Vec<reports::sweep::Point> =
        serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    check(
        "sweep-loss-points.md",
        &reports::sweep::point_table(&points),
    );
    assert!(dir.join("report.html").exists());
}
