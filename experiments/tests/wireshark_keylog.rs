//! The keylog opens IKE in Wireshark: a capture of a real handshake, decrypted by tshark
//! with the endpoint's keylog lines as its IKEv2 decryption table, shows the identities
//! inside IKE_AUTH. Needs tshark (installed by `.ci/run`); without it the test says so
//! and passes, unless `QSAFE_REQUIRE_TSHARK=1`.

use std::net::SocketAddrV4;
use std::process::Command;

use ikev2::crypto::RealCrypto;
use ikev2::endpoint::{Endpoint, EndpointConfig, Event, PeerConfig};
use rand_core::SeedableRng;
use sim_core::SimTime;
use sim_core::pcap::PcapSink;

fn tshark_available() -> bool {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("QSAFE_REQUIRE_TSHARK").is_err(),
            "QSAFE_REQUIRE_TSHARK is set but tshark does not run"
        );
        eprintln!("tshark not installed: skipping");
    }
    ok
}

/// Runs one handshake with `proposal`, capturing every datagram; returns the pcap and
/// the keylog lines of the final key set.
fn captured_handshake(proposal: &str) -> (Vec<u8>, String) {
    let addrs: [SocketAddrV4; 2] = [
        "10.1.0.1:500".parse().unwrap(),
        "10.1.0.2:500".parse().unwrap(),
    ];
    let ids = ["gw-a.example", "gw-b.example"];
    let mut eps = [0usize, 1].map(|i| {
        let peer = PeerConfig::new(
            "peer",
            addrs[1 - i].into(),
            ids[i].parse().unwrap(),
            ids[1 - i].parse().unwrap(),
            b"psk",
        )
        .with_ike(&[proposal])
        .unwrap();
        let rng = rand_chacha::ChaCha20Rng::seed_from_u64(40 + i as u64);
        Endpoint::new(
            EndpointConfig::new(addrs[i].into()),
            vec![peer],
            Box::new(RealCrypto),
            Box::new(rng),
        )
    });
    let mut pcap = PcapSink::new(Vec::new()).unwrap();
    let mut keylog = String::new();
    let mut now = 0u64;
    eps[0].initiate(now, 0);
    let mut ident = 0u16;
    for _ in 0..20 {
        now += 5_000_000;
        for i in 0..2 {
            while let Some(t) = eps[i].poll_transmit() {
                let packet = sim_core::ipv4::udp_packet(addrs[i], addrs[1 - i], ident, &t.payload);
                ident += 1;
                pcap.capture(SimTime::from_nanos(now), packet);
                eps[1 - i].handle_datagram(now, addrs[i].into(), &t.payload);
            }
            while let Some(ev) = eps[i].poll_event() {
                if let Event::IkeSaEstablished {
                    keylog: entry,
                    initiator: true,
                    ..
                } = ev
                {
                    keylog = entry.wireshark_line();
                }
            }
        }
    }
    assert!(!keylog.is_empty(), "handshake did not complete");
    (pcap.finish().unwrap(), keylog)
}

#[test]
fn keylog_lines_decrypt_ike_auth_in_tshark() {
    if !tshark_available() {
        return;
    }
    for proposal in [
        "aes256gcm16-prfsha256-x25519",
        "aes128gcm16-prfsha384-mlkem768",
    ] {
        let (pcap, line) = captured_handshake(proposal);
        let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ike.pcap");
        std::fs::write(&path, pcap).unwrap();
        let dissect = |table: Option<&str>| {
            let mut cmd = Command::new("tshark");
            cmd.args([
                "-r",
                path.to_str().unwrap(),
                "-T",
                "fields",
                "-e",
                "isakmp.id.data.fqdn",
            ]);
            if let Some(t) = table {
                cmd.args(["-o", &format!("uat:ikev2_decryption_table:{t}")]);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        assert!(
            !dissect(None).contains("gw-a.example"),
            "identities are encrypted"
        );
        let decrypted = dissect(Some(&line));
        assert!(
            decrypted.contains("gw-a.example") && decrypted.contains("gw-b.example"),
            "{proposal}: tshark did not decrypt with {line}: {decrypted}"
        );
    }
}
