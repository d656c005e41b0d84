//! The link model measured from the outside: statistics over many datagrams against the
//! configuration, MTU behaviour, captures, and determinism of whole runs.

use link::probe::{self, Outputs, ProbeConfig, ProbeReport};
use link::{Bandwidth, Channel, Datagram, DropReason, LinkConfig, LossModel, Oversize};
use pcap_file::pcap::PcapReader;
use sim_core::ipv4::{Ipv4Header, udp_checksum_ok};
use sim_core::pcap::PcapSink;
use sim_core::{SimDuration, SimTime, Tracer};

fn ms(n: u64) -> SimDuration {
    SimDuration::from_millis(n)
}

fn run(cfg: &ProbeConfig, seed: u64) -> ProbeReport {
    probe::run(cfg, seed, Outputs::none()).unwrap()
}

fn probes(link: LinkConfig, seconds: u64, interval_us: u64, payload: usize) -> ProbeConfig {
    ProbeConfig {
        link,
        duration: SimDuration::from_secs(seconds),
        interval: SimDuration::from_micros(interval_us),
        payload_bytes: payload,
    }
}

fn within(measured: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (measured - expected).abs() <= tolerance,
        "{what}: measured {measured}, expected {expected} ± {tolerance}"
    );
}

#[test]
fn bernoulli_loss_rate_matches_the_configuration() {
    let link = LinkConfig {
        loss: LossModel::Bernoulli { probability: 0.05 },
        ..LinkConfig::default()
    };
    // 100 s at 1 ms: 100,000 probes per direction. The standard error of the rate is
    // 0.0007; 0.003 is over four of them.
    let r = run(&probes(link, 100, 1000, 100), 1);
    for d in &r.directions {
        within(d.loss_rate, 0.05, 0.003, "loss rate");
        // Independent losses: mean burst 1 / (1 - p) = 1.053.
        within(d.mean_loss_burst, 1.0 / 0.95, 0.02, "mean burst");
        // Every probe is received, dropped for loss, or among the ~10 in flight at the end.
        assert_eq!(d.link.dropped(DropReason::Loss), d.link.total_dropped());
        let accounted = d.probes_received + d.link.total_dropped();
        assert!(accounted <= d.probes_sent && accounted + 12 >= d.probes_sent);
    }
}

#[test]
fn gilbert_elliott_gives_the_configured_bursts() {
    let link = LinkConfig {
        loss: LossModel::GilbertElliott {
            good_to_bad: 0.01,
            bad_to_good: 0.25,
            loss_good: 0.0,
            loss_bad: 1.0,
        },
        ..LinkConfig::default()
    };
    let r = run(&probes(link, 200, 1000, 100), 2);
    for d in &r.directions {
        // Loss 0.01 / 0.26 = 3.85 %; mean burst 1 / 0.25 = 4 packets. About 1,500
        // bursts per direction: the mean's standard error is about 0.09.
        within(d.loss_rate, 0.01 / 0.26, 0.006, "loss rate");
        within(d.mean_loss_burst, 4.0, 0.4, "mean burst");
    }
}

#[test]
fn latency_and_jitter_stay_in_their_bounds() {
    let link = LinkConfig {
        latency: ms(20),
        jitter: ms(10),
        ..LinkConfig::default()
    };
    // Probes 20 ms apart: jitter (at most 10 ms) cannot be masked by FIFO ordering.
    let r = run(&probes(link, 200, 20_000, 100), 3);
    for d in &r.directions {
        let l = &d.latency_ns;
        assert!(
            l.min.unwrap() >= 20_000_000 && l.max.unwrap() <= 30_000_000,
            "{l:?}"
        );
        // Uniform jitter: mean 25 ms; 10,000 samples, standard error 0.03 ms.
        within(l.mean.unwrap() / 1e6, 25.0, 0.2, "mean latency (ms)");
        assert_eq!(d.out_of_order, 0, "jitter alone must not reorder");
    }
}

