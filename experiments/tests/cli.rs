//! The `qsafe` binary as a user runs it: reproducible results, outputs on request, and
//! errors that say where the problem is.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

mod common;

const SHORT: &str = r#"
duration = "20s"
interval = "5ms"
payload_bytes = 1400

[link]
latency = "15ms"
jitter = "1ms"
mtu = 1280
loss = { model = "bernoulli", probability = 0.03 }
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn qsafe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(args)
        .output()
        .expect("qsafe runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "qsafe failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn fingerprint(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("fingerprint: "))
        .expect("fingerprint line");
    let hex = line["fingerprint: ".len()..].to_string();
    assert_eq!(hex.len(), 64);
    hex
}

#[test]
fn help_names_the_commands() {
    let out = stdout(&qsafe(&["--help"]));
    assert!(out.contains("probe"), "{out}");
}

#[test]
fn a_seed_reproduces_a_run_byte_for_byte() {
    let dir = scratch("reproduce");
    let cfg = dir.join("short.toml");
    fs::write(&cfg, SHORT).unwrap();
    let run = |seed: &str, out: &str| {
        let o = stdout(&qsafe(&[
            "probe",
            cfg.to_str().unwrap(),
            "--seed",
            seed,
            "--quiet",
            "--out",
            dir.join(out).to_str().unwrap(),
        ]));
        (
            fingerprint(&o),
            fs::read(dir.join(out).join("results.json")).unwrap(),
            o,
        )
    };
    let (f1, r1, o1) = run("5", "a");
    let (f2, r2, _) = run("5", "b");
    let (f3, r3, _) = run("6", "c");
    assert_eq!(f1, f2);
    assert_eq!(r1, r2, "results.json differs between identical runs");
    assert_ne!(f1, f3);
    assert_ne!(r1, r3);
    assert!(o1.contains(&format!(
        "reproduce: qsafe probe {} --seed 5",
        cfg.display()
    )));
    let manifest = fs::read_to_string(dir.join("a/manifest.json")).unwrap();
    assert!(
        manifest.contains(&f1) && manifest.contains("\"seed\": 5"),
        "{manifest}"
    );
}

