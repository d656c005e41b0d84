//! The ESP data plane of the simulated tunnels: the ESP SAs each gateway holds, kept in
//! step with the Child SAs its endpoint reports, and the traffic sent through them.
//!
//! In packet mode every packet is a real inner IPv4/UDP packet, sealed with the Child
//! SA's keys (AES-GCM, or the model crypto), carried as UDP-encapsulated ESP (RFC 3948,
//! port 4500: one kind of datagram on the links, and Wireshark decodes it) and opened at
//! the peer through its anti-replay window. Each inner packet carries a flow sequence
//! number, so an oracle can tell a replay that got through from a genuine packet.
//! Aggregate mode counts packets and bytes against both ends' lifetimes instead.
//!
//! Make-before-break as strongSwan does it: the end that started a rekey sends on the
//! new SA at once, the other end keeps sending on the old one until the old SA's Delete
//! arrives, and each end keeps an inbound SA until it is deleted. On a clean link a
//! rekey therefore loses no packets; what is lost is counted by reason.

use std::collections::BTreeMap;

use esp::{EspError, Inbound, Lifetime, LifetimeState, Outbound};
use ikev2::crypto::CryptoProvider;
use ikev2::endpoint::{ChildSa, SaId};
use sim_core::TimerId;
use sim_core::hash::FastMap;

use crate::results::TrafficSummary;

/// UDP port of encapsulated ESP.
pub const ESP_PORT: u16 = 4500;
/// Inner IPv4 + UDP header, then the 8-byte flow sequence number.
const INNER_HEADER: usize = 28;
pub const MIN_PACKET: usize = INNER_HEADER + 8;

/// A tunnel's traffic, looked up once per packet: its counters, the replay window of its
/// inbound SAs and, per direction (0: from its initiator), the next flow sequence number
/// and the sequence numbers delivered so far, one bit each.
struct Flow {
    summary: TrafficSummary,
    replay_window: u64,
    next_seq: [u64; 2],
    delivered: [Vec<u64>; 2],
}

/// One Child SA at one gateway: both directions. What the driver and the oracle look
/// up (SPIs, owners, flags) comes first, in one cache line; the ESP SAs, read only by
/// packets, after it.
#[repr(C, align(64))]
struct Pair {
    /// The inbound SA's SPI (the pair's name at this gateway) and the outbound one's.
    spi_in: u32,
    spi_out: u32,
    tunnel: usize,
    sa: SaId,
    /// Installation order at this gateway (the newest sending pair is used).
    order: u64,
    /// The invariant oracle's pending look at this pair (a timer), while its other half
    /// is missing: a newer change replaces it, the other half's arrival settles it.
    look: Option<TimerId>,
    /// Inbound SPI of the pair this one replaces, until that one is deleted.
    predecessor: Option<u32>,
    /// Whether this end may send on it yet (see the module comment).
    sending: bool,
    /// Rekeyed, being rekeyed or deleted for its lifetime: no further rekey for it.
    retired: bool,
    /// This gateway started its rekey (and so sends on the successor at once).
    started: bool,
    /// Its soft limit was reported (once).
    soft_reported: bool,
    /// Past its hard time lifetime: no more traffic.
    expired: bool,
    inbound: Inbound,
    outbound: Outbound,
    /// The timer of its hard time lifetime (read only when the pair goes).
    expiry: Option<TimerId>,
}

impl Pair {
    /// Its pending timers, which its going makes moot.
    fn timers(&self) -> [Option<TimerId>; 2] {
        [self.look, self.expiry]
    }
}

/// Which lifetime limit a packet pushed an SA over, for the driver to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossed {
    /// Time to rekey the pair with this inbound SPI at this gateway.
    Soft(u32),
    /// The pair must go: delete it.
    Hard(u32),
}

/// A change to the pairs held, for the invariant oracle to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairChange {
    Installed {
        gw: usize,
        tunnel: usize,
        spi_in: u32,
    },
    /// Removed at `gw`: the peer's half (inbound `spi_out` there) should go too.
    Removed {
        gw: usize,
        tunnel: usize,
        spi_out: u32,
    },
}

