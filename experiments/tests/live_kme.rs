//! `qsafe kme` serving experiments/scenarios/live-kme.toml over HTTPS with mutual TLS,
//! and what uses it: two `qsafe live` gateways, each with its own key manager, taking
//! their PPK from them (ETSI GS QKD 014 and SKIP); a refusal following the PPK policy;
//! and clients that were not written here (the PyPI packages etsi-qkd-014-client and
//! skip-qkd, and curl), run by experiments/scripts/kme/clients.py when a Python with
//! them is found (`QSAFE_PYTHON`; `.ci/run` installs them and sets
//! `QSAFE_REQUIRE_KME_CLIENTS=1`, so CI cannot skip it).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KMES: [&str; 4] = ["kme-a", "kme-b", "kp-c", "kp-d"];

fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/live-kme.toml")
}

/// A running `qsafe kme` with every key manager of the scenario on a loopback port.
struct Kme {
    child: Child,
    certs: PathBuf,
    /// `KME name -> host:port`.
    addrs: Vec<(String, String)>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Kme {
    fn start(name: &str) -> Kme {
        Kme::serve(name, &scenario(), &KMES)
    }

    /// Serves the key managers `kmes` of `scenario`.
    fn serve(name: &str, scenario: &Path, kmes: &[&str]) -> Kme {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = fs::remove_dir_all(&dir);
        let certs = dir.join("certs");
        let made = Command::new(env!("CARGO_BIN_EXE_qsafe"))
            .args(["kme", scenario.to_str().unwrap(), "--make-certs"])
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let addrs: Vec<(String, String)> = kmes
            .iter()
            .map(|k| {
                let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                (k.to_string(), free.local_addr().unwrap().to_string())
            })
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qsafe"));
        cmd.args([
            "kme",
            scenario.to_str().unwrap(),
            "--serve-for",
            "60s",
            "--certs",
        ])
        .arg(&certs);
        for (k, a) in &addrs {
            cmd.args(["--listen", &format!("{k}={a}")]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sink, out) = (log.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let kme = Kme {
            child,
            certs,
            addrs,
            log,
        };
        kme.wait_for("live mode, not deterministic");
        kme
    }

    fn addr(&self, kme: &str) -> &str {
        &self.addrs.iter().find(|(k, _)| k == kme).unwrap().1
    }

    fn wait_for(&self, text: &str) {
        let t0 = Instant::now();
        while !self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no `{text}` in {:?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lines(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Kme {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A live gateway's configuration with its PPK from `source` (a `ppk_source` table).
fn gateway(me: &str, peer: &str, port: u16, initiate: bool, ppk: &str, source: &str) -> String {
    format!(
        r#"
local = "{me}"
port = {port}
natt_port = {natt}
timeout = "10s"
hold = "500ms"

[[peer]]
name = "other"
remote = "{peer}"
remote_port = {port}
local_id = "{me}"
remote_id = "{peer}"
psk = "loopback-psk"
ike = ["aes256gcm16-prfsha384-x25519-ke1_mlkem768"]
ppk = "{ppk}"
initiate = {initiate}
ppk_source = {source}
"#,
        natt = port + 4000
    )
}

fn source(kme: &Kme, api: &str, url_of: &str, sae: &str, peer: &str) -> String {
    let c = kme.certs.display();
    let who = match api {
        "etsi014" => format!("peer_sae_id = \"{peer}\""),
        _ => format!("remote_system_id = \"{peer}\""),
    };
    format!(
        "{{ {api} = \"https://{}\", sae_id = \"{sae}\", {who}, ca = \"{c}/ca.pem\", cert = \"{c}/sae-{sae}.pem\", key = \"{c}/sae-{sae}.key\" }}",
        kme.addr(url_of)
    )
}

/// Runs the responder, then the initiator, on 127.0.0.2 and 127.0.0.1; returns their
/// exit success and output.
fn pair(dir: &Path, responder: String, initiator: String) -> [(bool, String); 2] {
    fs::create_dir_all(dir).unwrap();
    let (a, b) = (dir.join("initiator.toml"), dir.join("responder.toml"));
    fs::write(&a, initiator).unwrap();
    fs::write(&b, responder).unwrap();
    let resp = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", b.to_str().unwrap(), "--seed", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let keylog = dir.join("keylog.txt");
    let init = Command::new(env!("CARGO_BIN_EXE_qsafe"))
        .args(["live", a.to_str().unwrap(), "--seed", "1", "--keylog"])
        .arg(&keylog)
        .output()
        .unwrap();
    let resp = resp.wait_with_output().unwrap();
    [init, resp].map(|o| {
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    })
}

/// The PPK ID a gateway's output says its IKE SA used.
fn ppk_used(out: &str) -> &str {
    let at = out
        .find("PPK used ")
        .unwrap_or_else(|| panic!("no PPK used in\n{out}"));
    out[at + 9..].split_whitespace().next().unwrap()
}

fn both_ends_use_the_key_their_kmes_issued(
    api: &str,
    kmes: [&str; 2],
    saes: [&str; 2],
    peers: [&str; 2],
    port: u16,
) {
    let kme = Kme::start(&format!("live-kme-{api}"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("live-kme-{api}/gateways"));
    let [(ok_i, out_i), (ok_r, out_r)] = pair(
        &dir,
        gateway(
            "127.0.0.2",
            "127.0.0.1",
            port,
            false,
            "required",
            &source(&kme, api, kmes[1], saes[1], peers[1]),
        ),
        gateway(
            "127.0.0.1",
            "127.0.0.2",
            port,
            true,
            "required",
            &source(&kme, api, kmes[0], saes[0], peers[0]),
        ),
    );
    assert!(ok_i && ok_r, "initiator:\n{out_i}\nresponder:\n{out_r}");
    let id = ppk_used(&out_i);
    assert_eq!(ppk_used(&out_r), id);
    // Each end reports how long its key manager took.
    assert!(
        out_i.contains(&format!("PPK {id} from the key manager (256 bits) in")),
        "{out_i}"
    );
    assert!(
        out_r.contains(&format!("asking the key manager for key {id}")),
        "{out_r}"
    );
    // The key managers issued that ID: drawn at one, fetched by ID at the other.
    kme.wait_for(&format!("{} sae={}", kmes[1], saes[1]));
    let log = kme.lines();
    for (k, s) in kmes.iter().zip(saes) {
        assert!(
            log.lines().any(|l| l.contains(&format!("{k} sae={s}"))
                && l.contains("-> 200")
                && l.contains(id)),
            "{log}"
        );
    }
    // The keylog names the PPK of the IKE SA beside its keys.
    let keylog = fs::read_to_string(dir.join("keylog.txt")).unwrap();
    assert!(keylog.contains(&format!("PPK {id}")), "{keylog}");
}

#[test]
fn two_live_gateways_take_their_ppk_from_their_own_etsi_014_kme() {
    both_ends_use_the_key_their_kmes_issued(
        "etsi014",
        ["kme-a", "kme-b"],
        ["gw-a", "gw-b"],
        ["gw-b", "gw-a"],
        10610,
    );
}

#[test]
fn two_live_gateways_take_their_ppk_from_their_own_skip_key_provider() {
    both_ends_use_the_key_their_kmes_issued(
        "skip",
        ["kp-c", "kp-d"],
        ["gw-c", "gw-d"],
        ["kp-d", "kp-c"],
        10620,
    );
}

#[test]
fn a_refused_fetch_follows_the_ppk_policy() {
    let kme = Kme::start("live-kme-refused");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-kme-refused");
    // The responder asks for keys of a master that never drew them: 400.
    let wrong = source(&kme, "etsi014", "kme-b", "gw-b", "gw-b");
    let right = source(&kme, "etsi014", "kme-a", "gw-a", "gw-b");
    for (policy, port) in [("optional", 10630), ("required", 10640)] {
        let [(ok_i, out_i), (_, out_r)] = pair(
            &dir.join(policy),
            gateway("127.0.0.2", "127.0.0.1", port, false, policy, &wrong),
            gateway("127.0.0.1", "127.0.0.2", port, true, policy, &right),
        );
        assert!(
            out_r.contains("no PPK") && out_r.contains("answered 400"),
            "{out_r}"
        );
        match policy {
            "optional" => {
                assert!(ok_i, "{out_i}");
                assert!(
                    out_i.contains("PPK DOWNGRADED") && out_r.contains("PPK DOWNGRADED"),
                    "{out_i}\n{out_r}"
                );
            }
            _ => {
                assert!(!ok_i, "{out_i}");
                assert!(out_i.contains("failed"), "{out_i}");
                assert!(!out_r.contains("established"), "{out_r}");
            }
        }
    }
}

#[test]
fn a_key_manager_follows_its_schedule_in_wall_clock_time() {
    // kme-a is down for the first six seconds (time for curl on a loaded machine): 503,
    // ETSI's server-side error; then it answers again.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kme-schedule");
    fs::create_dir_all(&dir).unwrap();
    let text = fs::read_to_string(scenario()).unwrap().replacen(
        "name = \"kme-a\"\napi = \"etsi014\"",
        "name = \"kme-a\"\napi = \"etsi014\"\nschedule = [{ at = \"0s\", state = \"down\" }, { at = \"6s\", state = \"up\" }]",
        1,
    );
    assert!(text.contains("schedule"));
    let path = dir.join("scheduled.toml");
    fs::write(&path, text).unwrap();
    let kme = Kme::serve("kme-schedule-run", &path, &["kme-a"]);
    kme.wait_for("schedule: key manager kme-a down");
    let status = || {
        let c = kme.certs.display();
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(format!("{c}/ca.pem"))
            .args([
                "--cert",
                &format!("{c}/sae-gw-a.pem"),
                "--key",
                &format!("{c}/sae-gw-a.key"),
            ])
            .arg(format!(
                "https://{}/api/v1/keys/gw-b/status",
                kme.addr("kme-a")
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Wall clock: on a machine loaded enough that curl took the six seconds, the first
    // request finds the KME up again. So the check is on the KME's own clock, which its
    // schedule follows: each request's status against the time the KME logged it.
    let first = status();
    kme.wait_for("schedule: key manager kme-a up");
    assert_eq!(status(), "200");
    kme.wait_for("/status -> 200");
    let answers: Vec<(f64, String)> = kme
        .lines()
        .lines()
        .filter(|l| l.contains("/status -> "))
        .map(|l| {
            let at = l[1..l.find("s]").unwrap()].trim().parse().unwrap();
            (at, l.rsplit("-> ").next().unwrap()[..3].to_string())
        })
        .collect();
    assert_eq!(answers.len(), 2, "{}", kme.lines());
    assert_eq!(answers[0].1, first);
    for (at, code) in &answers {
        match *at {
            at if at < 5.9 => assert_eq!(code, "503", "at {at} s"),
            at if at >= 6.5 => assert_eq!(code, "200", "at {at} s"),
            _ => {} // the schedule's own step may come just before or after
        }
    }
}

/// A Python that can import both PyPI clients: `QSAFE_PYTHON`, else `python3`.
fn python_with_clients() -> Option<String> {
    let python = std::env::var("QSAFE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import etsi_qkd_014_client, skip_qkd.skip_qkd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("QSAFE_REQUIRE_KME_CLIENTS").as_deref() == Ok("1") {
        panic!(
            "QSAFE_REQUIRE_KME_CLIENTS=1 but {python} cannot import etsi_qkd_014_client and skip_qkd"
        );
    }
    ok.then_some(python)
}

#[test]
fn clients_from_pypi_and_curl_get_the_standards_answers() {
    let Some(python) = python_with_clients() else {
        eprintln!("skipped: no python3 with etsi-qkd-014-client and skip-qkd (set QSAFE_PYTHON)");
        return;
    };
    let kme = Kme::start("kme-clients");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kme/clients.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&kme.certs)
        .args(KMES.map(|k| kme.addr(k)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("all clients agree"),
        "{text}\n{}\nkme log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        kme.lines()
    );
}
