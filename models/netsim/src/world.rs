//! The simulation itself: gateways running the `ikev2` endpoint exchange real IKE
//! datagrams over link-model channels; key managers serve QKD keys through ETSI 014 or
//! SKIP (real JSON requests and responses, each with its latency); everything is driven
//! by one `sim_core::Simulation` event loop.
//!
//! A tunnel with a PPK first draws a QKD key at the initiator's KME (waiting, with
//! backoff, while the pool is empty if the PPK is required; going on without one if it
//! is optional), then starts IKE_SA_INIT and hands the key over when the endpoint asks.
//! The responder fetches the key by the received ID from its own KME. A key drawn for
//! an attempt that then fails, or that the SA came up without, is counted as wasted.
//!
//! Tunnels with traffic carry ESP through their Child SAs ([`crate::dataplane`]); byte
//! and packet lifetimes reached by that traffic rekey and expire Child SAs.

use sim_core::RngExt;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use ikev2::consts::exchange;
use ikev2::crypto::{CryptoProvider, ModelCrypto, RealCrypto};
use ikev2::endpoint::{
    Endpoint, EndpointConfig, Event, FailReason, Identity, PeerConfig, Ppk, PpkOutcome, PpkPolicy,
    SaId, Start,
};
use link::{Channel, Datagram, Delivery, LinkState, WirePacket};
use qkd::network::StreamFactory;
use qkd::{QkdNetwork, etsi014, skip};
use serde::Serialize;
use sim_core::pcap::PcapSink;
use sim_core::progress::Progress;
use sim_core::{EntityId, SimDuration, SimTime, Simulation, TimerId, TraceEvent, Tracer, entity};

use crate::config::{CryptoMode, Fault, KeyApi, PpkMode, TrafficMode, TrafficPattern, WorldConfig};
use crate::dataplane::{Crossed, DataPlane, ESP_PORT, MIN_PACKET};
use crate::results::*;

const IKE_PORT: u16 = 500;
/// How often the oracle looks for negotiations stuck past their timeouts.
const AUDIT_EVERY: SimDuration = SimDuration::from_secs(10);

/// The simulator's events.
enum Ev {
    Deliver {
        link: usize,
        dir: usize,
        datagram: Datagram,
    },
    GatewayTimer {
        gw: usize,
    },
    TunnelStart {
        tunnel: usize,
        why: &'static str,
    },
    /// Time to rekey the Child SA `spi_in` of the tunnel's IKE SA.
    ChildRekey {
        tunnel: usize,
        spi_in: u32,
    },
    /// Time to rekey the tunnel's IKE SA `sa` (if it is still the one that is up).
    IkeRekey {
        tunnel: usize,
        sa: SaId,
    },
    /// The initiator's key request (`enc_keys` or `/key`) reaches its KME.
    KeyDraw {
        tunnel: usize,
        asked: SimTime,
        attempt: u32,
    },
    /// The responder's fetch by key ID reaches its KME.
    KeyFetch {
        gw: usize,
        sa: SaId,
        tunnel: usize,
        key_id: Vec<u8>,
        asked: SimTime,
        attempt: u32,
    },
    KmeSwitch {
        kme: usize,
        up: bool,
    },
    Sample,
    /// The next packet of a tunnel's traffic in direction `dir` (0: from the initiator).
    Packet {
        tunnel: usize,
        dir: usize,
    },
    /// Aggregate traffic: count the packets of the last tick.
    AggregateTick {
        tunnel: usize,
    },
    /// Rekey the Child SA `spi_in` of gateway `gw`: it reached a soft volume limit
    /// (`volume`), or an earlier rekey of it was refused.
    RekeyChild {
        gw: usize,
        spi_in: u32,
        volume: bool,
    },
    /// Delete the Child SA `spi_in` of gateway `gw`: it reached a hard limit.
    ChildExpire {
        gw: usize,
        spi_in: u32,
    },
    /// Traffic and no Child SA: the initiator asks for a new one on its IKE SA (as
    /// strongSwan's trap policies do).
    CreateChild {
        tunnel: usize,
    },
    /// The gateway reboots (loses all state), or comes back up after it.
    GatewayDown {
        gw: usize,
        down_for: SimDuration,
    },
    GatewayUp {
        gw: usize,
    },
    CorruptNextChild {
        gw: usize,
    },
    /// The invariant oracle's periodic look at negotiations in progress.
    Audit,
}

/// A configuration error: which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct BuildError {
    pub field: String,
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> BuildError {
    BuildError {
        field: field.into(),
        problem: problem.into(),
    }
}

struct Gateway {
    name: String,
    entity: EntityId,
    addr: SocketAddrV4,
    ep: Endpoint,
    /// What a reboot starts again from.
    peer_cfgs: Vec<PeerConfig>,
    restarts: u32,
    /// Rebooting: everything that arrives is lost.
    down: bool,
    /// A `corrupt-child-key` fault is armed for the next Child SA.
    corrupt_next: bool,
    kme: Option<usize>,
    timer: Option<TimerId>,
    /// Peer index in the endpoint -> tunnel.
    peer_tunnel: Vec<usize>,
}

struct SimLink {
    name: String,
    ends: [usize; 2],
    entities: [EntityId; 2],
    channels: [Channel; 2],
}

#[derive(Default)]
struct Attempt {
    /// Why the tunnel wanted an IKE SA: start, reauthentication, retry, dead peer,
    /// gateway restart.
    why: &'static str,
    /// When the negotiation last moved on (IKE started, an exchange completed).
    progress: SimTime,
    reported_stuck: bool,
    requested: SimTime,
    key_wait: SimDuration,
    ike_started: SimTime,
    key_drawn: bool,
    ppk_id: String,
    retransmissions: u32,
    bytes_sent: usize,
    bytes_received: usize,
    fragments_sent: usize,
    fragments_received: usize,
}

struct Tunnel {
    name: String,
    initiator: usize,
    responder: usize,
    /// Peer index at the initiator's endpoint.
    peer: usize,
    ppk: PpkMode,
    reauth_every: Option<SimDuration>,
    child_rekey_every: Option<SimDuration>,
    child_rekey_jitter: SimDuration,
    ike_rekey_every: Option<SimDuration>,
    /// The tunnel's own stream for rekey jitter (set once its initiator exists).
    rekey_rng: Option<sim_core::SimRng>,
    /// The tunnel's streams for packet gaps and sizes, and for volume-limit jitter.
    traffic_rng: Option<sim_core::SimRng>,
    life_rng: Option<sim_core::SimRng>,
    retry_after: SimDuration,
    /// The IKE SA that is up, and since when the tunnel has been up (across
    /// reauthentications and rekeys).
    current: Option<(SaId, SimTime)>,
    /// The attempt in progress and its SA (once started).
    attempt: Option<(Attempt, Option<SaId>)>,
    pending_ppk: Option<Ppk>,
    consecutive_failures: u32,
    summary: TunnelSummary,
}

impl Tunnel {
    /// IKE SA `sa` is up; returns the one it replaces (a reauthentication).
    fn go_up(&mut self, sa: SaId, now: SimTime) -> Option<SaId> {
        let since = self.current.map_or(now, |c| c.1);
        self.current.replace((sa, since)).map(|c| c.0)
    }

    /// The tunnel has no IKE SA (any more): its up period ends.
    fn go_down(&mut self, now: SimTime) {
        if let Some((_, since)) = self.current.take() {
            self.summary.up_ns += now.saturating_since(since).as_nanos();
            self.summary
                .up_periods
                .push((since.as_nanos(), now.as_nanos()));
        }
    }
}

struct Kme {
    entity: EntityId,
    api: KeyApi,
    latency: SimDuration,
}

/// Typed trace lines of the network.
#[derive(Serialize)]
#[serde(untagged)]
enum NetTrace<'a> {
    Established {
        tunnel: &'a str,
        spis: String,
        proposal: &'a str,
        ppk: &'a str,
        ppk_id: &'a str,
    },
    Failed {
        tunnel: &'a str,
        reason: String,
    },
    Exchange {
        tunnel: &'a str,
        exchange: &'a str,
        bytes: usize,
        fragments: usize,
        retransmissions: u32,
    },
    KeyRequest {
        tunnel: &'a str,
        op: &'a str,
        status: u16,
    },
    Kme {
        up: bool,
    },
}

impl TraceEvent for NetTrace<'_> {
    fn kind(&self) -> &'static str {
        match self {
            NetTrace::Established { .. } => "ike.established",
            NetTrace::Failed { .. } => "ike.failed",
            NetTrace::Exchange { .. } => "ike.exchange",
            NetTrace::KeyRequest { .. } => "qkd.request",
            NetTrace::Kme { .. } => "qkd.device",
        }
    }
}

/// Optional outputs of a run.
pub struct Outputs<'a> {
    pub tracer: Tracer,
    pub pcap: Option<&'a mut PcapSink<Box<dyn Write>>>,
    pub keylog: Option<&'a mut Keylog>,
    pub progress: bool,
}

impl Outputs<'_> {
    pub fn none() -> Self {
        Outputs {
            tracer: Tracer::new(),
            pcap: None,
            keylog: None,
            progress: false,
        }
    }
}

/// The keys a capture of the run needs, as records of Wireshark's two decryption
/// tables (its UAT files `ikev2_decryption_table` and `esp_sa`), taken at each tunnel's
/// initiator: every IKE key set (also after each RFC 9370 update and each IKE SA
/// rekey), and both directions of every Child SA.
#[derive(Debug, Default)]
pub struct Keylog {
    pub ike: Vec<String>,
    pub esp: Vec<String>,
}

