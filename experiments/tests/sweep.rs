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
    let read = |n: &str, f: &str| fs::read_to_string(base.join(n).join(f)).unwrap();
    let one = read("j1", "runs.csv");
    assert_eq!(one.lines().count(), 1 + 18, "{one}");
    for f in ["runs.csv", "summary.csv", "summary.json"] {
        assert_eq!(read("j2", f), read("j1", f), "{f}");
        assert_eq!(read("merged", f), read("j1", f), "{f}");
    }
    assert_eq!(read("s0", "runs.csv").lines().count(), 1 + 9);
    // Every row carries its parameters.
    assert!(
        one.lines()
            .nth(1)
            .unwrap()
            .starts_with("00000,1,0.0,optional,"),
        "{one}"
    );
    // One grid point per line of the summary, each with its seeds counted.
    let summary = read("j1", "summary.csv");
    assert_eq!(summary.lines().count(), 1 + 6, "{summary}");
    assert!(
        summary
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("0.0,optional,3,")
    );
    // Every metric has its mean and interval columns, each named with its statistic
    // and unit.
    let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    for m in results::metrics::all() {
        let name = m.name();
        assert!(
            ["_count", "_ratio", "_s", "_ms", "_bytes"]
                .iter()
                .any(|u| name.ends_with(u)),
            "{name}"
        );
        for col in ["mean_over_seeds", "ci95_low", "ci95_high"] {
            assert!(
                header.contains(&format!("{name}:{col}").as_str()),
                "{name}:{col}"
            );
        }
    }
    // A finished sweep resumes by skipping every run.
    let again = qsafe(&["sweep", sweep, "--out", &dir("j1"), "--quiet"]);
    assert!(again.contains("0 to run (18 already done)"), "{again}");
}

#[test]
fn check_lists_every_failing_run_with_the_command_that_replays_it() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep-check");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    // A corrupted Child SA key at 5 s breaks the oracle; at 1 h (after the end) it never
    // happens. Two seeds each.
    fs::write(
        base.join("p2p.toml"),
        r#"
duration = "20s"
[topology]
kind = "point-to-point"
link = { latency = "10ms" }
tunnel = { ike = ["aes256gcm16-prfsha256-x25519"], child_rekey_time = "4s" }
[[fault]]
kind = "corrupt-child-key"
at = "5s"
gateway = "gw-b"
"#,
    )
    .unwrap();
    fs::write(
        base.join("check.toml"),
        "scenario = \"p2p.toml\"\nseeds = 2\n[grid]\n\"fault.0.at\" = [\"5s\", \"1h\"]\n",
    )
    .unwrap();
    let sweep = base.join("check.toml");
    let out = base.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["sweep", sweep.to_str().unwrap(), "--check", "--quiet"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{stdout}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("2 of 4 runs broke an invariant"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 2, "{stdout}");
    assert!(
        failed[0].starts_with("FAILED run 00000 (seed 1)"),
        "{stdout}"
    );
    assert!(
        failed[1].starts_with("FAILED run 00001 (seed 2)"),
        "{stdout}"
    );
    assert!(failed[0].contains("hold different keys"), "{stdout}");
    // The printed command replays the run: same violation, seed named, non-zero exit.
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("reproduce: "))
        .unwrap();
    let cmd = line.trim_start().trim_start_matches("reproduce: qsafe ");
    assert_eq!(
        cmd,
        format!(
            "run {} --seed 1 --set 'fault.0.at=\"5s\"'",
            base.join("p2p.toml").display()
        )
    );
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args([
            "run",
            base.join("p2p.toml").to_str().unwrap(),
            "--seed",
            "1",
        ])
        .args(["--set", "fault.0.at=\"5s\"", "--quiet", "--no-report"])
        .args(["--out", base.join("replay").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("seed 1 broke 1 invariant") && err.contains("hold different keys"),
        "{err}"
    );
    // `--seeds` overrides the file's seeds: three seeds, three failing runs.
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args([
            "sweep",
            sweep.to_str().unwrap(),
            "--check",
            "--quiet",
            "--seeds",
            "3",
        ])
        .args(["--out", base.join("out2").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let failed = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("FAILED"))
        .count();
    assert_eq!(failed, 3);
    // Without the fault, every run keeps every invariant.
    fs::write(
        base.join("sound.toml"),
        "scenario = \"p2p.toml\"\nseeds = 3\n[grid]\n\"fault.0.at\" = [\"1h\"]\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args([
            "sweep",
            base.join("sound.toml").to_str().unwrap(),
            "--check",
            "--quiet",
        ])
        .args(["--out", base.join("out3").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("check: all 3 runs kept every invariant"));
}

#[test]
fn availability_falls_once_key_consumption_exceeds_the_qkd_supply() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep-qkd-rate");
    let _ = fs::remove_dir_all(&out);
    let sweep = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/sweep-qkd-rate.toml");
    qsafe(&["sweep", sweep, "--out", out.to_str().unwrap(), "--quiet"]);
    let rows: Vec<results::SweepRow> =
        serde_json::from_str(&fs::read_to_string(out.join("runs.json")).unwrap()).unwrap();
    // Mean availability over the seeds, by key rate.
    let mut by_rate: Vec<(f64, f64)> = Vec::new();
    for rate in ["0.5", "1", "2", "4", "8"] {
        let runs: Vec<&results::SweepRow> = rows
            .iter()
            .filter(|r| r.params["topology.qkd.rate_bps"] == rate)
            .collect();
        let mean = runs
            .iter()
            .map(|r| r.metric("availability_mean_ratio").unwrap())
            .sum::<f64>()
            / runs.len() as f64;
        by_rate.push((rate.parse().unwrap(), mean));
    }
    // Each tunnel consumes 2.1 bit/s. Above that the tunnels stay up; below it only
    // the re-authentications that find a key bring an IKE SA (about rate / 2.1 of
    // them), so availability falls with the rate.
    assert!(by_rate.windows(2).all(|w| w[0].1 <= w[1].1), "{by_rate:?}");
    assert!(by_rate[4].1 > 0.99 && by_rate[3].1 > 0.97, "{by_rate:?}");
    assert!(by_rate[1].1 < 0.7 && by_rate[0].1 < 0.5, "{by_rate:?}");
    // The sweep report draws it as the sweep file asks: on a log axis.
    let svg = fs::read_to_string(out.join("figures/sweep_01_availability_mean_ratio.svg")).unwrap();
    assert!(
        svg.contains("availability mean (ratio) by qkd rate_bps")
            && svg.contains("qkd rate_bps (log scale)")
    );
}

