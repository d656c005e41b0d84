//! From a scenario to a world ready to run: key managers and QKD links, one peer
//! configuration per tunnel at each of its gateways, the gateways' endpoints, traffic
//! flows, links and direct routes, and the first events (tunnel starts, faults, key
//! manager schedules, sampling, the oracle's audit). Every check of the configuration
//! that needs more than one part of it happens here, and a failed one names the field.
//!
//! Entities are registered, and first events scheduled, in a fixed order (key
//! managers, gateways, links, the world), since simultaneous events run in the order of
//! their source entity.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use ikev2::crypto::{CryptoProvider, ModelCrypto, RealCrypto};
use ikev2::endpoint::{Endpoint, EndpointConfig, Identity, PeerConfig, PpkPolicy};
use ikev2::proposal::ProposalSpec;
use link::{Channel, LinkConfig, LinkState};
use qkd::QkdNetwork;
use qkd::network::StreamFactory;
use sim_core::entity::{ColdStream, LazyStream};
use sim_core::hash::FastMap;
use sim_core::{EntityId, SimDuration, SimTime, Simulation, Tracer, entity};

use super::adversary::Adversary;
use super::keys::Kme;
use super::net::{Gateway, IKE_PORT, SimLink};
use super::oracle::Oracle;
use super::output::RowBuffer;
use super::tunnels::Tunnel;
use super::{Ev, World};
use crate::config::{CryptoMode, Fault, PpkMode, TrafficMode, WorldConfig};
use crate::cpu::{Cpu, Meter, Metered};
use crate::dataplane::{DataPlane, MIN_PACKET};
use crate::results::RowSelection;
use crate::results::{TrafficSummary, TunnelSummary};

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

/// The pre-shared key both gateways of a tunnel authenticate with (live mode uses it
/// too, so a scenario's gateways also run over real sockets).
pub fn tunnel_psk(tunnel: &str) -> String {
    format!("psk:{tunnel}")
}

/// The crypto provider a run's configuration names.
pub(super) fn crypto_provider(mode: CryptoMode) -> Box<dyn CryptoProvider> {
    match mode {
        CryptoMode::Real => Box::new(RealCrypto),
        CryptoMode::Model => Box::new(ModelCrypto),
    }
}

/// A gateway endpoint's crypto: charged to its CPU's meter if it has one.
pub(super) fn gateway_crypto(mode: CryptoMode, cpu: Option<&Cpu>) -> Box<dyn CryptoProvider> {
    let crypto = crypto_provider(mode);
    match cpu {
        Some(cpu) => Box::new(Metered::new(crypto, cpu.costs.clone(), cpu.meter.clone())),
        None => crypto,
    }
}

fn find(index: &BTreeMap<String, usize>, name: &str, field: String) -> Result<usize, BuildError> {
    index
        .get(name)
        .copied()
        .ok_or_else(|| err(field, format!("no such name `{name}`")))
}

/// The configuration's names by index, and indices by name (the first of a name), for
/// lookups that report the field and cost the same for a million gateways.
struct Names {
    gateways: Vec<String>,
    gateway_index: BTreeMap<String, usize>,
    kme_index: BTreeMap<String, usize>,
}

impl Names {
    fn new(cfg: &WorldConfig) -> Self {
        let index = |names: &[String]| {
            let mut index = BTreeMap::new();
            for (i, n) in names.iter().enumerate() {
                index.entry(n.clone()).or_insert(i);
            }
            index
        };
        let gateways: Vec<String> = cfg.gateways.iter().map(|g| g.name.clone()).collect();
        let kmes: Vec<String> = cfg.kmes.iter().map(|k| k.name.clone()).collect();
        Names {
            gateway_index: index(&gateways),
            kme_index: index(&kmes),
            gateways,
        }
    }
}

