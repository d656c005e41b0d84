//! A sans-IO IKEv2 endpoint holding many IKE SAs, in quinn-proto's shape.
//!
//! Inputs: [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`] and commands
//! ([`Endpoint::initiate`], [`Endpoint::provide_ppk`]). Outputs, drained after every
//! input: [`Endpoint::poll_transmit`], [`Endpoint::poll_event`], and
//! [`Endpoint::poll_timeout`] for the next instant `handle_timeout` is due. Time is
//! integer nanoseconds from the driver; the endpoint never reads a clock, never blocks,
//! and draws every random byte (SPIs, nonces, keys) from the stream it was given.
//!
//! The handshake: IKE_SA_INIT (main KE, COOKIE and INVALID_KE_PAYLOAD handling,
//! fragmentation / IKE_INTERMEDIATE / USE_PPK notifies), one IKE_INTERMEDIATE per
//! negotiated additional KE with key updates and IntAuth (RFC 9242, 9370), then IKE_AUTH
//! with PSK, RFC 8784 PPKs and the first Child SA. RFC 7383 fragmentation, retransmission
//! with strongSwan's backoff, responses replayed from cache, half-open expiry.

mod config;
mod events;
mod sa;

pub use config::{EndpointConfig, Identity, PeerConfig, PpkPolicy, Timers};
pub use events::{
    ChildSa, DowngradeReason, EndpointStats, Event, ExchangeOutcome, ExchangeStats, FailReason,
    KeylogEntry, Ppk, PpkOutcome, SaId, Start, Transmit,
};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use foldhash::fast::FixedState;
use rand_core::CryptoRng;

use crate::consts::{exchange, flags, notify, payload_type as pt};
use crate::crypto::{CryptoProvider, PrfAlg};
use crate::message::{DecodeErrorKind, Header, Message, Notify, Payload};
use sa::{Ctx, IkeSa, Phase};

/// Transmits and events waiting to be polled, and counters.
/// Inbound ESP SPIs in use at an endpoint (see [`Outputs`]).
pub(crate) type EspSpis = HashSet<u32, FixedState>;

#[derive(Default)]
pub(crate) struct Outputs {
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: EndpointStats,
    /// IKE SAs an IKE SA rekey created, to be filed under our SPI.
    new_sas: Vec<IkeSa>,
    /// Inbound ESP SPIs of our Child SAs and of those being negotiated: a new one is
    /// never one of them (at a hub of thousands of tunnels, random 32-bit SPIs collide
    /// within a day). A negotiation that fails keeps its SPI out of use. A hash set
    /// with a fixed seed, as `Endpoint::sas`: our own random SPIs, only looked up.
    esp_spis: EspSpis,
}

/// The next output, or none; an emptied queue gives back its room, which a handshake's
/// burst of outputs made and an endpoint with one peer, idle for an hour between
/// rekeys, would otherwise hold on to (a simulation holds thousands of endpoints).
fn pop_or_release<T>(q: &mut VecDeque<T>) -> Option<T> {
    let next = q.pop_front();
    if next.is_none() && q.capacity() > 2 {
        *q = VecDeque::new();
    }
    next
}

/// Our SPI of the SA a peer's message is for: the peer's messages carry it as SPIr if
/// they come from the original initiator, as SPIi otherwise.
fn our_spi(h: &Header) -> SaId {
    if h.from_initiator() { h.spi_r } else { h.spi_i }
}

/// Many IKE SAs behind one IKE address.
pub struct Endpoint {
    shared: Shared,
    /// IKE SAs by our SPI: a hash map, as a hub holds thousands and looks one up for
    /// every message (with a fixed seed: the keys are our own random SPIs, no peer
    /// chooses them; walked only in SPI order, see `finish`).
    /// Boxed: an `IkeSa` is large, and a hash table keeps slots free.
    sas: HashMap<SaId, Box<IkeSa>, FixedState>,
    /// Responder SAs by (peer address, initiator SPI), to spot IKE_SA_INIT retransmissions.
    /// A B-tree, not a fixed-seed hash map: the peer chooses these keys, and could
    /// choose them to collide.
    by_init: BTreeMap<(SocketAddr, u64), SaId>,
    /// Responder SAs that may still be half-open (see `half_open`).
    responding: BTreeSet<SaId>,
    /// (deadline, SA) for every SA with a timer, earliest first. An entry counts while
    /// its SA's `IkeSa::indexed` is that deadline; a changed deadline leaves the old
    /// entry behind, dropped when it reaches the top (kept live after every change) or
    /// when such entries outnumber the SAs. A heap rather than an ordered set: a hub
    /// re-arms thousands of SAs' timers, and a push is cheaper than a B-tree's remove
    /// and insert.
    timers: BinaryHeap<Reverse<(u64, SaId)>>,
    cookie_secret: [u8; 32],
}

