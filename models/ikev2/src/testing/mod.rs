//! Test harness (feature `testing`): `Pair`, two endpoints joined by a virtual link
//! with latency, an MTU and seeded loss, stepped from one wake-up to the next (the idea
//! of quinn-proto's test `Pair`), and [`attack`], the same pair with an attacker on the
//! path. The crate's integration tests and its fuzz targets share it.

pub mod attack;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::crypto::{CryptoProvider, RealCrypto};
use crate::endpoint::{Endpoint, EndpointConfig, Event, PeerConfig, Ppk};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Alters the nth datagram offered to a link.
pub type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>)>;

/// Takes the nth datagram offered to a link and says what the link carries instead:
/// nothing (dropped), it, it twice, other datagrams as well (an attacker on the path).
pub type Mutate = Box<dyn FnMut(usize, Vec<u8>) -> Vec<Vec<u8>>>;

/// One direction of the virtual link.
pub struct Link {
    pub latency: u64,
    /// Largest IP datagram carried; bigger ones are dropped (as a path that drops
    /// IP fragments would).
    pub mtu: usize,
    /// Loss probability in millionths.
    pub loss_ppm: u32,
    rng: ChaCha20Rng,
    in_flight: Vec<(u64, SocketAddr, Vec<u8>)>,
    /// Source port of every datagram offered.
    pub ports: Vec<u16>,
    /// Called on every datagram sent; may alter it.
    pub tamper: Option<Tamper>,
    /// Called after `tamper`; may drop, duplicate, replace or add datagrams.
    pub mutate: Option<Mutate>,
    /// Datagrams offered to the link so far, and handed to the far endpoint.
    pub offered: usize,
    pub delivered: usize,
    pub dropped: usize,
}

impl Link {
    fn new(seed: u64) -> Self {
        Link {
            latency: 10 * MS,
            mtu: 1500,
            loss_ppm: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
            in_flight: Vec::new(),
            ports: Vec::new(),
            tamper: None,
            mutate: None,
            offered: 0,
            delivered: 0,
            dropped: 0,
        }
    }

    fn send(&mut self, now: u64, src: SocketAddr, mut payload: Vec<u8>) {
        let n = self.offered;
        self.offered += 1;
        if let Some(t) = self.tamper.as_mut() {
            t(n, &mut payload);
        }
        let carried = match self.mutate.as_mut() {
            Some(m) => m(n, payload),
            None => vec![payload],
        };
        for payload in carried {
            let lost = self.rng.next_u32() % 1_000_000 < self.loss_ppm;
            if lost || payload.len() + 28 > self.mtu {
                self.dropped += 1;
                continue;
            }
            self.ports.push(src.port());
            self.in_flight.push((now + self.latency, src, payload));
        }
    }
}

/// Answers PPK requests: as initiator with `initiator_key`, as responder from `store`.
#[derive(Default, Clone)]
pub struct PpkSource {
    pub initiator_key: Option<Ppk>,
    pub store: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl PpkSource {
    pub fn with(id: &str, key: &[u8]) -> Self {
        let mut store = BTreeMap::new();
        store.insert(id.as_bytes().to_vec(), key.to_vec());
        PpkSource {
            initiator_key: Some(Ppk {
                id: id.as_bytes().to_vec(),
                key: key.to_vec(),
            }),
            store,
        }
    }

    fn answer(&self, key_id: Option<&[u8]>) -> Option<Ppk> {
        match key_id {
            None => self.initiator_key.clone(),
            Some(id) => self.store.get(id).map(|k| Ppk {
                id: id.to_vec(),
                key: k.clone(),
            }),
        }
    }
}

pub struct Pair {
    pub now: u64,
    /// `eps[0]` initiates (10.0.0.1), `eps[1]` responds (10.0.0.2).
    pub eps: [Endpoint; 2],
    pub addrs: [SocketAddr; 2],
    /// `links[0]` carries 0 -> 1, `links[1]` carries 1 -> 0.
    pub links: [Link; 2],
    pub events: [Vec<(u64, Event)>; 2],
    pub ppk: [PpkSource; 2],
}

impl Pair {
    /// Two endpoints configured by `tweak` from a default peer pair (PSK "secret").
    pub fn new(seed: u64, tweak: impl Fn(usize, &mut PeerConfig)) -> Pair {
        Self::with_crypto(seed, tweak, || Box::new(RealCrypto))
    }