#[test]
fn trace_and_capture_are_written_on_request_without_changing_the_run() {
    let dir = scratch("outputs");
    let cfg = dir.join("short.toml");
    fs::write(&cfg, SHORT).unwrap();
    let plain = stdout(&qsafe(&[
        "probe",
        cfg.to_str().unwrap(),
        "--quiet",
        "--out",
        dir.join("plain").to_str().unwrap(),
    ]));
    let out = dir.join("full");
    let full = stdout(&qsafe(&[
        "probe",
        cfg.to_str().unwrap(),
        "--quiet",
        "--pcap",
        "--trace",
        "kind=link.drop",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(fingerprint(&plain), fingerprint(&full));
    let trace = fs::read_to_string(out.join("trace.jsonl")).unwrap();
    assert!(trace.lines().count() > 50, "3% of 8,000 probes are dropped");
    for line in trace.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kind"], "link.drop");
        assert_eq!(v["data"]["reason"], "fragment_lost");
    }
    let pcap = fs::read(out.join("capture.pcap")).unwrap();
    // Magic number of a nanosecond-resolution pcap, little-endian.
    assert_eq!(&pcap[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
    assert!(pcap.len() > 8000 * 1400);
}

#[test]
fn a_bad_file_names_the_file_and_the_field() {
    let dir = scratch("bad");
    for (text, needle) in [
        ("[link]\nmtu = 0\n", "mtu"),
        (
            "[link]\nlatency = \"soon\"\n",
            "line 2: field `link.latency`",
        ),
        (
            "duration = \"1m\"\n[link]\nloss = { model = \"bernoulli\", probability = 1.5 }\n",
            "link.loss.probability",
        ),
        ("speed = 3\n", "line 1: field `speed`"),
    ] {
        let cfg = dir.join("bad.toml");
        fs::write(&cfg, text).unwrap();
        let o = qsafe(&[
            "probe",
            cfg.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("bad.toml") && err.contains(needle),
            "{text:?} gave: {err}"
        );
    }
}

/// `--event-costs` prints where the wall time went, by kind of event, and changes no
/// result: the results file is the same byte for byte.
#[test]
fn event_costs_are_printed_apart_from_the_results() {
    let dir = scratch("event-costs");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/demo.toml");
    let run = |out: &str, extra: &[&str]| {
        let out = dir.join(out);
        let mut args = vec!["run", demo, "--quiet", "--no-report", "--out"];
        args.push(out.to_str().unwrap());
        args.extend(extra);
        let o = qsafe(&args);
        stdout(&o);
        let results = fs::read(out.join("results.json")).unwrap();
        (String::from_utf8(o.stderr).unwrap(), results)
    };
    let (plain_err, plain) = run("plain", &[]);
    let (err, timed) = run("timed", &["--event-costs"]);
    assert_eq!(plain, timed);
    assert!(!plain_err.contains("kind of event"), "{plain_err}");
    let events = serde_json::from_slice::<serde_json::Value>(&timed).unwrap()["events"]
        .as_u64()
        .unwrap();
    let all = err
        .lines()
        .find_map(|l| l.strip_prefix("all "))
        .unwrap_or_else(|| panic!("no total in {err}"));
    assert_eq!(
        all.split_whitespace().next(),
        Some(events.to_string().as_str()),
        "{err}"
    );
    assert!(
        err.contains("wall time by kind of event") && err.contains("deliver IKE"),
        "{err}"
    );
}

#[test]
fn run_reproduces_a_scenario_and_reports_bad_files_precisely() {
    let dir = scratch("run");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/demo.toml");
    let run = |seed: &str, out: &str| {
        let o = stdout(&qsafe(&[
            "run",
            demo,
            "--seed",
            seed,
            "--quiet",
            "--out",
            dir.join(out).to_str().unwrap(),
        ]));
        (
            fingerprint(&o),
            fs::read(dir.join(out).join("results.json")).unwrap(),
            o,
        )
    };
    let (f1, r1, o1) = run("3", "a");
    let (f2, r2, _) = run("3", "b");
    let (f3, _, _) = run("4", "c");
    assert_eq!((f1.clone(), r1), (f2, r2));
    assert_ne!(f1, f3);
    assert!(
        o1.contains("branch-4") && o1.contains(&format!("reproduce: qsafe run {demo} --seed 3")),
        "{o1}"
    );
    let csv = fs::read_to_string(dir.join("a/handshakes.csv")).unwrap();
    assert!(
        csv.lines().count() > 50 && csv.contains(",established,"),
        "{csv}"
    );

    let bad = dir.join("bad.toml");
    fs::write(
        &bad,
        "duration = \"1h\"\n[[gateway]]\nname = \"a\"\naddress = \"10.0.0.300\"\n",
    )
    .unwrap();
    let o = qsafe(&["run", bad.to_str().unwrap(), "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("bad.toml")
            && err.contains("line 4")
            && err.contains("gateway[0].address"),
        "{err}"
    );
    fs::write(&bad, "duration = \"1h\"\n[[gateway]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[tunnel]]\nname = \"t\"\ninitiator = \"a\"\nresponder = \"zz\"\n").unwrap();
    let o = qsafe(&["run", bad.to_str().unwrap(), "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("bad.toml: line 8: `tunnel[0].responder`: no such name `zz`"),
        "{err}"
    );
    // An unparsable proposal string: the line of the `ike` key.
    fs::write(&bad, "duration = \"1h\"\n[[gateway]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[gateway]]\nname = \"b\"\naddress = \"10.0.0.2\"\n[[link]]\na = \"a\"\nb = \"b\"\n[[tunnel]]\nname = \"t\"\ninitiator = \"a\"\nresponder = \"b\"\nike = [\"aes256gcm16-prfsha256-x99999\"]\n").unwrap();
    let o = qsafe(&["run", bad.to_str().unwrap(), "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("line 15: `tunnel[0].ike`") && err.contains("x99999"),
        "{err}"
    );
}

#[test]
fn the_child_rekey_scenario_rekeys_in_fragments_and_draws_keys_only_to_reauthenticate() {
    let dir = scratch("child-rekeys");
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/hub-child-rekeys.toml"
    );
    let out = dir.join("out");
    stdout(&qsafe(&[
        "run",
        scenario,
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]));
    let r = common::read_run(&out);
    assert_eq!(r["violations"].as_array().unwrap().len(), 0);
    let rekeys: Vec<&serde_json::Value> = r["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["exchange"] == "CREATE_CHILD_SA")
        .collect();
    // 12 tunnels, 30 minutes, a rekey every 100-120 s but none across a reauthentication.
    assert!(
        (12 * 12..=12 * 15).contains(&rekeys.len()),
        "{}",
        rekeys.len()
    );
    assert!(
        rekeys
            .iter()
            .all(|e| e["request_fragments"] == 2 && e["response_fragments"] == 2)
    );
    // QKD keys: one per IKE SA (initial and two reauthentications), none per rekey.
    for t in r["tunnels"].as_array().unwrap() {
        assert_eq!(t["keys_drawn"], t["attempts"], "{t}");
    }
}

#[test]
fn generate_writes_a_scenario_that_runs_and_names_bad_settings() {
    let dir = scratch("generate");
    let file = dir.join("hub.toml");
    let o = qsafe(&[
        "generate",
        "hub-and-spoke",
        "--nodes",
        "3",
        "--duration",
        "2m",
        "--set",
        "topology.link.mtu=1280",
        "--set",
        "topology.tunnel.reauth_time=\"1m\"",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("[[gateway]]").count(), 4, "{text}");
    assert_eq!(text.matches("mtu = 1280").count(), 3, "{text}");
    let out = stdout(&qsafe(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--no-report",
        "--out",
        dir.join("out").to_str().unwrap(),
    ]));
    assert!(out.contains("gw-2-hub"), "{out}");
    let o = qsafe(&["generate", "star", "--nodes", "3"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("field `topology.kind`: unknown variant `star`"),
        "{err}"
    );
    // A bad template value is named by the key the user set, not by a line of the
    // generated file; rates take fractions.
    for (set, expected) in [
        (
            "topology.qkd.rate_bps=1",
            "error: field `topology.qkd`: missing field `capacity_bits`",
        ),
        (
            "topology.tunnel.ppk=\"sometimes\"",
            "error: field `topology.tunnel.ppk`: unknown variant `sometimes`",
        ),
    ] {
        let o = qsafe(&["generate", "hub-and-spoke", "--set", set]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.starts_with(expected),
            "{set}: {err}"
        );
    }
    let o = qsafe(&[
        "generate",
        "point-to-point",
        "--set",
        "topology.qkd={ rate_bps = 1.5, capacity_bits = 4096 }",
    ]);
    assert!(stdout(&o).contains("rate_bps = 1.5"));
}

#[test]
fn calibrate_prints_a_cpu_line_a_scenario_takes() {
    let o = qsafe(&["calibrate"]);
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("cpu = "))
        .expect("a cpu line");
    // Pasted into a gateway, the line runs: the handshake takes longer than its round
    // trips by the work the measured costs add.
    let scenario = format!(
        "duration = \"10s\"\n[[gateway]]\nname = \"a\"\naddress = \"10.0.0.1\"\n{line}\n\
         [[gateway]]\nname = \"b\"\naddress = \"10.0.0.2\"\n{line}\n\
         [[link]]\na = \"a\"\nb = \"b\"\nparams = {{ latency = \"10ms\" }}\n\
         [[tunnel]]\nname = \"t\"\ninitiator = \"a\"\nresponder = \"b\"\n"
    );
    let dir = scratch("calibrated");
    fs::write(dir.join("s.toml"), scenario).unwrap();
    let s = dir.join("s.toml");
    let o = qsafe(&[
        "run",
        s.to_str().unwrap(),
        "--quiet",
        "--no-report",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = common::read_run(&dir);
    let d = r["handshakes"][0]["duration_ns"].as_u64().unwrap();
    assert!(d > 60_000_000 + 100_000, "{d}");
    assert_eq!(r["cpus"].as_array().unwrap().len(), 2);
}

/// `qsafe bench` prints its one table: scale rows (the last by region; each the middle
/// of `--repeat` runs), then the crypto-floor rows, with the floor a positive time, the
/// heavy run's exchanges counted and the scale rows' memory read (no timing is asserted).
#[test]
fn bench_prints_its_table() {
    let o = qsafe(&[
        "bench",
        "--spokes",
        "3,6",
        "--hours",
        "1",
        "--heavy-spokes",
        "2",
        "--repeat",
        "2",
    ]);
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| run"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 5, "{out}");
    assert_eq!((rows[0][2], rows[1][2]), ("3", "6"), "{out}");
    // Ten regions of the first size, run region by region.
    assert!(rows[2][1].contains("10 regions by region"), "{out}");
    assert_eq!(rows[2][2], "30", "{out}");
    assert!(rows[3][1].contains("real crypto") && rows[4][1].contains("model crypto"));
    // Each scale row ran in a process of its own and read its peak memory.
    for row in &rows[1..3] {
        let peak_mib: f64 = row[9].parse().unwrap();
        let _per_tunnel: f64 = row[10].parse().unwrap();
        assert!(peak_mib > 1.0, "{out}");
    }
    let floor: f64 = rows[3][7].parse().unwrap();
    let exchanges_per_s: f64 = rows[3][6].parse().unwrap();
    assert!(floor > 0.0 && exchanges_per_s > 0.0, "{out}");
    assert!(out.contains("us per IKE exchange"), "{out}");
}

/// Every dotted key a scenario file writes, with list items as `*` and `[topology]`
/// templates mapped to the keys they fill (`topology.link.mtu` -> `link.*.params.mtu`).
fn written_keys(v: &toml::Value, path: &str, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push(p.clone());
                let under = match p.as_str() {
                    "topology.link" => "link.*.params".to_string(),
                    "topology.qkd" => "qkd_link.*.pool".to_string(),
                    "topology.tunnel" => "tunnel.*".to_string(),
                    "topology.kme" => "kme.*".to_string(),
                    "topology.gateway" | "topology.hub" => "gateway.*".to_string(),
                    _ => p,
                };
                written_keys(child, &under, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
            for i in items {
                written_keys(i, &format!("{path}.*"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn explain_lists_every_key_the_scenarios_use() {
    let known: Vec<String> = topologies::explain::keys()
        .into_iter()
        .map(|k| k.path)
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for dir in ["scenarios", "examples"] {
        for entry in fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let path = entry.unwrap().path();
            let text = fs::read_to_string(&path).unwrap();
            // Scenario files only (not sweeps, not the link-probe example).
            if topologies::parse(&text, "test").is_err() {
                continue;
            }
            let mut keys = Vec::new();
            written_keys(&toml::Value::Table(text.parse().unwrap()), "", &mut keys);
            for k in keys {
                assert!(
                    known.contains(&k),
                    "{}: `{k}` is accepted but `qsafe explain` does not list it",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn explain_prints_keys_metrics_and_the_defaults_a_run_used() {
    let out = stdout(&qsafe(&["explain", "tunnel[0].rekey_time"]));
    assert!(
        out.starts_with("tunnel.*.rekey_time  (duration, default none)")
            && out.contains("strongSwan"),
        "{out}"
    );
    let all = stdout(&qsafe(&["explain"]));
    for k in [
        "qkd_link.*.pool.share_permille",
        "kme.*.request_latency  (duration, default \"5ms\")",
        "topology.stagger",
    ] {
        assert!(all.contains(k), "{k}");
    }
    let metrics = stdout(&qsafe(&["explain", "metrics"]));
    assert!(
        metrics.contains("availability_mean_ratio  (ratio, mean)"),
        "{metrics}"
    );
    let o = qsafe(&["explain", "tunnel.nonsense"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no scenario key `tunnel.nonsense`"));
    // The manifest of a run lists the defaults it relied on.
    let dir = scratch("explain-defaults");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/p2p-hybrid-qkd.toml");
    stdout(&qsafe(&[
        "run",
        scenario,
        "--quiet",
        "--no-report",
        "--rows",
        "none",
        "--out",
        dir.to_str().unwrap(),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let d = &manifest["defaults_applied"];
    assert_eq!(
        d["tunnel.*.ike"], "[\"aes256gcm16-prfsha256-x25519-ke1_mlkem768\"]",
        "{d}"
    );
    assert_eq!(d["kme.*.request_latency"], "\"5ms\"", "{d}");
    assert_eq!(d["qkd_link.*.pool.key_size_bits"], "256", "{d}");
    // What the scenario writes is not a default.
    assert!(
        d.get("tunnel.*.ppk").is_none() && d.get("duration").is_none(),
        "{d}"
    );
}

#[test]
fn compare_puts_runs_side_by_side_with_their_differences() {
    let dir = scratch("compare");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/p2p-hybrid-qkd.toml");
    let run = |name: &str, loss: &str| {
        let out = dir.join(name);
        stdout(&qsafe(&[
            "run",
            scenario,
            "--quiet",
            "--no-report",
            "--rows",
            "none",
            "--set",
            &format!("link.*.params.loss.probability={loss}"),
            "--out",
            out.to_str().unwrap(),
        ]));
        out
    };
    let (clean, lossy) = (run("clean", "0.0"), run("lossy", "0.2"));
    let report = dir.join("report");
    let out = stdout(&qsafe(&[
        "compare",
        clean.to_str().unwrap(),
        lossy.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]));
    let md = fs::read_to_string(report.join("compare.md")).unwrap();
    assert!(out.starts_with(&md));
    assert!(
        md.starts_with("| metric | clean | lossy | difference from the first | 95% CI |"),
        "{md}"
    );
    // Without loss nothing is sent twice; with 20 % loss requests are.
    let row = md
        .lines()
        .find(|l| l.starts_with("| retransmissions_total_count |"))
        .unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[2], "0", "{row}");
    assert!(cells[4].starts_with('+'), "{row}");
    assert_eq!(cells[5], "-", "one run a side: no interval");
    for f in ["compare_handshake_cdf.svg", "compare_time_to_up_cdf.png"] {
        assert!(report.join("figures").join(f).exists(), "{f}");
    }
    let html = fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("Welch") && html.contains("<svg"));
}

#[test]
fn swarm_runs_drawn_scenarios_and_shrink_reduces_a_failing_one() {
    let dir = scratch("swarm");
    // Seeds 28 and 39 once panicked: a deadline an abandoned exchange had hidden was
    // in the past at the run's end. (CI runs a longer swarm in release.)
    for first in ["28", "39"] {
        let out = stdout(&qsafe(&[
            "swarm",
            "--first",
            first,
            "--seeds",
            "1",
            "--out",
            dir.to_str().unwrap(),
        ]));
        assert!(out.contains("swarm: all 1 runs"), "{out}");
    }
    // A scenario that breaks an invariant on purpose (a corrupted Child SA key at the
    // hub) with much around it: shrink keeps the violation and drops the rest.
    let scenario = dir.join("broken.toml");
    fs::write(
        &scenario,
        r#"
duration = "8m"
crypto = "model"
[topology]
kind = "hub-and-spoke"
nodes = 4
link = { latency = "10ms" }
tunnel = { reauth_time = "2m", traffic = { rate_pps = 5 } }
[[fault]]
kind = "corrupt-child-key"
at = "30s"
gateway = "hub"
[[adversary]]
gateway = "gw-1"
duplicate = 0.1
"#,
    )
    .unwrap();
    let out = stdout(&qsafe(&[
        "shrink",
        scenario.to_str().unwrap(),
        "--seed",
        "3",
    ]));
    assert!(out.contains("reductions; smallest scenario"), "{out}");
    let shrunk = fs::read_to_string(dir.join("broken.shrunk.toml")).unwrap();
    assert!(shrunk.matches("[[tunnel]]").count() < 4, "{shrunk}");
    assert!(!shrunk.contains("duplicate"), "{shrunk}");
    assert!(shrunk.contains("corrupt-child-key"), "{shrunk}");
    // The shrunk scenario still breaks it.
    let o = qsafe(&[
        "run",
        dir.join("broken.shrunk.toml").to_str().unwrap(),
        "--seed",
        "3",
        "--quiet",
        "--no-report",
        "--out",
        dir.join("rerun").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

#[test]
fn shards_of_independent_regions_merge_into_the_single_runs_results() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shards");
    let _ = fs::remove_dir_all(&base);
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/regions.toml");
    let run = |out: &str, shard: Option<(&str, &str)>| {
        let dir = base.join(out);
        let mut args = vec![
            "run",
            scenario,
            "--quiet",
            "--no-report",
            "--set",
            "crypto=\"model\"",
            "--out",
            dir.to_str().unwrap(),
        ];
        if let Some((i, n)) = shard {
            args.extend(["--shard-index", i, "--shard-count", n]);
        }
        let o = qsafe(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        dir
    };
    let whole = run("whole", None);
    let shards = [
        run("shard-0", Some(("0", "2"))),
        run("shard-1", Some(("1", "2"))),
    ];
    let merged = base.join("merged");
    let o = qsafe(&[
        "merge",
        merged.to_str().unwrap(),
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |d: &PathBuf| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(d.join("results.json")).unwrap()).unwrap()
    };
    let (w, m) = (read(&whole), read(&merged));
    // Every table holds the same rows (in shard order rather than file order), and the
    // totals, recomputed from the shards' rows, are the single run's.
    let sorted = |v: &serde_json::Value| {
        let mut rows: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        rows.sort();
        rows
    };
    for table in [
        "tunnels",
        "traffic",
        "pools",
        "links",
        "endpoints",
        "violations",
    ] {
        assert_eq!(sorted(&w[table]), sorted(&m[table]), "{table}");
    }
    assert_eq!(w["tunnels"].as_array().unwrap().len(), 9);
    for field in ["totals", "qkd", "seed", "duration_ns"] {
        assert_eq!(w[field], m[field], "{field}");
    }
    // Regions are whole: one shard per region at most.
    let o = qsafe(&[
        "run",
        scenario,
        "--quiet",
        "--no-report",
        "--shard-index",
        "0",
        "--shard-count",
        "4",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("3 independent region(s), fewer than 4 shards")
    );
}

#[test]
fn regions_run_by_region_give_the_whole_runs_results() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("by-region");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let written = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/regions.toml");
    let generated = base.join("generated.toml");
    fs::write(
        &generated,
        "duration = \"10m\"\ncrypto = \"model\"\n[topology]\nkind = \"hub-and-spoke\"\nnodes = 3\nregions = 3\nlink = { latency = \"10ms\", loss = { model = \"bernoulli\", probability = 0.05 } }\nqkd = { rate_bps = 100, capacity_bits = 65536, initial_bits = 4096 }\ntunnel = { ppk = \"required\", reauth_time = \"3m\", traffic = { rate_pps = 2 } }\n",
    )
    .unwrap();
    let run = |scenario: &str, out: &str, extra: &[&str]| {
        let dir = base.join(out);
        let mut args = vec![
            "run",
            scenario,
            "--quiet",
            "--no-report",
            "--set",
            "crypto=\"model\"",
            "--out",
            dir.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = qsafe(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        dir
    };
    let read = |d: &PathBuf, f: &str| fs::read_to_string(d.join(f)).unwrap();
    let json = |d: &PathBuf| -> serde_json::Value {
        serde_json::from_str(&read(d, "results.json")).unwrap()
    };
    for (name, scenario) in [
        ("written", written),
        ("generated", generated.to_str().unwrap()),
    ] {
        let whole = run(scenario, &format!("{name}-whole"), &[]);
        let one = run(
            scenario,
            &format!("{name}-1"),
            &["--by-region", "--jobs", "1"],
        );
        let two = run(
            scenario,
            &format!("{name}-2"),
            &["--by-region", "--jobs", "2"],
        );
        // The same bytes however many regions run at once.
        for f in [
            "results.json",
            "handshakes.csv",
            "exchanges.csv",
            "tunnels.csv",
            "links.csv",
        ] {
            assert_eq!(read(&one, f), read(&two, f), "{name}: {f}");
        }
        // Regions are listed in file order: every table and total is the whole run's,
        // only the events (each region runs the periodic ones) and the fingerprint differ.
        let (w, r) = (json(&whole), json(&one));
        assert_eq!(w["tunnels"].as_array().unwrap().len(), 9, "{name}");
        assert!(
            w["totals"]["handshake_ns"]["count"].as_u64().unwrap() > 9,
            "{name}"
        );
        for (field, value) in w.as_object().unwrap() {
            if field != "events" && field != "fingerprint" {
                assert_eq!(*value, r[field], "{name}: {field}");
            }
        }
        assert!(r["fingerprint"].as_str().unwrap().starts_with("merged:"));
        let rows = |d: &PathBuf| {
            let mut lines: Vec<String> =
                read(d, "exchanges.csv").lines().map(String::from).collect();
            lines.sort();
            lines
        };
        assert_eq!(rows(&whole), rows(&one), "{name}: the same exchanges");
    }
    // The same as merging one shard per region, fingerprint included.
    let shards: Vec<PathBuf> = (0..3)
        .map(|i| {
            let i = i.to_string();
            run(
                written,
                &format!("shard-{i}"),
                &["--shard-index", &i, "--shard-count", "3"],
            )
        })
        .collect();
    let merged = base.join("merged");
    let mut args = vec!["merge", merged.to_str().unwrap()];
    args.extend(shards.iter().map(|s| s.to_str().unwrap()));
    assert!(qsafe(&args).status.success());
    assert_eq!(json(&merged), json(&base.join("written-1")));
}
