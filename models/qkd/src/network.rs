//! The QKD network: key managers (KMEs) with their attached gateways (SAEs), QKD links
//! between KMEs forming a graph, and keys relayed hop by hop through trusted nodes.
//!
//! A key for two KMEs without a direct link travels a shortest path (fewest hops; ties
//! broken by KME order, so the route is deterministic). Each hop contributes one key of
//! the requested size from the half its upstream KME owns: the first hop's key `k1` is
//! the key delivered; every trusted node forwards `k_in XOR k_out` (a one-time pad) and
//! the next node removes its own `k_out`, until the destination holds `k1`. Every hop
//! pays the key, and the destination sees the key only after the relay latency.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use petgraph::graph::{NodeIndex, UnGraph};
use rand_chacha::ChaCha20Rng;
use rand_core::Rng;
use sim_core::hash::FastMap;

use crate::blocks::Blocks;
use crate::pool::{PoolConfig, PoolHalf, PoolState, Supply};

/// A route: (link, owner end) per hop, from the drawing KME on.
pub type Route = Arc<[(usize, usize)]>;

/// Where every random stream comes from: (entity name, purpose) -> stream. The simulator
/// passes its seeded per-entity streams.
pub type StreamFactory<'a> = &'a dyn Fn(&str, &str) -> ChaCha20Rng;

pub struct Kme {
    pub id: String,
    pub saes: Vec<String>,
    /// A failed device answers nothing but 503.
    pub up: bool,
    entropy: ChaCha20Rng,
}

/// A QKD link between two KMEs, with its two pool halves (see [`crate::pool`]).
pub struct QkdLink {
    pub name: String,
    pub ends: [usize; 2],
    pub halves: [PoolHalf; 2],
    pub config: PoolConfig,
    /// End 0's part of the blocks so far not yet whole bits, in thousandths of a bit.
    split_carry: u64,
    /// Block arrivals with `poisson` supply.
    blocks: Option<Blocks>,
    /// Producing key (not switched off by a schedule).
    up: bool,
}

impl QkdLink {
    /// Brings both halves up to `now`: continuous production, or the blocks that
    /// arrived since the last time (none while the link is down).
    pub fn advance(&mut self, now_ns: u64) {
        for h in &mut self.halves {
            h.advance(now_ns);
        }
        let Some(blocks) = &mut self.blocks else {
            return;
        };
        let arrived = blocks.arrived_until(now_ns);
        if self.up && arrived > 0 {
            self.deposit(arrived * self.config.block());
        }
    }

    /// `bits` of new key: each end gets its share, no bit lost to rounding over
    /// successive blocks.
    fn deposit(&mut self, bits: u64) {
        let units = bits as u128 * self.config.share().min(1000) as u128 + self.split_carry as u128;
        let first = (units / 1000) as u64;
        self.split_carry = (units % 1000) as u64;
        self.halves[0].deposit(first);
        self.halves[1].deposit(bits - first);
    }

    /// The QKD link goes down (no key produced) or comes back, at `now`.
    pub fn set_up(&mut self, now_ns: u64, up: bool) {
        self.advance(now_ns);
        self.up = up;
        for h in &mut self.halves {
            h.set_paused(now_ns, !up);
        }
    }
}

/// A key waiting at the receiving KME until the peer gateway fetches it.
pub(crate) struct PendingKey {
    pub key: Vec<u8>,
    /// The KME where the key was drawn.
    pub from_kme: usize,
    pub master_sae: String,
    /// The SAE allowed to fetch it (ETSI), or none (SKIP binds keys to KMEs only).
    pub slave_sae: Option<String>,
    pub available_ns: u64,
}

/// A key handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// 16 random bytes; APIs print them as a UUID (ETSI) or hex (SKIP).
    pub id: [u8; 16],
    pub key: Vec<u8>,
    /// KMEs on the route (the master's first).
    pub hops: usize,
}

/// Why a draw failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DrawError {
    #[error("KME is down")]
    KmeDown,
    #[error("no KME serves `{0}`")]
    UnknownPeer(String),
    #[error("no QKD route between the KMEs")]
    NoRoute,
    #[error("insufficient amount of key material")]
    Insufficient,
}