#[test]
fn a_changed_scenario_is_refused_on_resume_and_rerun_with_force() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep-stale");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let original = fs::read_to_string(format!("{scenarios}/p2p-hybrid-qkd.toml")).unwrap();
    fs::write(base.join("p2p-hybrid-qkd.toml"), &original).unwrap();
    fs::copy(
        format!("{scenarios}/sweep-loss.toml"),
        base.join("sweep-loss.toml"),
    )
    .unwrap();
    let sweep = base.join("sweep-loss.toml");
    let out = base.join("out");
    let args = [
        "sweep",
        sweep.to_str().unwrap(),
        "--seeds",
        "1",
        "--no-report",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    qsafe(&args);
    let before = fs::read_to_string(out.join("runs.csv")).unwrap();
    // The same sweep again reuses every run.
    assert!(qsafe(&args).contains("0 to run (6 already done)"));
    // A changed scenario (a shorter run) no longer matches the runs on disk.
    let changed = original.replacen("duration = \"30m\"", "duration = \"20m\"", 1);
    assert_ne!(changed, original);
    fs::write(base.join("p2p-hybrid-qkd.toml"), &changed).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("6 of the runs")
            && err.contains("different scenario")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(out.join("runs.csv")).unwrap(), before);
    // --force reruns them, and the results are those of the new scenario.
    let forced = qsafe(&[&args[..], &["--force"]].concat());
    assert!(
        forced.contains("6 to run (0 already done, 6 stale rerun)"),
        "{forced}"
    );
    assert_ne!(fs::read_to_string(out.join("runs.csv")).unwrap(), before);
}

