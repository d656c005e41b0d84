//! `qsafe kme`'s server and the gateways' client over real sockets on loopback: two
//! KMEs joined by one QKD link, test certificates from `certs::make`, ETSI GS QKD 014
//! and SKIP with mutual TLS, and the error paths the standard defines.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kme::certs::{self, Role};
use kme::client::{Https, KeySource};
use kme::server::{self, Api, Kme, RequestLog, Shared};
use kme::{Error, tls};
use qkd::{PoolConfig, QkdNetwork};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::net::TcpListener;

/// kme-a (gw-a) and kme-b (gw-b, gw-c) with one QKD link holding keys from the start.
fn network() -> QkdNetwork {
    // One stream per entity and purpose (a small FNV hash of the names).
    let streams = |e: &str, p: &str| {
        let h = e
            .bytes()
            .chain(p.bytes())
            .fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        ChaCha20Rng::seed_from_u64(h)
    };
    let mut net = QkdNetwork::new();
    let a = net.add_kme("kme-a", &["gw-a"], &streams);
    let b = net.add_kme("kme-b", &["gw-b", "gw-c"], &streams);
    let pool: PoolConfig = serde_json::from_value(serde_json::json!({
        "rate_bps": 1000.0, "supply": "fixed", "capacity_bits": 1048576,
        "initial_bits": 65536, "key_size_bits": 256
    }))
    .unwrap();
    net.add_link("kme-a-kme-b", a, b, pool, &streams);
    net
}

struct Running {
    urls: Vec<String>,
    log: Arc<Mutex<Vec<RequestLog>>>,
}

/// Serves kme-a with `api_a` and kme-b with `api_b` on ephemeral loopback ports.
async fn start(dir: &Path, api_a: Api, api_b: Api) -> Running {
    certs::make(
        dir,
        &["kme-a", "kme-b"],
        &["gw-a", "gw-b", "gw-c", "stranger"],
        &[],
    )
    .unwrap();
    let shared = Shared::new(network());
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let sink: server::Log = Arc::new(move |l| sink.lock().unwrap().push(l));
    let mut urls = Vec::new();
    for (index, (name, api)) in [("kme-a", api_a), ("kme-b", api_b)].into_iter().enumerate() {
        let (cert, key) = certs::paths(dir, Role::Kme, name);
        let tls = tls::server(&certs::ca_path(dir), &cert, &key, api == Api::Skip).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        ));
        let kme = Kme { index, api, tls };
        tokio::spawn(server::serve(shared.clone(), kme, listener, sink.clone()));
    }
    Running { urls, log }
}

fn https(dir: &Path, url: &str, sae: &str) -> Https {
    let (cert, key) = certs::paths(dir, Role::Sae, sae);
    let tls = tls::client(&certs::ca_path(dir), &cert, &key).unwrap();
    Https::new(url, tls, Duration::from_secs(5)).unwrap()
}

fn etsi(dir: &Path, url: &str, sae: &str, peer: &str) -> KeySource {
    KeySource::Etsi014 {
        http: https(dir, url, sae),
        peer_sae: peer.into(),
    }
}

