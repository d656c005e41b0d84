//! Captures open in tshark, which dissects IKE on UDP 500 and 4500 (with the non-ESP
//! marker), ESP in UDP 4500 and native ESP, and reassembles IPv4 fragments.
//!
//! Needs `tshark` (Debian package `tshark`). Without it the test says so and passes,
//! unless `QSAFE_REQUIRE_TSHARK=1`, which `.ci/run` sets after installing it.

use std::net::SocketAddrV4;
use std::process::Command;

use sim_core::SimTime;
use sim_core::ipv4::{self, PROTO_ESP};
use sim_core::pcap::PcapSink;

/// A bare IKEv2 header: SPIs, next payload none, version 2.0, exchange, flags, MID.
fn ike_header(exchange: u8, flags: u8, extra: usize) -> Vec<u8> {
    let mut h = vec![
        1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, exchange, flags,
    ];
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&((28 + extra) as u32).to_be_bytes());
    h.resize(28 + extra, 0);
    h
}

#[test]
fn tshark_dissects_ike_esp_and_fragments() {
    let tshark_ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tshark_ok {
        assert!(
            std::env::var("QSAFE_REQUIRE_TSHARK").is_err(),
            "QSAFE_REQUIRE_TSHARK is set but tshark does not run"
        );
        eprintln!("tshark not installed: skipping (install the `tshark` package to run this)");
        return;
    }
    let a: SocketAddrV4 = "192.0.2.1:500".parse().unwrap();
    let b: SocketAddrV4 = "192.0.2.2:500".parse().unwrap();
    let a_natt: SocketAddrV4 = "192.0.2.1:4500".parse().unwrap();
    let b_natt: SocketAddrV4 = "192.0.2.2:4500".parse().unwrap();

    let mut packets = vec![ipv4::udp_packet(a, b, 1, &ike_header(34, 0x08, 0))];
    let mut natt_ike = vec![0, 0, 0, 0];
    natt_ike.extend(ike_header(35, 0x08, 0));
    packets.push(ipv4::udp_packet(a_natt, b_natt, 2, &natt_ike));
    let mut esp = vec![0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1];
    esp.resize(8 + 48, 0xab);
    packets.push(ipv4::udp_packet(a_natt, b_natt, 3, &esp));
    packets.push(ipv4::ip_packet(*a.ip(), *b.ip(), PROTO_ESP, 4, &esp));
    // A 1,633-byte IKE_INTERMEDIATE request across a 1,280-byte MTU: two fragments.
    let big = ipv4::udp_packet(a, b, 5, &ike_header(43, 0x08, 1633 - 28));
    packets.extend(ipv4::fragment(&big, 1280));

    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dissect.pcap");
    let mut sink = PcapSink::new(Vec::new()).unwrap();
    for (i, p) in packets.into_iter().enumerate() {
        sink.capture(SimTime::from_nanos(1_000 * i as u64), p);
    }
    std::fs::write(&path, sink.finish().unwrap()).unwrap();

    let out = Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.protocols",
            "-e",
            "isakmp.exchangetype",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].contains("udp:isakmp") && lines[0].ends_with("34"),
        "{}",
        lines[0]
    );
    // On 4500 tshark strips the non-ESP marker ("udpencap") and finds IKE or ESP.
    assert!(
        lines[1].contains("udpencap:isakmp") && lines[1].ends_with("35"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("udpencap:esp"), "{}", lines[2]);
    assert!(lines[3].contains("ip:esp"), "{}", lines[3]);
    // The second fragment completes the datagram, which dissects as IKE_INTERMEDIATE.
    assert!(
        lines[5].contains("udp:isakmp") && lines[5].ends_with("43"),
        "{}",
        lines[5]
    );
}
