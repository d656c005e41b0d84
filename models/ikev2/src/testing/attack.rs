//! Two endpoints through handshakes, rekeys, new and deleted Child SAs while an attacker
//! on the path drops, duplicates, replays, modifies and injects datagrams. With `keyed`
//! it holds the keys of every IKE SA (read from the keylog as the endpoints derive
//! them) and seals its changes again, so they pass the ICV and reach the exchanges:
//! payloads dropped, duplicated, reordered, notify data and types, nonces, key shares,
//! message IDs, exchange types, SPIs and flags changed. [`scenario`] checks that every
//! datagram delivered is counted as received and that, without the keys, no two ends
//! of an IKE or Child SA hold different keys; a panic is the endpoint's.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::{Mutate, Pair, SEC, reseal};
use crate::consts::{exchange, flags, notify};
use crate::endpoint::{ChildSa, Event, KeylogEntry};
use crate::message::{Header, Message, Notify, Payload};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// The keys of every IKE SA either end derived, by (SPIi, SPIr).
type Keys = Rc<RefCell<BTreeMap<(u64, u64), KeylogEntry>>>;

/// How often the attacker does what, in thousandths of the datagrams it sees.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub drop: u32,
    pub duplicate: u32,
    pub replay: u32,
    pub modify: u32,
    pub inject: u32,
}

const EXCHANGES: [u8; 6] = [
    exchange::IKE_SA_INIT,
    exchange::IKE_AUTH,
    exchange::CREATE_CHILD_SA,
    exchange::INFORMATIONAL,
    exchange::IKE_INTERMEDIATE,
    exchange::IKE_FOLLOWUP_KE,
];

/// One change to a message's header or payloads.
fn edit(rng: &mut ChaCha20Rng, header: &mut Header, payloads: &mut Vec<Payload>) {
    let pick = |rng: &mut ChaCha20Rng, n: usize| rng.next_u32() as usize % n.max(1);
    match rng.next_u32() % 10 {
        0 => header.message_id = header.message_id.wrapping_add(pick(rng, 3) as u32),
        1 => header.exchange = EXCHANGES[pick(rng, EXCHANGES.len())],
        2 if !payloads.is_empty() => {
            let i = pick(rng, payloads.len());
            payloads.remove(i);
        }
        3 if !payloads.is_empty() => {
            let i = pick(rng, payloads.len());
            payloads.insert(i, payloads[i].clone());
        }
        4 => payloads.reverse(),
        5 => {
            for p in payloads.iter_mut() {
                if let Payload::Notify(n) = p {
                    let keep = pick(rng, n.data.len() + 1);
                    n.data.truncate(keep);
                    if rng.next_u32().is_multiple_of(2) {
                        n.kind = [
                            notify::NO_PROPOSAL_CHOSEN,
                            notify::INVALID_KE_PAYLOAD,
                            notify::TEMPORARY_FAILURE,
                            notify::CHILD_SA_NOT_FOUND,
                            notify::INVALID_SYNTAX,
                            notify::AUTHENTICATION_FAILED,
                        ][pick(rng, 6)];
                    }
                }
            }
        }
        6 => {
            for p in payloads.iter_mut() {
                if let Payload::Nonce(n) = p {
                    n.truncate(pick(rng, 40));
                }
            }
        }
        7 => {
            for p in payloads.iter_mut() {
                if let Payload::Ke { data, method } = p {
                    let keep = pick(rng, data.len() + 1);
                    data.truncate(keep);
                    if rng.next_u32().is_multiple_of(4) {
                        *method = method.wrapping_add(1);
                    }
                }
            }
        }
        8 => header.spi_r ^= 1 << pick(rng, 64),
        _ => header.flags ^= [flags::RESPONSE, flags::INITIATOR][pick(rng, 2)],
    }
}