impl World {
    /// Builds the network of `cfg`, every stream derived from `seed`.
    pub fn new(mut cfg: WorldConfig, seed: u64, tracer: Tracer) -> Result<World, BuildError> {
        let mut sim = Simulation::with_tracer(seed, tracer);
        let names = Names::new(&cfg);
        let (qkd, kmes) = key_managers(&cfg, &mut sim, &names, seed)?;
        let (tunnels, peers) = tunnels(&cfg, &names, seed)?;
        let mut gateways = gateways(&cfg, &mut sim, &names, peers)?;
        let dp = traffic(&cfg, &mut sim, &tunnels, &gateways)?;
        let (links, routes) = links(&cfg, &mut sim, &names, seed)?;
        for (i, t) in tunnels.iter().enumerate() {
            if !routes.contains_key(&(t.initiator, IpAddr::V4(cfg.gateways[t.responder].address))) {
                return Err(err(format!("tunnel[{i}]"), "no link joins its gateways"));
            }
        }
        let mut link_count = vec![0u32; gateways.len()];
        for l in &links {
            l.ends.iter().for_each(|&g| link_count[g] += 1);
        }
        for (i, l) in links.iter().enumerate() {
            for (dir, [from, to]) in [l.ends, [l.ends[1], l.ends[0]]].into_iter().enumerate() {
                if link_count[from] == 1 {
                    let to_addr = *gateways[to].addr.ip();
                    gateways[from].sole_route = Some((to_addr, i as u32, dir as u8));
                }
            }
        }
        first_events(&cfg, &mut sim, &names, &gateways, &kmes, &tunnels)?;
        let adversaries = adversaries(&cfg, &mut sim, &names)?;
        qkd_schedules(&cfg, &mut sim, &qkd, &kmes);
        let esp_crypto = crypto_provider(cfg.crypto);
        let rows = RowBuffer::new(
            RowSelection::All,
            tunnels.len(),
            qkd.links.len(),
            qkd.links.len(),
        );
        let entity = sim.entities().lookup("world").expect("registered");
        // What the run reads of the specifications lives on in the tunnels, gateways,
        // links and QKD links built from them: at scale the specifications themselves
        // would be a good part of the memory.
        cfg.links = Vec::new();
        cfg.qkd_links = Vec::new();
        cfg.tunnels = Vec::new();
        cfg.gateways = Vec::new();
        Ok(World {
            sim,
            entity,
            cfg,
            gateways,
            links,
            routes,
            tunnels,
            sa_tunnel: FastMap::default(),
            kmes,
            qkd,
            caches: FastMap::default(),
            rows,
            deliveries: Vec::new(),
            wire: Vec::new(),
            oracle: Oracle::default(),
            dp,
            adversaries,
            esp_crypto,
            keylog: None,
            ending: false,
        })
    }
}

/// Key managers (each an entity) and QKD links with their pools.
fn key_managers(
    cfg: &WorldConfig,
    sim: &mut Simulation<Ev>,
    names: &Names,
    seed: u64,
) -> Result<(QkdNetwork, Vec<Kme>), BuildError> {
    let qkd = build_qkd_network(cfg, names, seed)?;
    let mut kmes = Vec::new();
    for (i, k) in cfg.kmes.iter().enumerate() {
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
            service: k.service_time,
            free_at: vec![SimTime::ZERO; k.concurrency as usize],
        });
    }
    Ok((qkd, kmes))
}

/// The scenario's key managers, QKD links and pools as the simulator builds them, for
/// a driver outside the simulator (`qsafe kme` serves them over HTTPS): the same pools,
/// routes and key streams from `seed`.
pub fn qkd_network(cfg: &WorldConfig, seed: u64) -> Result<QkdNetwork, BuildError> {
    build_qkd_network(cfg, &Names::new(cfg), seed)
}