pub struct World {
    sim: Simulation<Ev>,
    cfg: WorldConfig,
    gateways: Vec<Gateway>,
    links: Vec<SimLink>,
    /// (gateway, destination address) -> (link, direction).
    routes: BTreeMap<(usize, IpAddr), (usize, usize)>,
    tunnels: Vec<Tunnel>,
    /// (gateway, SA) -> tunnel.
    sa_tunnel: BTreeMap<(usize, SaId), usize>,
    kmes: Vec<Kme>,
    qkd: QkdNetwork,
    handshakes: Vec<HandshakeRow>,
    exchanges: Vec<ExchangeRow>,
    key_requests: Vec<KeyRequestRow>,
    deliveries: Vec<Delivery>,
    wire: Vec<WirePacket>,
    /// Invariant oracle: the keys the first side of each IKE SA (by SPIs) reported, and
    /// every PPK ID an IKE SA came up with.
    sa_keys: BTreeMap<(u64, u64), ikev2::keys::IkeKeys>,
    ppk_ids_used: std::collections::BTreeSet<String>,
    /// (tunnel, SPI) -> the key one end of a Child SA reported for that direction.
    child_keys: BTreeMap<(usize, u32), Vec<u8>>,
    violations: Vec<String>,
    dp: DataPlane,
    /// Seals and opens ESP (the gateways' endpoints own their providers).
    esp_crypto: Box<dyn CryptoProvider>,
    /// (sending gateway, receiving gateway) -> (tunnel, direction).
    gw_pair_tunnel: BTreeMap<(usize, usize), (usize, usize)>,
    keylog: Option<Keylog>,
    /// (gateway, inbound SPI) -> since when that Child SA has had no counterpart at the
    /// peer, and whether that was reported.
    orphans: BTreeMap<(usize, u32), (SimTime, bool)>,
}

/// The pre-shared key both gateways of a tunnel authenticate with (live mode uses it
/// too, so a scenario's gateways also run over real sockets).
pub fn tunnel_psk(tunnel: &str) -> String {
    format!("psk:{tunnel}")
}

fn find(names: &[String], name: &str, field: String) -> Result<usize, BuildError> {
    names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| err(field, format!("no such name `{name}`")))
}

impl World {
    /// Builds the network of `cfg`, every stream derived from `seed`.
    pub fn new(cfg: WorldConfig, seed: u64, tracer: Tracer) -> Result<World, BuildError> {
        let mut sim = Simulation::with_tracer(seed, tracer);
        let gw_names: Vec<String> = cfg.gateways.iter().map(|g| g.name.clone()).collect();
        let kme_names: Vec<String> = cfg.kmes.iter().map(|k| k.name.clone()).collect();
        let streams = |e: &str, p: &str| entity::stream(seed, e, p);
        let factory: StreamFactory<'_> = &streams;

        // Key managers and QKD links.
        let mut qkd = QkdNetwork::new();
        qkd.relay_latency_ns = cfg.relay_latency.as_nanos();
        let mut kmes = Vec::new();
        for (i, k) in cfg.kmes.iter().enumerate() {
            let saes: Vec<&str> = cfg
                .gateways
                .iter()
                .filter(|g| g.kme.as_deref() == Some(&k.name))
                .map(|g| g.name.as_str())
                .collect();
            qkd.add_kme(&k.name, &saes, factory);
            let entity = sim
                .register(&format!("kme/{}", k.name))
                .map_err(|e| err(format!("kme[{i}].name"), e.to_string()))?;
            if k.schedule.windows(2).any(|w| w[0].at > w[1].at) {
                return Err(err(
                    format!("kme[{i}].schedule"),
                    "transitions must be in time order",
                ));
            }
            kmes.push(Kme {
                entity,
                api: k.api,
                latency: k.request_latency,
            });
        }
        for (i, l) in cfg.qkd_links.iter().enumerate() {
            let a = find(&kme_names, &l.a, format!("qkd_link[{i}].a"))?;
            let b = find(&kme_names, &l.b, format!("qkd_link[{i}].b"))?;
            if l.pool.share_permille > 1000
                || l.pool.key_size_bits == 0
                || l.pool.key_size_bits % 8 != 0
            {
                return Err(err(
                    format!("qkd_link[{i}].pool"),
                    "share_permille must be <= 1000 and key_size_bits a positive multiple of 8",
                ));
            }
            qkd.add_link(&format!("{}-{}", l.a, l.b), a, b, l.pool.clone(), factory);
        }

        // Gateways, each with one peer configuration per tunnel it takes part in.
        let mut peers: Vec<Vec<(usize, PeerConfig)>> = vec![Vec::new(); cfg.gateways.len()];
        let mut tunnels = Vec::new();
        for (i, t) in cfg.tunnels.iter().enumerate() {
            let ini = find(&gw_names, &t.initiator, format!("tunnel[{i}].initiator"))?;
            let res = find(&gw_names, &t.responder, format!("tunnel[{i}].responder"))?;
            if ini == res {
                return Err(err(
                    format!("tunnel[{i}].responder"),
                    "a tunnel needs two different gateways",
                ));
            }
            if cfg.tunnels[..i].iter().any(|o| {
                (o.initiator == t.initiator && o.responder == t.responder)
                    || (o.initiator == t.responder && o.responder == t.initiator)
            }) {
                return Err(err(
                    format!("tunnel[{i}]"),
                    "at most one tunnel per pair of gateways",
                ));
            }
            if t.ppk != PpkMode::Disabled {
                for (who, g) in [("initiator", ini), ("responder", res)] {
                    if cfg.gateways[g].kme.is_none() {
                        return Err(err(
                            format!("tunnel[{i}].ppk"),
                            format!("the {who} `{}` has no kme", gw_names[g]),
                        ));
                    }
                }
            }
            let psk = tunnel_psk(&t.name);
            for (me, other) in [(ini, res), (res, ini)] {
                let remote =
                    SocketAddr::from(SocketAddrV4::new(cfg.gateways[other].address, IKE_PORT));
                let id = |g: usize| Identity::Fqdn(gw_names[g].clone());
                let mut p = PeerConfig::new(&t.name, remote, id(me), id(other), psk.as_bytes());
                let ike: Vec<&str> = t.ike.iter().map(String::as_str).collect();
                let esp: Vec<&str> = t.esp.iter().map(String::as_str).collect();
                p = p
                    .with_ike(&ike)
                    .map_err(|e| err(format!("tunnel[{i}].ike"), e.to_string()))?;
                p = p
                    .with_esp(&esp)
                    .map_err(|e| err(format!("tunnel[{i}].esp"), e.to_string()))?;
                p.fragment_size = t.fragment_size;
                p.fragmentation = t.fragmentation;
                p.timers.dpd_delay_ns = t.dpd_delay.map(|d| d.as_nanos());
                p.ppk = match t.ppk {
                    PpkMode::Disabled => PpkPolicy::Disabled,
                    PpkMode::Optional => PpkPolicy::Optional,
                    PpkMode::Required => PpkPolicy::Required,
                };
                // The driver answers PPK requests itself; waiting for keys happens before
                // IKE_SA_INIT, so the endpoint never has to wait long.
                p.timers.ppk_timeout_ns = 60_000_000_000;
                peers[me].push((i, p));
            }
            tunnels.push(Tunnel {
                name: t.name.clone(),
                initiator: ini,
                responder: res,
                peer: peers[ini].len() - 1,
                ppk: t.ppk,
                reauth_every: t.reauth_every,
                child_rekey_every: t.child_rekey_every,
                child_rekey_jitter: t.child_rekey_jitter,
                ike_rekey_every: t.ike_rekey_every,
                rekey_rng: None,
                traffic_rng: None,
                life_rng: None,
                retry_after: t.retry_after,
                current: None,
                attempt: None,
                pending_ppk: None,
                consecutive_failures: 0,
                summary: TunnelSummary {
                    tunnel: t.name.clone(),
                    ..Default::default()
                },
            });
        }
        let mut gateways = Vec::new();
        for (i, g) in cfg.gateways.iter().enumerate() {
            let entity = sim
                .register(&format!("gw/{}", g.name))
                .map_err(|e| err(format!("gateway[{i}].name"), e.to_string()))?;
            let kme = match &g.kme {
                Some(k) => Some(find(&kme_names, k, format!("gateway[{i}].kme"))?),
                None => None,
            };
            let addr = SocketAddrV4::new(g.address, IKE_PORT);
            let crypto: Box<dyn CryptoProvider> = match cfg.crypto {
                CryptoMode::Real => Box::new(RealCrypto),
                CryptoMode::Model => Box::new(ModelCrypto),
            };
            let (tunnel_ids, peer_cfgs): (Vec<usize>, Vec<PeerConfig>) =
                std::mem::take(&mut peers[i]).into_iter().unzip();
            let rng = Box::new(sim.rng(entity, "ike"));
            let ep = Endpoint::new(
                EndpointConfig::new(addr.into()),
                peer_cfgs.clone(),
                crypto,
                rng,
            );
            gateways.push(Gateway {
                name: g.name.clone(),
                entity,
                addr,
                ep,
                peer_cfgs,
                restarts: 0,
                down: false,
                corrupt_next: false,
                kme,
                timer: None,
                peer_tunnel: tunnel_ids,
            });
        }

        for t in &mut tunnels {
            let entity = gateways[t.initiator].entity;
            t.rekey_rng = Some(sim.rng(entity, &format!("child-rekey/{}", t.name)));
            t.traffic_rng = Some(sim.rng(entity, &format!("traffic/{}", t.name)));
            t.life_rng = Some(sim.rng(entity, &format!("child-life/{}", t.name)));
        }
        let mut dp = DataPlane::default();
        let mut gw_pair_tunnel = BTreeMap::new();
        for (i, (spec, t)) in cfg.tunnels.iter().zip(&tunnels).enumerate() {
            gw_pair_tunnel.insert((t.initiator, t.responder), (i, 0));
            gw_pair_tunnel.insert((t.responder, t.initiator), (i, 1));
            let Some(tr) = &spec.traffic else { continue };
            let field = |f: &str| format!("tunnel[{i}].traffic.{f}");
            if !(tr.rate_pps.is_finite() && tr.rate_pps > 0.0) {
                return Err(err(field("rate_pps"), "must be a positive number"));
            }
            if tr.sizes.is_empty() || tr.sizes.iter().any(|&n| !(MIN_PACKET..=65000).contains(&n)) {
                return Err(err(
                    field("sizes"),
                    format!("needs one or more sizes in {MIN_PACKET}..=65000 bytes"),
                ));
            }
            if tr.aggregate_tick.as_nanos() == 0 {
                return Err(err(field("aggregate_tick"), "must be longer than zero"));
            }
            if !(1..=4096).contains(&tr.replay_window) {
                return Err(err(field("replay_window"), "must be in 1..=4096 packets"));
            }
            dp.add_flow(
                i,
                TrafficSummary {
                    tunnel: spec.name.clone(),
                    mode: match tr.mode {
                        TrafficMode::Packets => "packets",
                        TrafficMode::Aggregate => "aggregate",
                    }
                    .into(),
                    ..Default::default()
                },
                tr.replay_window,
            );
            let entity = gateways[t.initiator].entity;
            match tr.mode {
                TrafficMode::Packets => {
                    for dir in (0..2).filter(|&d| tr.direction.sends(d)) {
                        sim.schedule_at(entity, spec.start, Ev::Packet { tunnel: i, dir });
                    }
                }
                TrafficMode::Aggregate => sim.schedule_at(
                    entity,
                    spec.start + tr.aggregate_tick,
                    Ev::AggregateTick { tunnel: i },
                ),
            }
        }

        // Links, and direct routes over them.
        let mut links = Vec::new();
        let mut routes = BTreeMap::new();
        for (i, l) in cfg.links.iter().enumerate() {
            let a = find(&gw_names, &l.a, format!("link[{i}].a"))?;
            let b = find(&gw_names, &l.b, format!("link[{i}].b"))?;
            l.params
                .validate()
                .map_err(|e| err(format!("link[{i}].params.{}", e.field), e.problem))?;
            let name = format!("link/{}-{}", l.a, l.b);
            let mut entities = [EntityId(0); 2];
            let channels =
                [(a, b), (b, a)].map(|(x, y)| format!("{name}/{}>{}", gw_names[x], gw_names[y]));
            for d in 0..2 {
                entities[d] = sim
                    .register(&channels[d])
                    .map_err(|e| err(format!("link[{i}]"), e.to_string()))?;
            }
            let channels = [0, 1].map(|d| Channel::new(l.params.clone(), seed, &channels[d]));
            routes.insert((a, IpAddr::V4(cfg.gateways[b].address)), (links.len(), 0));
            routes.insert((b, IpAddr::V4(cfg.gateways[a].address)), (links.len(), 1));
            links.push(SimLink {
                name,
                ends: [a, b],
                entities,
                channels,
            });
        }
        for (i, t) in tunnels.iter().enumerate() {
            if !routes.contains_key(&(t.initiator, IpAddr::V4(cfg.gateways[t.responder].address))) {
                return Err(err(format!("tunnel[{i}]"), "no link joins its gateways"));
            }
        }

        let world_entity = sim.register("world").expect("fresh name");
        for (i, f) in cfg.faults.iter().enumerate() {
            match f {
                Fault::GatewayRestart {
                    at,
                    gateway,
                    down_for,
                } => {
                    let gw = find(&gw_names, gateway, format!("fault[{i}].gateway"))?;
                    let down_for = *down_for;
                    sim.schedule_at(world_entity, *at, Ev::GatewayDown { gw, down_for });
                }
                Fault::CorruptChildKey { at, gateway } => {
                    let gw = find(&gw_names, gateway, format!("fault[{i}].gateway"))?;
                    sim.schedule_at(world_entity, *at, Ev::CorruptNextChild { gw });
                }
            }
        }
        sim.schedule(world_entity, AUDIT_EVERY, Ev::Audit);
        for (i, t) in cfg.tunnels.iter().enumerate() {
            sim.schedule_at(
                gateways[tunnels[i].initiator].entity,
                t.start,
                Ev::TunnelStart {
                    tunnel: i,
                    why: "start",
                },
            );
        }
        for (k, kc) in cfg.kmes.iter().enumerate() {
            for tr in &kc.schedule {
                sim.schedule_at(
                    kmes[k].entity,
                    tr.at,
                    Ev::KmeSwitch {
                        kme: k,
                        up: tr.state == LinkState::Up,
                    },
                );
            }
        }
        if !cfg.qkd_links.is_empty() {
            sim.schedule(world_entity, SimDuration::ZERO, Ev::Sample);
        }
        for l in qkd.links.iter() {
            let g = |end: usize| format!("qkd/{}/{}/level_bits", l.name, qkd.kmes[l.ends[end]].id);
            sim.metrics.gauge(&g(0));
            sim.metrics.gauge(&g(1));
        }
        let esp_crypto: Box<dyn CryptoProvider> = match cfg.crypto {
            CryptoMode::Real => Box::new(RealCrypto),
            CryptoMode::Model => Box::new(ModelCrypto),
        };
        Ok(World {
            sim,
            cfg,
            gateways,
            links,
            routes,
            tunnels,
            sa_tunnel: BTreeMap::new(),
            kmes,
            qkd,
            handshakes: Vec::new(),
            exchanges: Vec::new(),
            key_requests: Vec::new(),
            deliveries: Vec::new(),
            wire: Vec::new(),
            sa_keys: BTreeMap::new(),
            ppk_ids_used: Default::default(),
            child_keys: BTreeMap::new(),
            violations: Vec::new(),
            dp,
            esp_crypto,
            gw_pair_tunnel,
            keylog: None,
            orphans: BTreeMap::new(),
        })
    }