/// What every IKE SA works with: configuration, crypto, randomness and the outputs.
struct Shared {
    config: EndpointConfig,
    /// Shared with whoever made the endpoint (a simulated gateway keeps them to start
    /// again from after a reboot): a hub has thousands.
    peers: Arc<[PeerConfig]>,
    /// The first peer configuration at each remote address, sorted by address: who
    /// an IKE_SA_INIT is from, without a walk over thousands of peers at a hub. A sorted
    /// slice, not a map: it never changes, and a map's smallest node would cost a
    /// gateway with one peer more than the slice costs a hub per peer.
    peer_at: Box<[(IpAddr, usize)]>,
    crypto: Box<dyn CryptoProvider>,
    rng: Box<dyn CryptoRng>,
    out: Outputs,
}

impl Shared {
    /// The context for an SA with peer `peer` at time `now`.
    fn ctx(&mut self, now: u64, peer: usize) -> Ctx<'_> {
        Ctx::new(
            now,
            &*self.crypto,
            &mut *self.rng,
            &self.peers,
            peer,
            &self.config,
            &mut self.out,
        )
    }
}

impl Endpoint {
    /// An endpoint for `peers`, with crypto from `crypto` and every random byte from
    /// `rng` (in the simulator, the gateway's seeded ChaCha20 stream).
    pub fn new(
        config: EndpointConfig,
        peers: impl Into<Arc<[PeerConfig]>>,
        crypto: Box<dyn CryptoProvider>,
        mut rng: Box<dyn CryptoRng>,
    ) -> Self {
        let peers = peers.into();
        let mut cookie_secret = [0u8; 32];
        rng.fill_bytes(&mut cookie_secret);
        let mut peer_at: Vec<(IpAddr, usize)> = (peers.iter().enumerate())
            .map(|(i, p)| (p.remote.ip(), i))
            .collect();
        // Sorted by address, then index: the first of each address is kept.
        peer_at.sort_unstable();
        peer_at.dedup_by_key(|(ip, _)| *ip);
        Endpoint {
            shared: Shared {
                config,
                peers,
                peer_at: peer_at.into_boxed_slice(),
                crypto,
                rng,
                out: Outputs::default(),
            },
            sas: HashMap::default(),
            by_init: BTreeMap::new(),
            responding: BTreeSet::new(),
            timers: BinaryHeap::new(),
            cookie_secret,
        }
    }

    pub fn peers(&self) -> &[PeerConfig] {
        &self.shared.peers
    }

