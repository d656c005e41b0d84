//! Simulator throughput on a hub with many spokes, each tunnel re-authenticating every
//! minute with a hybrid X25519 + ML-KEM-768 handshake and a QKD PPK: simulated
//! handshakes per second of wall time with real crypto, beside the same run with model
//! crypto (the ratio is what model mode buys a sweep). Compare the real-crypto figure
//! with the bare crypto floor that `cargo bench -p ikev2` prints. A third run keeps each
//! tunnel's first IKE SA and rekeys instead: the IKE SA every minute (X25519, then
//! ML-KEM-768 in IKE_FOLLOWUP_KE), the Child SA every 30 s (ML-KEM-768 PFS); its rekeys
//! per second are printed against the first run's handshakes per second. A fourth run
//! sends ESP traffic through every tunnel (1,000 packets of 1,000 bytes per second each
//! way, sealed, carried and opened one by one, Child SAs rekeyed every 20 s): its
//! packets per second are printed against bare ESP seal + open of the same packets in
//! the same process (the ratio is the simulator's share of a packet's cost).
//!
//! Run with `cargo bench -p netsim`; `qsafe bench` measures scale and the crypto floor.

use std::time::Instant;

use netsim::config::{
    CryptoMode, GatewayConfig, KmeConfig, LinkSpec, QkdLinkSpec, TrafficSpec, TunnelSpec,
    WorldConfig,
};
use netsim::{Outputs, World};
use sim_core::{SimDuration, Tracer};

// The allocator `qsafe` runs on, so that these figures are the program's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the tunnels of a bench run do.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Re-authenticate every minute.
    Reauth,
    /// Rekey the IKE SA every minute, the Child SA every 30 s.
    Rekey,
}

fn hub_and_spoke(
    spokes: u32,
    duration: SimDuration,
    crypto: CryptoMode,
    shape: Shape,
) -> WorldConfig {
    let mut cfg = WorldConfig {
        seed: None,
        duration,
        crypto,
        sample_every: SimDuration::from_secs(60),
        relay_latency: SimDuration::ZERO,
        gateways: vec![GatewayConfig {
            name: "hub".into(),
            address: "10.0.0.1".parse().unwrap(),
            kme: Some("kme-hub".into()),
            cpu: None,
            key_cache: None,
        }],
        links: Vec::new(),
        kmes: vec![KmeConfig {
            name: "kme-hub".into(),
            api: Default::default(),
            request_latency: SimDuration::from_millis(5),
            schedule: vec![],
            service_time: SimDuration::ZERO,
            concurrency: 0,
        }],
        qkd_links: Vec::new(),
        tunnels: Vec::new(),
        faults: Vec::new(),
        adversaries: Vec::new(),
    };
    for i in 0..spokes {
        let name = format!("spoke-{i}");
        let kme = format!("kme-{i}");
        cfg.gateways.push(GatewayConfig {
            name: name.clone(),
            address: format!("10.{}.{}.1", 1 + i / 250, i % 250).parse().unwrap(),
            kme: Some(kme.clone()),
            cpu: None,
            key_cache: None,
        });
        let mut params = link::LinkConfig {
            latency: SimDuration::from_millis(10 + (i % 20) as u64),
            mtu: 1280,
            ..Default::default()
        };
        params.loss = link::LossModel::Bernoulli { probability: 0.01 };
        cfg.links.push(LinkSpec {
            a: "hub".into(),
            b: name.clone(),
            params,
        });
        cfg.kmes.push(KmeConfig {
            name: kme.clone(),
            api: Default::default(),
            request_latency: SimDuration::from_millis(5),
            schedule: vec![],
            service_time: SimDuration::ZERO,
            concurrency: 0,
        });
        let mut pool = qkd::PoolConfig::fixed(2000.0, 1 << 20);
        pool.initial_bits = 1 << 19;
        cfg.qkd_links.push(QkdLinkSpec {
            a: kme,
            b: "kme-hub".into(),
            pool,
            schedule: vec![],
        });
        // Lifetimes as the bench's runs want them exactly: no random part, and no
        // hard limits that a busy tunnel could reach.
        let (lifetimes, esp) = match shape {
            Shape::Reauth => (
                "reauth_time = \"60s\"\nrand_time = \"0s\"\nover_time = \"1h\"",
                "aes256gcm16",
            ),
            Shape::Rekey => (
                "rekey_time = \"60s\"\nchild_rekey_time = \"30s\"\nchild_rand_time = \"0s\"\nchild_life_time = \"0s\"\nrand_time = \"0s\"\nover_time = \"1h\"",
                "aes256gcm16-mlkem768",
            ),
        };
        let start = SimDuration::from_millis(i as u64 * 37);
        let tunnel: TunnelSpec = toml::from_str(&format!(
            "name = \"{name}\"\ninitiator = \"{name}\"\nresponder = \"hub\"\n\
             ike = [\"aes256gcm16-prfsha256-x25519-ke1_mlkem768\"]\nesp = [\"{esp}\"]\n\
             ppk = \"required\"\nstart = \"{start}\"\nretry_after = \"1s\"\n{lifetimes}"
        ))
        .expect("a valid tunnel");
        cfg.tunnels.push(tunnel);
    }
    cfg
}