    /// Runs to the configured duration and returns the results.
    pub fn run(mut self, outputs: Outputs<'_>) -> Results {
        let Outputs {
            tracer,
            mut pcap,
            keylog,
            progress,
        } = outputs;
        self.sim.trace = tracer;
        self.keylog = keylog.as_ref().map(|_| Keylog::default());
        let capture = pcap.is_some();
        for l in &mut self.links {
            for c in &mut l.channels {
                c.set_capture(capture);
            }
        }
        let end = SimTime::ZERO + self.cfg.duration;
        let mut progress =
            progress.then(|| Progress::new(end, std::time::Duration::from_millis(500)));
        while let Some(ev) = self.sim.next_event_until(end) {
            self.handle(ev.event);
            if let Some(sink) = pcap.as_deref_mut() {
                for p in self.wire.drain(..) {
                    sink.capture(p.at, p.bytes);
                }
                // Capture errors surface when the sink is finished.
                let _ = sink.advance(self.sim.now());
            }
            if let Some(p) = progress.as_mut() {
                p.tick(self.sim.now(), self.sim.events_processed());
            }
        }
        if let Some(p) = progress.as_mut() {
            p.finish(self.sim.now(), self.sim.events_processed());
        }
        if let (Some(out), Some(mine)) = (keylog, self.keylog.take()) {
            *out = mine;
        }
        self.results()
    }

    /// The ID of a gateway's key manager (SKIP's system ID), empty if it has none.
    fn kme_id_of(&self, gw: usize) -> String {
        self.gateways[gw]
            .kme
            .map(|k| self.qkd.kmes[k].id.clone())
            .unwrap_or_default()
    }

