//! Whole simulated networks: gateways, lossy links, QKD key managers and tunnels.

use netsim::results::RowSelection;
use netsim::{Outputs, World, WorldConfig};

fn config(text: &str) -> WorldConfig {
    toml::from_str(text).unwrap()
}

fn run(text: &str, seed: u64) -> netsim::Results {
    World::new(config(text), seed, sim_core::Tracer::new())
        .unwrap()
        .run(Outputs::none())
}

const PAIR: &str = r#"
duration = "2m"
[[gateway]]
name = "gw-a"
address = "10.0.0.1"
kme = "kme-a"
[[gateway]]
name = "gw-b"
address = "10.0.0.2"
kme = "kme-b"
[[link]]
a = "gw-a"
b = "gw-b"
params = { latency = "15ms", mtu = 1280, loss = { model = "bernoulli", probability = 0.02 } }
[[kme]]
name = "kme-a"
[[kme]]
name = "kme-b"
[[qkd_link]]
a = "kme-a"
b = "kme-b"
pool = { rate_bps = 1000, capacity_bits = 1000000, initial_bits = 51200 }
[[tunnel]]
name = "t1"
initiator = "gw-a"
responder = "gw-b"
ppk = "required"
reauth_time = "20s"
"#;

#[test]
fn tunnels_come_up_with_qkd_ppks_and_reauthenticate() {
    let r = run(PAIR, 1);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    // Up at ~0 s, then a fresh IKE SA (and a fresh key) every 20 s.
    assert!(t.established >= 6, "{t:?}");
    assert_eq!(t.keys_drawn, t.attempts);
    assert!(
        r.rows
            .handshakes
            .iter()
            .filter(|h| h.outcome == "established")
            .all(|h| h.ppk == "used" && h.ppk_id.len() == 36)
    );
    assert!(r.rows.handshakes[0].proposal.contains("ke1_mlkem768"));
    // Keys went through real ETSI 014 calls: enc_keys at A, dec_keys at B.
    let ops: Vec<(&str, u16)> = r
        .rows
        .key_requests
        .iter()
        .map(|k| (k.op.as_str(), k.status))
        .collect();
    assert!(ops.contains(&("enc_keys", 200)) && ops.contains(&("dec_keys", 200)));
    assert_eq!(r.qkd.keys_delivered, r.qkd.keys_fetched + r.qkd.keys_wasted);
    // IKE_INTERMEDIATE exchanges carried the ML-KEM-768 key shares.
    assert!(
        r.rows
            .exchanges
            .iter()
            .any(|e| e.exchange == "IKE_INTERMEDIATE" && e.request_bytes == 1249)
    );
    // The pool was sampled and went down with every key.
    let a_half = r.pools.iter().find(|p| p.owner == "kme-a").unwrap();
    let samples = r.rows.pool_samples.iter().filter(|p| p.owner == "kme-a");
    assert!(samples.count() > 5 && a_half.delivered_keys as u32 == t.keys_drawn);
}

#[test]
fn results_read_back_as_the_same_schema() {
    // What the simulator writes is what the reports read: every field, no defaults.
    let mut r = run(PAIR, 3);
    let rows = std::mem::take(&mut r.rows);
    let text = serde_json::to_string(&r).unwrap();
    let back: netsim::Results = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    // The rows go to CSV files as they happen and read back the same.
    assert!(!rows.handshakes.is_empty() && !rows.pool_samples.is_empty());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rows-read-back");
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = netsim::results::CsvRows::create(&dir).unwrap();
    rows.clone().drain_into(&mut csv);
    csv.finish().unwrap();
    assert_eq!(netsim::results::Rows::read_csv(&dir).unwrap(), rows);
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let (a, b, c) = (run(PAIR, 7), run(PAIR, 7), run(PAIR, 8));
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_ne!(a.fingerprint, c.fingerprint);
}

#[test]
fn an_empty_pool_makes_required_tunnels_wait_and_optional_ones_downgrade() {
    // 256 bits at 128 bit/s: one key every 2 s per half; the tunnel wants one every 1 s.
    let starve = |ppk: &str| {
        PAIR.replace(
            "pool = { rate_bps = 1000, capacity_bits = 1000000, initial_bits = 51200 }",
            "pool = { rate_bps = 256, capacity_bits = 100000, share_permille = 500, supply = \"fixed\" }",
        )
        .replace("reauth_time = \"20s\"", "reauth_time = \"1s\"")
        .replace("ppk = \"required\"", &format!("ppk = \"{ppk}\""))
        .replace(
            "loss = { model = \"bernoulli\", probability = 0.02 }",
            "jitter = \"0s\"",
        )
    };
    let r = run(&starve("required"), 1);
    let t = &r.tunnels[0];
    assert!(t.key_wait_ns > 30_000_000_000, "{t:?}");
    assert_eq!(t.downgrades, 0);
    assert!(r.rows.key_requests.iter().any(|k| k.status == 503));
    let r = run(&starve("optional"), 1);
    let t = &r.tunnels[0];
    assert!(t.downgrades > 10, "{t:?}");
    // No waiting beyond the KME's 5 ms answer per attempt.
    assert_eq!(t.key_wait_ns, t.attempts as u64 * 5_000_000);
}