/// One end's pairs in installation order: one nearly always, two while a rekey
/// overlaps. The first lives in the tunnel's record itself, so that a packet finds it
/// without a further pointer to follow; a second goes to the heap until the first goes.
#[derive(Default)]
struct Pairs {
    /// `None` only if `rest` is empty.
    first: Option<Pair>,
    /// Held for hours, a spare slot would cost as much as the pair: `rest` holds
    /// exactly what it has.
    rest: Vec<Pair>,
}

impl Pairs {
    fn iter(&self) -> impl Iterator<Item = &Pair> {
        self.first.iter().chain(&self.rest)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Pair> {
        self.first.iter_mut().chain(&mut self.rest)
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push(&mut self, pair: Pair) {
        match self.first {
            None => self.first = Some(pair),
            Some(_) => {
                self.rest.reserve_exact(1);
                self.rest.push(pair);
            }
        }
    }

    /// Removes the pair with inbound SPI `spi_in`, returning what the driver needs of it.
    /// The pair itself is dropped where it is: a pair is eight cache lines, cold by the
    /// time it goes, and moving it out would read them all.
    fn remove(&mut self, spi_in: u32) -> Option<Gone> {
        let gone = |p: &Pair| Gone {
            tunnel: p.tunnel,
            spi_out: p.spi_out,
            timers: p.timers(),
        };
        let first = self.first.as_ref()?;
        let g = if first.spi_in == spi_in {
            let g = gone(first);
            self.first = (!self.rest.is_empty()).then(|| self.rest.remove(0));
            g
        } else {
            let at = self.rest.iter().position(|p| p.spi_in == spi_in)?;
            let g = gone(&self.rest[at]);
            self.rest.drain(at..=at);
            g
        };
        self.rest.shrink_to_fit();
        Some(g)
    }
}

/// What a removed pair leaves behind: its tunnel, outbound SPI and pending timers.
struct Gone {
    tunnel: usize,
    spi_out: u32,
    timers: [Option<TimerId>; 2],
}

/// One gateway's half of a tunnel: its pairs and the inbound SPI of the one it sends on.
struct End {
    gw: usize,
    pairs: Pairs,
    sender: Option<u32>,
}

impl End {
    fn pair(&self, spi_in: u32) -> Option<&Pair> {
        self.pairs.iter().find(|p| p.spi_in == spi_in)
    }

    fn pair_mut(&mut self, spi_in: u32) -> Option<&mut Pair> {
        self.pairs.iter_mut().find(|p| p.spi_in == spi_in)
    }

    /// Pairs that waited for `spi_in` to go may send now.
    fn promote_successors(&mut self, spi_in: u32) {
        for p in self.pairs.iter_mut() {
            if p.predecessor == Some(spi_in) {
                p.predecessor = None;
                p.sending = true;
            }
        }
    }

    /// Sends on the newest pair that may send.
    fn choose_sender(&mut self) {
        let best = (self.pairs.iter().filter(|p| p.sending)).max_by_key(|p| p.order);
        self.sender = best.map(|p| p.spi_in);
    }
}

/// A tunnel's data plane: both ends in one record, so that what concerns one tunnel
/// is one lookup and a few adjacent cache lines at a hub of thousands.
#[derive(Default)]
struct TunnelPlane {
    ends: [Option<End>; 2],
}

#[derive(Default)]
pub struct DataPlane {
    /// Pairs installed or removed since the driver last took this list.
    pub changed: Vec<PairChange>,
    /// Timers a change made moot (their pair went, or the other half an oracle's look
    /// waited for came), for the driver to cancel: else each would fire, long after,
    /// into state gone cold, only to find nothing to do.
    pub moot_timers: Vec<TimerId>,
    /// (gateway, inbound SPI) -> tunnel of the pair, and (gateway, IKE SA) -> tunnel:
    /// packets and the endpoints' events name pairs and SAs, the pairs live by tunnel.
    /// Only looked up, never walked (see `sim_core::hash`).
    tunnel_of_spi: FastMap<(usize, u32), usize>,
    tunnel_of_sa: FastMap<(usize, SaId), usize>,
    /// By tunnel (grown to the highest tunnel with a pair).
    tunnels: Vec<TunnelPlane>,
    installed: u64,
    /// By tunnel; the tunnels without traffic have none (and replay windows of 64).
    flows: BTreeMap<usize, Flow>,
}

/// `gw`'s half of tunnel `t`, if it has one.
fn end_mut(tunnels: &mut [TunnelPlane], gw: usize, t: usize) -> Option<&mut End> {
    let ends = &mut tunnels.get_mut(t)?.ends;
    ends.iter_mut().flatten().find(|e| e.gw == gw)
}

/// The pair with inbound SPI `spi_in` at `gw`.
fn pair_mut<'a>(
    tunnel_of_spi: &FastMap<(usize, u32), usize>,
    tunnels: &'a mut [TunnelPlane],
    gw: usize,
    spi_in: u32,
) -> Option<&'a mut Pair> {
    let t = *tunnel_of_spi.get(&(gw, spi_in))?;
    end_mut(tunnels, gw, t)?.pair_mut(spi_in)
}