    fn now_ns(&self) -> u64 {
        self.sim.now().as_nanos()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                link,
                dir,
                datagram,
            } => {
                let gw = self.links[link].ends[1 - dir];
                if self.gateways[gw].down {
                    return;
                }
                if datagram.dst.port() == ESP_PORT {
                    let from = self.links[link].ends[dir];
                    self.esp_arrived(from, gw, &datagram.payload);
                    return;
                }
                let from = SocketAddr::V4(datagram.src);
                let now = self.now_ns();
                self.gateways[gw]
                    .ep
                    .handle_datagram(now, from, &datagram.payload);
                self.drain(gw);
            }
            Ev::GatewayTimer { gw } => {
                self.gateways[gw].timer = None;
                let now = self.now_ns();
                self.gateways[gw].ep.handle_timeout(now);
                self.drain(gw);
            }
            Ev::TunnelStart { tunnel, why } => self.start_attempt(tunnel, why),
            Ev::ChildRekey { tunnel, spi_in } => {
                // On the IKE SA that is up now (an IKE SA rekey moves Child SAs over; a
                // reauthentication replaces them, and the endpoint ignores an SPI it
                // no longer has).
                let gw = self.tunnels[tunnel].initiator;
                if let Some((sa, _)) = self.tunnels[tunnel].current
                    && self.dp.rekeyable(gw, spi_in).is_some()
                {
                    let now = self.now_ns();
                    let start = self.gateways[gw].ep.rekey_child(now, sa, spi_in);
                    self.drain(gw);
                    if start == Start::Started {
                        self.dp.rekey_started(gw, spi_in);
                    }
                    self.retry_if_busy(gw, start, Ev::ChildRekey { tunnel, spi_in });
                }
            }
            Ev::IkeRekey { tunnel, sa } => {
                let gw = self.tunnels[tunnel].initiator;
                if self.tunnels[tunnel].current.is_some_and(|(s, _)| s == sa) {
                    let now = self.now_ns();
                    let start = self.gateways[gw].ep.rekey_ike(now, sa);
                    self.drain(gw);
                    self.retry_if_busy(gw, start, Ev::IkeRekey { tunnel, sa });
                }
            }
            Ev::KeyDraw {
                tunnel,
                asked,
                attempt,
            } => self.key_draw(tunnel, asked, attempt),
            Ev::KeyFetch {
                gw,
                sa,
                tunnel,
                key_id,
                asked,
                attempt,
            } => self.key_fetch(gw, sa, tunnel, key_id, asked, attempt),
            Ev::KmeSwitch { kme, up } => {
                self.qkd.kmes[kme].up = up;
                let entity = self.kmes[kme].entity;
                self.sim.trace(entity, &NetTrace::Kme { up });
            }
            Ev::Sample => {
                let now = self.now_ns();
                self.qkd.advance(now);
                for l in &self.qkd.links {
                    for end in 0..2 {
                        let half = &l.halves[end];
                        let owner = &self.qkd.kmes[l.ends[end]].id;
                        for (what, v) in [
                            ("level_bits", half.level_bits()),
                            ("generated_bits", half.stats.generated_bits),
                        ] {
                            let g = self
                                .sim
                                .metrics
                                .gauge(&format!("qkd/{}/{owner}/{what}", l.name));
                            self.sim.metrics.set(g, self.sim.now(), v as f64);
                        }
                    }
                }
                let world = self.sim.entities().lookup("world").expect("registered");
                self.sim.schedule(world, self.cfg.sample_every, Ev::Sample);
            }
            Ev::Packet { tunnel, dir } => self.send_packet(tunnel, dir),
            Ev::AggregateTick { tunnel } => self.aggregate_tick(tunnel),
            Ev::RekeyChild { gw, spi_in, volume } => self.rekey_child(gw, spi_in, volume),
            Ev::ChildExpire { gw, spi_in } => self.child_expire(gw, spi_in),
            Ev::GatewayDown { gw, down_for } => self.gateway_down(gw, down_for),
            Ev::CreateChild { tunnel } => {
                let gw = self.tunnels[tunnel].initiator;
                if let Some((sa, _)) = self.tunnels[tunnel].current
                    && !self.dp.holds(gw, tunnel)
                {
                    let now = self.now_ns();
                    let start = self.gateways[gw].ep.create_child(now, sa);
                    self.drain(gw);
                    self.retry_if_busy(gw, start, Ev::CreateChild { tunnel });
                }
            }
            Ev::GatewayUp { gw } => self.gateway_up(gw),
            Ev::CorruptNextChild { gw } => self.gateways[gw].corrupt_next = true,
            Ev::Audit => {
                self.audit();
                let world = self.sim.entities().lookup("world").expect("registered");
                self.sim.schedule(world, AUDIT_EVERY, Ev::Audit);
            }
        }
    }

    // ----- faults -----------------------------------------------------------------------

    /// A reboot: the gateway's endpoint starts from nothing (a new random stream), its
    /// ESP SAs and timers are gone, and its tunnels forget their SAs. Peers keep theirs.
    fn gateway_down(&mut self, gw: usize, down_for: SimDuration) {
        let now = self.sim.now();
        let g = &mut self.gateways[gw];
        g.restarts += 1;
        g.down = true;
        if let Some(timer) = g.timer.take() {
            self.sim.cancel_timer(timer);
        }
        let entity = g.entity;
        let rng = Box::new(self.sim.rng(entity, &format!("ike/restart-{}", g.restarts)));
        let crypto: Box<dyn CryptoProvider> = match self.cfg.crypto {
            CryptoMode::Real => Box::new(RealCrypto),
            CryptoMode::Model => Box::new(ModelCrypto),
        };
        let config = EndpointConfig::new(g.addr.into());
        g.ep = Endpoint::new(config, g.peer_cfgs.clone(), crypto, rng);
        let gone: Vec<SaId> = self
            .sa_tunnel
            .range((gw, 0)..=(gw, SaId::MAX))
            .map(|(&(_, sa), _)| sa)
            .collect();
        for sa in gone {
            self.sa_tunnel.remove(&(gw, sa));
            self.dp.remove_sa(gw, sa);
        }
        for t in 0..self.tunnels.len() {
            let tun = &mut self.tunnels[t];
            if tun.initiator != gw {
                continue;
            }
            tun.go_down(now);
            if let Some((a, _)) = tun.attempt.take() {
                tun.summary.failed += 1;
                let attempts = tun.summary.attempts;
                let name = tun.name.clone();
                self.handshakes.push(row(
                    &name,
                    attempts,
                    &a,
                    now,
                    "failed: gateway restart".into(),
                    String::new(),
                    String::new(),
                ));
            }
        }
        self.sim.schedule(entity, down_for, Ev::GatewayUp { gw });
    }

    /// Back from a reboot: the tunnels this gateway initiates start again.
    fn gateway_up(&mut self, gw: usize) {
        self.gateways[gw].down = false;
        let entity = self.gateways[gw].entity;
        for t in 0..self.tunnels.len() {
            if self.tunnels[t].initiator == gw {
                self.tunnels[t].summary.restarts += 1;
                let ev = Ev::TunnelStart {
                    tunnel: t,
                    why: "gateway restart",
                };
                self.sim.schedule(entity, SimDuration::ZERO, ev);
            }
        }
    }

    /// The oracle: an IKE negotiation must end (in success or failure) within its
    /// timeouts. Any exchange fails after its retransmissions, a PPK answer is awaited
    /// for a bounded time, so an attempt that made no progress for longer than both
    /// together is stuck.
    fn audit(&mut self) {
        let now = self.sim.now();
        self.audit_child_sas(now);
        for t in 0..self.tunnels.len() {
            let tun = &self.tunnels[t];
            let Some((a, Some(_))) = &tun.attempt else {
                continue;
            };
            let timers = &self.gateways[tun.initiator].peer_cfgs[tun.peer].timers;
            let limit = timers.exchange_timeout_ns() + timers.ppk_timeout_ns + 1_000_000_000;
            let quiet = now.saturating_since(a.progress).as_nanos();
            if quiet > limit && !a.reported_stuck {
                let msg = format!(
                    "at {now}: tunnel {}: the IKE negotiation started at {} made no progress for {}",
                    tun.name,
                    a.ike_started,
                    SimDuration::from_nanos(quiet)
                );
                self.violations.push(msg);
                if let Some((a, _)) = self.tunnels[t].attempt.as_mut() {
                    a.reported_stuck = true;
                }
            }
        }
    }

    // ----- ESP traffic ----------------------------------------------------------------

    /// Sends one packet of a tunnel's traffic and schedules the next.
    fn send_packet(&mut self, t: usize, dir: usize) {
        let tr = self.cfg.tunnels[t].traffic.clone().expect("a flow");
        let tun = &mut self.tunnels[t];
        let rng = tun.traffic_rng.as_mut().expect("set at build");
        let size = tr.sizes[rng.below_or_eq(tr.sizes.len() as u64 - 1) as usize];
        let mean_gap = 1e9 / tr.rate_pps;
        let gap = match tr.pattern {
            TrafficPattern::Cbr => mean_gap,
            TrafficPattern::Poisson => rng.exponential(mean_gap),
        };
        let (gw, peer) = match dir {
            0 => (tun.initiator, tun.responder),
            _ => (tun.responder, tun.initiator),
        };
        let entity = self.gateways[gw].entity;
        self.sim.schedule(
            entity,
            SimDuration::from_nanos((gap.round() as u64).max(1)),
            Ev::Packet { tunnel: t, dir },
        );
        let seq = self.dp.next_seq(t, dir);
        let mut payload = vec![0u8; size - 28];
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        // Inner addresses: the sites behind the two gateways.
        let site =
            |g: usize| SocketAddrV4::new([10, 200 + (g >> 8) as u8 % 50, g as u8, 1].into(), 9);
        let inner = sim_core::ipv4::udp_packet(site(gw), site(peer), seq as u16, &payload);
        let Some((esp, crossed)) = self.dp.seal(&*self.esp_crypto, gw, t, &inner) else {
            return;
        };
        let dst = SocketAddrV4::new(*self.gateways[peer].addr.ip(), ESP_PORT);
        self.send_from(gw, ESP_PORT, dst, esp);
        if let Some(c) = crossed {
            self.on_limit(gw, c);
        }
    }

    fn esp_arrived(&mut self, from: usize, gw: usize, packet: &[u8]) {
        let Some(&(t, dir)) = self.gw_pair_tunnel.get(&(from, gw)) else {
            return;
        };
        match self.dp.open(&*self.esp_crypto, gw, t, dir, packet) {
            Ok(Some(c)) => self.on_limit(gw, c),
            Ok(None) => {}
            Err(violation) => self
                .violations
                .push(format!("at {}: {violation}", self.sim.now())),
        }
    }

    /// Counts the last tick's packets of an aggregate flow in each sending direction.
    fn aggregate_tick(&mut self, t: usize) {
        let tr = self.cfg.tunnels[t].traffic.clone().expect("a flow");
        let tick = tr.aggregate_tick;
        let since_start = self.sim.now().saturating_since(self.cfg.tunnels[t].start);
        // Packets due so far, by the mean rate; the difference to the last tick's count
        // is this tick's share, so no fraction of a packet is ever lost.
        let due = |ns: u64| (ns as f64 * tr.rate_pps / 1e9) as u64;
        let ns = since_start.as_nanos();
        let packets = due(ns) - due(ns.saturating_sub(tick.as_nanos()));
        let mean_size = tr.sizes.iter().sum::<usize>() as u64 / tr.sizes.len() as u64;
        let (ini, res) = (self.tunnels[t].initiator, self.tunnels[t].responder);
        for (dir, (gw, peer)) in [(ini, res), (res, ini)].into_iter().enumerate() {
            if tr.direction.sends(dir) && packets > 0 {
                for (g, c) in self.dp.account(gw, peer, t, packets, packets * mean_size) {
                    self.on_limit(g, c);
                }
            }
        }
        let entity = self.gateways[ini].entity;
        self.sim
            .schedule(entity, tick, Ev::AggregateTick { tunnel: t });
    }

    fn on_limit(&mut self, gw: usize, crossed: Crossed) {
        match crossed {
            Crossed::Soft(spi_in) => self.rekey_child(gw, spi_in, true),
            Crossed::Hard(spi_in) => self.child_expire(gw, spi_in),
        }
    }

    /// This gateway rekeys the Child SA: after a soft volume limit (strongSwan rekeys on
    /// the kernel's soft expire, whichever end sees it first) or a refused rekey.
    fn rekey_child(&mut self, gw: usize, spi_in: u32, volume: bool) {
        let Some(sa) = self.dp.rekeyable(gw, spi_in) else {
            return;
        };
        let now = self.now_ns();
        let start = self.gateways[gw].ep.rekey_child(now, sa, spi_in);
        self.drain(gw);
        if start == Start::Started {
            self.dp.rekey_started(gw, spi_in);
            if volume
                && let Some(f) = self
                    .sa_tunnel
                    .get(&(gw, sa))
                    .and_then(|t| self.dp.flows.get_mut(t))
            {
                f.volume_rekeys += 1;
            }
        }
        self.retry_if_busy(gw, start, Ev::RekeyChild { gw, spi_in, volume });
    }

    /// A hard limit (time, bytes or packets): the Child SA carries nothing more and this
    /// gateway deletes it.
    fn child_expire(&mut self, gw: usize, spi_in: u32) {
        let Some(sa) = self.dp.expire(gw, spi_in) else {
            return;
        };
        let now = self.now_ns();
        let start = self.gateways[gw].ep.delete_child(now, sa, spi_in);
        self.drain(gw);
        if start == Start::Started
            && let Some(f) = self
                .sa_tunnel
                .get(&(gw, sa))
                .and_then(|t| self.dp.flows.get_mut(t))
        {
            f.hard_expiries += 1;
        }
        self.retry_if_busy(gw, start, Ev::ChildExpire { gw, spi_in });
    }

    /// The lifetime of a new Child SA of tunnel `t`: the soft limits less their random
    /// part, drawn from the tunnel's own stream.
    fn child_lifetime(&mut self, t: usize) -> esp::Lifetime {
        let spec = &self.cfg.tunnels[t];
        let rng = self.tunnels[t].life_rng.as_mut().expect("set at build");
        let mut soft = |limit: Option<u64>, rand: u64| {
            limit.map(|l| l - rng.below_or_eq(rand.min(l.saturating_sub(1))))
        };
        esp::Lifetime {
            soft_bytes: soft(spec.rekey_bytes, spec.rand_bytes),
            hard_bytes: spec.life_bytes,
            soft_packets: soft(spec.rekey_packets, spec.rand_packets),
            hard_packets: spec.life_packets,
        }
    }

    /// Installs a Child SA in the data plane and arms its hard time lifetime.
    fn install_child(
        &mut self,
        gw: usize,
        t: usize,
        sa: SaId,
        child: &ikev2::endpoint::ChildSa,
        old_spi_in: Option<u32>,
    ) {
        let life = self.child_lifetime(t);
        self.dp.install(gw, t, sa, child, old_spi_in, life);
        if let Some(after) = self.cfg.tunnels[t].child_life {
            let entity = self.gateways[gw].entity;
            let spi_in = child.spi_in;
            self.sim
                .schedule(entity, after, Ev::ChildExpire { gw, spi_in });
        }
    }

    /// The oracle: the two ends of an IKE SA hold the same Child SAs. A pair one end
    /// holds and the other does not is normal for a moment (a rekey's response or Delete
    /// on its way, with retransmissions); longer than an exchange can take, while both
    /// ends still hold the IKE SA, it is a broken invariant. (An IKE SA one end gave up
    /// or forgot in a reboot is dead peer detection's business, not this check's.)
    fn audit_child_sas(&mut self, now: SimTime) {
        let mut still = BTreeMap::new();
        let mut broken = Vec::new();
        for (gw, t, sa, spi_in, spi_out) in self.dp.all() {
            let tun = &self.tunnels[t];
            let peer = if gw == tun.initiator {
                tun.responder
            } else {
                tun.initiator
            };
            let both_hold_ike_sa = self.gateways[gw]
                .ep
                .peer_spi(sa)
                .is_some_and(|peer_sa| self.gateways[peer].ep.is_established(peer_sa));
            if self.dp.has(peer, spi_out) || !both_hold_ike_sa {
                continue;
            }
            let (since, reported) = self
                .orphans
                .get(&(gw, spi_in))
                .copied()
                .unwrap_or((now, false));
            let timers = &self.gateways[tun.initiator].peer_cfgs[tun.peer].timers;
            let limit = SimDuration::from_nanos(timers.exchange_timeout_ns() + 1_000_000_000);
            let report = !reported && now.saturating_since(since) > limit;
            if report {
                broken.push(format!(
                    "at {now}: tunnel {}: {} holds Child SA {spi_in:08x}, {} has not held its other half since {since}",
                    tun.name, self.gateways[gw].name, self.gateways[peer].name
                ));
            }
            still.insert((gw, spi_in), (since, reported || report));
        }
        self.violations.extend(broken);
        self.orphans = still;
    }

    // ----- tunnels and keys -------------------------------------------------------------

    fn start_attempt(&mut self, t: usize, why: &'static str) {
        let tun = &mut self.tunnels[t];
        if tun.attempt.is_some() {
            return; // one attempt at a time
        }
        tun.summary.attempts += 1;
        tun.attempt = Some((
            Attempt {
                why,
                requested: self.sim.now(),
                ..Default::default()
            },
            None,
        ));
        if tun.ppk == PpkMode::Disabled {
            self.initiate(t);
        } else {
            self.ask_kme_draw(t, self.sim.now(), 0);
        }
    }

    fn ask_kme_draw(&mut self, t: usize, asked: SimTime, attempt: u32) {
        let gw = self.tunnels[t].initiator;
        let kme = self.gateways[gw].kme.expect("checked at build");
        let entity = self.gateways[gw].entity;
        self.sim.schedule(
            entity,
            self.kmes[kme].latency,
            Ev::KeyDraw {
                tunnel: t,
                asked,
                attempt,
            },
        );
    }

    fn key_draw(&mut self, t: usize, asked: SimTime, attempt: u32) {
        let (ini, res) = (self.tunnels[t].initiator, self.tunnels[t].responder);
        let kme = self.gateways[ini].kme.expect("checked");
        let (me, peer) = (
            self.gateways[ini].name.clone(),
            self.gateways[res].name.clone(),
        );
        let (op, response, decoded) = match self.kmes[kme].api {
            KeyApi::Etsi014 => {
                let path = format!("/api/v1/keys/{peer}/enc_keys");
                let (r, key) = self.etsi014_post(kme, &me, &path, r#"{"number":1,"size":256}"#);
                ("enc_keys", r, key)
            }
            KeyApi::Skip => {
                let remote = self.kme_id_of(res);
                let (r, key) = self.skip_get(kme, &me, "/key", &remote);
                ("key", r, key)
            }
        };
        self.record_key_request(ini, t, kme, op, response.status, asked);
        let Some((id, key)) = decoded else {
            // No key now. Required: wait and ask again (1 s doubling, at most 32 s).
            if self.tunnels[t].ppk == PpkMode::Required {
                let entity = self.gateways[ini].entity;
                let backoff = SimDuration::from_secs(1u64 << attempt.min(5));
                self.sim.schedule(
                    entity,
                    backoff,
                    Ev::KeyDraw {
                        tunnel: t,
                        asked: self.sim.now() + backoff,
                        attempt: attempt + 1,
                    },
                );
                // The request itself happens after the KME latency again.
                return;
            }
            self.initiate(t); // optional: go on without a key (a downgrade)
            return;
        };
        let tun = &mut self.tunnels[t];
        tun.summary.keys_drawn += 1;
        if let Some((a, _)) = tun.attempt.as_mut() {
            a.key_drawn = true;
            a.ppk_id = id.clone();
        }
        tun.pending_ppk = Some(Ppk {
            id: id.into_bytes(),
            key,
        });
        self.initiate(t);
    }

    /// One ETSI GS QKD 014 POST by SAE `caller` to its KME `kme`; the answer and the first
    /// (key ID, key) it delivered.
    fn etsi014_post(
        &mut self,
        kme: usize,
        caller: &str,
        path: &str,
        body: &str,
    ) -> (qkd::http::Response, Option<(String, Vec<u8>)>) {
        let now = self.now_ns();
        let limits = etsi014::Limits::default();
        let r = etsi014::handle(
            &mut self.qkd,
            now,
            kme,
            limits,
            caller,
            "POST",
            path,
            "",
            body.as_bytes(),
        );
        let key = r
            .body
            .as_deref()
            .filter(|_| r.is_ok())
            .and_then(etsi014::KeyContainer::decode)
            .and_then(|mut v| v.pop());
        (r, key)
    }

    /// One SKIP GET by `caller` to its KME `kme` about the key provider `remote`; the
    /// answer and the (key ID, key) it delivered.
    fn skip_get(
        &mut self,
        kme: usize,
        caller: &str,
        path: &str,
        remote: &str,
    ) -> (qkd::http::Response, Option<(String, Vec<u8>)>) {
        let now = self.now_ns();
        let query = format!("remoteSystemID={remote}");
        let r = skip::handle(&mut self.qkd, now, kme, caller, "GET", path, &query);
        let key = r
            .body
            .as_deref()
            .filter(|_| r.is_ok())
            .and_then(skip::SkipKey::decode);
        (r, key)
    }

    fn record_key_request(
        &mut self,
        gw: usize,
        t: usize,
        kme: usize,
        op: &str,
        status: u16,
        asked: SimTime,
    ) {
        let api = match self.kmes[kme].api {
            KeyApi::Etsi014 => "etsi014",
            KeyApi::Skip => "skip",
        };
        let latency = self.sim.now().saturating_since(asked) + self.kmes[kme].latency;
        self.key_requests.push(KeyRequestRow {
            time_ns: self.now_ns(),
            gateway: self.gateways[gw].name.clone(),
            tunnel: self.tunnels[t].name.clone(),
            kme: self.qkd.kmes[kme].id.clone(),
            api: api.into(),
            op: op.into(),
            status,
            latency_ns: latency.as_nanos(),
        });
        let entity = self.gateways[gw].entity;
        let name = self.tunnels[t].name.clone();
        self.sim.trace(
            entity,
            &NetTrace::KeyRequest {
                tunnel: &name,
                op,
                status,
            },
        );
    }

    fn initiate(&mut self, t: usize) {
        let (gw, peer) = (self.tunnels[t].initiator, self.tunnels[t].peer);
        let now = self.sim.now();
        if let Some((a, _)) = self.tunnels[t].attempt.as_mut() {
            a.key_wait = now.saturating_since(a.requested);
            a.ike_started = now;
            a.progress = now;
        }
        let sa = self.gateways[gw].ep.initiate(now.as_nanos(), peer);
        self.sa_tunnel.insert((gw, sa), t);
        if let Some((_, s)) = self.tunnels[t].attempt.as_mut() {
            *s = Some(sa);
        }
        self.drain(gw);
    }

    fn key_fetch(
        &mut self,
        gw: usize,
        sa: SaId,
        t: usize,
        key_id: Vec<u8>,
        asked: SimTime,
        attempt: u32,
    ) {
        let kme = self.gateways[gw].kme.expect("checked");
        let now = self.now_ns();
        let ini = self.tunnels[t].initiator;
        let me = self.gateways[gw].name.clone();
        let id = String::from_utf8_lossy(&key_id).to_string();
        let (op, response, key) = match self.kmes[kme].api {
            KeyApi::Etsi014 => {
                let path = format!("/api/v1/keys/{}/dec_keys", self.gateways[ini].name);
                let body = format!(r#"{{"key_IDs":[{{"key_ID":"{id}"}}]}}"#);
                let (r, key) = self.etsi014_post(kme, &me, &path, &body);
                ("dec_keys", r, key.map(|k| k.1))
            }
            KeyApi::Skip => {
                let origin = self.kme_id_of(ini);
                let (r, key) = self.skip_get(kme, &me, &format!("/key/{id}"), &origin);
                ("key_by_id", r, key.map(|k| k.1))
            }
        };
        self.record_key_request(gw, t, kme, op, response.status, asked);
        if key.is_none() && response.status == 400 && attempt < 4 {
            // Perhaps not relayed here yet: ask again shortly.
            let entity = self.gateways[gw].entity;
            let wait = SimDuration::from_millis(50 << attempt);
            self.sim.schedule(
                entity,
                wait,
                Ev::KeyFetch {
                    gw,
                    sa,
                    tunnel: t,
                    key_id,
                    asked: self.sim.now() + wait,
                    attempt: attempt + 1,
                },
            );
            return;
        }
        let ppk = key.map(|key| Ppk { id: key_id, key });
        self.gateways[gw].ep.provide_ppk(now, sa, ppk);
        self.drain(gw);
    }

    // ----- gateway outputs ----------------------------------------------------------

    /// Sends what a gateway's endpoint queued, handles its events, re-arms its timer.
    fn drain(&mut self, gw: usize) {
        loop {
            while let Some(t) = self.gateways[gw].ep.poll_transmit() {
                self.send(gw, t.dst, t.payload);
            }
            let Some(ev) = self.gateways[gw].ep.poll_event() else {
                break;
            };
            self.on_endpoint_event(gw, ev);
        }
        let entity = self.gateways[gw].entity;
        let old = self.gateways[gw].timer.take();
        self.gateways[gw].timer = match self.gateways[gw].ep.poll_timeout() {
            Some(t) => Some(self.sim.reset_timer(
                old,
                entity,
                SimTime::from_nanos(t),
                Ev::GatewayTimer { gw },
            )),
            None => {
                if let Some(old) = old {
                    self.sim.cancel_timer(old);
                }
                None
            }
        };
    }

    fn send(&mut self, gw: usize, dst: SocketAddr, payload: Vec<u8>) {
        if let SocketAddr::V4(dst) = dst {
            self.send_from(gw, IKE_PORT, dst, payload);
        }
    }

    /// Puts a UDP datagram from `gw`'s port `port` on the link towards `dst`.
    fn send_from(&mut self, gw: usize, port: u16, dst: SocketAddrV4, payload: Vec<u8>) {
        let Some(&(link, dir)) = self.routes.get(&(gw, IpAddr::V4(*dst.ip()))) else {
            return; // no route: the datagram is lost at the sender
        };
        let src = SocketAddrV4::new(*self.gateways[gw].addr.ip(), port);
        let now = self.sim.now();
        let l = &mut self.links[link];
        let traced = l.channels[dir].send(
            now,
            Datagram { src, dst, payload },
            &mut self.deliveries,
            &mut self.wire,
        );
        let entity = l.entities[dir];
        self.sim.trace(entity, &traced);
        for d in std::mem::take(&mut self.deliveries) {
            self.sim.schedule_at(
                entity,
                d.at,
                Ev::Deliver {
                    link,
                    dir,
                    datagram: d.datagram,
                },
            );
        }
    }

    /// A rekey that found its IKE SA busy with another exchange goes again a second
    /// later (strongSwan queues it behind the active task).
    fn retry_if_busy(&mut self, gw: usize, start: Start, ev: Ev) {
        if start == Start::Busy {
            let entity = self.gateways[gw].entity;
            self.sim.schedule(entity, SimDuration::from_secs(1), ev);
        }
    }

    fn schedule_ike_rekey(&mut self, t: usize, sa: SaId) {
        if let Some(every) = self.tunnels[t].ike_rekey_every {
            let entity = self.gateways[self.tunnels[t].initiator].entity;
            self.sim
                .schedule(entity, every, Ev::IkeRekey { tunnel: t, sa });
        }
    }

    /// Both ends of a Child SA must hold the same key for each direction (by tunnel and
    /// SPI: the receiver's SPI names a direction).
    fn check_child_keys(&mut self, t: usize, child: &ikev2::endpoint::ChildSa) {
        for (spi, key) in [
            (child.spi_in, &child.encr_in),
            (child.spi_out, &child.encr_out),
        ] {
            match self.child_keys.remove(&(t, spi)) {
                Some(other) if &other != key => self.violations.push(format!(
                    "at {}: the ends of Child SA {spi:08x} of tunnel {} hold different keys",
                    self.sim.now(),
                    self.tunnels[t].name
                )),
                Some(_) => {}
                None => {
                    self.child_keys.insert((t, spi), key.clone());
                }
            }
        }
    }

    /// Both peers of an IKE SA must derive the same keys; a QKD key must serve one SA.
    fn check_invariants(&mut self, ev: &Event) {
        let (keys, keylog, ppk, initiator) = match ev {
            Event::IkeSaEstablished {
                keys,
                keylog,
                ppk,
                initiator,
                ..
            } => (keys, keylog, ppk, *initiator),
            // A rekeyed IKE SA carries the PPK of its predecessor: no new key used.
            Event::IkeSaRekeyed { keys, keylog, .. } => (keys, keylog, &PpkOutcome::NotUsed, false),
            _ => return,
        };
        let spis = (keylog.spi_i, keylog.spi_r);
        match self.sa_keys.remove(&spis) {
            Some(other) if &other != keys => self.violations.push(format!(
                "at {}: the peers of IKE SA {:016x}_{:016x} derived different keys",
                self.sim.now(),
                spis.0,
                spis.1
            )),
            Some(_) => {}
            None => {
                self.sa_keys.insert(spis, keys.clone());
            }
        }
        if let (PpkOutcome::Used { id }, true) = (ppk, initiator)
            && !self
                .ppk_ids_used
                .insert(String::from_utf8_lossy(id).to_string())
        {
            self.violations.push(format!(
                "at {}: QKD key {} used by a second IKE SA",
                self.sim.now(),
                String::from_utf8_lossy(id)
            ));
        }
    }

    fn on_endpoint_event(&mut self, gw: usize, mut ev: Event) {
        let now = self.sim.now();
        if let Event::ChildSaReady { child, .. } | Event::ChildSaRekeyed { child, .. } = &mut ev
            && std::mem::take(&mut self.gateways[gw].corrupt_next)
        {
            child.encr_out[0] ^= 1;
        }
        self.check_invariants(&ev);
        self.update_data_plane(gw, &ev);
        self.record_keys(gw, &ev);
        match ev {
            Event::PpkNeeded { sa, peer, key_id } => {
                let t = self.gateways[gw].peer_tunnel[peer];
                match key_id {
                    None => {
                        let ppk = self.tunnels[t].pending_ppk.take();
                        self.gateways[gw].ep.provide_ppk(now.as_nanos(), sa, ppk);
                    }
                    Some(key_id) => {
                        let kme = self.gateways[gw].kme.expect("checked");
                        let entity = self.gateways[gw].entity;
                        self.sim.schedule(
                            entity,
                            self.kmes[kme].latency,
                            Ev::KeyFetch {
                                gw,
                                sa,
                                tunnel: t,
                                key_id,
                                asked: now,
                                attempt: 0,
                            },
                        );
                    }
                }
            }
            Event::Exchange { sa, stats } => {
                let t = self.sa_tunnel.get(&(gw, sa)).copied();
                let name = t.map(|t| self.tunnels[t].name.clone()).unwrap_or_default();
                let kind = exchange::name(stats.exchange).unwrap_or("?").to_string();
                if let Some(t) = t
                    && let Some((a, Some(s))) = self.tunnels[t].attempt.as_mut()
                    && *s == sa
                {
                    a.progress = now;
                    a.retransmissions += stats.retransmissions;
                    a.bytes_sent += stats.request_bytes;
                    a.bytes_received += stats.response_bytes;
                    a.fragments_sent += stats.request_fragments;
                    a.fragments_received += stats.response_fragments;
                }
                let entity = self.gateways[gw].entity;
                let trace = NetTrace::Exchange {
                    tunnel: &name,
                    exchange: &kind,
                    bytes: stats.request_bytes + stats.response_bytes,
                    fragments: stats.request_fragments + stats.response_fragments,
                    retransmissions: stats.retransmissions,
                };
                self.sim.trace(entity, &trace);
                self.exchanges.push(ExchangeRow {
                    tunnel: name,
                    gateway: self.gateways[gw].name.clone(),
                    exchange: kind,
                    started_ns: stats.started_ns,
                    completed_ns: stats.completed_ns,
                    request_bytes: stats.request_bytes,
                    request_fragments: stats.request_fragments,
                    response_bytes: stats.response_bytes,
                    response_fragments: stats.response_fragments,
                    retransmissions: stats.retransmissions,
                });
            }
            Event::IkeSaEstablished {
                sa,
                initiator: true,
                proposal,
                ppk,
                keylog,
                ..
            } => {
                let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
                    return;
                };
                let (ppk_text, wasted) = match &ppk {
                    PpkOutcome::NotUsed => ("none".to_string(), false),
                    PpkOutcome::Used { .. } => ("used".to_string(), false),
                    PpkOutcome::Downgraded { reason } => (format!("downgraded ({reason:?})"), true),
                };
                let name = self.tunnels[t].name.clone();
                let entity = self.gateways[gw].entity;
                let spis = format!("{:016x}_{:016x}", keylog.spi_i, keylog.spi_r);
                let ppk_id = self.tunnels[t]
                    .attempt
                    .as_ref()
                    .map(|(a, _)| a.ppk_id.clone())
                    .unwrap_or_default();
                let trace = NetTrace::Established {
                    tunnel: &name,
                    spis,
                    proposal: &proposal,
                    ppk: &ppk_text,
                    ppk_id: &ppk_id,
                };
                self.sim.trace(entity, &trace);
                let tun = &mut self.tunnels[t];
                let Some((a, _)) = tun.attempt.take() else {
                    return;
                };
                tun.summary.established += 1;
                tun.consecutive_failures = 0;
                if matches!(ppk, PpkOutcome::Downgraded { .. }) {
                    tun.summary.downgrades += 1;
                }
                if wasted && a.key_drawn {
                    tun.summary.keys_wasted += 1;
                    self.qkd.report_wasted(1);
                }
                self.handshakes.push(row(
                    &name,
                    tun.summary.attempts,
                    &a,
                    now,
                    "established".into(),
                    proposal,
                    ppk_text,
                ));
                let tun = &mut self.tunnels[t];
                tun.summary.key_wait_ns += a.key_wait.as_nanos();
                // A reauthentication replaces the SA that was up.
                if let Some(old) = tun.go_up(sa, now) {
                    self.gateways[gw].ep.delete(now.as_nanos(), old);
                }
                if let Some(every) = self.tunnels[t].reauth_every {
                    self.sim.schedule(
                        entity,
                        every,
                        Ev::TunnelStart {
                            tunnel: t,
                            why: "reauthentication",
                        },
                    );
                }
                self.schedule_ike_rekey(t, sa);
            }
            Event::IkeSaFailed { sa, reason, .. } => {
                let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
                    return;
                };
                let tun = &mut self.tunnels[t];
                let is_attempt =
                    matches!(tun.attempt, Some((_, Some(s))) if s == sa) && gw == tun.initiator;
                let was_current = tun.current.is_some_and(|(s, _)| s == sa);
                if was_current {
                    tun.go_down(now);
                }
                self.sa_tunnel.remove(&(gw, sa));
                if !is_attempt {
                    // The SA that was up died (dead peer detection): the initiator
                    // starts the tunnel again unless an attempt is already under way.
                    let lost_current = was_current && gw == tun.initiator;
                    if lost_current && tun.attempt.is_none() {
                        tun.summary.dead_peers += 1;
                        let entity = self.gateways[gw].entity;
                        self.sim.schedule(
                            entity,
                            SimDuration::ZERO,
                            Ev::TunnelStart {
                                tunnel: t,
                                why: "dead peer",
                            },
                        );
                    }
                    return;
                }
                let (a, _) = tun.attempt.take().expect("checked");
                tun.summary.failed += 1;
                tun.consecutive_failures += 1;
                if a.key_drawn {
                    tun.summary.keys_wasted += 1;
                    self.qkd.report_wasted(1);
                }
                let name = tun.name.clone();
                let reason = describe(&reason);
                let entity = self.gateways[gw].entity;
                self.sim.trace(
                    entity,
                    &NetTrace::Failed {
                        tunnel: &name,
                        reason: reason.clone(),
                    },
                );
                let attempts = self.tunnels[t].summary.attempts;
                self.handshakes.push(row(
                    &name,
                    attempts,
                    &a,
                    now,
                    format!("failed: {reason}"),
                    String::new(),
                    String::new(),
                ));
                let tun = &mut self.tunnels[t];
                tun.summary.key_wait_ns += a.key_wait.as_nanos();
                let backoff = tun
                    .retry_after
                    .saturating_mul(1 << tun.consecutive_failures.min(5).saturating_sub(1));
                self.sim.schedule(
                    entity,
                    backoff,
                    Ev::TunnelStart {
                        tunnel: t,
                        why: "retry",
                    },
                );
            }
            Event::IkeSaDeleted { sa, .. } => {
                if let Some(t) = self.sa_tunnel.remove(&(gw, sa)) {
                    let tun = &mut self.tunnels[t];
                    if tun.current.is_some_and(|(s, _)| s == sa) {
                        tun.go_down(now);
                    }
                }
            }
            Event::IkeSaEstablished { sa, peer, .. } => {
                // Responder side: remember the SA for its exchanges and deletes.
                let t = self.gateways[gw].peer_tunnel[peer];
                self.sa_tunnel.insert((gw, sa), t);
            }
            Event::ChildSaReady { sa, child } | Event::ChildSaRekeyed { sa, child, .. } => {
                let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
                    return;
                };
                self.check_child_keys(t, &child);
                let both_ends = self.cfg.tunnels[t].child_rekey_both_ends;
                let tun = &mut self.tunnels[t];
                let rekeys_here = gw == tun.initiator || both_ends;
                if let (true, Some(every)) = (rekeys_here, tun.child_rekey_every) {
                    let jitter = tun.child_rekey_jitter.as_nanos().min(every.as_nanos());
                    let early = tun
                        .rekey_rng
                        .as_mut()
                        .expect("set at build")
                        .below_or_eq(jitter);
                    let every = SimDuration::from_nanos(every.as_nanos() - early);
                    let entity = self.gateways[gw].entity;
                    let spi_in = child.spi_in;
                    let rekey = match gw == tun.initiator {
                        true => Ev::ChildRekey { tunnel: t, spi_in },
                        false => Ev::RekeyChild {
                            gw,
                            spi_in,
                            volume: false,
                        },
                    };
                    self.sim.schedule(entity, every, rekey);
                }
            }
            Event::IkeSaRekeyed { old, new, .. } => {
                let Some(&t) = self.sa_tunnel.get(&(gw, old)) else {
                    return;
                };
                self.sa_tunnel.insert((gw, new), t);
                let tun = &mut self.tunnels[t];
                if let Some((sa, _)) = tun.current.as_mut().filter(|(s, _)| *s == old) {
                    *sa = new;
                }
                if gw == tun.initiator {
                    tun.summary.ike_rekeys += 1;
                    self.schedule_ike_rekey(t, new);
                }
            }
            Event::ExchangeStarted { sa, .. } => {
                if let Some(&t) = self.sa_tunnel.get(&(gw, sa))
                    && let Some((a, Some(s))) = self.tunnels[t].attempt.as_mut()
                    && *s == sa
                {
                    a.progress = now;
                }
            }
            // A refused rekey (TEMPORARY_FAILURE while the peer is busy, say) goes again
            // after the tunnel's retry time.
            Event::ChildSaFailed { sa, .. } => {
                let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
                    return;
                };
                let (entity, after) = (self.gateways[gw].entity, self.tunnels[t].retry_after);
                for spi_in in self.dp.rekey_refused(gw, sa) {
                    let ev = Ev::RekeyChild {
                        gw,
                        spi_in,
                        volume: false,
                    };
                    self.sim.schedule(entity, after, ev);
                }
            }
            Event::IkeSaRekeyFailed { sa, .. } => {
                if let Some(&t) = self.sa_tunnel.get(&(gw, sa))
                    && gw == self.tunnels[t].initiator
                {
                    let (entity, after) = (self.gateways[gw].entity, self.tunnels[t].retry_after);
                    self.sim
                        .schedule(entity, after, Ev::IkeRekey { tunnel: t, sa });
                }
            }
            Event::Keys { .. } | Event::ChildSaDeleting { .. } | Event::ChildSaDeleted { .. } => {}
        }
    }

    /// Records the keys of tunnel initiators' events for Wireshark.
    fn record_keys(&mut self, gw: usize, ev: &Event) {
        let Some(log) = self.keylog.as_mut() else {
            return;
        };
        let sa = match ev {
            Event::Keys { sa, .. }
            | Event::IkeSaRekeyed { old: sa, .. }
            | Event::ChildSaReady { sa, .. }
            | Event::ChildSaRekeyed { sa, .. } => *sa,
            _ => return,
        };
        let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
            return;
        };
        let tun = &self.tunnels[t];
        if gw != tun.initiator {
            return;
        }
        let local = IpAddr::V4(*self.gateways[gw].addr.ip());
        let remote = IpAddr::V4(*self.gateways[tun.responder].addr.ip());
        match ev {
            Event::Keys { entry, .. } => log.ike.push(entry.wireshark_line()),
            Event::IkeSaRekeyed { keylog, .. } => log.ike.push(keylog.wireshark_line()),
            Event::ChildSaReady { child, .. } | Event::ChildSaRekeyed { child, .. } => {
                for outbound in [true, false] {
                    log.esp
                        .push(child.wireshark_esp_line(local, remote, outbound));
                }
            }
            _ => {}
        }
    }

    /// Keeps the data plane's ESP SAs in step with the endpoint's Child SAs.
    fn update_data_plane(&mut self, gw: usize, ev: &Event) {
        match ev {
            Event::ChildSaReady { sa, child } => {
                if let Some(&t) = self.sa_tunnel.get(&(gw, *sa)) {
                    self.install_child(gw, t, *sa, child, None);
                }
            }
            Event::ChildSaRekeyed {
                sa,
                old_spi_in,
                child,
            } => {
                if let Some(&t) = self.sa_tunnel.get(&(gw, *sa)) {
                    self.install_child(gw, t, *sa, child, Some(*old_spi_in));
                }
            }
            Event::ChildSaDeleting { spi_in, .. } => self.dp.stop_sending(gw, *spi_in),
            Event::ChildSaDeleted { sa, spi_in } => {
                self.dp.remove(gw, *spi_in);
                // The last Child SA of a tunnel with traffic is gone (a hard limit): its
                // initiator creates a new one.
                if let Some(&t) = self.sa_tunnel.get(&(gw, *sa))
                    && gw == self.tunnels[t].initiator
                    && self.cfg.tunnels[t].traffic.is_some()
                    && !self.dp.holds(gw, t)
                {
                    let entity = self.gateways[gw].entity;
                    self.sim
                        .schedule(entity, SimDuration::ZERO, Ev::CreateChild { tunnel: t });
                }
            }
            Event::IkeSaRekeyed { old, new, .. } => self.dp.move_sa(gw, *old, *new),
            Event::IkeSaDeleted { sa, .. } | Event::IkeSaFailed { sa, .. } => {
                self.dp.remove_sa(gw, *sa)
            }
            _ => {}
        }
    }

    fn results(mut self) -> Results {
        let now = self.sim.now();
        for t in &mut self.tunnels {
            t.go_down(now);
            // An attempt still going at the end (often: still waiting for a key).
            if let Some((mut a, sa)) = t.attempt.take() {
                if sa.is_none() {
                    a.key_wait = now.saturating_since(a.requested);
                    a.ike_started = now;
                }
                t.summary.key_wait_ns += a.key_wait.as_nanos();
                self.handshakes.push(row(
                    &t.name,
                    t.summary.attempts,
                    &a,
                    now,
                    "unfinished".into(),
                    String::new(),
                    String::new(),
                ));
            }
        }
        let pools = self
            .qkd
            .links
            .iter()
            .flat_map(|l| (0..2).map(move |end| (l, end)))
            .map(|(l, end)| {
                let owner = self.qkd.kmes[l.ends[end]].id.clone();
                let mut series = |what: &str| -> Vec<(u64, u64)> {
                    let g = self
                        .sim
                        .metrics
                        .gauge(&format!("qkd/{}/{owner}/{what}", l.name));
                    self.sim
                        .metrics
                        .series(g)
                        .iter()
                        .map(|&(t, v)| (t.as_nanos(), v as u64))
                        .collect()
                };
                let (samples, generated_samples) = (series("level_bits"), series("generated_bits"));
                let (key_size_bits, warning_below_keys, resume_at_keys) =
                    l.halves[end].thresholds();
                PoolSeries {
                    link: l.name.clone(),
                    owner,
                    capacity_bits: l.halves[end].capacity_bits(),
                    key_size_bits,
                    warning_below_keys,
                    resume_at_keys,
                    samples,
                    generated_samples,
                    generated_bits: l.halves[end].stats.generated_bits,
                    delivered_keys: l.halves[end].stats.delivered_keys,
                    refused_requests: l.halves[end].stats.refused_requests,
                }
            })
            .collect();
        let links = self
            .links
            .iter()
            .flat_map(|l| {
                let names = [
                    &self.gateways[l.ends[0]].name,
                    &self.gateways[l.ends[1]].name,
                ];
                (0..2).map(move |d| LinkSummary {
                    link: l.name.clone(),
                    direction: format!("{}>{}", names[d], names[1 - d]),
                    stats: l.channels[d].stats().clone(),
                })
            })
            .collect();
        let fingerprint = self.sim.trace.fingerprint().to_string();
        Results {
            seed: self.sim.seed(),
            crypto: self
                .gateways
                .first()
                .map_or("real", |g| g.ep.crypto_name())
                .to_string(),
            duration_ns: self.cfg.duration.as_nanos(),
            events: self.sim.events_processed(),
            fingerprint,
            tunnels: self.tunnels.iter().map(|t| t.summary.clone()).collect(),
            traffic: std::mem::take(&mut self.dp.flows)
                .into_values()
                .map(|mut f| {
                    f.lost_on_link = f.sent_packets - f.arrived.min(f.sent_packets);
                    f
                })
                .collect(),
            handshakes: self.handshakes,
            exchanges: self.exchanges,
            key_requests: self.key_requests,
            pools,
            links,
            qkd: self.qkd.stats.clone(),
            endpoints: self
                .gateways
                .iter()
                .map(|g| (g.name.clone(), g.ep.stats().clone()))
                .collect(),
            violations: self.violations,
        }
    }

    /// Ends the run's trace (flushing its file) and returns the tracer's verdict.
    pub fn finish_trace(tracer: Tracer) -> std::io::Result<sim_core::Fingerprint> {
        tracer.finish()
    }
}