#[test]
fn keys_are_relayed_through_a_trusted_node_and_skip_works_too() {
    let relayed = PAIR
        .replace(
            "[[qkd_link]]\na = \"kme-a\"\nb = \"kme-b\"",
            "[[kme]]\nname = \"kme-t\"\n[[qkd_link]]\na = \"kme-a\"\nb = \"kme-t\"\npool = { rate_bps = 1000, capacity_bits = 1000000, initial_bits = 51200 }\n[[qkd_link]]\na = \"kme-t\"\nb = \"kme-b\"",
        )
        .replace("duration = \"2m\"", "duration = \"2m\"\nrelay_latency = \"20ms\"");
    let r = run(&relayed, 3);
    assert!(r.tunnels[0].established >= 6, "{:?}", r.tunnels[0]);
    assert_eq!(r.qkd.relay_keys, r.qkd.keys_delivered);
    let skip = relayed
        .replace(
            "[[kme]]\nname = \"kme-a\"",
            "[[kme]]\nname = \"kme-a\"\napi = \"skip\"",
        )
        .replace(
            "[[kme]]\nname = \"kme-b\"",
            "[[kme]]\nname = \"kme-b\"\napi = \"skip\"",
        );
    let r = run(&skip, 3);
    assert!(r.tunnels[0].established >= 6);
    assert!(
        r.rows
            .key_requests
            .iter()
            .any(|k| k.api == "skip" && k.op == "key_by_id" && k.status == 200)
    );
}

#[test]
fn bad_configurations_name_the_field() {
    let bad = |text: String| {
        World::new(config(&text), 1, sim_core::Tracer::new())
            .err()
            .unwrap()
            .field
    };
    assert_eq!(
        bad(PAIR.replace("initiator = \"gw-a\"", "initiator = \"gw-x\"")),
        "tunnel[0].initiator"
    );
    assert_eq!(bad(PAIR.replace("kme = \"kme-b\"", "")), "tunnel[0].ppk");
    assert_eq!(
        bad(PAIR.replace("mtu = 1280", "mtu = 20")),
        "link[0].params.mtu"
    );
    assert_eq!(
        bad(PAIR.replace(
            "ppk = \"required\"",
            "ppk = \"required\"\nike = [\"aes256gcm16-prfsha256-kyber\"]"
        )),
        "tunnel[0].ike"
    );
    // A replay window below RFC 4303's 32 packets is refused, not quietly widened.
    assert_eq!(
        bad(PAIR.replace(
            "ppk = \"required\"",
            "ppk = \"required\"\ntraffic = { rate_pps = 10, replay_window = 16 }"
        )),
        "tunnel[0].traffic.replay_window"
    );
}

#[test]
fn ike_fragmentation_gets_ml_kem_1024_through_paths_that_drop_ip_fragments() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../experiments/examples/mlkem1024-mtu.toml"
    ))
    .unwrap();
    let r = run(&text, 1);
    let up = |name: &str| {
        r.tunnels
            .iter()
            .find(|t| t.tunnel == name)
            .unwrap()
            .established
    };
    assert_eq!((up("t1"), up("t2"), up("t3"), up("t4")), (1, 0, 0, 1));
    let frags = |tunnel: &str| {
        r.rows
            .exchanges
            .iter()
            .find(|e| e.tunnel == tunnel && e.exchange == "IKE_INTERMEDIATE")
            .map(|e| (e.request_fragments, e.response_fragments))
    };
    // ML-KEM-1024 (1568-byte key share) over fragments of at most 1280 - 28 - 61 or
    // 576 - 28 - 61 bytes: 2 fragments each way at 1280, 4 at 576.
    assert_eq!((frags("t1"), frags("t4")), (Some((2, 2)), Some((4, 4))));
    assert!(
        r.rows
            .handshakes
            .iter()
            .any(|h| h.tunnel == "t2"
                && h.outcome == "failed: retransmit timeout in IKE_INTERMEDIATE")
    );
    assert!(
        r.rows
            .handshakes
            .iter()
            .any(|h| h.tunnel == "t3" && h.outcome == "failed: retransmit timeout in IKE_SA_INIT")
    );
    let filtered: u64 = r
        .links
        .iter()
        .map(|l| l.stats.dropped(link::DropReason::FragmentsFiltered))
        .sum();
    assert!(filtered > 10);
}