fn status_of(r: Result<(String, Vec<u8>), Error>) -> u16 {
    match r {
        Err(Error::Refused { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn etsi_014_keys_cross_two_kmes_and_the_errors_are_the_standards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = start(d, Api::Etsi014, Api::Etsi014).await;
    let (a, b) = (&run.urls[0], &run.urls[1]);
    // gw-a draws at kme-a for gw-b; gw-b fetches the same key by ID at kme-b.
    let (id, key) = etsi(d, a, "gw-a", "gw-b").new_key().await.unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(id.len(), 36, "a UUID: {id}");
    // Another SAE of kme-b may not have gw-b's key: 401.
    assert_eq!(
        status_of(etsi(d, b, "gw-c", "gw-a").key_by_id(&id).await),
        401
    );
    let (id_b, key_b) = etsi(d, b, "gw-b", "gw-a").key_by_id(&id).await.unwrap();
    assert_eq!((id_b.as_str(), &key_b), (id.as_str(), &key));
    // Used once: 400, not found.
    assert_eq!(
        status_of(etsi(d, b, "gw-b", "gw-a").key_by_id(&id).await),
        400
    );
    // An unknown ID: 400.
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        status_of(etsi(d, b, "gw-b", "gw-a").key_by_id(unknown).await),
        400
    );
    // A certificate naming no SAE of this KME: 401.
    assert_eq!(
        status_of(etsi(d, a, "stranger", "gw-b").new_key().await),
        401
    );
    // Status, too many keys, a size not a multiple of 8, no client certificate.
    let ha = https(d, a, "gw-a");
    let (s, body) = ha
        .request("GET", "/api/v1/keys/gw-b/status", None)
        .await
        .unwrap();
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s, st["key_size"].as_u64(), st["master_SAE_ID"].as_str()),
        (200, Some(256), Some("gw-a"))
    );
    let post = |body: &str| ha.request("POST", "/api/v1/keys/gw-b/enc_keys", Some(body.into()));
    let (s, body) = post(r#"{"number": 100000}"#).await.unwrap();
    assert_eq!(s, 400, "{body}");
    let (s, body) = post(r#"{"size": 100}"#).await.unwrap();
    assert_eq!(
        (s, body.contains("size shall be a multiple of 8")),
        (400, true),
        "{body}"
    );
    let ca = tls::client_without_certificate(&certs::ca_path(d)).unwrap();
    let anonymous = Https::new(a, ca, Duration::from_secs(5)).unwrap();
    let (s, body) = anonymous
        .request("GET", "/api/v1/keys/gw-b/status", None)
        .await
        .unwrap();
    assert_eq!((s, body.as_str()), (401, ""));
    // Every request logged with its SAE, status and key IDs, never key bytes.
    let log = run.log.lock().unwrap();
    let drew = log
        .iter()
        .find(|l| l.path.ends_with("enc_keys") && l.status == 200)
        .unwrap();
    assert_eq!(
        (drew.sae.as_deref(), &drew.key_ids),
        (Some("gw-a"), &vec![id.clone()])
    );
    let lines: String = log.iter().map(|l| format!("{l}\n")).collect();
    let hex = |k: &[u8]| {
        use std::fmt::Write;
        k.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    assert!(!lines.contains(&hex(&key)), "{lines}");
    assert!(
        lines.contains("(no certificate)") && lines.contains("-> 401"),
        "{lines}"
    );
}

#[tokio::test]
async fn skip_keys_cross_two_key_providers_and_need_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = start(d, Api::Skip, Api::Skip).await;
    let (a, b) = (&run.urls[0], &run.urls[1]);
    let skip = |url: &str, sae: &str, remote: &str| KeySource::Skip {
        http: https(d, url, sae),
        remote: remote.into(),
    };
    let (id, key) = skip(a, "gw-a", "kme-b").new_key().await.unwrap();
    assert_eq!((id.len(), key.len()), (32, 32));
    assert_eq!(
        skip(b, "gw-b", "kme-a").key_by_id(&id).await.unwrap(),
        (id.clone(), key)
    );
    assert_eq!(
        status_of(skip(b, "gw-b", "kme-a").key_by_id(&id).await),
        400
    );
    let (s, caps) = https(d, a, "gw-a")
        .request("GET", "/capabilities", None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(caps.contains("\"localSystemID\":\"kme-a\""), "{caps}");
    // Without a client certificate the TLS handshake is refused.
    let ca = tls::client_without_certificate(&certs::ca_path(d)).unwrap();
    let anonymous = Https::new(a, ca, Duration::from_secs(5)).unwrap();
    assert!(
        anonymous
            .request("GET", "/capabilities", None)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        run.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.status == 0 && l.method == "TLS")
    );
}