fn row(
    name: &str,
    attempt: u32,
    a: &Attempt,
    now: SimTime,
    outcome: String,
    proposal: String,
    ppk: String,
) -> HandshakeRow {
    HandshakeRow {
        tunnel: name.to_string(),
        attempt,
        why: a.why.to_string(),
        requested_ns: a.requested.as_nanos(),
        key_wait_ns: a.key_wait.as_nanos(),
        ike_started_ns: a.ike_started.as_nanos(),
        ended_ns: now.as_nanos(),
        outcome,
        duration_ns: now.saturating_since(a.ike_started).as_nanos(),
        proposal,
        ppk,
        ppk_id: a.ppk_id.clone(),
        retransmissions: a.retransmissions,
        bytes_sent: a.bytes_sent,
        bytes_received: a.bytes_received,
        fragments_sent: a.fragments_sent,
        fragments_received: a.fragments_received,
    }
}

fn describe(r: &FailReason) -> String {
    match r {
        FailReason::RetransmitTimeout { exchange: x } => format!(
            "retransmit timeout in {}",
            exchange::name(*x).unwrap_or("?")
        ),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikev2::crypto::AeadAlg;
    use ikev2::endpoint::KeylogEntry;
    use ikev2::keys::IkeKeys;

    fn established(keys: &IkeKeys, initiator: bool, ppk: PpkOutcome) -> Event {
        Event::IkeSaEstablished {
            sa: 1,
            peer: 0,
            initiator,
            proposal: String::new(),
            ppk,
            keys: keys.clone(),
            keylog: KeylogEntry {
                spi_i: 1,
                spi_r: 2,
                sk_ei: vec![],
                sk_er: vec![],
                aead: AeadAlg::AesGcm16_256,
            },
        }
    }

    /// Gateways `a` and `b` on one link, with tunnel `t` between them.
    fn two_gateways(duration: &str) -> World {
        let cfg: WorldConfig = serde_json::from_str(&format!(
            r#"{{"duration": "{duration}",
                "gateway": [{{"name": "a", "address": "10.0.0.1"}}, {{"name": "b", "address": "10.0.0.2"}}],
                "link": [{{"a": "a", "b": "b"}}],
                "tunnel": [{{"name": "t", "initiator": "a", "responder": "b"}}]}}"#
        ))
        .unwrap();
        World::new(cfg, 1, Tracer::new()).unwrap()
    }

    #[test]
    fn the_oracle_catches_different_keys_and_reused_qkd_keys() {
        let mut w = two_gateways("1s");
        let k = |b: u8| IkeKeys {
            sk_d: vec![b],
            sk_ai: vec![],
            sk_ar: vec![],
            sk_ei: vec![],
            sk_er: vec![],
            sk_pi: vec![],
            sk_pr: vec![],
        };
        let used = PpkOutcome::Used {
            id: b"key-1".to_vec(),
        };
        w.check_invariants(&established(&k(1), true, used.clone()));
        w.check_invariants(&established(&k(1), false, used.clone()));
        assert!(w.violations.is_empty());
        w.check_invariants(&established(&k(1), true, used));
        w.check_invariants(&established(&k(2), false, PpkOutcome::NotUsed));
        assert_eq!(w.violations.len(), 2, "{:?}", w.violations);
        assert!(w.violations[0].contains("QKD key key-1 used by a second IKE SA"));
        assert!(w.violations[1].contains("derived different keys"));
        // Child SAs: each end names the other's inbound SPI as its outbound one.
        w.violations.clear();
        let child = |spi_in, spi_out, k_in: u8, k_out: u8| ikev2::endpoint::ChildSa {
            spi_in,
            spi_out,
            proposal: String::new(),
            aead: AeadAlg::AesGcm16_256,
            encr_in: vec![k_in],
            encr_out: vec![k_out],
            local_ts: vec![],
            remote_ts: vec![],
        };
        w.check_child_keys(0, &child(1, 2, 10, 20));
        w.check_child_keys(0, &child(2, 1, 20, 10));
        assert!(w.violations.is_empty() && w.child_keys.is_empty());
        w.check_child_keys(0, &child(3, 4, 30, 40));
        w.check_child_keys(0, &child(4, 3, 40, 31));
        assert_eq!(w.violations.len(), 1, "{:?}", w.violations);
        assert!(w.violations[0].contains("Child SA 00000003"));
    }

    #[test]
    fn the_oracle_reports_a_child_sa_only_one_end_holds() {
        let mut w = two_gateways("10m");
        let run_until = |w: &mut World, s: u64| {
            while let Some(ev) = w
                .sim
                .next_event_until(SimTime::from_nanos(s * 1_000_000_000))
            {
                w.handle(ev.event);
            }
        };
        run_until(&mut w, 5);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // The responder loses its half of the Child SA (its IKE SA stays up).
        let (_, _, _, spi_in, _) = w.dp.all().find(|p| p.0 == 1).unwrap();
        w.dp.remove(1, spi_in);
        // Tolerated while an exchange could still be under way (165 s), then reported,
        // once.
        run_until(&mut w, 150);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        run_until(&mut w, 400);
        assert_eq!(w.violations.len(), 1, "{:?}", w.violations);
        assert!(
            w.violations[0].contains("tunnel t: a holds Child SA")
                && w.violations[0].contains("b has not held its other half since 10s"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn the_oracle_reports_a_negotiation_stuck_past_its_timeouts_once() {
        let mut w = two_gateways("1h");
        // Move the clock to 300 s without running anything.
        let world = w.sim.entities().lookup("world").unwrap();
        w.sim
            .schedule_at(world, SimTime::from_nanos(300_000_000_000), Ev::Sample);
        while w.sim.next_event().is_some() {}
        let attempt = |progress_s: u64| Attempt {
            progress: SimTime::from_nanos(progress_s * 1_000_000_000),
            ..Default::default()
        };
        // 165.06 s of retransmissions and 60 s for a PPK: 250 s of quiet is too long,
        // 200 s is not.
        w.tunnels[0].attempt = Some((attempt(100), Some(7)));
        w.audit();
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        w.tunnels[0].attempt = Some((attempt(50), Some(7)));
        w.audit();
        w.audit();
        assert_eq!(w.violations.len(), 1, "{:?}", w.violations);
        assert!(w.violations[0].contains("tunnel t: the IKE negotiation"));
        // Waiting for a QKD key before IKE starts is not a negotiation.
        w.violations.clear();
        w.tunnels[0].attempt = Some((attempt(0), None));
        w.audit();
        assert!(w.violations.is_empty());
    }
}