/// Network-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkStats {
    /// Keys delivered to masters (first hop).
    pub keys_delivered: u64,
    /// Keys fetched by the peer gateway.
    pub keys_fetched: u64,
    /// Keys delivered but never fetched (expired, or reported wasted by a gateway).
    pub keys_wasted: u64,
    /// Requests refused for lack of key material.
    pub requests_refused: u64,
    /// Extra keys consumed on relay hops beyond the first.
    pub relay_keys: u64,
}

pub struct QkdNetwork {
    pub kmes: Vec<Kme>,
    pub links: Vec<QkdLink>,
    graph: UnGraph<usize, usize>,
    nodes: Vec<NodeIndex>,
    /// Keys waiting at a KME for the peer's fetch, by (KME, key ID).
    pub(crate) pending: BTreeMap<(usize, [u8; 16]), PendingKey>,
    /// (deadline, KME, key ID) of pending keys that expire.
    expiries: std::collections::BTreeSet<(u64, usize, [u8; 16])>,
    /// KME indices by KME ID and by the ID of an SAE attached to it. Hash maps (only
    /// ever looked up, never walked): a network of thousands of SAEs looks one up for
    /// every key request.
    by_name: FastMap<String, usize>,
    by_sae: FastMap<String, usize>,
    /// The block supplies' distribution functions, shared between links.
    poisson_tables: crate::blocks::Tables,
    /// Routes found so far, by (from, to); forgotten when the graph grows. Shared
    /// (`Arc`), as every key request asks for one.
    routes: RefCell<FastMap<(usize, usize), Option<Route>>>,
    /// Time a relayed key spends per trusted-node hop.
    pub relay_latency_ns: u64,
    pub stats: NetworkStats,
}

impl QkdNetwork {
    pub fn new() -> Self {
        QkdNetwork {
            kmes: Vec::new(),
            links: Vec::new(),
            graph: UnGraph::default(),
            nodes: Vec::new(),
            pending: BTreeMap::new(),
            expiries: Default::default(),
            routes: Default::default(),
            poisson_tables: Default::default(),
            by_name: FastMap::default(),
            by_sae: FastMap::default(),
            relay_latency_ns: 0,
            stats: NetworkStats::default(),
        }
    }

    /// Adds a KME serving `saes`; returns its index.
    pub fn add_kme(&mut self, id: &str, saes: &[&str], streams: StreamFactory<'_>) -> usize {
        let i = self.kmes.len();
        self.by_name.entry(id.to_string()).or_insert(i);
        for sae in saes {
            self.by_sae.entry(sae.to_string()).or_insert(i);
        }
        self.kmes.push(Kme {
            id: id.to_string(),
            saes: saes.iter().map(|s| s.to_string()).collect(),
            up: true,
            entropy: streams(&format!("kme/{id}"), "entropy"),
        });
        self.nodes.push(self.graph.add_node(i));
        self.routes.get_mut().clear();
        i
    }

    /// Adds a QKD link between KMEs `a` and `b`; returns its index.
    pub fn add_link(
        &mut self,
        name: &str,
        a: usize,
        b: usize,
        config: PoolConfig,
        streams: StreamFactory<'_>,
    ) -> usize {
        let entity = format!("qkd/{name}");
        let share = config.share().min(1000);
        let shares = [share, 1000 - share];
        let halves = [0, 1]
            .map(|e| PoolHalf::new(&config, shares[e], streams(&entity, &format!("keys/{e}"))));
        let rate = config.rate_millibits();
        let blocks = (config.supply == Supply::Poisson && rate > 0).then(|| {
            // block / (rate / 1000) seconds, in ns.
            let mean_gap_ns = config.block() as f64 * 1e12 / rate as f64;
            Blocks::new(
                mean_gap_ns,
                &mut self.poisson_tables,
                streams(&entity, "supply"),
                streams(&entity, "supply/times"),
            )
        });
        let i = self.links.len();
        self.links.push(QkdLink {
            name: name.to_string(),
            ends: [a, b],
            halves,
            config,
            split_carry: 0,
            blocks,
            up: true,
        });
        self.graph.add_edge(self.nodes[a], self.nodes[b], i);
        self.routes.get_mut().clear();
        i
    }