impl DataPlane {
    /// Adds a traffic flow for tunnel `t` (its counters start at zero) and the replay
    /// window of its inbound SAs.
    pub fn add_flow(&mut self, t: usize, summary: TrafficSummary, replay_window: u64) {
        let flow = Flow {
            summary,
            replay_window,
            next_seq: [0; 2],
            delivered: Default::default(),
        };
        self.flows.insert(t, flow);
    }

    /// The counters of tunnel `t`'s flow, if it has one.
    pub fn flow_mut(&mut self, t: usize) -> Option<&mut TrafficSummary> {
        self.flows.get_mut(&t).map(|f| &mut f.summary)
    }

    /// The flows' counters, by tunnel.
    pub fn into_flows(self) -> impl Iterator<Item = TrafficSummary> {
        self.flows.into_values().map(|f| f.summary)
    }

    fn end(&self, gw: usize, t: usize) -> Option<&End> {
        let ends = &self.tunnels.get(t)?.ends;
        ends.iter().flatten().find(|e| e.gw == gw)
    }

    fn pair(&self, gw: usize, spi_in: u32) -> Option<&Pair> {
        let t = *self.tunnel_of_spi.get(&(gw, spi_in))?;
        self.end(gw, t)?.pair(spi_in)
    }

    fn pair_mut(&mut self, gw: usize, spi_in: u32) -> Option<&mut Pair> {
        pair_mut(&self.tunnel_of_spi, &mut self.tunnels, gw, spi_in)
    }

    /// A gateway started a rekey of the pair `spi_in`: it will send on the successor
    /// as soon as it has it.
    pub fn rekey_started(&mut self, gw: usize, spi_in: u32) {
        if let Some(p) = self.pair_mut(gw, spi_in) {
            p.started = true;
            p.retired = true;
        }
    }

    /// The rekeys `gw` started under IKE SA `sa` were refused: their pairs may be
    /// rekeyed again. Returns their inbound SPIs.
    pub fn rekey_refused(&mut self, gw: usize, sa: SaId) -> Vec<u32> {
        let Some(&t) = self.tunnel_of_sa.get(&(gw, sa)) else {
            return Vec::new();
        };
        let Some(end) = end_mut(&mut self.tunnels, gw, t) else {
            return Vec::new();
        };
        let mut refused = Vec::new();
        for p in (end.pairs.iter_mut()).filter(|p| p.started && p.sa == sa) {
            p.started = false;
            p.retired = false;
            refused.push(p.spi_in);
        }
        refused.sort_unstable();
        refused
    }

    /// Every Child SA held: (gateway, tunnel, IKE SA, inbound SPI, outbound SPI), by
    /// gateway and inbound SPI.
    pub fn all(&self) -> Vec<(usize, usize, SaId, u32, u32)> {
        let ends = self.tunnels.iter().flat_map(|t| t.ends.iter().flatten());
        let mut all: Vec<_> = (ends.flat_map(|e| e.pairs.iter().map(move |p| (e.gw, p))))
            .map(|(gw, p)| (gw, p.tunnel, p.sa, p.spi_in, p.spi_out))
            .collect();
        all.sort_unstable_by_key(|&(gw, _, _, spi_in, _)| (gw, spi_in));
        all
    }

    /// Whether `gw` holds the Child SA with inbound SPI `spi_in`.
    pub fn has(&self, gw: usize, spi_in: u32) -> bool {
        self.tunnel_of_spi.contains_key(&(gw, spi_in))
    }