/// `d` changed: sealed again with the sender's key when the attacker has it and `keyed`,
/// edited in the clear when it is not protected (IKE_SA_INIT), else bits flipped or cut.
fn modify(rng: &mut ChaCha20Rng, keys: &Keys, keyed: bool, mut d: Vec<u8>) -> Vec<u8> {
    if let Ok(msg) = Message::decode(&d) {
        let h = msg.header;
        if keyed && let Some(k) = keys.borrow().get(&(h.spi_i, h.spi_r)).cloned() {
            let key = if h.flags & flags::INITIATOR != 0 {
                &k.sk_ei
            } else {
                &k.sk_er
            };
            if reseal(&mut d, k.aead, key, |h, p| edit(rng, h, p)) {
                return d;
            }
        }
        if h.exchange == exchange::IKE_SA_INIT && rng.next_u32().is_multiple_of(2) {
            let (mut header, mut payloads) = (msg.header, msg.payloads);
            edit(rng, &mut header, &mut payloads);
            return Message { header, payloads }.encode();
        }
    }
    match rng.next_u32() % 2 {
        0 if !d.is_empty() => {
            let i = rng.next_u32() as usize % d.len();
            d[i] ^= 1 << (rng.next_u32() % 8);
        }
        _ => d.truncate(rng.next_u32() as usize % (d.len() + 1)),
    }
    d
}

/// A message the attacker makes up about `d`'s SA: an error notify in a response or a
/// request, sealed with the SA's key when it has it (and `keyed`).
fn forge(rng: &mut ChaCha20Rng, keys: &Keys, keyed: bool, d: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::decode(d).ok()?;
    let mut header = msg.header;
    header.flags ^= flags::RESPONSE;
    let kind = [
        notify::NO_PROPOSAL_CHOSEN,
        notify::INVALID_KE_PAYLOAD,
        notify::AUTHENTICATION_FAILED,
        notify::INVALID_SYNTAX,
    ][rng.next_u32() as usize % 4];
    let forged = Message {
        header,
        payloads: vec![Payload::Notify(Notify::new(kind, vec![0, 31]))],
    }
    .encode();
    let key = keys.borrow().get(&(header.spi_i, header.spi_r)).cloned();
    match key.filter(|_| keyed && header.exchange != exchange::IKE_SA_INIT) {
        // Any protected message of this SA, resealed with the notify as its content.
        Some(k) => {
            let mut sealed = d.to_vec();
            let key = if header.flags & flags::INITIATOR != 0 {
                &k.sk_ei
            } else {
                &k.sk_er
            };
            reseal(&mut sealed, k.aead, key, |h, p| {
                *h = header;
                *p = vec![Payload::Notify(Notify::new(kind, vec![]))];
            })
            .then_some(sealed)
        }
        None => Some(forged),
    }
}

fn attacker(seed: u64, rates: Rates, keys: Keys, keyed: bool) -> Mutate {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut history: Vec<Vec<u8>> = Vec::new();
    Box::new(move |_, d| {
        let r = rng.next_u32() % 1000;
        history.push(d.clone());
        if history.len() > 32 {
            history.remove(0);
        }
        let mut bound = rates.drop;
        if r < bound {
            return vec![];
        }
        bound += rates.duplicate;
        if r < bound {
            return vec![d.clone(), d];
        }
        bound += rates.replay;
        if r < bound {
            let old = history[rng.next_u32() as usize % history.len()].clone();
            return vec![d, old];
        }
        bound += rates.modify;
        if r < bound {
            return vec![modify(&mut rng, &keys, keyed, d)];
        }
        bound += rates.inject;
        if r < bound {
            let extra = forge(&mut rng, &keys, keyed, &d);
            return std::iter::once(d).chain(extra).collect();
        }
        vec![d]
    })
}

/// Records the keys of every key set the endpoints reported since `seen`.
fn learn(p: &Pair, seen: &mut [usize; 2], keys: &Keys) {
    for (events, seen) in p.events.iter().zip(seen.iter_mut()) {
        for (_, e) in &events[*seen..] {
            if let Event::Keys { entry, .. } = e {
                keys.borrow_mut()
                    .insert((entry.spi_i, entry.spi_r), entry.clone());
            }
        }
        *seen = events.len();
    }
}

/// Steps until `until` (or nothing is left to do), keeping the attacker's keys current.
fn run_until(p: &mut Pair, until: u64, seen: &mut [usize; 2], keys: &Keys) {
    let mut steps = 0;
    while p.now < until && steps < 20_000 && p.step() {
        learn(p, seen, keys);
        steps += 1;
    }
}