/// Runs a configuration (no rows kept: totals only); returns its results and the wall
/// time it took.
fn timed(cfg: WorldConfig) -> (netsim::Results, f64) {
    let start = Instant::now();
    let r = World::new(cfg, 1, Tracer::new()).unwrap().run(Outputs {
        rows: netsim::results::RowSelection::None,
        ..Outputs::none()
    });
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    (r, start.elapsed().as_secs_f64())
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    // `cargo bench -p netsim -- esp` runs only the parts whose name holds "esp".
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| part.contains(o.as_str()));
    let real_rate = wanted("handshakes").then(|| handshakes(quick));
    if wanted("rekeys") {
        rekeys(quick, real_rate);
    }
    if wanted("esp") {
        esp_traffic(quick);
    }
}

/// Re-authenticating tunnels with real, then model crypto; returns the real
/// handshakes per second.
fn handshakes(quick: bool) -> f64 {
    let (spokes, minutes) = if quick { (5, 2) } else { (200, 30) };
    let mut rates = Vec::new();
    for crypto in [CryptoMode::Real, CryptoMode::Model] {
        let cfg = hub_and_spoke(
            spokes,
            SimDuration::from_secs(60 * minutes),
            crypto,
            Shape::Reauth,
        );
        let (r, secs) = timed(cfg);
        let handshakes: u32 = r.tunnels.iter().map(|t| t.established).sum();
        let rate = handshakes as f64 / secs;
        println!(
            "{crypto:?}: {spokes} tunnels, {minutes} simulated minutes: {handshakes} handshakes, {} events in {secs:.2} s = {rate:.0} handshakes/s, {:.2} M events/s, {:.0}x real time",
            r.events,
            r.events as f64 / secs / 1e6,
            60.0 * minutes as f64 / secs
        );
        rates.push(rate);
    }
    println!(
        "model crypto runs {:.1}x as many handshakes per second as real crypto",
        rates[1] / rates[0]
    );
    rates[0]
}

/// IKE and Child SA rekeys with real crypto, against the handshakes per second.
fn rekeys(quick: bool, handshakes_per_s: Option<f64>) {
    let (spokes, minutes) = if quick { (5, 2) } else { (200, 30) };
    let cfg = hub_and_spoke(
        spokes,
        SimDuration::from_secs(60 * minutes),
        CryptoMode::Real,
        Shape::Rekey,
    );
    let (r, secs) = timed(cfg);
    let ike: u32 = r.tunnels.iter().map(|t| t.ike_rekeys).sum();
    let all = r.totals.exchange("CREATE_CHILD_SA").count as f64;
    let rate = all / secs;
    let against = handshakes_per_s
        .map(|h| format!(", {:.2}x the handshakes/s above", rate / h))
        .unwrap_or_default();
    println!(
        "Real, rekeying: {ike} IKE SA and {} Child SA rekeys in {secs:.2} s = {rate:.0} rekeys/s{against}",
        all as u32 - ike,
    );
}

/// ESP traffic packet by packet, against bare ESP seal + open of as many packets.
fn esp_traffic(quick: bool) {
    let (tunnels, seconds) = if quick { (2, 5) } else { (20, 60) };
    let mut cfg = hub_and_spoke(
        tunnels,
        SimDuration::from_secs(seconds),
        CryptoMode::Real,
        Shape::Rekey,
    );
    let traffic: TrafficSpec = toml::from_str("rate_pps = 1000\nsizes = [1000]").unwrap();
    for t in &mut cfg.tunnels {
        t.traffic = Some(traffic.clone());
        t.child_rekey_time = Some(SimDuration::from_secs(20));
        t.rekey_time = None;
    }
    let (r, secs) = timed(cfg);
    let packets: u64 = r.traffic.iter().map(|f| f.delivered_packets).sum();
    let sim_rate = packets as f64 / secs;
    // The baseline: the same number of packets sealed and opened by the esp crate alone.
    let (mut out, mut inb) = (
        esp::Outbound::new(
            1,
            ikev2::crypto::AeadAlg::AesGcm16_256,
            ikev2::crypto::AeadKey::new(&[7; 36]),
            false,
            Default::default(),
        ),
        esp::Inbound::new(
            1,
            ikev2::crypto::AeadAlg::AesGcm16_256,
            ikev2::crypto::AeadKey::new(&[7; 36]),
            false,
            64,
            Default::default(),
        ),
    );
    let inner = vec![0u8; 1000];
    let start = Instant::now();
    for _ in 0..packets {
        let mut p = out
            .seal(&ikev2::crypto::RealCrypto, &inner, esp::NEXT_IPV4)
            .unwrap();
        inb.open_in_place(&ikev2::crypto::RealCrypto, &mut p)
            .unwrap();
    }
    let bare_secs = start.elapsed().as_secs_f64();
    let bare_rate = packets as f64 / bare_secs;
    println!(
        "Real, ESP traffic: {tunnels} tunnels x 2 directions x 1000 packets/s for {seconds} simulated s: {packets} packets delivered in {secs:.2} s = {sim_rate:.0} packets/s; bare ESP seal + open: {bare_rate:.0} packets/s; the simulator runs at {:.2}x the bare data plane, {:.3} us per packet beyond its crypto",
        sim_rate / bare_rate,
        (secs - bare_secs) / packets as f64 * 1e6
    );
}