    /// Whether `gw` can send tunnel `t`'s traffic to `peer`: it has a pair to send on,
    /// not past its hard lifetime, whose other half `peer` holds.
    pub fn carries(&self, gw: usize, t: usize, peer: usize) -> bool {
        let Some(end) = self.end(gw, t) else {
            return false;
        };
        let pair = end.sender.and_then(|spi| end.pair(spi));
        // The other half is nearly always the same tunnel's, read with this record.
        let held =
            |spi| self.end(peer, t).is_some_and(|e| e.pair(spi).is_some()) || self.has(peer, spi);
        pair.is_some_and(|p| !p.expired && held(p.spi_out))
    }

    /// Whether `gw` holds any Child SA of tunnel `t`.
    pub fn holds(&self, gw: usize, t: usize) -> bool {
        self.end(gw, t).is_some_and(|e| !e.pairs.is_empty())
    }

    /// The pair `spi_in` at `gw` changed: `None` if `gw` does not hold it, else whether
    /// the tunnel's other end holds its other half. The looks this settles go to
    /// `moot_timers`: the pair's own, and with the other half there, the other half's
    /// (which waited for this one).
    pub fn settle(&mut self, gw: usize, spi_in: u32) -> Option<bool> {
        let t = *self.tunnel_of_spi.get(&(gw, spi_in))?;
        let [x, y] = &mut self.tunnels.get_mut(t)?.ends;
        let (mine, other) = if x.as_ref().is_some_and(|e| e.gw == gw) {
            (x.as_mut()?, y.as_mut())
        } else {
            (y.as_mut().filter(|e| e.gw == gw)?, x.as_mut())
        };
        let p = mine.pair_mut(spi_in)?;
        self.moot_timers.extend(p.look.take());
        let spi_out = p.spi_out;
        let half = other.and_then(|o| o.pair_mut(spi_out));
        Some(half.is_some_and(|h| {
            if h.spi_out == spi_in {
                self.moot_timers.extend(h.look.take());
            }
            true
        }))
    }

    /// Records the oracle's look at the pair `spi_in` at `gw` (see [`Self::settle`]).
    pub fn set_look(&mut self, gw: usize, spi_in: u32, look: TimerId) {
        if let Some(p) = self.pair_mut(gw, spi_in) {
            p.look = Some(look);
        }
    }

    /// Pairs with a look of the oracle pending.
    #[cfg(test)]
    pub fn looks_pending(&self) -> usize {
        let ends = self.tunnels.iter().flat_map(|t| t.ends.iter().flatten());
        ends.flat_map(|e| e.pairs.iter())
            .filter(|p| p.look.is_some())
            .count()
    }

    /// Records the timer of the pair's hard time lifetime.
    pub fn set_expiry(&mut self, gw: usize, spi_in: u32, expiry: TimerId) {
        if let Some(p) = self.pair_mut(gw, spi_in) {
            p.expiry = Some(expiry);
        }
    }

    /// The oracle's look at the pair is due (this takes it): the pair's (tunnel, IKE SA,
    /// outbound SPI) and whether the tunnel's other end holds its other half by now.
    pub fn take_look(&mut self, gw: usize, spi_in: u32) -> Option<(usize, SaId, u32, bool)> {
        let t = *self.tunnel_of_spi.get(&(gw, spi_in))?;
        let ends = &mut self.tunnels.get_mut(t)?.ends;
        let p = ends
            .iter_mut()
            .flatten()
            .find(|e| e.gw == gw)?
            .pair_mut(spi_in)?;
        p.look.take()?;
        let (tunnel, sa, spi_out) = (p.tunnel, p.sa, p.spi_out);
        let other_holds = (ends.iter().flatten()).any(|e| e.gw != gw && e.pair(spi_out).is_some());
        Some((tunnel, sa, spi_out, other_holds))
    }

    /// Where tunnel `t`'s record lies, as (address, length) to `hint`: for a driver
    /// that prefetches it (see `sim_core::prefetch`).
    pub fn locate(&self, t: usize, mut hint: impl FnMut(*const u8, usize)) {
        if let Some(r) = self.tunnels.get(t) {
            hint(
                r as *const TunnelPlane as *const u8,
                std::mem::size_of::<TunnelPlane>(),
            );
        }
    }