fn build_qkd_network(
    cfg: &WorldConfig,
    names: &Names,
    seed: u64,
) -> Result<QkdNetwork, BuildError> {
    let streams = |e: &str, p: &str| entity::stream(seed, e, p);
    let factory: StreamFactory<'_> = &streams;
    let mut qkd = QkdNetwork::new();
    qkd.relay_latency_ns = cfg.relay_latency.as_nanos();
    // The gateways (SAEs) of each KME, in gateway order.
    let mut saes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in &cfg.gateways {
        if let Some(k) = g.kme.as_deref() {
            saes.entry(k).or_default().push(&g.name);
        }
    }
    for k in &cfg.kmes {
        let saes = saes.get(k.name.as_str()).map_or(&[][..], Vec::as_slice);
        qkd.add_kme(&k.name, saes, factory);
    }
    let mut ends = Vec::new();
    for (i, l) in cfg.qkd_links.iter().enumerate() {
        let a = find(&names.kme_index, &l.a, format!("qkd_link[{i}].a"))?;
        let b = find(&names.kme_index, &l.b, format!("qkd_link[{i}].b"))?;
        let field = |f: &str| format!("qkd_link[{i}].pool.{f}");
        let pool = &l.pool;
        if pool.share_permille.is_some_and(|s| s > 1000) {
            return Err(err(field("share_permille"), "must be at most 1000"));
        }
        if pool.key_size_bits == 0 || pool.key_size_bits % 8 != 0 {
            return Err(err(
                field("key_size_bits"),
                "must be a positive multiple of 8",
            ));
        }
        if !(pool.rate_bps.is_finite() && pool.rate_bps >= 0.0) {
            return Err(err(field("rate_bps"), "must be a number of at least 0"));
        }
        if pool.block_bits == Some(0) {
            return Err(err(field("block_bits"), "must be at least 1"));
        }
        if l.schedule.windows(2).any(|w| w[0].at > w[1].at) {
            return Err(err(
                format!("qkd_link[{i}].schedule"),
                "transitions must be in time order",
            ));
        }
        ends.push((a, b));
    }
    // A link whose share is not given goes to the end that draws over it: the KMEs of
    // the tunnels' initiators, along each key's route (trusted-node hops included).
    let mut probe = QkdNetwork::new();
    for k in &cfg.kmes {
        probe.add_kme(&k.name, &[], factory);
    }
    for (l, &(a, b)) in cfg.qkd_links.iter().zip(&ends) {
        probe.add_link(&format!("{}-{}", l.a, l.b), a, b, l.pool.clone(), factory);
    }
    let mut draws = vec![[false; 2]; ends.len()];
    let kme_of = |gw: &str| {
        let g = &cfg.gateways[*names.gateway_index.get(gw)?];
        names.kme_index.get(g.kme.as_ref()?).copied()
    };
    for t in cfg.tunnels.iter().filter(|t| t.ppk != PpkMode::Disabled) {
        let (Some(from), Some(to)) = (kme_of(&t.initiator), kme_of(&t.responder)) else {
            continue;
        };
        for &(link, end) in probe.route(from, to).unwrap_or_default().iter() {
            draws[link][end] = true;
        }
    }
    qkd.links.reserve_exact(cfg.qkd_links.len());
    for (i, (l, &(a, b))) in cfg.qkd_links.iter().zip(&ends).enumerate() {
        let mut pool = l.pool.clone();
        pool.share_permille.get_or_insert(match draws[i] {
            [true, false] => 1000,
            [false, true] => 0,
            _ => 500,
        });
        qkd.add_link(&format!("{}-{}", l.a, l.b), a, b, pool, factory);
    }
    Ok(qkd)
}

/// The QKD links' up and down schedules.
fn qkd_schedules(cfg: &WorldConfig, sim: &mut Simulation<Ev>, qkd: &QkdNetwork, kmes: &[Kme]) {
    for (link, (l, spec)) in qkd.links.iter().zip(&cfg.qkd_links).enumerate() {
        let entity = kmes[l.ends[0]].entity;
        for tr in &spec.schedule {
            let up = tr.state == LinkState::Up;
            sim.schedule_at(entity, tr.at, Ev::QkdLinkSwitch { link, up });
        }
    }
}

