//! ESP traffic through simulated tunnels: make-before-break rekeys, byte and packet
//! lifetimes, and what the receiver rejects.

use netsim::{Outputs, World, WorldConfig};

fn run(text: &str, seed: u64) -> netsim::Results {
    let cfg: WorldConfig = toml::from_str(text).unwrap();
    World::new(cfg, seed, sim_core::Tracer::new())
        .unwrap()
        .run(Outputs::none())
}

/// Two gateways over a clean 10 ms link, one tunnel; `link` and `tunnel` add settings.
fn scenario(duration: &str, link: &str, tunnel: &str) -> String {
    format!(
        r#"
duration = "{duration}"
[[gateway]]
name = "gw-a"
address = "10.0.0.1"
[[gateway]]
name = "gw-b"
address = "10.0.0.2"
[[link]]
a = "gw-a"
b = "gw-b"
params = {{ latency = "10ms", mtu = 1500 {link} }}
[[tunnel]]
name = "t1"
initiator = "gw-a"
responder = "gw-b"
ike = ["aes256gcm16-prfsha256-x25519"]
{tunnel}
"#
    )
}

fn starts(r: &netsim::Results, exchange: &str) -> Vec<u64> {
    r.rows
        .exchanges
        .iter()
        .filter(|e| e.exchange == exchange)
        .map(|e| e.started_ns)
        .collect()
}

#[test]
fn traffic_crosses_child_rekeys_without_loss_on_a_clean_link() {
    let text = scenario(
        "2m",
        "",
        "esp = [\"aes256gcm16-x25519\"]\nchild_rekey_time = \"15s\"\n\
         traffic = { rate_pps = 100, sizes = [64, 576, 1400] }",
    );
    let r = run(&text, 1);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    assert_eq!(f.mode, "packets");
    // 100 packets per second each way for 120 s, the first at 0 s, the last at 120 s.
    assert_eq!(f.offered_packets, 2 * (100 * 120 + 1), "{f:?}");
    // Before the first Child SA (one round trip each for IKE_SA_INIT and IKE_AUTH):
    // no SA. After it, through a rekey every 13.5 to 15 s (strongSwan's default random
    // part: a tenth of the rekey time): nothing lost, except what is still on the link
    // when the run ends.
    assert!((4..=16).contains(&f.no_sa), "{f:?}");
    assert!((7..=8).contains(&starts(&r, "CREATE_CHILD_SA").len()));
    assert_eq!((f.unknown_spi, f.expired, f.replayed), (0, 0, 0), "{f:?}");
    assert!(f.lost_on_link <= 4, "{f:?}");
    assert_eq!(f.delivered_packets, f.sent_packets - f.lost_on_link);
}

#[test]
fn byte_limits_rekey_at_the_soft_limit_less_its_random_part() {
    // 125 kB/s one way; soft limit 1 MB less up to 100 kB: a rekey every 7.2 to 8 s.
    let text = scenario(
        "2m",
        "",
        "esp = [\"aes256gcm16\"]\nrekey_bytes = 1000000\nrand_bytes = 100000\n\
         life_bytes = 1500000\n\
         traffic = { rate_pps = 125, sizes = [1000], direction = \"forward\" }",
    );
    let r = run(&text, 2);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    let rekeys = starts(&r, "CREATE_CHILD_SA");
    assert_eq!(rekeys.len() as u32, f.volume_rekeys, "{f:?}");
    assert!((14..=16).contains(&rekeys.len()), "{rekeys:?}");
    let gaps: Vec<u64> = rekeys.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .all(|g| (7_100_000_000..=8_100_000_000).contains(g)),
        "{gaps:?}"
    );
    assert!(gaps.windows(2).any(|w| w[0] != w[1]), "no jitter: {gaps:?}");
    // Soft limits came first: nothing expired, nothing lost.
    assert_eq!(
        (f.hard_expiries, f.expired, f.unknown_spi),
        (0, 0, 0),
        "{f:?}"
    );
}

#[test]
fn hard_limits_delete_child_sas_and_a_new_one_takes_over() {
    // A packet limit with no soft limit: each Child SA goes after 1000 packets (10 s),
    // and the initiator, with traffic waiting, creates a new one (CREATE_CHILD_SA
    // without REKEY_SA) on the same IKE SA.
    let text = scenario(
        "30s",
        "",
        "life_packets = 1000\ntraffic = { rate_pps = 100, direction = \"forward\" }",
    );
    let r = run(&text, 3);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    assert!(f.hard_expiries >= 2, "{f:?}");
    assert!(starts(&r, "CREATE_CHILD_SA").len() >= 2, "{f:?}");
    // Each Child SA carried at most its 1000 packets; the gaps between them lose some.
    assert!((2000..=3000).contains(&f.delivered_packets), "{f:?}");
    assert!(f.no_sa + f.expired > 0, "{f:?}");
    assert_eq!(r.tunnels[0].established, 1, "one IKE SA throughout");
    // The same by time: a Child SA lives 10 s.
    let text = scenario(
        "30s",
        "",
        "child_life_time = \"10s\"\ntraffic = { rate_pps = 100, direction = \"forward\" }",
    );
    let r = run(&text, 3);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    assert!(f.hard_expiries >= 2, "{f:?}");
    assert!(starts(&r, "CREATE_CHILD_SA").len() >= 2, "{f:?}");
}