/// Established IKE SAs' keys by SPIs, and the Child SAs, as end `i` reported them.
pub fn reported(p: &Pair, i: usize) -> (BTreeMap<(u64, u64), KeylogEntry>, Vec<ChildSa>) {
    let mut ike = BTreeMap::new();
    let mut children = Vec::new();
    for (_, e) in &p.events[i] {
        match e {
            Event::IkeSaEstablished { keylog, .. } | Event::IkeSaRekeyed { keylog, .. } => {
                ike.insert((keylog.spi_i, keylog.spi_r), keylog.clone());
            }
            Event::ChildSaReady { child, .. } | Event::ChildSaRekeyed { child, .. } => {
                children.push(child.clone())
            }
            _ => {}
        }
    }
    (ike, children)
}

pub fn scenario(seed: u64, rates: Rates, keyed: bool) -> Result<Pair, String> {
    let mut p = Pair::new(seed, |_, peer| {
        *peer = peer
            .clone()
            .with_ike(&["aes256gcm16-prfsha256-x25519-ke1_mlkem768"])
            .unwrap()
            .with_esp(&["aes256gcm16-x25519"])
            .unwrap();
    });
    for l in &mut p.links {
        l.mtu = 1280;
    }
    let keys: Keys = Rc::default();
    p.links[0].mutate = Some(attacker(seed ^ 0xa5, rates, keys.clone(), keyed));
    p.links[1].mutate = Some(attacker(seed ^ 0x5a, rates, keys.clone(), keyed));
    let mut seen = [0; 2];
    let mut ops = ChaCha20Rng::seed_from_u64(seed ^ 0x0f0f);
    p.eps[0].initiate(p.now, 0);
    run_until(&mut p, 30 * SEC, &mut seen, &keys);
    // Whatever stands: rekeys, new and deleted Child SAs, from either end, every 20 s.
    for round in 0..6u64 {
        for i in 0..2 {
            let sas: Vec<u64> = p.events[i]
                .iter()
                .filter_map(|e| match &e.1 {
                    Event::IkeSaEstablished { sa, .. } => Some(*sa),
                    Event::IkeSaRekeyed { new, .. } => Some(*new),
                    _ => None,
                })
                .filter(|&sa| p.eps[i].is_established(sa))
                .collect();
            let children: Vec<u32> = reported(&p, i).1.iter().map(|c| c.spi_in).collect();
            let (Some(&sa), now) = (sas.last(), p.now) else {
                continue;
            };
            let spi = children
                .get(ops.next_u32() as usize % children.len().max(1))
                .copied()
                .unwrap_or(0);
            let _ = match ops.next_u32() % 4 {
                0 => p.eps[i].rekey_ike(now, sa),
                1 => p.eps[i].rekey_child(now, sa, spi),
                2 => p.eps[i].create_child(now, sa),
                _ => p.eps[i].delete_child(now, sa, spi),
            };
        }
        run_until(&mut p, (50 + 20 * round) * SEC, &mut seen, &keys);
    }
    for i in 0..2 {
        // Every datagram handed to an endpoint is counted as received.
        let received = p.eps[i].stats().datagrams_received;
        if received != p.links[1 - i].delivered as u64 {
            return Err(format!(
                "end {i} counted {received} datagrams, {} were delivered",
                p.links[1 - i].delivered
            ));
        }
    }
    if !keyed {
        // An attacker without the keys cannot make two ends hold different keys.
        let ((ike0, ch0), (ike1, ch1)) = (reported(&p, 0), reported(&p, 1));
        for (spis, k0) in &ike0 {
            if let Some(k1) = ike1.get(spis)
                && (&k0.sk_ei, &k0.sk_er) != (&k1.sk_ei, &k1.sk_er)
            {
                return Err(format!("IKE SA {spis:x?}: the ends hold different keys"));
            }
        }
        for a in &ch0 {
            for b in ch1
                .iter()
                .filter(|b| b.spi_in == a.spi_out && b.spi_out == a.spi_in)
            {
                if a.encr_in != b.encr_out || a.encr_out != b.encr_in {
                    return Err(format!(
                        "Child SA {:08x}: the ends hold different keys",
                        a.spi_in
                    ));
                }
            }
        }
    }
    Ok(p)
}