/// The tunnels, and each gateway's peer configurations: one per tunnel it is part of,
/// with the tunnel's index.
#[allow(clippy::type_complexity)]
fn tunnels(
    cfg: &WorldConfig,
    names: &Names,
    seed: u64,
) -> Result<(Vec<Tunnel>, Vec<Vec<(usize, PeerConfig)>>), BuildError> {
    let gw_names = &names.gateways;
    let mut peers: Vec<Vec<(usize, PeerConfig)>> = vec![Vec::new(); cfg.gateways.len()];
    // Exact sizes for the per-tunnel, per-link and per-gateway vectors: grown by
    // doubling they would hold up to twice their entries' memory for the whole run.
    let mut tunnels = Vec::with_capacity(cfg.tunnels.len());
    // Tunnels per pair of gateways (either direction).
    fn pair(t: &crate::config::TunnelSpec) -> (&str, &str) {
        let (a, b) = (t.initiator.as_str(), t.responder.as_str());
        if a < b { (a, b) } else { (b, a) }
    }
    let mut per_pair: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for t in &cfg.tunnels {
        *per_pair.entry(pair(t)).or_default() += 1;
    }
    // One copy of each distinct proposal list, shared by the peers that use it (every
    // exchange reads them: shared, they stay in cache).
    let mut proposal_lists: BTreeMap<(bool, &[String]), Arc<[ProposalSpec]>> = BTreeMap::new();
    for (i, t) in cfg.tunnels.iter().enumerate() {
        let ini = find(
            &names.gateway_index,
            &t.initiator,
            format!("tunnel[{i}].initiator"),
        )?;
        let res = find(
            &names.gateway_index,
            &t.responder,
            format!("tunnel[{i}].responder"),
        )?;
        if ini == res {
            return Err(err(
                format!("tunnel[{i}].responder"),
                "a tunnel needs two different gateways",
            ));
        }
        // Several tunnels between the same two gateways are told apart by their IDs
        // (the responder picks the tunnel by the initiator's ID in IKE_AUTH): then each
        // end is `gateway/tunnel`; a lone tunnel's ends are the gateways' names.
        let shared = per_pair[&pair(t)] > 1;
        if t.ppk != PpkMode::Disabled {
            let ini_kme = cfg.gateways[ini].kme.as_ref();
            let api = ini_kme
                .and_then(|k| names.kme_index.get(k))
                .map(|&k| cfg.kmes[k].api);
            if cfg.gateways[ini].key_cache.is_some() && api == Some(crate::config::KeyApi::Skip) {
                return Err(err(
                    format!("gateway[{ini}].key_cache"),
                    "needs an ETSI 014 key manager (SKIP delivers one key per request)",
                ));
            }
            for (who, g) in [("initiator", ini), ("responder", res)] {
                if cfg.gateways[g].kme.is_none() {
                    return Err(err(
                        format!("tunnel[{i}].ppk"),
                        format!("the {who} `{}` has no kme", gw_names[g]),
                    ));
                }
            }
        }
        let life = t
            .lifetimes()
            .map_err(|(key, problem)| err(format!("tunnel[{i}].{key}"), problem))?;
        let psk = tunnel_psk(&t.name);
        for (me, other) in [(ini, res), (res, ini)] {
            let remote = SocketAddr::from(SocketAddrV4::new(cfg.gateways[other].address, IKE_PORT));
            let id = |g: usize| match shared {
                true => Identity::Fqdn(format!("{}/{}", gw_names[g], t.name)),
                false => Identity::Fqdn(gw_names[g].clone()),
            };
            let mut p = PeerConfig::new(&t.name, remote, id(me), id(other), psk.as_bytes());
            let ike: Vec<&str> = t.ike.iter().map(String::as_str).collect();
            let esp: Vec<&str> = t.esp.iter().map(String::as_str).collect();
            p = p
                .with_ike(&ike)
                .map_err(|e| err(format!("tunnel[{i}].ike"), e.to_string()))?;
            p = p
                .with_esp(&esp)
                .map_err(|e| err(format!("tunnel[{i}].esp"), e.to_string()))?;
            let mut share = |esp, list, parsed: &Arc<[ProposalSpec]>| {
                (proposal_lists.entry((esp, list)))
                    .or_insert_with(|| parsed.clone())
                    .clone()
            };
            p.ike = share(false, &t.ike, &p.ike);
            p.esp = share(true, &t.esp, &p.esp);
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
        // The tunnel's own streams, drawn at its initiator's entity.
        let at_initiator = format!("gw/{}", gw_names[ini]);
        let purpose = |purpose: &str| format!("{purpose}/{}", t.name);
        let cold = |p: &str| ColdStream::new(seed, &at_initiator, &purpose(p));
        tunnels.push(Tunnel {
            name: t.name.clone(),
            initiator: ini,
            responder: res,
            peer: peers[ini].len() - 1,
            ppk: t.ppk,
            life,
            reauth_due: None,
            ike_life_rng: cold("ike-life"),
            rekey_rng: cold("child-rekey"),
            traffic_rng: LazyStream::new(seed, &at_initiator, &purpose("traffic")),
            life_rng: cold("child-life"),
            retry_after: t.retry_after,
            current: None,
            ppk_ok: false,
            up: Default::default(),
            attempt: None,
            pending_ppk: None,
            consecutive_failures: 0,
            child_rekey_both_ends: t.child_rekey_both_ends,
            spec: (t.traffic.is_some() || t.has_volume_limits()).then(|| Box::new(t.clone())),
            summary: TunnelSummary {
                tunnel: t.name.clone(),
                start_ns: t.start.as_nanos(),
                ..Default::default()
            },
        });
    }
    Ok((tunnels, peers))
}

/// The gateways (each an entity) with their endpoints.
fn gateways(
    cfg: &WorldConfig,
    sim: &mut Simulation<Ev>,
    names: &Names,
    mut peers: Vec<Vec<(usize, PeerConfig)>>,
) -> Result<Vec<Gateway>, BuildError> {
    let mut gateways = Vec::with_capacity(cfg.gateways.len());
    for (i, g) in cfg.gateways.iter().enumerate() {
        let entity = sim
            .register(&format!("gw/{}", g.name))
            .map_err(|e| err(format!("gateway[{i}].name"), e.to_string()))?;
        let kme = match &g.kme {
            Some(k) => Some(find(&names.kme_index, k, format!("gateway[{i}].kme"))?),
            None => None,
        };
        let addr = SocketAddrV4::new(g.address, IKE_PORT);
        let (tunnel_ids, peer_cfgs): (Vec<usize>, Vec<PeerConfig>) =
            std::mem::take(&mut peers[i]).into_iter().unzip();
        let peer_cfgs: std::sync::Arc<[PeerConfig]> = peer_cfgs.into();
        let rng = Box::new(sim.rng(entity, "ike"));
        let cpu = g.cpu.as_ref().map(|c| Cpu::new(c, Meter::default()));
        let ep = Endpoint::new(
            EndpointConfig::new(addr.into()),
            peer_cfgs.clone(),
            gateway_crypto(cfg.crypto, cpu.as_ref()),
            rng,
        );
        gateways.push(Gateway {
            name: g.name.clone(),
            entity,
            addr,
            sole_route: None,
            ep,
            peer_cfgs,
            restarts: 0,
            down: false,
            corrupt_next: false,
            kme,
            timer: None,
            peer_tunnel: tunnel_ids,
            cpu,
            key_cache: g.key_cache.clone(),
        });
    }
    Ok(gateways)
}

/// The tunnels' traffic flows (checked), and their first packets or ticks.
fn traffic(
    cfg: &WorldConfig,
    sim: &mut Simulation<Ev>,
    tunnels: &[Tunnel],
    gateways: &[Gateway],
) -> Result<DataPlane, BuildError> {
    let mut dp = DataPlane::default();
    for (i, (spec, t)) in cfg.tunnels.iter().zip(tunnels).enumerate() {
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
        // RFC 4303 section 3.4.3: a window of at least 32 packets.
        if !(32..=4096).contains(&tr.replay_window) {
            return Err(err(field("replay_window"), "must be in 32..=4096 packets"));
        }
        let mode = match tr.mode {
            TrafficMode::Packets => "packets",
            TrafficMode::Aggregate => "aggregate",
        };
        let summary = TrafficSummary {
            tunnel: spec.name.clone(),
            mode: mode.into(),
            ..Default::default()
        };
        dp.add_flow(i, summary, tr.replay_window);
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
    Ok(dp)
}

/// The links (an entity and a channel per direction) and the direct routes over them:
/// (gateway, destination address) -> (link, direction).
#[allow(clippy::type_complexity)]
fn links(
    cfg: &WorldConfig,
    sim: &mut Simulation<Ev>,
    names: &Names,
    seed: u64,
) -> Result<(Vec<SimLink>, FastMap<(usize, IpAddr), (usize, usize)>), BuildError> {
    let gw_names = &names.gateways;
    let mut links = Vec::with_capacity(cfg.links.len());
    let mut routes = FastMap::default();
    // Links with the configuration of the one before share it (a generated topology's
    // links all have one).
    let mut shared: Option<std::sync::Arc<LinkConfig>> = None;
    for (i, l) in cfg.links.iter().enumerate() {
        let a = find(&names.gateway_index, &l.a, format!("link[{i}].a"))?;
        let b = find(&names.gateway_index, &l.b, format!("link[{i}].b"))?;
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
        let params = match shared.take() {
            Some(last) if *last == l.params => last,
            _ => std::sync::Arc::new(l.params.clone()),
        };
        shared = Some(params.clone());
        let channels = [0, 1].map(|d| Channel::new(params.clone(), seed, &channels[d]));
        routes.insert((a, IpAddr::V4(cfg.gateways[b].address)), (links.len(), 0));
        routes.insert((b, IpAddr::V4(cfg.gateways[a].address)), (links.len(), 1));
        links.push(SimLink {
            name,
            ends: [a, b],
            entities,
            channels,
        });
    }
    Ok((links, routes))
}

/// The adversaries (`[[adversary]]`), each an entity with its own random stream, and
/// the first event of each flood.
fn adversaries(
    cfg: &WorldConfig,
    sim: &mut Simulation<Ev>,
    names: &Names,
) -> Result<Vec<Adversary>, BuildError> {
    let mut out = Vec::new();
    for (i, a) in cfg.adversaries.iter().enumerate() {
        let field = |f: &str| format!("adversary[{i}].{f}");
        let gw = find(&names.gateway_index, &a.gateway, field("gateway"))?;
        for (name, p) in [
            ("drop", a.drop),
            ("duplicate", a.duplicate),
            ("replay", a.replay),
            ("modify", a.modify),
            ("rewrite", a.rewrite),
            ("forge", a.forge),
            ("reorder", a.reorder),
            ("delay_probability", a.delay_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(err(field(name), "must be a probability, within [0, 1]"));
            }
        }
        if !(a.flood_pps >= 0.0 && a.flood_pps <= 1e6) {
            return Err(err(field("flood_pps"), "must be within [0, 1000000]"));
        }
        if a.until.is_some_and(|u| u <= a.from) {
            return Err(err(field("until"), "must be after `from`"));
        }
        let entity = sim
            .register(&format!("adversary/{i}-{}", a.gateway))
            .map_err(|e| err(field("gateway"), e.to_string()))?;
        let rng = sim.rng(entity, "adversary");
        if a.flood_pps > 0.0 {
            sim.schedule_at(entity, a.from, Ev::Flood { adversary: i });
        }
        out.push(Adversary::new(a.clone(), gw, entity, rng));
    }
    Ok(out)
}

/// The world's entity and the events a run starts with: faults, the audit, tunnel
/// starts, key manager switches and pool sampling.
fn first_events(
    cfg: &WorldConfig,
    sim: &mut Simulation<Ev>,
    names: &Names,
    gateways: &[Gateway],
    kmes: &[Kme],
    tunnels: &[Tunnel],
) -> Result<(), BuildError> {
    let world_entity = sim.register("world").expect("fresh name");
    for (i, f) in cfg.faults.iter().enumerate() {
        match f {
            Fault::GatewayRestart {
                at,
                gateway,
                down_for,
            } => {
                let gw = find(&names.gateway_index, gateway, format!("fault[{i}].gateway"))?;
                let down_for = *down_for;
                sim.schedule_at(world_entity, *at, Ev::GatewayDown { gw, down_for });
            }
            Fault::CorruptChildKey { at, gateway } => {
                let gw = find(&names.gateway_index, gateway, format!("fault[{i}].gateway"))?;
                sim.schedule_at(world_entity, *at, Ev::CorruptNextChild { gw });
            }
        }
    }
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
    Ok(())
}