    pub fn with_crypto(
        seed: u64,
        tweak: impl Fn(usize, &mut PeerConfig),
        crypto: impl Fn() -> Box<dyn CryptoProvider>,
    ) -> Pair {
        let addrs = [addr("10.0.0.1:500"), addr("10.0.0.2:500")];
        let ids = ["gw-a.example", "gw-b.example"];
        let eps = [0usize, 1].map(|i| {
            let mut peer = PeerConfig::new(
                &format!("to-{}", ids[1 - i]),
                addrs[1 - i],
                ids[i].parse().unwrap(),
                ids[1 - i].parse().unwrap(),
                b"secret",
            );
            tweak(i, &mut peer);
            let rng = ChaCha20Rng::seed_from_u64(seed.wrapping_mul(2).wrapping_add(i as u64));
            Endpoint::new(
                EndpointConfig::new(addrs[i]),
                vec![peer],
                crypto(),
                Box::new(rng),
            )
        });
        Pair {
            now: 0,
            eps,
            addrs,
            links: [1, 2].map(|k| Link::new(seed.wrapping_mul(7).wrapping_add(k))),
            events: [Vec::new(), Vec::new()],
            ppk: [PpkSource::default(), PpkSource::default()],
        }
    }

    /// Moves transmits onto the links and answers PPK requests, until quiet.
    fn drain(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..2 {
                while let Some(t) = self.eps[i].poll_transmit() {
                    assert_eq!(t.dst.ip(), self.addrs[1 - i].ip());
                    assert_eq!(t.src.ip(), self.addrs[i].ip());
                    self.links[i].send(self.now, t.src, t.payload);
                }
                while let Some(ev) = self.eps[i].poll_event() {
                    if let Event::PpkNeeded { sa, key_id, .. } = &ev {
                        let answer = self.ppk[i].answer(key_id.as_deref());
                        let sa = *sa;
                        self.events[i].push((self.now, ev));
                        self.eps[i].provide_ppk(self.now, sa, answer);
                        busy = true;
                    } else {
                        self.events[i].push((self.now, ev));
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Advances to the next delivery or timer; false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.drain();
        let next_delivery = self
            .links
            .iter()
            .flat_map(|l| l.in_flight.iter().map(|p| p.0))
            .min();
        let next_timer = self.eps.iter().filter_map(|e| e.poll_timeout()).min();
        let Some(next) = [next_delivery, next_timer].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        for i in 0..2 {
            let due: Vec<(u64, SocketAddr, Vec<u8>)> = {
                let l = &mut self.links[i];
                let (due, later): (Vec<_>, Vec<_>) =
                    l.in_flight.drain(..).partition(|p| p.0 <= self.now);
                l.in_flight = later;
                due
            };
            for (_, from, d) in due {
                self.links[i].delivered += 1;
                self.eps[1 - i].handle_datagram(self.now, from, &d);
            }
        }
        for e in &mut self.eps {
            if e.poll_timeout().is_some_and(|t| t <= self.now) {
                e.handle_timeout(self.now);
            }
        }
        self.drain();
        true
    }

    /// Starts a handshake from endpoint 0 and runs until both sides are done (established
    /// or failed) or `limit` nanoseconds pass.
    pub fn handshake(&mut self, limit: u64) {
        self.eps[0].initiate(self.now, 0);
        while self.now < limit && !(self.done(0) && self.done(1)) {
            if !self.step() {
                break;
            }
        }
    }

    pub fn done(&self, i: usize) -> bool {
        self.established(i).is_some() || self.failed(i).is_some()
    }

    pub fn established(&self, i: usize) -> Option<&Event> {
        self.events[i]
            .iter()
            .map(|e| &e.1)
            .find(|e| matches!(e, Event::IkeSaEstablished { .. }))
    }

    pub fn failed(&self, i: usize) -> Option<(u64, &Event)> {
        self.events[i]
            .iter()
            .find(|e| matches!(e.1, Event::IkeSaFailed { .. }))
            .map(|(t, e)| (*t, e))
    }

    pub fn child(&self, i: usize) -> Option<&crate::endpoint::ChildSa> {
        self.events[i].iter().find_map(|e| match &e.1 {
            Event::ChildSaReady { child, .. } => Some(child),
            _ => None,
        })
    }

    /// (exchange, request fragments, response fragments, retransmissions) of every
    /// exchange endpoint `i` initiated.
    pub fn exchanges(&self, i: usize) -> Vec<(u8, usize, usize, u32)> {
        self.events[i]
            .iter()
            .filter_map(|e| match &e.1 {
                Event::Exchange { stats, .. } => Some((
                    stats.exchange,
                    stats.request_fragments,
                    stats.response_fragments,
                    stats.retransmissions,
                )),
                _ => None,
            })
            .collect()
    }
}

pub fn established_keys(
    p: &Pair,
    i: usize,
) -> (&crate::keys::IkeKeys, &crate::endpoint::PpkOutcome, &str) {
    match p.established(i) {
        Some(crate::endpoint::Event::IkeSaEstablished {
            keys,
            ppk,
            proposal,
            ..
        }) => (keys, ppk, proposal),
        _ => panic!("side {i} not established: {:?}", p.events[i]),
    }
}

pub fn fail_reason(p: &Pair, i: usize) -> &crate::endpoint::FailReason {
    match p.failed(i) {
        Some((_, crate::endpoint::Event::IkeSaFailed { reason, .. })) => reason,
        _ => panic!("side {i} did not fail: {:?}", p.events[i]),
    }
}

/// The first (or, with `last`, the latest) IKE key set side `i` reported.
pub fn key_set(p: &Pair, i: usize, last: bool) -> crate::endpoint::KeylogEntry {
    let mut sets = p.events[i].iter().filter_map(|e| match &e.1 {
        crate::endpoint::Event::Keys { entry, .. } => Some(entry.clone()),
        _ => None,
    });
    let set = if last { sets.next_back() } else { sets.next() };
    set.expect("a key set")
}

/// Opens the protected, unfragmented message `d` sealed with `key`, lets `edit` change
/// its header and payloads, and seals it again with the same key, so that only what
/// `edit` changed is wrong. False (and `d` as it was) if `d` is no such message.
pub fn reseal(
    d: &mut Vec<u8>,
    aead: crate::crypto::AeadAlg,
    key: &[u8],
    edit: impl FnOnce(&mut crate::message::Header, &mut Vec<crate::message::Payload>),
) -> bool {
    use crate::protect::{self, Opened};
    let Ok(Opened::Whole {
        mut header,
        first,
        inner,
    }) = protect::open(&RealCrypto, aead, key, d)
    else {
        return false;
    };
    let Ok(mut payloads) = protect::decode_inner(first, &inner) else {
        return false;
    };
    edit(&mut header, &mut payloads);
    let first = payloads.first().map_or(
        crate::consts::payload_type::NONE,
        crate::message::Payload::kind,
    );
    let mut inner = Vec::new();
    crate::message::encode_payloads(&payloads, &mut inner);
    // An IV counter far from the sender's own, so no IV repeats under the key.
    let mut iv = 1 << 40;
    *d = protect::seal(&RealCrypto, aead, key, &mut iv, &header, first, &inner);
    true
}