/// A Python with pandas and polars: `QSAFE_PYTHON`, else `python3` if it has them.
/// CI installs them (`.ci/run`) and sets `QSAFE_REQUIRE_PANDAS=1`, so the test cannot
/// pass there by skipping.
fn python_with_pandas() -> Option<String> {
    let python = std::env::var("QSAFE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import pandas, polars"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("QSAFE_REQUIRE_PANDAS").as_deref() == Ok("1") {
        panic!("QSAFE_REQUIRE_PANDAS=1 but {python} cannot import pandas and polars");
    }
    ok.then_some(python)
}

/// Runs a Python `script` on `dir`; it must print "ok".
fn python_says_ok(python: &str, script: &str, dir: &std::path::Path) {
    let o = Command::new(python)
        .args(["-c", script, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn sweep_tables_read_in_pandas_and_polars() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep-parquet");
    let _ = fs::remove_dir_all(&out);
    let sweep = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/sweep-loss.toml");
    qsafe(&[
        "sweep",
        sweep,
        "--seeds",
        "2",
        "--no-report",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let Some(python) = python_with_pandas() else {
        eprintln!("skipped: no python3 with pandas and polars (set QSAFE_PYTHON)");
        return;
    };
    // The same numbers as the CSV, column by column, in both libraries.
    let script = r#"
import sys, pandas as pd, polars as pl
d = sys.argv[1]
runs_pd, runs_pl = pd.read_parquet(d + "/runs.parquet"), pl.read_parquet(d + "/runs.parquet")
runs_csv = pd.read_csv(d + "/runs.csv", dtype={"link.*.params.loss.probability": str})
assert runs_pd.shape == runs_pl.shape == runs_csv.shape == (12, runs_csv.shape[1]), (runs_pd.shape, runs_csv.shape)
assert list(runs_pd.columns) == list(runs_csv.columns)
assert runs_pl["seed"].dtype == pl.Int64
assert runs_pd["link.*.params.loss.probability"].tolist() == runs_csv["link.*.params.loss.probability"].tolist()
assert (runs_pd["handshake_p50_ms"] - runs_csv["handshake_p50_ms"]).abs().max() < 1e-9
assert runs_pd["cpu_busy_mean_ratio"].isna().all()
summary = pl.read_parquet(d + "/summary.parquet")
assert summary.height == 6
col = "availability_mean_ratio:mean_over_seeds"
assert summary[col].min() > 0.5 and summary[col].max() <= 1.0
print("ok")
"#;
    python_says_ok(&python, script, &out);
}

#[test]
fn run_rows_read_in_pandas_and_polars() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("run-rows-parquet");
    let _ = fs::remove_dir_all(&out);
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/p2p-etsi014.toml");
    qsafe(&[
        "run",
        scenario,
        "--quiet",
        "--no-report",
        "--out",
        out.to_str().unwrap(),
    ]);
    for name in ["handshakes", "exchanges", "key_requests", "pool_levels"] {
        assert!(
            out.join(format!("{name}.parquet")).exists(),
            "{name}.parquet"
        );
    }
    let Some(python) = python_with_pandas() else {
        eprintln!("skipped: no python3 with pandas and polars (set QSAFE_PYTHON)");
        return;
    };
    // Every row file's Parquet twin holds the same table: names, integers as Int64,
    // an empty integer cell as null, text as text.
    let script = r#"
import sys, pandas as pd, polars as pl
d = sys.argv[1]
for name in ["handshakes", "exchanges", "key_requests", "pool_levels"]:
    csv = pd.read_csv(f"{d}/{name}.csv", keep_default_na=False)
    pq, pq_pl = pd.read_parquet(f"{d}/{name}.parquet"), pl.read_parquet(f"{d}/{name}.parquet")
    assert list(pq.columns) == list(csv.columns), name
    assert pq.shape == pq_pl.shape == csv.shape and len(pq) > 0, (name, pq.shape, csv.shape)
    for col in pq.columns:
        if pq_pl[col].dtype == pl.Int64:
            want = [None if v == "" else int(v) for v in csv[col].astype(str)]
            got = [None if pd.isna(v) else int(v) for v in pq[col]]
            assert got == want, (name, col)
        else:
            assert pq[col].astype(str).tolist() == csv[col].astype(str).tolist(), (name, col)
h = pl.read_parquet(d + "/handshakes.parquet")
assert h["time_to_up_ns"].dtype == pl.Int64 and h["ppk_id"].dtype == pl.String
print("ok")
"#;
    python_says_ok(&python, script, &out);
}