#[test]
fn child_sas_rekey_on_schedule_with_ml_kem_pfs_in_fragments() {
    let text = PAIR
        .replace("ppk = \"required\"\nreauth_time = \"20s\"", "")
        .replace("duration = \"2m\"", "duration = \"3m\"")
        + "esp = [\"aes256gcm16-mlkem768\"]\nchild_rekey_time = \"20s\"\nchild_rand_time = \"4s\"\n\
           child_life_time = \"0s\"\n";
    let r = run(&text, 4);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.tunnels[0].established, 1);
    let rekeys: Vec<_> = r
        .rows
        .exchanges
        .iter()
        .filter(|e| e.exchange == "CREATE_CHILD_SA")
        .collect();
    // Each starts 16 to 20 s after the last one completed, spread by the jitter.
    assert!((8..=10).contains(&rekeys.len()), "{rekeys:?}");
    let gaps: std::collections::BTreeSet<u64> = rekeys
        .windows(2)
        .map(|w| w[1].started_ns - w[0].completed_ns)
        .collect();
    assert!(
        gaps.iter()
            .all(|g| (16_000_000_000..=20_000_000_000).contains(g)),
        "{gaps:?}"
    );
    assert!(gaps.len() > 1, "no jitter: {gaps:?}");
    // An ML-KEM-768 key share does not fit 1280 bytes: two fragments each way.
    assert!(
        rekeys
            .iter()
            .all(|e| (e.request_fragments, e.response_fragments) == (2, 2)),
        "{rekeys:?}"
    );
    // Each rekey deletes the old pair.
    let deletes = r
        .rows
        .exchanges
        .iter()
        .filter(|e| e.exchange == "INFORMATIONAL")
        .count();
    assert_eq!(deletes, rekeys.len());
}

#[test]
fn dead_peer_detection_restarts_a_tunnel_after_a_link_outage() {
    let text = PAIR
        .replace(
            "ppk = \"required\"\nreauth_time = \"20s\"",
            "dpd_delay = \"20s\"",
        )
        .replace("duration = \"2m\"", "duration = \"6m\"")
        .replace(
            "loss = { model = \"bernoulli\", probability = 0.02 } }",
            "schedule = [{ at = \"60s\", state = \"down\" }, { at = \"200s\", state = \"up\" }] }",
        );
    let r = run(&text, 5);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    // Up, dead once the liveness check after 60 s goes unanswered through every
    // retransmission (165 s), restarted over the repaired link.
    assert_eq!((t.established, t.dead_peers), (2, 1), "{t:?}");
    let rows: Vec<_> = r
        .rows
        .handshakes
        .iter()
        .map(|h| h.outcome.as_str())
        .collect();
    assert_eq!(rows, ["established", "established"]);
    // The restart: the first check after the outage began (60 to 80 s) plus 165.06 s.
    let restart = r.rows.handshakes[1].requested_ns;
    assert!(
        (225_061_120_000..=245_061_120_000).contains(&restart),
        "{restart}"
    );
    let checks = r
        .rows
        .exchanges
        .iter()
        .filter(|e| e.exchange == "INFORMATIONAL" && e.retransmissions == 0)
        .count();
    assert!(checks >= 4, "liveness checks answered: {checks}");
}

#[test]
fn ike_sas_rekey_on_schedule_and_child_rekeys_carry_on_across_them() {
    let text = PAIR
        .replace("ppk = \"required\"\nreauth_time = \"20s\"", "")
        .replace("duration = \"2m\"", "duration = \"3m\"")
        + "ike = [\"aes256gcm16-prfsha256-x25519\"]\nrekey_time = \"30s\"\n\
           esp = [\"aes256gcm16-x25519\"]\nchild_rekey_time = \"20s\"\n";
    let r = run(&text, 6);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    // One IKE SA from scratch, then a rekey every 27 to 30 s (the random part is
    // strongSwan's default, a tenth; later after a retransmission).
    assert_eq!(t.established, 1);
    assert!((5..=6).contains(&t.ike_rekeys), "{t:?}");
    let creates = r
        .rows
        .exchanges
        .iter()
        .filter(|e| e.exchange == "CREATE_CHILD_SA")
        .count() as u32;
    // Child rekeys every 20 s go on over whichever IKE SA is current.
    assert!(creates - t.ike_rekeys >= 7, "{creates} {t:?}");
    // Hybrid: ML-KEM-768 in an IKE_FOLLOWUP_KE after each CREATE_CHILD_SA; the PPK of the first IKE SA carries over, no key is drawn again.
    let hybrid = PAIR.replace("reauth_time = \"20s\"", "rekey_time = \"30s\"");
    let r = run(&hybrid, 7);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    assert!(t.ike_rekeys >= 3 && t.keys_drawn == 1, "{t:?}");
    let followups: Vec<_> = r
        .rows
        .exchanges
        .iter()
        .filter(|e| e.exchange == "IKE_FOLLOWUP_KE")
        .collect();
    assert_eq!(followups.len() as u32, t.ike_rekeys);
    // The 1184-byte key share with its link does not fit 1280 bytes, the ciphertext does.
    assert!(
        followups
            .iter()
            .all(|e| (e.request_fragments, e.response_fragments) == (2, 1)),
        "{followups:?}"
    );
}