#[test]
fn throughput_is_capped_by_bandwidth_and_the_queue_drops_the_excess() {
    let link = LinkConfig {
        bandwidth: Some(Bandwidth(1_000_000)),
        latency: ms(5),
        queue_limit_bytes: 20_000,
        ..LinkConfig::default()
    };
    // 1,000-byte payloads (1,028 on the wire) every 4 ms: 2.056 Mbit/s offered.
    let r = run(&probes(link, 60, 4_000, 1000), 4);
    for d in &r.directions {
        let wire_bps = d.goodput_bps * 1028.0 / 1000.0;
        within(wire_bps / 1e6, 1.0, 0.01, "throughput (Mbit/s on the wire)");
        assert!(d.link.dropped(DropReason::QueueFull) > 7000);
        // A full queue holds about 20 kB, i.e. 160 ms at 1 Mbit/s.
        assert!(d.latency_ns.max.unwrap() <= 5_000_000 + 170_000_000);
    }
}

fn big(payload: usize) -> Datagram {
    Datagram {
        src: "10.0.0.1:500".parse().unwrap(),
        dst: "10.0.0.2:500".parse().unwrap(),
        payload: vec![7u8; payload],
    }
}

fn send_one(cfg: LinkConfig, payload: usize) -> (Result<usize, DropReason>, Vec<Vec<u8>>) {
    let mut ch = Channel::new(cfg, 1, "link/t");
    ch.set_capture(true);
    let (mut del, mut wire) = (Vec::new(), Vec::new());
    ch.send(SimTime::ZERO, big(payload), &mut del, &mut wire);
    let drop = DropReason::ALL
        .into_iter()
        .find(|&r| ch.stats().dropped(r) > 0);
    let result = match drop {
        Some(r) => Err(r),
        None => Ok(del.len()),
    };
    (result, wire.into_iter().map(|w| w.bytes).collect())
}

#[test]
fn mtu_behaviour_follows_the_configured_policy() {
    let cfg = |oversize| LinkConfig {
        mtu: 1280,
        oversize,
        ..LinkConfig::default()
    };
    // 1,252 bytes of payload make exactly a 1,280-byte packet: never fragmented.
    let (r, wire) = send_one(cfg(Oversize::Drop), 1252);
    assert_eq!((r, wire.len()), (Ok(1), 1));
    // One byte more: dropped, fragmented, or fragmented and filtered.
    assert_eq!(
        send_one(cfg(Oversize::Drop), 1253).0,
        Err(DropReason::TooBig)
    );
    let (r, wire) = send_one(cfg(Oversize::Fragment), 3000);
    assert_eq!((r, wire.len()), (Ok(1), 3));
    assert!(wire.iter().all(|p| p.len() <= 1280));
    let (r, wire) = send_one(cfg(Oversize::DropFragments), 3000);
    assert_eq!((r, wire.len()), (Err(DropReason::FragmentsFiltered), 3));
    assert_eq!(
        send_one(cfg(Oversize::Fragment), 70_000).0,
        Err(DropReason::Oversized)
    );
}

#[test]
fn a_datagram_is_lost_when_any_fragment_is() {
    let link = LinkConfig {
        mtu: 576,
        loss: LossModel::Bernoulli { probability: 0.1 },
        ..LinkConfig::default()
    };
    // 2,000 bytes at MTU 576: 4 fragments, so 1 - 0.9^4 = 34.4 % of datagrams are lost.
    let r = run(&probes(link, 50, 1000, 2000), 5);
    for d in &r.directions {
        within(d.loss_rate, 1.0 - 0.9f64.powi(4), 0.01, "datagram loss");
        assert_eq!(d.link.dropped(DropReason::Loss), 0);
        assert!(d.link.dropped(DropReason::FragmentLost) > 15_000);
        assert_eq!(d.link.wire_packets, 4 * d.probes_sent);
    }
}

#[test]
fn link_down_periods_drop_everything_sent_into_them() {
    let link = LinkConfig {
        latency: ms(10),
        schedule: toml_schedule(),
        ..LinkConfig::default()
    };
    let r = run(&probes(link, 10, 10_000, 100), 6);
    for d in &r.directions {
        // Down from 2 s to 4 s: sends in [2 s, 4 s) and those arriving then are lost,
        // i.e. 200 sends plus the one in flight at 2 s.
        assert_eq!(d.link.dropped(DropReason::LinkDown), 201);
        assert_eq!(d.mean_loss_burst, 201.0);
    }
}