    pub fn kme_index(&self, id: &str) -> Option<usize> {
        self.by_name.get(id).copied()
    }

    /// The KME an SAE is attached to (the first one added, if several claim it).
    pub fn kme_of_sae(&self, sae: &str) -> Option<usize> {
        self.by_sae.get(sae).copied()
    }

    /// Brings every pool up to `now` and drops keys that waited too long.
    pub fn advance(&mut self, now_ns: u64) {
        for l in &mut self.links {
            l.advance(now_ns);
        }
        self.expire(now_ns);
    }

    /// Drops keys that waited too long for their fetch.
    fn expire(&mut self, now_ns: u64) {
        while let Some(&(deadline, kme, id)) = self.expiries.first() {
            if deadline >= now_ns {
                break;
            }
            self.expiries.pop_first();
            if self.pending.remove(&(kme, id)).is_some() {
                self.stats.keys_wasted += 1;
            }
        }
    }

    /// The route from KME `from` to KME `to` as (link, owner end) pairs, fewest hops.
    pub fn route(&self, from: usize, to: usize) -> Option<Route> {
        if let Some(r) = self.routes.borrow().get(&(from, to)) {
            return r.clone();
        }
        let route = self.find_route(from, to);
        self.routes.borrow_mut().insert((from, to), route.clone());
        route
    }

    fn find_route(&self, from: usize, to: usize) -> Option<Route> {
        let (_, path) = petgraph::algo::astar(
            &self.graph,
            self.nodes[from],
            |n| n == self.nodes[to],
            |_| 1u32,
            |_| 0,
        )?;
        path.windows(2)
            .map(|w| {
                // The lowest-numbered link between the two, for a stable choice.
                let link = self
                    .graph
                    .edges_connecting(w[0], w[1])
                    .map(|e| *e.weight())
                    .min()?;
                let end = if self.links[link].ends[0] == self.graph[w[0]] {
                    0
                } else {
                    1
                };
                Some((link, end))
            })
            .collect()
    }

    /// The default key size from `from` towards `to`: that of the route's first link
    /// (256 bits without a route).
    pub fn key_size(&self, from: usize, to: usize) -> u64 {
        self.route(from, to)
            .and_then(|r| {
                r.first()
                    .map(|&(l, _)| self.links[l].config.key_size_bits as u64)
            })
            .unwrap_or(256)
    }