#[test]
fn a_gateway_that_restarts_loses_its_sas_and_the_tunnel_comes_back() {
    let base = PAIR
        .replace(
            "ppk = \"required\"\nreauth_time = \"20s\"",
            "dpd_delay = \"10s\"",
        )
        .replace("duration = \"2m\"", "duration = \"5m\"")
        .replace("probability = 0.02", "probability = 0.0")
        + "traffic = { rate_pps = 20, sizes = [200] }\n";
    // The responder reboots: the initiator's liveness check goes unanswered (the
    // rebooted gateway knows no SA) through every retransmission (165 s), then dead
    // peer detection restarts the tunnel.
    let text = base.clone()
        + "[[fault]]\nkind = \"gateway-restart\"\nat = \"60s\"\ngateway = \"gw-b\"\ndown_for = \"5s\"\n";
    let r = run(&text, 8);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    assert_eq!(
        (t.established, t.dead_peers, t.restarts),
        (2, 1, 0),
        "{t:?}"
    );
    let f = &r.traffic[0];
    // ESP under the lost SAs: dropped for an unknown SPI at the rebooted gateway.
    assert!(f.unknown_spi > 100, "{f:?}");
    // The initiator reboots: it starts the tunnel afresh once it is back.
    let text = base
        + "[[fault]]\nkind = \"gateway-restart\"\nat = \"60s\"\ngateway = \"gw-a\"\ndown_for = \"5s\"\n";
    let r = run(&text, 8);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    assert_eq!((t.established, t.restarts), (2, 1), "{t:?}");
    let second = &r.rows.handshakes[1];
    assert_eq!(second.requested_ns, 65_000_000_000, "{second:?}");
    // Bad fault: an unknown gateway is named by its field.
    let bad = PAIR.to_string()
        + "[[fault]]\nkind = \"gateway-restart\"\nat = \"1s\"\ngateway = \"nope\"\n";
    let cfg: WorldConfig = toml::from_str(&bad).unwrap();
    let e = World::new(cfg, 1, sim_core::Tracer::new()).err().unwrap();
    assert_eq!(e.field, "fault[0].gateway");
}