fn toml_schedule() -> Vec<link::Transition> {
    LinkConfig::from_toml(
        r#"schedule = [{ at = "2s", state = "down" }, { at = "4s", state = "up" }]"#,
    )
    .unwrap()
    .schedule
}

#[test]
fn faults_are_counted_and_seen_by_the_receiver() {
    let link = LinkConfig {
        reorder: 0.05,
        reorder_delay: ms(3),
        duplicate: 0.02,
        corrupt: 0.01,
        ..LinkConfig::default()
    };
    let r = run(&probes(link, 50, 1000, 200), 7);
    for d in &r.directions {
        within(
            d.link.reordered as f64 / d.probes_sent as f64,
            0.05,
            0.005,
            "reordered",
        );
        within(
            d.link.duplicated as f64 / d.probes_sent as f64,
            0.02,
            0.003,
            "duplicated",
        );
        within(
            d.link.corrupted as f64 / d.probes_sent as f64,
            0.01,
            0.003,
            "corrupted",
        );
        // Held-back probes arrive after later ones.
        assert!(d.out_of_order > 1000, "{}", d.out_of_order);
        assert!(d.duplicates_received > 500);
    }
}

#[test]
fn capture_reads_back_as_valid_ipv4() {
    let link = LinkConfig {
        mtu: 1000,
        ..LinkConfig::default()
    };
    let cfg = probes(link, 1, 100_000, 2500);
    let mut sink = PcapSink::new(Vec::new()).unwrap();
    let outputs = Outputs {
        tracer: Tracer::new(),
        pcap: Some(&mut sink),
        progress: false,
    };
    let report = probe::run(&cfg, 8, outputs).unwrap();
    let bytes = sink.finish().unwrap();
    let mut reader = PcapReader::new(&bytes[..]).unwrap();
    let (mut packets, mut whole) = (0, Vec::new());
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        let h = Ipv4Header::parse(&p.data).expect("valid header and checksum");
        assert_eq!(h.total_len as usize, p.data.len());
        assert!(p.data.len() <= 1000);
        // Reassemble each datagram from its fragments and check its UDP checksum.
        if h.fragment_offset == 0 {
            whole = p.data.to_vec();
        } else {
            assert_eq!(whole.len() - 20, h.fragment_offset);
            whole.extend_from_slice(&p.data[20..]);
        }
        if !h.more_fragments {
            let len = whole.len() as u16;
            whole[2..4].copy_from_slice(&len.to_be_bytes());
            whole[6..8].copy_from_slice(&[0, 0]);
            whole[10..12].copy_from_slice(&[0, 0]);
            let c = sim_core::ipv4::checksum(&whole[..20]);
            whole[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(udp_checksum_ok(&whole));
        }
        packets += 1;
    }
    let sent: u64 = report.directions.iter().map(|d| d.probes_sent).sum();
    assert_eq!(
        packets,
        3 * sent,
        "2,528-byte packets at MTU 1000 make 3 fragments"
    );
}

#[test]
fn same_seed_same_fingerprint_different_seed_different() {
    let link = LinkConfig {
        jitter: ms(3),
        loss: LossModel::Bernoulli { probability: 0.02 },
        duplicate: 0.01,
        ..LinkConfig::default()
    };
    let cfg = probes(link, 20, 5_000, 300);
    let (a, b, c) = (run(&cfg, 11), run(&cfg, 11), run(&cfg, 12));
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(a, b);
    assert_ne!(a.fingerprint, c.fingerprint);
}

#[test]
fn another_channel_does_not_change_this_channels_draws() {
    let cfg = LinkConfig {
        jitter: ms(5),
        loss: LossModel::Bernoulli { probability: 0.2 },
        ..LinkConfig::default()
    };
    let trace = |with_neighbour: bool| {
        let mut mine = Channel::new(cfg.clone(), 99, "link/a-b/a>b");
        let mut other = Channel::new(cfg.clone(), 99, "link/c-d/c>d");
        let (mut del, mut wire, mut sink) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..2000u64 {
            let t = SimTime::from_nanos(i * 1_000_000);
            if with_neighbour {
                other.send(t, big(100), &mut sink, &mut wire);
            }
            mine.send(t, big(100), &mut del, &mut wire);
        }
        del
    };
    assert_eq!(trace(false), trace(true));
}
