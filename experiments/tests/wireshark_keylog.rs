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

/// Runs one handshake with `proposal`, capturing every datagram; returns the pcap, the
/// keylog lines of the final key set, and the initiator's Child SA.
fn captured_handshake(proposal: &str) -> (Vec<u8>, String, ikev2::endpoint::ChildSa) {
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
    let mut child = None;
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
                match ev {
                    Event::IkeSaEstablished {
                        keylog: entry,
                        initiator: true,
                        ..
                    } => keylog = entry.wireshark_line(),
                    Event::ChildSaReady { child: c, .. } if i == 0 => child = Some(c),
                    _ => {}
                }
            }
        }
    }
    assert!(!keylog.is_empty(), "handshake did not complete");
    (pcap.finish().unwrap(), keylog, child.expect("child SA"))
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
        let (pcap, line, _) = captured_handshake(proposal);
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

#[test]
fn esp_keys_decrypt_captured_esp_in_tshark() {
    if !tshark_available() {
        return;
    }
    let (_, _, child) = captured_handshake("aes256gcm16-prfsha256-x25519");
    // Tunnel-mode ESP from 10.1.0.1 to 10.1.0.2 carrying inner UDP packets.
    let mut out = esp::Outbound::new(
        child.spi_out,
        child.aead,
        child.encr_out,
        false,
        Default::default(),
    );
    let mut pcap = PcapSink::new(Vec::new()).unwrap();
    for i in 0..3u16 {
        let inner = sim_core::ipv4::udp_packet(
            "10.98.2.7:4000".parse().unwrap(),
            "10.98.1.9:5000".parse().unwrap(),
            i,
            b"hello through the tunnel",
        );
        let packet = out.seal(&RealCrypto, &inner, esp::NEXT_IPV4).unwrap();
        let ip = sim_core::ipv4::ip_packet(
            [10, 1, 0, 1].into(),
            [10, 1, 0, 2].into(),
            sim_core::ipv4::PROTO_ESP,
            100 + i,
            &packet,
        );
        pcap.capture(SimTime::from_nanos(i as u64), ip);
    }
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("esp.pcap");
    std::fs::write(&path, pcap.finish().unwrap()).unwrap();
    let sa = child.wireshark_esp_line([10, 1, 0, 1].into(), [10, 1, 0, 2].into(), true);
    let out = Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            &format!("uat:esp_sa:{sa}"),
        ])
        .args(["-T", "fields", "-e", "udp.dstport", "-e", "ip.dst"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Decrypted, each packet shows its inner UDP header (port 5000) and inner address.
    assert_eq!(
        text.matches("5000").count(),
        3,
        "tshark could not decrypt with {sa}: {text}"
    );
    assert!(text.contains("10.98.1.9"), "{text}");
}

/// `qsafe run --pcap --keylog`: the capture of a simulated tunnel with traffic, its
/// Child SAs rekeyed twice, decrypts in tshark with nothing but the two key files
/// written beside it (read as a Wireshark profile): the identities inside IKE_AUTH, and
/// the inner packets of every ESP packet under all three Child SAs.
#[test]
fn a_simulated_capture_decrypts_with_the_written_key_files() {
    if !tshark_available() {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("keylog-run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("p2p.toml");
    std::fs::write(
        &scenario,
        r#"
duration = "20s"
[[gateway]]
name = "gw-a"
address = "10.0.0.1"
[[gateway]]
name = "gw-b"
address = "10.0.0.2"
[[link]]
a = "gw-a"
b = "gw-b"
params = { latency = "5ms" }
[[tunnel]]
name = "t1"
initiator = "gw-a"
responder = "gw-b"
ike = ["aes256gcm16-prfsha256-x25519"]
esp = ["aes128gcm16-x25519"]
child_rekey_time = "8s"
traffic = { rate_pps = 5, sizes = [100] }
"#,
    )
    .unwrap();
    let out = dir.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--pcap", "--keylog", "--quiet", "--no-report"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let esp_sa = std::fs::read_to_string(out.join("wireshark/esp_sa")).unwrap();
    assert_eq!(
        esp_sa.lines().count(),
        6,
        "three Child SAs, two directions: {esp_sa}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let sent = results["traffic"][0]["sent_packets"].as_u64().unwrap();
    assert!(sent > 150, "{sent}");
    let fields = |field: &str| {
        let o = Command::new("tshark")
            .env("XDG_CONFIG_HOME", &out)
            .args(["-r", out.join("capture.pcap").to_str().unwrap()])
            .args([
                "-o",
                "esp.enable_encryption_decode:TRUE",
                "-T",
                "fields",
                "-e",
                field,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let ids = fields("isakmp.id.data.fqdn");
    assert!(ids.contains("gw-a") && ids.contains("gw-b"), "{ids}");
    // The inner UDP packets go to port 9; each decrypted ESP packet shows one.
    let ports = fields("udp.dstport");
    let inner = ports
        .lines()
        .filter(|l| l.split(',').any(|p| p == "9"))
        .count();
    assert_eq!(inner as u64, sent, "{ports}");
}