#[test]
fn counters_agree_across_exchange_rows_handshake_rows_and_gateways() {
    // A lossy hub of three spokes with dead peer detection and reauthentication, and one
    // tunnel whose link goes down right after IKE_SA_INIT, so that its first handshake
    // times out in IKE_INTERMEDIATE.
    let text = r#"
duration = "10m"
[[gateway]]
name = "hub"
address = "10.0.0.1"
[[gateway]]
name = "s1"
address = "10.0.1.1"
[[gateway]]
name = "s2"
address = "10.0.1.2"
[[gateway]]
name = "s3"
address = "10.0.1.3"
[[link]]
a = "hub"
b = "s1"
params = { latency = "10ms", mtu = 1280, loss = { model = "bernoulli", probability = 0.1 } }
[[link]]
a = "hub"
b = "s2"
params = { latency = "10ms", mtu = 576, loss = { model = "bernoulli", probability = 0.05 } }
[[link]]
a = "hub"
b = "s3"
params = { latency = "10ms", schedule = [{ at = "25ms", state = "down" }, { at = "4m", state = "up" }] }
[[tunnel]]
name = "t1"
initiator = "s1"
responder = "hub"
reauth_time = "1m"
dpd_delay = "20s"
[[tunnel]]
name = "t2"
initiator = "s2"
responder = "hub"
reauth_time = "1m"
[[tunnel]]
name = "t3"
initiator = "s3"
responder = "hub"
"#;
    let r = run(text, 4);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    // Every exchange a gateway initiated is a row, answered or not: the rows add up to
    // the gateway's counters.
    for (gw, stats) in &r.endpoints {
        let rows = r.rows.exchanges.iter().filter(|e| &e.gateway == gw);
        let (msgs, datagrams) = rows.fold((0, 0), |(m, d), e| {
            (
                m + e.retransmissions as u64,
                d + e.retransmitted_datagrams as u64,
            )
        });
        assert_eq!(msgs, stats.retransmissions, "{gw}");
        assert_eq!(datagrams, stats.retransmitted_datagrams, "{gw}");
    }
    assert!(
        r.rows
            .exchanges
            .iter()
            .map(|e| e.retransmissions)
            .sum::<u32>()
            > 10
    );
    // A handshake row is the sum of its IKE SA's exchanges at the initiator.
    for h in r.rows.handshakes.iter().filter(|h| !h.ike_sa.is_empty()) {
        let rows: Vec<_> = r
            .rows
            .exchanges
            .iter()
            .filter(|e| e.ike_sa == h.ike_sa)
            .collect();
        let handshake_rows = rows.iter().filter(|e| {
            ["IKE_SA_INIT", "IKE_INTERMEDIATE", "IKE_AUTH"].contains(&e.exchange.as_str())
        });
        let sent: usize = handshake_rows.clone().map(|e| e.request_bytes).sum();
        let received: usize = handshake_rows.clone().map(|e| e.response_bytes).sum();
        let rtx: u32 = handshake_rows.map(|e| e.retransmissions).sum();
        assert_eq!(
            (h.bytes_sent, h.bytes_received, h.retransmissions),
            (sent, received, rtx),
            "{h:?}"
        );
    }
    // The failed handshake carries its real exchanges: IKE_SA_INIT answered, then
    // IKE_INTERMEDIATE sent six times and given up.
    let failed = r
        .rows
        .handshakes
        .iter()
        .find(|h| h.tunnel == "t3")
        .expect("t3's first attempt");
    assert_eq!(
        failed.outcome,
        "failed: retransmit timeout in IKE_INTERMEDIATE"
    );
    assert_eq!(failed.retransmissions, 5);
    let rows: Vec<(&str, &str)> = r
        .rows
        .exchanges
        .iter()
        .filter(|e| e.ike_sa == failed.ike_sa)
        .map(|e| (e.exchange.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("IKE_SA_INIT", "answered"),
            ("IKE_INTERMEDIATE", "timed out")
        ]
    );
    assert!(failed.bytes_sent > 1249 && failed.bytes_received < 1153);
}

#[test]
fn an_ike_sa_whose_reauthentication_gets_no_key_dies_at_its_hard_lifetime() {
    // One key in the pool, the next exactly 256 s later (1 bit/s, fixed supply);
    // re-authentication due 50 to 60 s after the IKE SA came up, hard limit 10 s after.
    let text = r#"
duration = "6m"
[[gateway]]
name = "a"
address = "10.0.0.1"
kme = "ka"
[[gateway]]
name = "b"
address = "10.0.0.2"
kme = "kb"
[[link]]
a = "a"
b = "b"
params = { latency = "10ms" }
[[kme]]
name = "ka"
[[kme]]
name = "kb"
[[qkd_link]]
a = "ka"
b = "kb"
pool = { rate_bps = 1, capacity_bits = 4096, initial_bits = 256, share_permille = 1000, supply = "fixed" }
[[tunnel]]
name = "t"
initiator = "a"
responder = "b"
ppk = "required"
reauth_time = "60s"
over_time = "10s"
rand_time = "10s"
"#;
    for seed in [1, 2, 3] {
        let r = run(text, seed);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let t = &r.tunnels[0];
        let up = t.first_up_ns.expect("up once");
        let reauth = &r.rows.handshakes[1];
        assert_eq!(reauth.why, "reauthentication");
        let due = reauth.requested_ns - up;
        assert!((50_000_000_000..=60_000_000_000).contains(&due), "{due}");
        // Down exactly over_time after it was due, once the initiator's Delete reached
        // the responder (one way: 10 ms) and its half of the Child SA went.
        let outage = &t.outages[0];
        assert_eq!(outage.cause, "no key");
        assert_eq!(
            outage.from_ns,
            reauth.requested_ns + 10_000_000_000 + 10_000_000
        );
        // (The next key comes 256 s later again: the SA it brings dies the same way.)
        assert_eq!(t.ike_expiries as usize, t.outages.len());
        assert!(t.outages.iter().all(|o| o.cause == "no key"), "{t:?}");
        // Back once the next key arrives (256 s after the first was generated) and the
        // waiting re-authentication gets it.
        assert_eq!(reauth.outcome, "established");
        assert_eq!(outage.to_ns, reauth.ended_ns);
        assert!(reauth.key_wait_ns > 150_000_000_000, "{reauth:?}");
        assert_eq!(t.up_periods[0], (up, outage.from_ns));
    }
}

