//! Figures are valid SVG and PNG with their titles and axis labels; the report holds
//! every section.

use std::fs;
use std::path::PathBuf;

use results::{
    ChannelStats, CpuSummary, ExchangeRow, HandshakeRow, KeyRequestRow, LinkSummary, NetworkStats,
    PoolSample, PoolSummary, Results, Rows, TrafficSummary, TunnelSummary,
};

/// A two-hour run of one tunnel: three attempts (one failed), a pool that ran empty
/// once, one lossy link direction, ESP traffic with losses.
fn run_results() -> Results {
    let handshake =
        |attempt, requested_s: f64, wait_s: f64, ended_ms: u64, outcome: &str, ppk: &str, rtx| {
            let requested_ns = (requested_s * 1e9) as u64;
            let started = requested_ns + (wait_s * 1e9) as u64;
            HandshakeRow {
                tunnel: "t1".into(),
                attempt,
                requested_ns,
                key_wait_ns: started - requested_ns,
                ike_started_ns: started,
                ended_ns: started + ended_ms * 1_000_000,
                outcome: outcome.into(),
                duration_ns: ended_ms * 1_000_000,
                time_to_up_ns: (outcome == "established")
                    .then_some(started - requested_ns + ended_ms * 1_000_000),
                ppk: ppk.into(),
                retransmissions: rtx,
                ..Default::default()
            }
        };
    let exchange = |name: &str, request_bytes, response_bytes| ExchangeRow {
        tunnel: "t1".into(),
        exchange: name.into(),
        request_bytes,
        request_fragments: 1,
        response_bytes,
        response_fragments: 1,
        ..Default::default()
    };
    let key_request = |time_ns, status| KeyRequestRow {
        time_ns,
        gateway: "a".into(),
        op: "enc_keys".into(),
        status,
        latency_ns: 5_000_000,
        ..Default::default()
    };
    let h = 3_600_000_000_000u64;
    Results {
        seed: 5,
        crypto: "real".into(),
        duration_ns: 2 * h,
        events: 99,
        fingerprint: "ab12".into(),
        tunnels: vec![TunnelSummary {
            tunnel: "t1".into(),
            attempts: 3,
            established: 2,
            failed: 1,
            keys_drawn: 3,
            keys_wasted: 1,
            key_wait_ns: 2_000_000_000,
            up_ns: h,
            ..Default::default()
        }],
        rows: Rows {
            handshakes: vec![
                handshake(1, 0.0, 0.0, 130, "established", "used", 0),
                handshake(
                    2,
                    600.0,
                    2.0,
                    165_000,
                    "failed: retransmit timeout in IKE_AUTH",
                    "",
                    5,
                ),
                handshake(3, 768.0, 0.0, 140, "established", "used", 0),
            ],
            exchanges: vec![
                exchange("IKE_SA_INIT", 232, 232),
                exchange("IKE_INTERMEDIATE", 1249, 1153),
            ],
            key_requests: vec![key_request(1000, 200), key_request(600_000_000_000, 503)],
            pool_samples: [(0, 16384), (h, 8192), (h * 3 / 2, 0), (h * 5 / 3, 2048)]
                .into_iter()
                .map(|(time_ns, level_bits)| PoolSample {
                    time_ns,
                    link: "k1-k2".into(),
                    owner: "k1".into(),
                    level_bits,
                    generated_bits: 0,
                })
                .collect(),
        },
        pools: vec![PoolSummary {
            link: "k1-k2".into(),
            owner: "k1".into(),
            capacity_bits: 65536,
            key_size_bits: 256,
            warning_below_keys: 16,
            resume_at_keys: 4,
            delivered_keys: 3,
            refused_requests: 1,
            ..Default::default()
        }],
        links: vec![LinkSummary {
            link: "link/a-b".into(),
            direction: "a>b".into(),
            stats: ChannelStats {
                datagrams_sent: 10,
                datagrams_delivered: 9,
                drops: [0, 0, 1, 0, 0, 0, 0, 0],
                ..Default::default()
            },
        }],
        qkd: NetworkStats {
            keys_delivered: 3,
            keys_fetched: 2,
            keys_wasted: 1,
            requests_refused: 1,
            relay_keys: 0,
        },
        cpus: vec![CpuSummary {
            gateway: "a".into(),
            cores: 2,
            busy_ns: 1_500_000_000,
            jobs: 40,
            max_wait_ns: 3_000_000,
        }],
        traffic: vec![TrafficSummary {
            tunnel: "t1".into(),
            mode: "packets".into(),
            offered_packets: 120,
            delivered_packets: 99,
            no_sa: 10,
            unknown_spi: 7,
            lost_on_link: 4,
            volume_rekeys: 2,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn report_and_figures() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut r = run_results();
    fs::write(dir.join("results.json"), serde_json::to_string(&r).unwrap()).unwrap();
    let mut rows = results::CsvRows::create(&dir).unwrap();
    r.rows.drain_into(&mut rows);
    rows.finish().unwrap();
    fs::write(
        dir.join("manifest.json"),
        r#"{"scenario": "s.toml", "reproduce": "qsafe run s.toml --seed 5"}"#,
    )
    .unwrap();
    let path = reports::write_report(&dir).unwrap();
    let html = fs::read_to_string(&path).unwrap();
    for section in [
        "id=\"run\"",
        "id=\"tunnels\"",
        "id=\"qkd\"",
        "id=\"figures\"",
        "id=\"manifest\"",
        "id=\"traffic\"",
        "id=\"cpu\"",
        "<td>1.500</td><td>0.01%</td><td>40</td><td>3.000</td>",
        "qsafe run s.toml --seed 5",
        "<svg",
    ] {
        assert!(html.contains(section), "report lacks {section}");
    }
    for (stem, texts) in [
        (
            "pool_levels",
            &[
                "QKD key pool level",
                "simulated time (h)",
                "stored keys (256 bit)",
                "warning (16 keys)",
                "resume (4 keys)",
            ][..],
        ),
        (
            "keys_over_time",
            &[
                "QKD keys generated, drawn and wasted",
                "cumulative count",
                "keys wasted",
                "keys generated (all pools)",
            ][..],
        ),
        (
            "handshake_cdf",
            &[
                "Handshake time (solid), time to up (dashed)",
                "time (ms)",
                "t1: handshake",
                "t1: time to up",
            ][..],
        ),
        (
            "exchange_bytes",
            &[
                "Bytes on the wire per exchange",
                "IKE_INTERMEDIATE",
                "request",
                "response",
            ][..],
        ),
        ("drops", &["Drops by reason", "IKE retransmissions"][..]),
        (
            "timeline",
            &[
                "Tunnel states over time",
                "t1",
                "waiting for a QKD key",
                "up without PPK (downgraded)",
                "rekeying",
            ][..],
        ),
        (
            "state_counts",
            &[
                "Tunnels by state over time (stacked)",
                "waiting for a QKD key",
                "establishing",
                "tunnels",
            ][..],
        ),
        (
            "exchanges_over_time",
            &[
                "Exchanges started over time",
                "cumulative exchanges",
                "IKE_INTERMEDIATE",
            ][..],
        ),
        (
            "esp_losses",
            &[
                "ESP packets lost, by reason",
                "unknown SPI: 7",
                "99 of 120 packets delivered",
            ][..],
        ),
    ] {
        let svg = fs::read_to_string(dir.join("figures").join(format!("{stem}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{stem}.svg"
        );
        for t in texts {
            assert!(svg.contains(t), "{stem}.svg lacks {t:?}");
        }
        let png = fs::read(dir.join("figures").join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        assert!(png.len() > 5000, "{stem}.png is suspiciously small");
    }
    // Exchanges in the order a handshake uses them, not alphabetical.
    let bytes = fs::read_to_string(dir.join("figures/exchange_bytes.svg")).unwrap();
    let at = |x: &str| bytes.find(&format!("{x}\n</text>")).unwrap_or(usize::MAX);
    assert!(at("IKE_SA_INIT") < at("IKE_INTERMEDIATE"), "{bytes}");
    // The pool ran empty once (1.5 h to 1.67 h): one shaded period.
    let pool = fs::read_to_string(dir.join("figures/pool_levels.svg")).unwrap();
    assert_eq!(pool.matches("opacity=\"0.12\"").count(), 1, "{pool}");
    let table = reports::tunnel_table(&run_results());
    assert!(
        table.contains("| t1 | 3 | 2 | 1 | 0 | 3 | 1 | 2.0 | 140.0 |"),
        "{table}"
    );
}

#[test]
fn a_missing_or_broken_results_file_is_a_clear_error() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-bad");
    fs::create_dir_all(&dir).unwrap();
    let _ = fs::remove_file(dir.join("results.json"));
    assert!(
        reports::write_report(&dir)
            .unwrap_err()
            .to_string()
            .contains("results.json")
    );
    fs::write(dir.join("results.json"), "{not json").unwrap();
    assert!(
        reports::write_report(&dir)
            .unwrap_err()
            .to_string()
            .contains("not a results file")
    );
}

#[test]
fn a_results_file_with_a_field_missing_is_refused_and_the_field_named() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-missing-field");
    fs::create_dir_all(&dir).unwrap();
    let mut v = serde_json::to_value(run_results()).unwrap();
    v["tunnels"][0]
        .as_object_mut()
        .unwrap()
        .remove("key_wait_ns");
    fs::write(dir.join("results.json"), v.to_string()).unwrap();
    let e = reports::write_report(&dir).unwrap_err().to_string();
    assert!(e.contains("missing field `key_wait_ns`"), "{e}");
}

/// A sweep of loss rate x MTU, two seeds each, one run with a violation.
fn sweep_rows() -> String {
    let mut rows = Vec::new();
    let mut id = 0;
    for loss in ["0.0", "0.1", "0.2"] {
        for mtu in ["576", "1280"] {
            for seed in 1..=2u64 {
                let l: f64 = loss.parse().unwrap();
                let established = 10 - (l * 20.0) as u32 - seed as u32 % 2;
                let violations: Vec<&str> = if id == 7 {
                    vec!["at 5s: broken"]
                } else {
                    vec![]
                };
                rows.push(serde_json::json!({
                    "run_id": format!("{id:05}"), "seed": seed,
                    "params": {"link.*.params.loss.probability": loss, "link.*.params.mtu": mtu},
                    "input": "cd",
                    "metrics": {
                        "handshake_success_rate_ratio": established as f64 / 10.0,
                        "downgrades_total_count": 0.0,
                        "handshake_p50_ms": 100.0 + l * 1000.0 + seed as f64,
                        "retransmissions_total_count": (l * 50.0).round(),
                        "availability_mean_ratio": 1.0 - l,
                        "time_to_up_p95_ms": null,
                    },
                    "fingerprint": "ab",
                    "violations": violations, "reproduce": format!("qsafe run s.toml --seed {seed}")
                }));
                id += 1;
            }
        }
    }
    serde_json::to_string(&rows).unwrap()
}

#[test]
fn sweep_report_figures_and_table() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep-report");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("runs.json"), sweep_rows()).unwrap();
    let html = fs::read_to_string(reports::write_sweep_report(&dir).unwrap()).unwrap();
    for section in [
        "handshake_success_rate_ratio (mean over seeds, 95% CI)",
        "id=\"sweep\"",
        "id=\"points\"",
        "id=\"figures\"",
        "id=\"violations\"",
        "run 00007 (seed 2): at 5s: broken",
        "qsafe run s.toml --seed 2",
        "<svg",
    ] {
        assert!(html.contains(section), "sweep report lacks {section}");
    }
    // Without [[plot]]: the metrics that vary, against the numeric parameter with the
    // most values, one line per MTU, the legend in words beside the data.
    let figures = |dir: &std::path::Path| {
        let mut v: Vec<String> = fs::read_dir(dir.join("figures"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".svg"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        figures(&dir),
        [
            "sweep_01_availability_mean_ratio.svg",
            "sweep_02_handshake_p50_ms.svg",
            "sweep_03_handshake_success_rate_ratio.svg",
            "sweep_04_retransmissions_total_count.svg"
        ]
    );
    for (stem, texts) in [
        (
            "sweep_03_handshake_success_rate_ratio",
            &[
                "handshake success rate (ratio) by loss probability",
                "loss probability",
                "handshake success rate (ratio)",
                "mtu 576",
                "mtu 1280",
            ][..],
        ),
        ("sweep_02_handshake_p50_ms", &["handshake p50 (ms)"][..]),
    ] {
        let svg = fs::read_to_string(dir.join("figures").join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for t in texts {
            assert!(svg.contains(t), "{stem}.svg lacks {t:?}");
        }
        // Confidence bands are filled polygons.
        assert!(svg.contains("<polygon"), "{stem}.svg has no band");
        let png = fs::read(dir.join("figures").join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
    }
    let rows: Vec<reports::sweep::SweepRow> = serde_json::from_str(&sweep_rows()).unwrap();
    let table = reports::sweep::point_table(&reports::sweep::points(&rows));
    // Loss 0.0, MTU 576: seeds give 9 and 10 of 10, mean 95 %, s = 7.07 %, t(1) = 12.706:
    // the interval is 95 +- 63.5, cut at 100 %. p50 101 and 102 ms: 101.5 +- 6.35.
    assert!(
        table.contains(
            "| 0.0 | 576 | 2 | 100.00 | 100.00 to 100.00 | 95.0 | 31.5 to 100.0 | 101.5 | 95.1 to 107.9 | - | - | 0.0 | 0.0 to 0.0 | 0.0 | 0.0 to 0.0 | 0 |"
        ),
        "{table}"
    );
    assert!(table.contains("| 0.1 | 1280 | 2 |"), "{table}");
    assert_eq!(table.lines().count(), 2 + 6);

    // A chosen figure: the MTU on the x axis, a line per loss, pooled over nothing else.
    let chosen = dir.join("chosen");
    fs::create_dir_all(&chosen).unwrap();
    fs::write(chosen.join("runs.json"), sweep_rows()).unwrap();
    fs::write(
        chosen.join("plots.json"),
        r#"[{"y": "handshake_p50", "x": "link.*.params.mtu", "by": "link.*.params.loss.probability", "x_scale": "log"}]"#,
    )
    .unwrap();
    reports::write_sweep_report(&chosen).unwrap();
    assert_eq!(figures(&chosen), ["sweep_01_handshake_p50_ms.svg"]);
    let svg = fs::read_to_string(chosen.join("figures/sweep_01_handshake_p50_ms.svg")).unwrap();
    for t in [
        "mtu (log scale)",
        "loss probability",
        "0.1\n</text>",
        "0.2\n</text>",
    ] {
        assert!(svg.contains(t), "lacks {t:?}");
    }
}

#[test]
fn many_pools_are_drawn_as_their_mean_range_and_empty_count() {
    let mut r = Results {
        duration_ns: 3_600_000_000_000,
        ..Default::default()
    };
    for i in 0..20u64 {
        r.pools.push(PoolSummary {
            link: format!("l{i}"),
            owner: format!("k{i}"),
            capacity_bits: 65_536,
            key_size_bits: 256,
            ..Default::default()
        });
        // Half the pools hold 4 keys, the other half run empty at 30 minutes.
        for (t, keys) in [(0, 4), (1_800_000_000_000, if i % 2 == 0 { 0 } else { 4 })] {
            r.rows.pool_samples.push(PoolSample {
                time_ns: t,
                link: format!("l{i}"),
                owner: format!("k{i}"),
                level_bits: keys * 256,
                generated_bits: 0,
            });
        }
    }
    reports::figures::register_fonts();
    let mut svg = String::new();
    {
        use plotters::prelude::*;
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        reports::figures::pool_levels(root, &r).unwrap();
    }
    for t in [
        "QKD key pool level (20 pool halves)",
        "mean level",
        "lowest to highest",
        "halves below one key",
    ] {
        assert!(svg.contains(t), "lacks {t:?}");
    }
    // Twenty legend entries would be unreadable: the per-pool names are not drawn.
    assert!(!svg.contains("l17"));
}

#[test]
fn a_large_run_lists_its_least_available_tunnels() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-many-tunnels");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let r = Results {
        duration_ns: 1_000,
        tunnels: (0..45)
            .map(|i| TunnelSummary {
                tunnel: format!("t{i}"),
                // t7 is down most of the time; the rest are up all along.
                up_ns: if i == 7 { 100 } else { 1_000 },
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    fs::write(dir.join("results.json"), serde_json::to_string(&r).unwrap()).unwrap();
    let html = fs::read_to_string(reports::write_report(&dir).unwrap()).unwrap();
    assert!(html.contains("The 40 of 45 tunnels with the lowest availability"));
    let table = &html[html.find("id=\"tunnels\"").unwrap()..];
    assert!(table.find("<td>t7</td>").unwrap() < table.find("<td>t0</td>").unwrap());
    assert_eq!(table.matches("<td>t").count(), 40);
}
