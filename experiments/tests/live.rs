//! `qsafe live` against itself over loopback UDP: the tokio driver, port floating to the
//! encapsulation port with the non-ESP marker, a hybrid proposal, a PPK and a Child SA
//! rekey. (Interop
//! with strongSwan is experiments/scripts/interop/interop.sh.)

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn config(me: &str, peer: &str, initiate: bool, encap: bool) -> String {
    // The initiator also rekeys its Child SA while both sides hold on.
    let rekey = if initiate {
        "rekey_child_after = \"200ms\""
    } else {
        ""
    };
    format!(
        r#"
local = "{me}"
port = 10500
natt_port = 14500
timeout = "10s"
hold = "1s"

[[peer]]
name = "other"
remote = "{peer}"
remote_port = 10500
local_id = "{me}"
remote_id = "{peer}"
psk = "loopback-psk"
ike = ["aes256gcm16-prfsha384-x25519-ke1_mlkem768"]
local_ts = ["{me}"]
remote_ts = ["{peer}"]
fragment_size = 1280
encap = {encap}
ppk = "required"
ppk_id = "qkd-0001"
ppks = {{ "qkd-0001" = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff" }}
initiate = {initiate}
{rekey}
"#
    )
}

#[test]
fn two_live_gateways_establish_over_loopback() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live");
    fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    fs::write(&a, config("127.0.0.1", "127.0.0.2", true, true)).unwrap();
    fs::write(&b, config("127.0.0.2", "127.0.0.1", false, false)).unwrap();
    let responder = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", b.to_str().unwrap(), "--seed", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let keylog = dir.join("keylog.txt");
    let initiator = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args([
            "live",
            a.to_str().unwrap(),
            "--seed",
            "1",
            "--keylog",
            keylog.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let responder = responder.wait_with_output().unwrap();
    let (out_a, out_b) = (
        String::from_utf8_lossy(&initiator.stdout),
        String::from_utf8_lossy(&responder.stdout),
    );
    assert!(
        initiator.status.success() && responder.status.success(),
        "initiator:\n{out_a}\nresponder:\n{out_b}"
    );
    for out in [&out_a, &out_b] {
        assert!(out.contains("established as"), "{out}");
        assert!(out.contains("PPK used qkd-0001"), "{out}");
        assert!(out.contains("Child SA ready"), "{out}");
        assert!(out.contains("rekeyed"), "{out}");
    }
    assert!(out_a.contains("IKE_INTERMEDIATE done"), "{out_a}");
    // Initial keys, the RFC 9370 update: two key sets for the one IKE SA.
    let keylog = fs::read_to_string(&keylog).unwrap();
    assert_eq!(
        keylog.lines().filter(|l| !l.starts_with('#')).count(),
        2,
        "{keylog}"
    );
    assert!(keylog.contains(": PPK qkd-0001"), "{keylog}");
}

#[test]
fn a_bad_live_config_names_file_line_and_field() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-bad");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    fs::write(
        &path,
        "local = \"127.0.0.1\"\n\n[[peer]]\nname = \"x\"\nremote = \"not-an-ip\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 5") && err.contains("peer[0].remote"),
        "{err}"
    );
}

#[test]
fn a_scenarios_gateways_run_live_and_rekey() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-scenario");
    fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("pair.toml");
    fs::write(
        &scenario,
        r#"
duration = "1m"
[[gateway]]
name = "gw-a"
address = "127.0.0.1"
[[gateway]]
name = "gw-b"
address = "127.0.0.2"
[[link]]
a = "gw-a"
b = "gw-b"
[[tunnel]]
name = "a-b"
initiator = "gw-a"
responder = "gw-b"
esp = ["aes256gcm16-mlkem768"]
child_rekey_time = "300ms"
"#,
    )
    .unwrap();
    let live = |gw: &str, hold: &str| {
        Command::new(env!("CARGO_BIN_EXE_qsafe"))
            .args(["live", scenario.to_str().unwrap(), "--gateway", gw])
            .args(["--port", "10600", "--natt-port", "14600", "--hold", hold])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let responder = live("gw-b", "1s");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let initiator = live("gw-a", "1s").wait_with_output().unwrap();
    let responder = responder.wait_with_output().unwrap();
    let (out_a, out_b) = (
        String::from_utf8_lossy(&initiator.stdout),
        String::from_utf8_lossy(&responder.stdout),
    );
    assert!(
        initiator.status.success() && responder.status.success(),
        "initiator:\n{out_a}\nresponder:\n{out_b}"
    );
    for out in [&out_a, &out_b] {
        assert!(
            out.contains("a-b: IKE SA")
                && out.contains("aes256gcm16-prfsha256-x25519-ke1_mlkem768"),
            "{out}"
        );
        assert!(
            out.contains("rekeyed") && out.contains("aes256gcm16-mlkem768"),
            "{out}"
        );
    }

    // A gateway that is not in the scenario, and PPKs that need a key manager.
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", scenario.to_str().unwrap(), "--gateway", "gw-z"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("no gateway named `gw-z`"));
    let text = fs::read_to_string(&scenario).unwrap();
    let with_ppk = text
        .replace(
            "address = \"127.0.0.1\"",
            "address = \"127.0.0.1\"\nkme = \"k-a\"",
        )
        .replace(
            "address = \"127.0.0.2\"",
            "address = \"127.0.0.2\"\nkme = \"k-b\"",
        )
        + "ppk = \"required\"\n[[kme]]\nname = \"k-a\"\n[[kme]]\nname = \"k-b\"\n\
           [[qkd_link]]\na = \"k-a\"\nb = \"k-b\"\npool = { rate_bps = 1000, capacity_bits = 100000 }\n";
    fs::write(&scenario, with_ppk).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", scenario.to_str().unwrap(), "--gateway", "gw-a"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tunnel[0].ppk") && err.contains("key managers"),
        "{err}"
    );
}

#[test]
fn live_gateways_log_and_count_what_they_drop_and_go_on() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-garbage");
    fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    fs::write(&a, config("127.0.0.5", "127.0.0.6", true, false)).unwrap();
    fs::write(&b, config("127.0.0.6", "127.0.0.5", false, false)).unwrap();
    let responder = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", b.to_str().unwrap(), "--seed", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Garbage, a request for an SA that does not exist, and ESP on the NAT-T port.
    let s = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
    s.send_to(&[0xff; 10], "127.0.0.6:10500").unwrap();
    let mut unknown = vec![0x11; 8];
    unknown.extend([0x22; 8]);
    unknown.extend([0, 0x20, 37, 0x08, 0, 0, 0, 5, 0, 0, 0, 28]);
    s.send_to(&unknown, "127.0.0.6:10500").unwrap();
    s.send_to(&[1, 2, 3, 4, 5, 6, 7, 8], "127.0.0.6:14500")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let initiator = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", a.to_str().unwrap(), "--seed", "1"])
        .output()
        .unwrap();
    let responder = responder.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&responder.stdout);
    assert!(
        initiator.status.success() && responder.status.success(),
        "{out}"
    );
    assert!(out.contains("established as"), "{out}");
    assert!(out.contains("dropped 10 bytes from 127.0.0.5"), "{out}");
    assert!(
        out.contains("ignored 8 bytes of ESP from 127.0.0.5"),
        "{out}"
    );
    assert!(
        out.contains("dropped: 1 malformed, 1 unknown SPI") && out.contains("1 ESP ignored"),
        "{out}"
    );
}