#[test]
fn break_before_make_reauthentication_leaves_a_gap_each_time() {
    let clean = PAIR.replace(", loss = { model = \"bernoulli\", probability = 0.02 }", "");
    let text = clean.replace(
        "reauth_time = \"20s\"",
        "reauth_time = \"20s\"\nmake_before_break = false",
    );
    let r = run(&text, 2);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    // Each re-authentication deletes the old IKE SA first: an outage until the new one
    // is up (the key request and a handshake of three round trips on a clean link).
    assert!(t.outages.len() >= 4, "{t:?}");
    for o in &t.outages {
        assert_eq!(o.cause, "reauthentication");
        assert!(o.to_ns - o.from_ns < 1_000_000_000, "{o:?}");
    }
    // Make-before-break (the default) has none.
    assert!(run(&clean, 2).tunnels[0].outages.is_empty());
}

#[test]
fn a_renamed_lifetime_key_is_refused_with_its_new_name() {
    let text = PAIR.replace("reauth_time", "reauth_every");
    let e = World::new(config(&text), 1, sim_core::Tracer::new())
        .err()
        .expect("refused");
    assert_eq!(e.field, "tunnel[0].reauth_every");
    assert!(e.problem.contains("renamed `reauth_time`"), "{e}");
}

#[test]
fn a_poisson_supply_varies_with_the_seed_around_its_rate() {
    // 256 bit/s in 256-bit blocks for an hour: about 3,600 blocks, so the count is
    // within 5 % of the rate (the standard deviation is 1/60) and differs by seed.
    let text = PAIR
        .replace(
            "pool = { rate_bps = 1000, capacity_bits = 1000000, initial_bits = 51200 }",
            "pool = { rate_bps = 256, capacity_bits = 100000000 }",
        )
        .replace("duration = \"2m\"", "duration = \"1h\"")
        .replace("reauth_time = \"20s\"", "reauth_time = \"5m\"");
    let mut generated = Vec::new();
    for seed in [1, 2, 3] {
        let r = run(&text, seed);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let bits: u64 = r.pools.iter().map(|p| p.generated_bits).sum();
        let rate = bits as f64 / 3600.0;
        assert!((243.2..268.8).contains(&rate), "{rate}");
        assert_eq!(bits % 256, 0, "whole blocks");
        generated.push(bits);
    }
    assert!(generated[0] != generated[1] && generated[1] != generated[2]);
    // A tunnel that wants a key every 2 s from a supply of one every 4 s on average
    // waits for keys, and how long differs with the seed.
    let starved = text
        .replace("rate_bps = 256", "rate_bps = 64")
        .replace("reauth_time = \"5m\"", "reauth_time = \"2s\"")
        .replace("duration = \"1h\"", "duration = \"10m\"");
    let waits: Vec<u64> = [1, 2, 3]
        .map(|seed| run(&starved, seed).tunnels[0].key_wait_ns)
        .to_vec();
    assert!(waits.iter().all(|&w| w > 60_000_000_000), "{waits:?}");
    assert!(waits[0] != waits[1] && waits[1] != waits[2], "{waits:?}");
}

#[test]
fn a_qkd_link_produces_no_key_while_it_is_down() {
    // 1000 bit/s, fixed supply, down from 30 s to 90 s of a two-minute run: 60 s of key.
    let text = PAIR.replace(
        "pool = { rate_bps = 1000, capacity_bits = 1000000, initial_bits = 51200 }",
        "pool = { rate_bps = 1000, capacity_bits = 100000000, supply = \"fixed\" }\n\
         schedule = [{ at = \"30s\", state = \"down\" }, { at = \"90s\", state = \"up\" }]",
    );
    let r = run(&text, 1);
    let bits: u64 = r.pools.iter().map(|p| p.generated_bits).sum();
    assert_eq!(bits, 60_000);
}

/// Two gateways on a clean 10 ms link (or `spokes` spokes around a hub), X25519 only,
/// each gateway with one core.
fn cpu_scenario(spokes: usize, cpu: bool) -> String {
    let cpu = if cpu { "\ncpu = { cores = 1 }" } else { "" };
    let mut text =
        format!("duration = \"30s\"\n[[gateway]]\nname = \"hub\"\naddress = \"10.0.0.1\"{cpu}\n");
    for i in 0..spokes {
        text += &format!(
            "[[gateway]]\nname = \"s{i}\"\naddress = \"10.1.{}.{}\"{cpu}\n\
             [[link]]\na = \"hub\"\nb = \"s{i}\"\nparams = {{ latency = \"10ms\" }}\n\
             [[tunnel]]\nname = \"t{i}\"\ninitiator = \"s{i}\"\nresponder = \"hub\"\n\
             ike = [\"aes256gcm16-prfsha256-x25519\"]\n",
            i / 200,
            1 + i % 200
        );
    }
    text
}