    /// Keys of `size_bits` that could be drawn at `now` from `from` towards `to`.
    pub fn available_keys(&mut self, now_ns: u64, from: usize, to: usize, size_bits: u64) -> u64 {
        match self.route(from, to) {
            Some(r) if !r.is_empty() => r
                .iter()
                .map(|&(l, e)| {
                    self.links[l].advance(now_ns);
                    let h = &self.links[l].halves[e];
                    if h.state() == PoolState::Charging {
                        0
                    } else {
                        h.level_bits() / size_bits
                    }
                })
                .min()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Draws `number` keys of `size_bits` at KME `from` for its SAE `master_sae`, to be
    /// fetched at KME `to` (by `slave_sae`, or by any SAE there when `None`). Either all
    /// keys are delivered or none and no state changes.
    #[allow(clippy::too_many_arguments)]
    pub fn draw(
        &mut self,
        now_ns: u64,
        from: usize,
        to: usize,
        master_sae: &str,
        slave_sae: Option<&str>,
        number: u64,
        size_bits: u64,
    ) -> Result<Vec<Delivered>, DrawError> {
        self.expire(now_ns);
        if !self.kmes[from].up || !self.kmes[to].up {
            return Err(DrawError::KmeDown);
        }
        let route = self
            .route(from, to)
            .filter(|r| !r.is_empty())
            .ok_or(DrawError::NoRoute)?;
        for &(l, _) in route.iter() {
            self.links[l].advance(now_ns);
        }
        let need = number * size_bits;
        if let Some(&(l, e)) = route
            .iter()
            .find(|&&(l, e)| !self.links[l].halves[e].can_take(need))
        {
            self.links[l].halves[e].refuse();
            self.stats.requests_refused += 1;
            return Err(DrawError::Insufficient);
        }
        let available_ns = now_ns + self.relay_latency_ns * (route.len() as u64 - 1);
        // The strictest key age of the links on the route, if any.
        let max_age = route
            .iter()
            .filter_map(|&(l, _)| self.links[l].config.max_key_age_ns)
            .min();
        let mut out = Vec::new();
        for _ in 0..number {
            let (first_link, first_end) = route[0];
            let (id, k1) = self.links[first_link].halves[first_end].take(size_bits);
            // Relay: each trusted node sends k_in XOR k_out; the next node strips k_out.
            let mut carried = k1.clone();
            for &(l, e) in &route[1..] {
                let (_, k_out) = self.links[l].halves[e].take(size_bits);
                let ciphertext: Vec<u8> = carried.iter().zip(&k_out).map(|(a, b)| a ^ b).collect();
                carried = ciphertext.iter().zip(&k_out).map(|(a, b)| a ^ b).collect();
                self.stats.relay_keys += 1;
            }
            self.pending.insert(
                (to, id),
                PendingKey {
                    key: carried,
                    from_kme: from,
                    master_sae: master_sae.to_string(),
                    slave_sae: slave_sae.map(str::to_string),
                    available_ns,
                },
            );
            if let Some(age) = max_age {
                self.expiries.insert((now_ns + age, to, id));
            }
            self.stats.keys_delivered += 1;
            out.push(Delivered {
                id,
                key: k1,
                hops: route.len(),
            });
        }
        Ok(out)
    }

    /// Fetches keys by ID at KME `at` for `caller` (the slave). Unknown, not yet
    /// arrived, or already fetched IDs fail the whole request without changing state.
    pub fn fetch(
        &mut self,
        now_ns: u64,
        at: usize,
        caller: &str,
        ids: &[[u8; 16]],
    ) -> Result<Vec<Delivered>, FetchError> {
        self.expire(now_ns);
        if !self.kmes[at].up {
            return Err(FetchError::KmeDown);
        }
        for id in ids {
            let p = self.pending.get(&(at, *id)).ok_or(FetchError::NotFound)?;
            if p.available_ns > now_ns {
                return Err(FetchError::NotFound);
            }
            if p.slave_sae.as_deref().is_some_and(|s| s != caller) {
                return Err(FetchError::Unauthorized);
            }
        }
        if ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id)) {
            return Err(FetchError::NotFound);
        }
        let out = ids
            .iter()
            .map(|id| {
                let p = self.pending.remove(&(at, *id)).expect("checked");
                self.stats.keys_fetched += 1;
                Delivered {
                    id: *id,
                    key: p.key,
                    hops: 0,
                }
            })
            .collect();
        Ok(out)
    }

    /// A gateway reports that a key it drew was never used (its exchange failed).
    pub fn report_wasted(&mut self, keys: u64) {
        self.stats.keys_wasted += keys;
    }

    /// The master SAE and origin KME of a key waiting at `at`.
    pub fn pending_origin(&self, at: usize, id: &[u8; 16]) -> Option<(&str, usize)> {
        self.pending
            .get(&(at, *id))
            .map(|p| (p.master_sae.as_str(), p.from_kme))
    }

    /// Random bytes from a KME's entropy source.
    pub fn entropy(&mut self, kme: usize, bytes: usize) -> Vec<u8> {
        let mut v = vec![0u8; bytes];
        self.kmes[kme].entropy.fill_bytes(&mut v);
        v
    }
}

impl Default for QkdNetwork {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("KME is down")]
    KmeDown,
    #[error("one or more keys specified are not found on KME")]
    NotFound,
    #[error("caller is not the slave SAE these keys were made for")]
    Unauthorized,
}