    /// The IKE SA of the pair, if it exists and was neither rekeyed nor expired (so a
    /// rekey of it makes sense).
    pub fn rekeyable(&self, gw: usize, spi_in: u32) -> Option<SaId> {
        self.pair(gw, spi_in).filter(|p| !p.retired).map(|p| p.sa)
    }

    /// Installs a Child SA the endpoint of `gw` reported; `old_spi_in` names the pair it
    /// replaces after a rekey.
    pub fn install(
        &mut self,
        gw: usize,
        tunnel: usize,
        sa: SaId,
        child: &ChildSa,
        old_spi_in: Option<u32>,
        lifetime: Lifetime,
    ) {
        let replay_window = self.flows.get(&tunnel).map_or(64, |f| f.replay_window);
        // An inbound SPI is the gateway's own and unique; one installed again replaces
        // its pair.
        if let Some(t) = self.tunnel_of_spi.insert((gw, child.spi_in), tunnel)
            && let Some(end) = end_mut(&mut self.tunnels, gw, t)
            && t != tunnel
        {
            if let Some(gone) = end.pairs.remove(child.spi_in) {
                self.moot_timers.extend(gone.timers.into_iter().flatten());
            }
            end.choose_sender();
        }
        self.tunnel_of_sa.insert((gw, sa), tunnel);
        if self.tunnels.len() <= tunnel {
            self.tunnels.resize_with(tunnel + 1, TunnelPlane::default);
        }
        let ends = &mut self.tunnels[tunnel].ends;
        let at = match ends
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.gw == gw))
        {
            Some(at) => at,
            None => {
                let free = ends.iter().position(Option::is_none);
                let at = free.expect("a tunnel has two ends");
                ends[at] = Some(End {
                    gw,
                    pairs: Pairs::default(),
                    sender: None,
                });
                at
            }
        };
        let end = ends[at].as_mut().expect("just found");
        let old = old_spi_in.and_then(|o| end.pair_mut(o));
        let ours = old.as_ref().is_some_and(|o| o.started);
        // The end that started the rekey sends on the new SA at once; so does an end
        // whose old SA is gone already (its Delete overtook the rekey's answer).
        let old_gone = old_spi_in.is_some() && old.is_none();
        if let Some(old) = old {
            old.started = false;
            old.retired = true;
        }
        let sending = old_spi_in.is_none() || ours || old_gone;
        self.installed += 1;
        self.changed.push(PairChange::Installed {
            gw,
            tunnel,
            spi_in: child.spi_in,
        });
        let pair = Pair {
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            tunnel,
            sa,
            inbound: Inbound::new(
                child.spi_in,
                child.aead,
                child.encr_in,
                child.esn,
                replay_window,
                lifetime,
            ),
            outbound: Outbound::new(
                child.spi_out,
                child.aead,
                child.encr_out,
                child.esn,
                lifetime,
            ),
            order: self.installed,
            sending,
            predecessor: old_spi_in.filter(|_| !sending),
            retired: false,
            started: false,
            soft_reported: false,
            expired: false,
            look: None,
            expiry: None,
        };
        match end.pair_mut(child.spi_in) {
            Some(p) => {
                self.moot_timers.extend(p.timers().into_iter().flatten());
                *p = pair;
            }
            None => end.pairs.push(pair),
        }
        if sending {
            end.sender = Some(child.spi_in);
        }
    }

    /// The endpoint of `gw` deleted the pair `spi_in`: successors waiting for that
    /// Delete start sending, and the gateway sends on its newest sending pair.
    pub fn remove(&mut self, gw: usize, spi_in: u32) {
        let Some(t) = self.tunnel_of_spi.remove(&(gw, spi_in)) else {
            return;
        };
        let Some(end) = end_mut(&mut self.tunnels, gw, t) else {
            return;
        };
        let Some(gone) = end.pairs.remove(spi_in) else {
            return;
        };
        self.moot_timers.extend(gone.timers.into_iter().flatten());
        self.changed.push(PairChange::Removed {
            gw,
            tunnel: gone.tunnel,
            spi_out: gone.spi_out,
        });
        end.promote_successors(spi_in);
        end.choose_sender();
    }

    /// `gw` is deleting the pair `spi_in`: it sends on it no more (strongSwan removes
    /// the outbound SA first), but still accepts what arrives until the peer answered.
    pub fn stop_sending(&mut self, gw: usize, spi_in: u32) {
        let Some(&t) = self.tunnel_of_spi.get(&(gw, spi_in)) else {
            return;
        };
        let Some(end) = end_mut(&mut self.tunnels, gw, t) else {
            return;
        };
        let Some(p) = end.pair_mut(spi_in) else {
            return;
        };
        p.sending = false;
        p.retired = true;
        end.promote_successors(spi_in);
        end.choose_sender();
    }

    /// The IKE SA `sa` of `gw` is gone, and its Child SAs with it.
    pub fn remove_sa(&mut self, gw: usize, sa: SaId) {
        let Some(tunnel) = self.tunnel_of_sa.remove(&(gw, sa)) else {
            return;
        };
        let doomed: Vec<u32> = (self.end(gw, tunnel).into_iter())
            .flat_map(|e| e.pairs.iter().filter(|p| p.sa == sa))
            .map(|p| p.spi_in)
            .collect();
        for spi in doomed {
            self.remove(gw, spi);
        }
    }

    /// An IKE SA rekey moved the Child SAs of `old` to `new`.
    pub fn move_sa(&mut self, gw: usize, old: SaId, new: SaId) {
        let Some(tunnel) = self.tunnel_of_sa.remove(&(gw, old)) else {
            return;
        };
        self.tunnel_of_sa.insert((gw, new), tunnel);
        if let Some(end) = end_mut(&mut self.tunnels, gw, tunnel) {
            for p in end.pairs.iter_mut().filter(|p| p.sa == old) {
                p.sa = new;
            }
        }
    }

    /// The pair's hard time lifetime ran out: it carries nothing more. Returns its IKE
    /// SA if the pair still exists.
    pub fn expire(&mut self, gw: usize, spi_in: u32) -> Option<SaId> {
        let p = self.pair_mut(gw, spi_in)?;
        p.expired = true;
        p.retired = true;
        Some(p.sa)
    }

    /// The flow sequence number of the next packet of (tunnel, direction).
    pub fn next_seq(&mut self, tunnel: usize, dir: usize) -> u64 {
        let n = &mut self.flows.get_mut(&tunnel).expect("a flow").next_seq[dir];
        *n += 1;
        *n
    }

    /// Seals an inner packet at `gw` for tunnel `t`: the ESP packet to send and a limit
    /// it crossed, or `None` when it cannot be sent (counted).
    pub fn seal(
        &mut self,
        crypto: &dyn CryptoProvider,
        gw: usize,
        t: usize,
        inner: &[u8],
    ) -> Option<(Vec<u8>, Option<Crossed>)> {
        let stats = &mut self.flows.get_mut(&t).expect("a flow").summary;
        stats.offered_packets += 1;
        stats.offered_bytes += inner.len() as u64;
        let end = end_mut(&mut self.tunnels, gw, t);
        let Some(p) = end.and_then(|e| e.sender.and_then(|spi| e.pair_mut(spi))) else {
            stats.no_sa += 1;
            return None;
        };
        if p.expired {
            stats.expired += 1;
            return None;
        }
        match p.outbound.seal(crypto, inner, esp::NEXT_IPV4) {
            Ok(bytes) => {
                stats.sent_packets += 1;
                Some((bytes, limit(p)))
            }
            // Sealing fails only at the end of a lifetime (or of the sequence space).
            Err(_) => {
                stats.expired += 1;
                None
            }
        }
    }

    /// Opens an ESP packet of tunnel `t`, direction `dir` (0: from its initiator) that
    /// arrived at `gw`; returns a lifetime limit it crossed. Every outcome is counted on
    /// the flow; a replayed packet that got through anyway is returned as a violation.
    /// A `copy` (a duplicate, replay or forgery, not the first arrival of a packet sent)
    /// is counted apart: refused, or delivered when its packet had not been.
    pub fn open(
        &mut self,
        crypto: &dyn CryptoProvider,
        gw: usize,
        t: usize,
        dir: usize,
        packet: &mut [u8],
        copy: bool,
    ) -> Result<Option<Crossed>, String> {
        let Some(flow) = self.flows.get_mut(&t) else {
            return Ok(None); // no traffic configured: not ours
        };
        // A copy's refusals land in a scratch record, not on the flow.
        let mut refused_copy;
        let stats = match copy {
            true => {
                flow.summary.copies_arrived += 1;
                refused_copy = TrafficSummary::default();
                &mut refused_copy
            }
            false => {
                flow.summary.arrived += 1;
                &mut flow.summary
            }
        };
        let spi = packet
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
        let tunnels = &mut self.tunnels;
        let Some(p) = spi.and_then(|spi| pair_mut(&self.tunnel_of_spi, tunnels, gw, spi)) else {
            // The receiver does not hold this SA: not yet (the new SA of a rekey whose
            // response is still on its way) or no longer (deleted).
            stats.unknown_spi += 1;
            return Ok(None);
        };
        if p.expired {
            stats.expired += 1;
            return Ok(None);
        }
        let inner = match p.inbound.open_in_place(crypto, packet) {
            Ok((inner, _)) => &packet[inner],
            Err(EspError::Replay) => {
                stats.replayed += 1;
                return Ok(None);
            }
            Err(EspError::Integrity) => {
                stats.integrity_failures += 1;
                return Ok(None);
            }
            Err(EspError::Expired) => {
                stats.expired += 1;
                return Ok(limit(p));
            }
            Err(_) => {
                stats.malformed += 1;
                return Ok(None);
            }
        };
        let crossed = limit(p);
        let Some(seq) = inner
            .get(INNER_HEADER..MIN_PACKET)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        else {
            stats.malformed += 1;
            return Ok(crossed);
        };
        match copy {
            true => flow.summary.copies_delivered += 1,
            false => {
                flow.summary.delivered_packets += 1;
                flow.summary.delivered_bytes += inner.len() as u64;
            }
        }
        let bits = &mut flow.delivered[dir];
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            return Err(format!(
                "tunnel {}: packet {seq} of direction {dir} accepted twice (replay)",
                flow.summary.tunnel
            ));
        }
        bits[word] |= 1 << bit;
        Ok(crossed)
    }

    /// Aggregate mode: `packets` packets of `bytes` in all from `gw` on tunnel `t`, counted
    /// at the sender's outbound SA and the peer's matching inbound SA. Returns the limits
    /// crossed, as (gateway, limit).
    pub fn account(
        &mut self,
        gw: usize,
        peer: usize,
        t: usize,
        packets: u64,
        bytes: u64,
    ) -> Vec<(usize, Crossed)> {
        let stats = &mut self.flows.get_mut(&t).expect("a flow").summary;
        stats.offered_packets += packets;
        stats.offered_bytes += bytes;
        let mut crossed = Vec::new();
        let end = end_mut(&mut self.tunnels, gw, t);
        let Some(p) = end.and_then(|e| e.sender.and_then(|spi| e.pair_mut(spi))) else {
            stats.no_sa += packets;
            return crossed;
        };
        if p.expired || p.outbound.account(packets, bytes).is_err() {
            stats.expired += packets;
            return crossed;
        }
        stats.sent_packets += packets;
        crossed.extend(limit(p).map(|c| (gw, c)));
        let spi_out = p.spi_out;
        let Some(q) = pair_mut(&self.tunnel_of_spi, &mut self.tunnels, peer, spi_out) else {
            stats.unknown_spi += packets;
            return crossed;
        };
        stats.arrived += packets;
        if q.expired || q.inbound.account(packets, bytes).is_err() {
            stats.expired += packets;
            return crossed;
        }
        stats.delivered_packets += packets;
        stats.delivered_bytes += bytes;
        crossed.extend(limit(q).map(|c| (peer, c)));
        crossed
    }
}

/// The limit this pair has just reached, once: soft asks for a rekey (unless the pair
/// was already rekeyed or is being rekeyed), hard for a delete.
fn limit(p: &mut Pair) -> Option<Crossed> {
    let spi_in = p.spi_in;
    match p.outbound.lifetime_state().max(p.inbound.lifetime_state()) {
        LifetimeState::Hard if !p.expired => {
            p.expired = true;
            p.retired = true;
            Some(Crossed::Hard(spi_in))
        }
        LifetimeState::Soft if !p.soft_reported => {
            p.soft_reported = true;
            Some(Crossed::Soft(spi_in))
        }
        _ => None,
    }
}