#[test]
fn with_a_cpu_model_a_lone_handshake_takes_its_round_trips_plus_its_work() {
    let r = run(&cpu_scenario(1, true), 1);
    let h = &r.rows.handshakes[0];
    assert_eq!(h.outcome, "established");
    // Every job of a lone handshake is on its critical path: two round trips of 20 ms,
    // plus all the work of both gateways, one job after another.
    let work: u64 = r.cpus.iter().map(|c| c.busy_ns).sum();
    assert_eq!(h.duration_ns, 40_000_000 + work, "{:?}", r.cpus);
    // X25519 twice at each end and the rest (prf, AES-GCM): about 0.15 ms.
    assert!((130_000..200_000).contains(&work), "{work}");
    assert_eq!(
        run(&cpu_scenario(1, false), 1).rows.handshakes[0].duration_ns,
        40_000_000
    );
}

#[test]
fn a_one_core_hub_serves_simultaneous_handshakes_one_after_another() {
    let n = 200;
    let r = run(&cpu_scenario(n, true), 1);
    let hub = r.cpus.iter().find(|c| c.gateway == "hub").unwrap();
    let last_up = r.rows.handshakes.iter().map(|h| h.ended_ns).max().unwrap();
    // The hub's work for all of them queues on its one core: the last one can come up
    // no sooner than all of it is done.
    assert_eq!(r.tunnels.iter().filter(|t| t.established == 1).count(), n);
    assert!(last_up >= hub.busy_ns, "{last_up} {hub:?}");
    assert!(hub.max_wait_ns > hub.busy_ns / 2, "{hub:?}");
    // Without the CPU model they all come up after two round trips (three for those
    // the hub asked for a COOKIE: that many half-open SAs at once pass its threshold).
    let free = run(&cpu_scenario(n, false), 1);
    let times: Vec<u64> = free.rows.handshakes.iter().map(|h| h.duration_ns).collect();
    assert!(
        times.iter().all(|&d| d == 40_000_000 || d == 60_000_000),
        "{times:?}"
    );
}

#[test]
fn two_tunnels_between_one_pair_of_gateways_each_come_up_and_carry_their_traffic() {
    // Two tunnels from gw-a to gw-b, each with its own PPKs from the shared KMEs and
    // pool, and its own traffic.
    let traffic = "traffic = { rate_pps = 50, sizes = [200] }\nchild_rekey_time = \"30s\"\n";
    let text = format!(
        "{PAIR}{traffic}[[tunnel]]\nname = \"t2\"\ninitiator = \"gw-a\"\nresponder = \"gw-b\"\n\
         ppk = \"required\"\nreauth_time = \"25s\"\n{traffic}"
    );
    let r = run(&text, 3);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    for t in &r.tunnels {
        assert!(t.established >= 4, "{t:?}");
        assert_eq!(t.keys_drawn, t.attempts, "{t:?}");
        assert!(t.up_ns > 100_000_000_000, "{t:?}");
    }
    for f in &r.traffic {
        // Every packet ends in one count, and most are delivered, per tunnel.
        assert!(f.delivered_packets > f.offered_packets * 9 / 10, "{f:?}");
    }
    // Each IKE SA carries its tunnel's identities.
    let ids: std::collections::BTreeSet<&str> = r
        .rows
        .handshakes
        .iter()
        .map(|h| h.tunnel.as_str())
        .collect();
    assert_eq!(ids.len(), 2);
}

#[test]
fn a_key_cache_fetches_keys_in_batches_ahead_of_need() {
    let cached = |cache: &str| {
        PAIR.replace(
            "name = \"gw-a\"\naddress = \"10.0.0.1\"",
            &format!("name = \"gw-a\"\naddress = \"10.0.0.1\"\nkey_cache = {cache}"),
        )
    };
    let r = run(&cached("{ keys = 8, refill_below = 3 }"), 1);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    assert!(t.established >= 6 && t.downgrades == 0, "{t:?}");
    // Every IKE SA used a QKD key, but the initiator asked its KME only now and then,
    // for several keys at a time, and never waited for one: every attempt but the
    // first found its key at hand.
    let enc = r
        .rows
        .key_requests
        .iter()
        .filter(|k| k.op == "enc_keys")
        .count();
    assert!(enc <= 3, "{enc} requests for {} keys", t.keys_drawn);
    let waits: Vec<u64> = r.rows.handshakes.iter().map(|h| h.key_wait_ns).collect();
    assert!(waits[1..].iter().all(|&w| w == 0), "{waits:?}");
    // The responder still fetches each key by its ID.
    let dec = r
        .rows
        .key_requests
        .iter()
        .filter(|k| k.op == "dec_keys" && k.status == 200);
    assert_eq!(dec.count() as u32, t.established);
    // Keys kept too long are thrown away, and count as wasted.
    let stale = run(
        &cached("{ keys = 8, refill_below = 3, max_age = \"15s\" }"),
        1,
    );
    assert!(stale.qkd.keys_wasted > 0, "{:?}", stale.qkd);
    assert!(stale.tunnels[0].established >= 6);
}