#[test]
fn replayed_reordered_and_tampered_esp_is_rejected_and_counted() {
    let text = scenario(
        "1m",
        ", duplicate = 0.02, corrupt = 0.02, reorder = 0.05, reorder_delay = \"500ms\"",
        "traffic = { rate_pps = 250, sizes = [200], replay_window = 32 }",
    );
    let r = run(&text, 4);
    // The oracle saw no packet delivered twice.
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    // Duplicates and packets held back by 500 ms (125 packets, beyond a 32-packet
    // window) are replays; flipped bits fail the ICV.
    assert!(f.replayed > 250, "{f:?}");
    assert!(f.integrity_failures > 150, "{f:?}");
    assert_eq!(
        f.arrived,
        // A flipped bit in the SPI makes the packet one for an unknown SA.
        f.delivered_packets + f.replayed + f.integrity_failures + f.malformed + f.unknown_spi,
        "{f:?}"
    );
}

#[test]
fn aggregate_mode_counts_against_lifetimes_without_sending_packets() {
    // 100,000 packets per second of 1400 bytes: 140 MB/s, a soft limit about every 7 s.
    let tunnel = |rand: u64| {
        format!(
            "esp = [\"aes256gcm16\"]\nrekey_bytes = 1000000000\nrand_bytes = {rand}\n\
             traffic = {{ rate_pps = 100000, sizes = [1400], mode = \"aggregate\", direction = \"forward\" }}"
        )
    };
    let r = run(&scenario("1m", "", &tunnel(200_000_000)), 5);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    assert_eq!(f.mode, "aggregate");
    assert_eq!(f.offered_packets, 100_000 * 60, "{f:?}");
    assert_eq!(f.delivered_packets + f.no_sa, f.offered_packets, "{f:?}");
    assert!((7..=10).contains(&f.volume_rekeys), "{f:?}");
    // Only IKE went over the link.
    let datagrams: u64 = r.links.iter().map(|l| l.stats.datagrams_sent).sum();
    assert!(datagrams < 100, "{datagrams}");
    // Without a random part both ends reach the limit in the same tick and rekey at
    // once: every rekey collides, and the collisions are settled alike on both sides.
    let r = run(&scenario("1m", "", &tunnel(0)), 5);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    let mut rekeys = starts(&r, "CREATE_CHILD_SA");
    rekeys.sort_unstable();
    assert_eq!(rekeys.len() as u32, f.volume_rekeys);
    assert!((14..=18).contains(&rekeys.len()), "{f:?}");
    assert!(
        rekeys.chunks(2).all(|c| c.len() == 2 && c[0] == c[1]),
        "{rekeys:?}"
    );
    // Each collision ends in two Deletes: the old pair, and the losing new pair.
    assert_eq!(starts(&r, "INFORMATIONAL").len(), rekeys.len());
}

#[test]
fn with_both_ends_rekeying_by_time_each_starts_some_and_crossings_are_settled() {
    let tunnel = |jitter: &str| {
        format!(
            "esp = [\"aes256gcm16-x25519\"]\nchild_rekey_time = \"20s\"\nchild_rand_time = \"{jitter}\"\n\
             child_rekey_both_ends = true\ntraffic = {{ rate_pps = 50, sizes = [200] }}"
        )
    };
    let r = run(&scenario("3m", "", &tunnel("5s")), 7);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let by = |gw: &str| {
        r.rows
            .exchanges
            .iter()
            .filter(|e| e.exchange == "CREATE_CHILD_SA" && e.gateway == gw)
            .count()
    };
    // Whichever end's timer fires first rekeys; the other's then finds the pair retired.
    assert!(
        by("gw-a") > 0 && by("gw-b") > 0,
        "{} {}",
        by("gw-a"),
        by("gw-b")
    );
    assert!(
        (8..=12).contains(&(by("gw-a") + by("gw-b"))),
        "{} {}",
        by("gw-a"),
        by("gw-b")
    );
    let f = &r.traffic[0];
    assert_eq!(f.unknown_spi, 0, "{f:?}");
    // Without jitter both timers fire within a one-way delay of each other (each end
    // installed the pair when it sent or got the response): every rekey is a crossing,
    // settled by nonce, and traffic still flows.
    let r = run(&scenario("3m", "", &tunnel("0s")), 7);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let mut rekeys = starts(&r, "CREATE_CHILD_SA");
    rekeys.sort_unstable();
    assert!(
        rekeys.len() >= 12 && rekeys.len().is_multiple_of(2),
        "{rekeys:?}"
    );
    assert!(
        rekeys.chunks(2).all(|c| c[1] - c[0] <= 10_000_000),
        "{rekeys:?}"
    );
    assert!(
        r.traffic[0].delivered_packets > 17_000,
        "{:?}",
        r.traffic[0]
    );
}

#[test]
fn traffic_with_extended_sequence_numbers_gets_through() {
    // ESN changes the AES-GCM AAD (RFC 4106 section 5): both ends must agree on it.
    let text = scenario(
        "30s",
        "",
        "esp = [\"aes256gcm16-esn\"]\ntraffic = { rate_pps = 100, sizes = [200] }",
    );
    let r = run(&text, 1);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let f = &r.traffic[0];
    assert_eq!(f.integrity_failures, 0, "{f:?}");
    assert!(f.delivered_packets > f.offered_packets * 9 / 10, "{f:?}");
}
