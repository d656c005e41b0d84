//! Whole simulated networks: gateways, lossy links, QKD key managers and tunnels.

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
reauth_every = "20s"
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
        r.handshakes
            .iter()
            .filter(|h| h.outcome == "established")
            .all(|h| h.ppk == "used" && h.ppk_id.len() == 36)
    );
    assert!(r.handshakes[0].proposal.contains("ke1_mlkem768"));
    // Keys went through real ETSI 014 calls: enc_keys at A, dec_keys at B.
    let ops: Vec<(&str, u16)> = r
        .key_requests
        .iter()
        .map(|k| (k.op.as_str(), k.status))
        .collect();
    assert!(ops.contains(&("enc_keys", 200)) && ops.contains(&("dec_keys", 200)));
    assert_eq!(r.qkd.keys_delivered, r.qkd.keys_fetched + r.qkd.keys_wasted);
    // IKE_INTERMEDIATE exchanges carried the ML-KEM-768 key shares.
    assert!(
        r.exchanges
            .iter()
            .any(|e| e.exchange == "IKE_INTERMEDIATE" && e.request_bytes == 1249)
    );
    // The pool was sampled and went down with every key.
    let a_half = r.pools.iter().find(|p| p.owner == "kme-a").unwrap();
    assert!(a_half.samples.len() > 5 && a_half.delivered_keys as u32 == t.keys_drawn);
}

#[test]
fn results_read_back_as_the_same_schema() {
    // What the simulator writes is what the reports read: every field, no defaults.
    let r = run(PAIR, 3);
    let text = serde_json::to_string(&r).unwrap();
    let back: netsim::Results = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
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
            "pool = { rate_bps = 256, capacity_bits = 100000 }",
        )
        .replace("reauth_every = \"20s\"", "reauth_every = \"1s\"")
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
    assert!(r.key_requests.iter().any(|k| k.status == 503));
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
        r.key_requests
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
        r.exchanges
            .iter()
            .find(|e| e.tunnel == tunnel && e.exchange == "IKE_INTERMEDIATE")
            .map(|e| (e.request_fragments, e.response_fragments))
    };
    // ML-KEM-1024 (1568-byte key share) over fragments of at most 1280 - 28 - 61 or
    // 576 - 28 - 61 bytes: 2 fragments each way at 1280, 4 at 576.
    assert_eq!((frags("t1"), frags("t4")), (Some((2, 2)), Some((4, 4))));
    assert!(
        r.handshakes
            .iter()
            .any(|h| h.tunnel == "t2"
                && h.outcome == "failed: retransmit timeout in IKE_INTERMEDIATE")
    );
    assert!(
        r.handshakes
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
        .replace("ppk = \"required\"\nreauth_every = \"20s\"", "")
        .replace("duration = \"2m\"", "duration = \"3m\"")
        + "esp = [\"aes256gcm16-mlkem768\"]\nchild_rekey_every = \"20s\"\nchild_rekey_jitter = \"4s\"\n";
    let r = run(&text, 4);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.tunnels[0].established, 1);
    let rekeys: Vec<_> = r
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
            "ppk = \"required\"\nreauth_every = \"20s\"",
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
    let rows: Vec<_> = r.handshakes.iter().map(|h| h.outcome.as_str()).collect();
    assert_eq!(rows, ["established", "established"]);
    // The restart: the first check after the outage began (60 to 80 s) plus 165.06 s.
    let restart = r.handshakes[1].requested_ns;
    assert!(
        (225_061_120_000..=245_061_120_000).contains(&restart),
        "{restart}"
    );
    let checks = r
        .exchanges
        .iter()
        .filter(|e| e.exchange == "INFORMATIONAL" && e.retransmissions == 0)
        .count();
    assert!(checks >= 4, "liveness checks answered: {checks}");
}

#[test]
fn ike_sas_rekey_on_schedule_and_child_rekeys_carry_on_across_them() {
    let text = PAIR
        .replace("ppk = \"required\"\nreauth_every = \"20s\"", "")
        .replace("duration = \"2m\"", "duration = \"3m\"")
        + "ike = [\"aes256gcm16-prfsha256-x25519\"]\nike_rekey_every = \"30s\"\n\
           esp = [\"aes256gcm16-x25519\"]\nchild_rekey_every = \"20s\"\n";
    let r = run(&text, 6);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    // One IKE SA from scratch, then a rekey every 30 s (later after a retransmission).
    assert_eq!(t.established, 1);
    assert!((4..=5).contains(&t.ike_rekeys), "{t:?}");
    let creates = r
        .exchanges
        .iter()
        .filter(|e| e.exchange == "CREATE_CHILD_SA")
        .count() as u32;
    // Child rekeys every 20 s go on over whichever IKE SA is current.
    assert!(creates - t.ike_rekeys >= 7, "{creates} {t:?}");
    // Hybrid: ML-KEM-768 in an IKE_FOLLOWUP_KE after each CREATE_CHILD_SA; the PPK of the first IKE SA carries over, no key is drawn again.
    let hybrid = PAIR.replace("reauth_every = \"20s\"", "ike_rekey_every = \"30s\"");
    let r = run(&hybrid, 7);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = &r.tunnels[0];
    assert!(t.ike_rekeys >= 3 && t.keys_drawn == 1, "{t:?}");
    let followups: Vec<_> = r
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
            "ppk = \"required\"\nreauth_every = \"20s\"",
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
    let second = &r.handshakes[1];
    assert_eq!(second.requested_ns, 65_000_000_000, "{second:?}");
    // Bad fault: an unknown gateway is named by its field.
    let bad = PAIR.to_string()
        + "[[fault]]\nkind = \"gateway-restart\"\nat = \"1s\"\ngateway = \"nope\"\n";
    let cfg: WorldConfig = toml::from_str(&bad).unwrap();
    let e = World::new(cfg, 1, sim_core::Tracer::new()).err().unwrap();
    assert_eq!(e.field, "fault[0].gateway");
}