/// Timing the events by kind counts every event once and changes nothing of the run.
#[test]
fn event_costs_count_every_event_and_change_nothing() {
    let run = |costs| {
        World::new(config(PAIR), 5, sim_core::Tracer::new())
            .unwrap()
            .run(Outputs {
                costs,
                ..Outputs::none()
            })
    };
    let mut costs = netsim::EventCosts::default();
    let (timed, plain) = (run(Some(&mut costs)), run(None));
    assert_eq!(timed.fingerprint, plain.fingerprint);
    let rows = costs.rows();
    assert_eq!(rows.iter().map(|r| r.events).sum::<u64>(), plain.events);
    let kinds: std::collections::BTreeSet<_> = rows.iter().map(|r| r.kind).collect();
    assert_eq!(kinds.len(), rows.len(), "one row per kind: {rows:?}");
    for kind in ["deliver IKE", "tunnel start"] {
        assert!(kinds.contains(kind), "no {kind:?} in {kinds:?}");
    }
}

/// Which rows a run keeps changes nothing else: the same totals (over every row), the
/// same fingerprint; `none` keeps no row, and the totals agree with the rows of `all`.
#[test]
fn rows_kept_or_not_the_run_and_its_totals_are_the_same() {
    let with = |rows| {
        World::new(config(PAIR), 5, sim_core::Tracer::new())
            .unwrap()
            .run(Outputs {
                rows,
                ..Outputs::none()
            })
    };
    let (all, none) = (with(RowSelection::All), with(RowSelection::None));
    assert_eq!(all.fingerprint, none.fingerprint);
    assert_eq!(none.rows, Default::default());
    let mut totals = all.totals.clone();
    totals.rows = RowSelection::None;
    assert_eq!(totals, none.totals);
    let established: Vec<u64> = (all.rows.handshakes.iter())
        .filter(|h| h.outcome == "established")
        .map(|h| h.duration_ns)
        .collect();
    assert_eq!(all.totals.handshake_ns.count, established.len() as u64);
    assert_eq!(
        all.totals.handshake_ns.max,
        established.iter().max().copied()
    );
    let intermediate = all.totals.exchange("IKE_INTERMEDIATE");
    let rows = (all.rows.exchanges.iter()).filter(|e| e.exchange == "IKE_INTERMEDIATE");
    assert_eq!(intermediate.count, rows.clone().count() as u64);
    assert_eq!(
        intermediate.request_bytes,
        rows.map(|e| e.request_bytes as u64).sum::<u64>()
    );
}

#[test]
fn an_adversary_with_a_bad_setting_is_refused_by_name() {
    for (setting, field) in [
        ("drop = 1.5", "adversary[0].drop"),
        ("flood_pps = -1.0", "adversary[0].flood_pps"),
        ("from = \"2m\"\nuntil = \"1m\"", "adversary[0].until"),
    ] {
        let text = format!("{PAIR}\n[[adversary]]\ngateway = \"gw-b\"\n{setting}\n");
        let Err(e) = World::new(config(&text), 1, sim_core::Tracer::new()) else {
            panic!("{setting} accepted");
        };
        assert_eq!(e.field, field, "{e}");
    }
    let text = format!("{PAIR}\n[[adversary]]\ngateway = \"gw-z\"\n");
    let Err(e) = World::new(config(&text), 1, sim_core::Tracer::new()) else {
        panic!()
    };
    assert_eq!(e.field, "adversary[0].gateway");
}

#[test]
fn an_adversary_acts_only_in_its_window_and_deterministically() {
    let text = format!(
        "{PAIR}\n[[adversary]]\ngateway = \"gw-b\"\nfrom = \"30s\"\nuntil = \"60s\"\ndrop = 0.3\nduplicate = 0.2\n"
    );
    let (a, b) = (run(&text, 3), run(&text, 3));
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(a.adversaries, b.adversaries);
    let s = &a.adversaries[0];
    assert!(s.seen > 0 && s.dropped > 0 && s.duplicated > 0, "{s:?}");
    // It saw only what arrived in its half minute of the two: fewer than gw-b got.
    let received = a
        .endpoints
        .iter()
        .find(|(g, _)| g == "gw-b")
        .map(|(_, st)| st.datagrams_received)
        .unwrap();
    assert!(s.seen < received, "{s:?} {received}");
    let quiet = run(PAIR, 3);
    assert_ne!(quiet.fingerprint, a.fingerprint);
    assert!(a.violations.is_empty() && quiet.violations.is_empty());
}