    pub fn crypto_name(&self) -> &'static str {
        self.shared.crypto.name()
    }

    pub fn stats(&self) -> &EndpointStats {
        &self.shared.out.stats
    }

    /// IKE SAs currently held (half-open, established, or closing).
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Whether `sa` is established.
    pub fn is_established(&self, sa: SaId) -> bool {
        self.sas
            .get(&sa)
            .is_some_and(|s| s.phase == Phase::Established)
    }

    /// The peer's SPI of an established IKE SA: its name for the same SA at the peer.
    pub fn peer_spi(&self, sa: SaId) -> Option<u64> {
        self.sas
            .get(&sa)
            .filter(|s| s.phase == Phase::Established)
            .map(|s| s.peer_spi())
    }

    /// Starts an IKE SA with peer `peer` (an index into the peer list).
    pub fn initiate(&mut self, now: u64, peer: usize) -> SaId {
        let spi = self.fresh_spi();
        let sa = IkeSa::initiate(&mut self.shared.ctx(now, peer), peer, spi);
        self.sas.insert(spi, Box::new(sa));
        self.reindex(spi);
        spi
    }

    /// Rekeys the Child SA whose inbound SPI is `spi_in` (CREATE_CHILD_SA with REKEY_SA,
    /// PFS when the ESP proposal names a key exchange). [`Event::ChildSaRekeyed`] and
    /// then [`Event::ChildSaDeleted`] for the old one follow, if it [`Start`]ed.
    pub fn rekey_child(&mut self, now: u64, sa: SaId, spi_in: u32) -> Start {
        self.start(now, sa, |s, ctx| s.rekey_child(ctx, spi_in))
    }

    /// Creates an additional Child SA with CREATE_CHILD_SA (the configured traffic
    /// selectors; PFS when the ESP proposal names a key exchange): [`Event::ChildSaReady`]
    /// or [`Event::ChildSaFailed`] follows, if it [`Start`]ed.
    pub fn create_child(&mut self, now: u64, sa: SaId) -> Start {
        self.start(now, sa, |s, ctx| s.create_child(ctx))
    }

    /// Rekeys the IKE SA with CREATE_CHILD_SA (a new key exchange of the negotiated
    /// method, new SPIs, the Child SAs moving over). [`Event::IkeSaRekeyed`], then
    /// [`Event::IkeSaDeleted`] for the old SA follow, or [`Event::IkeSaRekeyFailed`].
    /// Additional key exchanges run in IKE_FOLLOWUP_KE exchanges (RFC 9370).
    pub fn rekey_ike(&mut self, now: u64, sa: SaId) -> Start {
        self.start(now, sa, |s, ctx| s.rekey_ike(ctx))
    }

    /// Deletes the Child SA whose inbound SPI is `spi_in` (its hard lifetime ran out):
    /// [`Event::ChildSaDeleted`] follows once the peer answered.
    pub fn delete_child(&mut self, now: u64, sa: SaId, spi_in: u32) -> Start {
        self.start(now, sa, |s, ctx| s.delete_child(ctx, spi_in))
    }

    /// Checks that the peer is alive with an empty INFORMATIONAL request, as dead peer
    /// detection does on its own when `Timers::dpd_delay_ns` is set. A dead peer ends in
    /// [`Event::IkeSaFailed`] with a retransmission timeout. Ignored while another
    /// request of this IKE SA is outstanding.
    pub fn check_liveness(&mut self, now: u64, sa: SaId) {
        self.with_sa(now, sa, |s, ctx| s.check_liveness(ctx));
    }

    /// Deletes an IKE SA: an INFORMATIONAL Delete if it is established, else at once.
    /// [`Event::IkeSaDeleted`] follows.
    pub fn delete(&mut self, now: u64, sa: SaId) {
        self.with_sa(now, sa, |s, ctx| s.delete(ctx));
    }

    /// The driver's answer to [`Event::PpkNeeded`]: the PPK, or `None` when there is
    /// none (an empty QKD pool, an unknown key ID).
    pub fn provide_ppk(&mut self, now: u64, sa: SaId, ppk: Option<Ppk>) {
        self.with_sa(now, sa, |s, ctx| s.on_ppk(ctx, ppk));
    }

    /// One UDP datagram from `from` carrying an IKE message (non-ESP marker removed).
    pub fn handle_datagram(&mut self, now: u64, from: SocketAddr, bytes: &[u8]) {
        self.shared.out.stats.datagrams_received += 1;
        let raw = match Header::parse(bytes) {
            Ok(raw) if raw.length as usize == bytes.len() => raw,
            _ => {
                self.shared.out.stats.dropped_malformed += 1;
                return;
            }
        };
        let h = raw.header;
        if h.exchange == exchange::IKE_SA_INIT && !h.is_response() {
            self.on_init_request(now, from, h, bytes);
            return;
        }
        let ours = our_spi(&h);
        match self.sas.get(&ours) {
            Some(s)
                if s.spi_i == h.spi_i
                    && (s.spi_r == h.spi_r || h.exchange == exchange::IKE_SA_INIT) => {}
            _ => {
                self.shared.out.stats.dropped_unknown_spi += 1;
                return;
            }
        }
        self.with_sa(now, ours, |s, ctx| s.on_message(ctx, raw, bytes, from));
    }

    /// The IKE SA a datagram names (ours of its SPIs), if it parses; for a driver that
    /// looks ahead (see [`locate_sa`](Self::locate_sa)).
    pub fn sa_of_datagram(&self, bytes: &[u8]) -> Option<SaId> {
        Some(our_spi(&Header::parse(bytes).ok()?.header))
    }

    /// The IKE SA whose timer is due next.
    pub fn next_timer_sa(&self) -> Option<SaId> {
        self.timers.peek().map(|&Reverse((_, spi))| spi)
    }

    /// Where IKE SA `sa`'s state lies, as (address, length) to `hint`, and its peer: for
    /// a driver that prefetches the state into the cache while it does other work, before
    /// the SA's next message or timer. Reads only the SA index; changes nothing.
    pub fn locate_sa(&self, sa: SaId, mut hint: impl FnMut(*const u8, usize)) -> Option<usize> {
        let s = self.sas.get(&sa)?;
        hint(
            &**s as *const IkeSa as *const u8,
            std::mem::size_of::<IkeSa>(),
        );
        // Its peer's configuration, which every exchange reads: a hub has thousands.
        if let Some(peer) = self.shared.peers.get(s.peer) {
            hint(
                peer as *const PeerConfig as *const u8,
                std::mem::size_of::<PeerConfig>(),
            );
        }
        s.locate_children(hint);
        Some(s.peer)
    }

    /// Runs every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(&Reverse((deadline, spi))) = self.timers.peek() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            if let Some(s) = self.sas.get_mut(&spi) {
                s.indexed = None;
            }
            self.with_sa(now, spi, |s, ctx| s.on_timeout(ctx));
            self.drop_stale_timers();
        }
    }

    /// The driver stops (a simulation's end): every exchange still in flight is
    /// reported as [`ExchangeOutcome::Unfinished`], so that counts made from the
    /// exchanges add up to the endpoint's counters.
    pub fn finish(&mut self, now: u64) {
        let mut spis: Vec<SaId> = self.sas.keys().copied().collect();
        spis.sort_unstable();
        for spi in spis {
            self.with_sa(now, spi, |s, ctx| {
                s.abandon_exchange(ctx, ExchangeOutcome::Unfinished);
                Ok(())
            });
        }
    }

    /// The next instant `handle_timeout` must be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.peek().map(|&Reverse((t, _))| t)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        pop_or_release(&mut self.shared.out.transmits)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        pop_or_release(&mut self.shared.out.events)
    }

    /// A non-zero SPI no SA of ours uses.
    fn fresh_spi(&mut self) -> SaId {
        loop {
            let spi = self.shared.rng.next_u64();
            if spi != 0 && !self.sas.contains_key(&spi) {
                return spi;
            }
        }
    }

    /// Runs `f` on one SA with a context; then removes the SA if it failed or closed,
    /// and re-indexes its timer.
    /// Asks IKE SA `sa` to start an exchange; `Gone` if there is no such SA.
    fn start(
        &mut self,
        now: u64,
        sa: SaId,
        f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>) -> Result<Start, FailReason>,
    ) -> Start {
        let mut start = Start::Gone;
        self.with_sa(now, sa, |s, ctx| {
            start = f(s, ctx)?;
            Ok(())
        });
        start
    }

    fn with_sa(
        &mut self,
        now: u64,
        spi: SaId,
        f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>) -> Result<(), FailReason>,
    ) {
        let Some(s) = self.sas.get_mut(&spi) else {
            return;
        };
        let mut ctx = self.shared.ctx(now, s.peer);
        if let Err(reason) = f(s, &mut ctx) {
            s.fail(&mut ctx, reason);
        }
        if s.phase == Phase::Gone {
            // Whatever ended the SA, an exchange in flight is reported as given up.
            s.abandon_exchange(&mut ctx, ExchangeOutcome::Abandoned);
            self.remove(spi);
        } else {
            self.reindex(spi);
        }
        for s in std::mem::take(&mut self.shared.out.new_sas) {
            let spi = s.our_spi();
            // A 64-bit SPI already in use is as likely as guessing a key: drop it.
            if let std::collections::hash_map::Entry::Vacant(e) = self.sas.entry(spi) {
                e.insert(Box::new(s));
                self.reindex(spi);
            }
        }
    }

    fn remove(&mut self, spi: SaId) {
        if let Some(s) = self.sas.remove(&spi) {
            for spi_in in s.child_spis() {
                self.shared.out.esp_spis.remove(&spi_in);
            }
            if !s.initiator {
                self.by_init.remove(&(s.init_remote, s.spi_i));
            }
            self.drop_stale_timers();
        }
    }

    fn reindex(&mut self, spi: SaId) {
        let Some(s) = self.sas.get_mut(&spi) else {
            return;
        };
        let next = s.next_deadline();
        if next == s.indexed {
            return;
        }
        s.indexed = next;
        if let Some(t) = next {
            self.timers.push(Reverse((t, spi)));
        }
        self.drop_stale_timers();
    }

    /// Keeps the earliest timer entry a live one (so `poll_timeout` can read it), and
    /// rebuilds the heap from the SAs when old entries outnumber them.
    fn drop_stale_timers(&mut self) {
        let live = |sas: &HashMap<SaId, Box<IkeSa>, FixedState>, t: u64, spi: SaId| {
            sas.get(&spi).is_some_and(|s| s.indexed == Some(t))
        };
        if self.timers.len() > 2 * self.sas.len() + 64 {
            // Built from the SAs in any order: the heap yields them by (deadline, SPI).
            self.timers = (self.sas.iter())
                .filter_map(|(&spi, s)| s.indexed.map(|t| Reverse((t, spi))))
                .collect();
        }
        while let Some(&Reverse((t, spi))) = self.timers.peek() {
            if live(&self.sas, t, spi) {
                break;
            }
            self.timers.pop();
        }
    }

    /// RFC 7296 section 2.6: a stateless cookie over Ni, the peer's address and SPIi.
    fn cookie_for(&self, ni: &[u8], from: SocketAddr, spi_i: u64) -> Vec<u8> {
        let addr = from.ip().to_string();
        self.shared.crypto.prf(
            PrfAlg::HmacSha256,
            &self.cookie_secret,
            &[ni, addr.as_bytes(), &spi_i.to_be_bytes()],
        )
    }

    fn half_open(&mut self) -> usize {
        // Forget those that were established or went away since the last look: each
        // leaves once, so a look costs the half-open SAs, not all SAs.
        let sas = &self.sas;
        (self.responding).retain(|spi| sas.get(spi).is_some_and(|s| s.phase != Phase::Established));
        self.responding.len()
    }

    /// A stateless error (or COOKIE) reply to an IKE_SA_INIT request.
    fn reply_notify(&mut self, to: SocketAddr, request: &Header, n: Notify) {
        let reply = Message {
            header: Header {
                spi_r: 0,
                flags: flags::RESPONSE,
                message_id: 0,
                ..*request
            },
            payloads: vec![Payload::Notify(n)],
        };
        self.shared.out.transmits.push_back(Transmit {
            src: self.shared.config.local,
            dst: to,
            payload: reply.encode(),
        });
    }

    fn on_init_request(&mut self, now: u64, from: SocketAddr, h: Header, bytes: &[u8]) {
        if h.spi_i == 0 || h.spi_r != 0 || h.message_id != 0 {
            self.shared.out.stats.dropped_malformed += 1;
            return;
        }
        // A retransmission of a request we answered: replay the answer.
        if let Some(&spi) = self.by_init.get(&(from, h.spi_i)) {
            let init = self.sas.get(&spi).and_then(|s| s.init_messages());
            match init {
                Some((request, response)) if request == bytes => {
                    let payload = response.to_vec();
                    self.shared.out.stats.responses_resent += 1;
                    self.shared.out.transmits.push_back(Transmit {
                        src: self.shared.config.local,
                        dst: from,
                        payload,
                    });
                }
                _ => self.shared.out.stats.dropped_unexpected += 1,
            }
            return;
        }
        let msg = match Message::decode(bytes) {
            Ok(msg) => msg,
            // RFC 7296 section 2.5: a critical payload we do not know is answered.
            Err(e) if let DecodeErrorKind::UnsupportedCriticalPayload(kind) = e.kind => {
                let n = Notify::new(notify::UNSUPPORTED_CRITICAL_PAYLOAD, vec![kind]);
                self.reply_notify(from, &h, n);
                return;
            }
            Err(_) => {
                self.shared.out.stats.dropped_malformed += 1;
                return;
            }
        };
        let at = &self.shared.peer_at;
        let found = at.binary_search_by_key(&from.ip(), |&(ip, _)| ip);
        let Some(&(_, peer)) = found.ok().map(|i| &at[i]) else {
            self.shared.out.stats.dropped_no_peer += 1;
            return;
        };
        let ni = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let Some(ni) = ni.filter(|n| (16..=256).contains(&n.len())) else {
            self.shared.out.stats.dropped_malformed += 1;
            return;
        };
        if self.half_open() >= self.shared.config.cookie_threshold {
            let expected = self.cookie_for(&ni, from, h.spi_i);
            let presented = matches!(msg.payloads.first(), Some(Payload::Notify(n)) if n.kind == notify::COOKIE && n.data == expected);
            if !presented {
                self.shared.out.stats.cookies_sent += 1;
                self.reply_notify(from, &h, Notify::new(notify::COOKIE, expected));
                return;
            }
        }
        let spi = self.fresh_spi();
        let mut ctx = self.shared.ctx(now, peer);
        match IkeSa::respond(&mut ctx, peer, spi, from, &msg, bytes, ni) {
            Ok(sa) => {
                self.by_init.insert((from, h.spi_i), spi);
                self.responding.insert(spi);
                let peak = &mut self.shared.out.stats.half_open_peak;
                *peak = (*peak).max(self.responding.len() as u64);
                self.sas.insert(spi, Box::new(sa));
                self.reindex(spi);
            }
            Err(n) => self.reply_notify(from, &h, n),
        }
    }
}

/// The SKF Fragment Number of a message, if it is an SKF message (read without
/// decrypting, to recognize retransmitted requests).
fn skf_number(first_payload: u8, bytes: &[u8]) -> Option<u16> {
    (first_payload == pt::SKF && bytes.len() >= 34)
        .then(|| u16::from_be_bytes([bytes[32], bytes[33]]))
}
