//! Attackers on the path (`[[adversary]]`): each sits in front of one gateway and,
//! while active, screens every datagram arriving there, dropping, delaying, reordering,
//! duplicating, replaying, bit-flipping or rewriting header fields of some (its own
//! random stream decides), forges answers to what it sees (IKE_SA_INIT error
//! responses back to the sender, unprotected notifies, ESP packets with a live SPI),
//! and may flood the gateway with IKE_SA_INIT requests from its peers' addresses. It
//! holds no keys: what it changes or makes up fails the checks of a protected message,
//! which the endpoints and the ESP data plane count, and the oracles watch the rest.

use std::collections::VecDeque;

use ikev2::consts::{exchange, flags, notify, transform_type as tt};
use ikev2::crypto::KeMethod;
use ikev2::message::{Header, Message, Notify, Payload};
use link::Datagram;
use rand_core::Rng;
use results::AdversarySummary;
use serde::Serialize;
use sim_core::{EntityId, SimDuration, SimRng, SimTime, TraceEvent};

use super::{Ev, World};
use crate::config::{AdversarySpec, AdversaryTarget};

/// Datagrams kept for replays.
const HISTORY: usize = 64;

pub(super) struct Adversary {
    pub spec: AdversarySpec,
    pub gw: usize,
    pub entity: EntityId,
    rng: SimRng,
    /// Recent datagrams that passed, with their link, direction and tunnel.
    history: VecDeque<(usize, usize, Datagram, Option<usize>)>,
    /// A datagram held back (`reorder`) until the next one has passed.
    held: Option<(usize, usize, Datagram, Option<usize>)>,
    pub summary: AdversarySummary,
}

impl Adversary {
    pub fn new(spec: AdversarySpec, gw: usize, entity: EntityId, rng: SimRng) -> Self {
        let summary = AdversarySummary {
            gateway: spec.gateway.clone(),
            ..Default::default()
        };
        Adversary {
            spec,
            gw,
            entity,
            rng,
            history: VecDeque::new(),
            held: None,
            summary,
        }
    }

    fn active(&self, now: SimTime) -> bool {
        now >= self.spec.from && self.spec.until.is_none_or(|u| now < u)
    }
}

/// True with probability `p`, from an adversary's stream (always one draw, so the
/// stream does not depend on which probabilities are 0).
fn chance(rng: &mut SimRng, p: f64) -> bool {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    p > 0.0 && u < p
}

/// Rewrites one header field of `d` with random bytes (IKE: the SPIs, next payload,
/// version, exchange type, flags, message ID or length; ESP: SPI or sequence number).
/// False if `d` is too short to have that header.
fn rewrite(rng: &mut SimRng, d: &mut Datagram, esp: bool) -> bool {
    // (offset, length) of the fields, from the start of the header.
    const IKE: [(usize, usize); 8] = [
        (0, 8),
        (8, 8),
        (16, 1),
        (17, 1),
        (18, 1),
        (19, 1),
        (20, 4),
        (24, 4),
    ];
    const ESP: [(usize, usize); 2] = [(0, 4), (4, 4)];
    let fields = if esp { &ESP[..] } else { &IKE[..] };
    let (offset, len) = fields[rng.next_u64() as usize % fields.len()];
    let Some(field) = d.payload.get_mut(offset..offset + len) else {
        return false;
    };
    rng.fill_bytes(field);
    true
}

/// A datagram made up about `d`, and whether it goes back to `d`'s sender: an error
/// response to an IKE_SA_INIT request (back), an unprotected error notify under any
/// other IKE message's header (SPIs, flags, message ID), or an ESP packet with `d`'s
/// SPI, the next sequence number and a random body of the same length.
fn forge(rng: &mut SimRng, d: &Datagram, esp: bool) -> Option<(bool, Datagram)> {
    if esp {
        let mut payload = d.payload.clone();
        let seq = u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?);
        payload[4..8].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
        rng.fill_bytes(&mut payload[8..]);
        return Some((
            false,
            Datagram {
                payload,
                ..d.clone()
            },
        ));
    }
    let header = Message::decode(&d.payload).ok()?.header;
    let init_request = header.exchange == exchange::IKE_SA_INIT
        && header.flags & flags::RESPONSE == 0
        && header.spi_r == 0;
    let (kind, data) = match (init_request, rng.next_u64() % 2) {
        (true, 0) => (notify::NO_PROPOSAL_CHOSEN, vec![]),
        // A group the sender may well have offered, so that it could retry with it.
        (true, _) => (notify::INVALID_KE_PAYLOAD, 31u16.to_be_bytes().to_vec()),
        (false, 0) => (notify::AUTHENTICATION_FAILED, vec![]),
        (false, _) => (notify::INVALID_SYNTAX, vec![]),
    };
    let forged = Message {
        header: Header {
            spi_r: match init_request {
                true => rng.next_u64() | 1,
                false => header.spi_r,
            },
            flags: match init_request {
                true => flags::RESPONSE,
                false => header.flags,
            },
            ..header
        },
        payloads: vec![Payload::Notify(Notify::new(kind, data))],
    };
    let payload = forged.encode();
    let datagram = match init_request {
        true => Datagram {
            src: d.dst,
            dst: d.src,
            payload,
        },
        false => Datagram {
            payload,
            ..d.clone()
        },
    };
    Some((init_request, datagram))
}

/// What an adversary did, as a trace line.
#[derive(Serialize)]
struct Act<'a> {
    gateway: &'a str,
    action: &'static str,
    bytes: usize,
}

impl TraceEvent for Act<'_> {
    fn kind(&self) -> &'static str {
        "adversary.act"
    }
}

impl World {
    /// Runs a datagram arriving at `gw` past the adversaries in front of it; returns it
    /// (perhaps changed) if it goes on now, `None` if it was dropped or held back.
    /// What it holds back or makes up is delivered unscreened by the adversaries.
    pub(super) fn screen(
        &mut self,
        gw: usize,
        link: usize,
        dir: usize,
        mut datagram: Datagram,
        tunnel: Option<usize>,
    ) -> Option<Datagram> {
        let now = self.sim.now();
        // The simulator carries IKE without the non-ESP marker (the endpoint's
        // datagrams), so ESP is what belongs to a tunnel's data plane.
        let esp = tunnel.is_some();
        for a in 0..self.adversaries.len() {
            let adv = &mut self.adversaries[a];
            let targeted = match adv.spec.only {
                AdversaryTarget::All => true,
                AdversaryTarget::Ike => !esp,
                AdversaryTarget::Esp => esp,
            };
            if adv.gw != gw || !targeted || !adv.active(now) {
                continue;
            }
            adv.summary.seen += 1;
            let mut acts: Vec<&'static str> = Vec::new();
            // (when, link, direction, datagram, tunnel, whether it is a copy)
            let mut extra: Vec<(SimTime, usize, usize, Datagram, Option<usize>, bool)> = Vec::new();
            let mut keep = true;
            // A forgery went ahead: the datagram follows it rather than overtaking it.
            let mut ahead = false;
            if chance(&mut adv.rng, adv.spec.drop) {
                adv.summary.dropped += 1;
                acts.push("drop");
                keep = false;
            } else {
                if chance(&mut adv.rng, adv.spec.modify) && !datagram.payload.is_empty() {
                    let bit = adv.rng.next_u64() as usize % (datagram.payload.len() * 8);
                    datagram.payload[bit / 8] ^= 1 << (bit % 8);
                    adv.summary.modified += 1;
                    acts.push("modify");
                }
                if chance(&mut adv.rng, adv.spec.rewrite)
                    && rewrite(&mut adv.rng, &mut datagram, esp)
                {
                    adv.summary.rewritten += 1;
                    acts.push("rewrite");
                }
                if chance(&mut adv.rng, adv.spec.forge)
                    && let Some((back, forged)) = forge(&mut adv.rng, &datagram, esp)
                {
                    adv.summary.forged += 1;
                    acts.push("forge");
                    // An answer to the sender travels the link back; anything else
                    // reaches the gateway just ahead of the datagram it imitates.
                    if back {
                        let latency = self.links[link].channels[1 - dir].config().latency;
                        extra.push((now + latency, link, 1 - dir, forged, None, true));
                    } else {
                        extra.push((now, link, dir, forged, tunnel, true));
                        ahead = true;
                    }
                }
                if chance(&mut adv.rng, adv.spec.duplicate) {
                    adv.summary.duplicated += 1;
                    acts.push("duplicate");
                    extra.push((now, link, dir, datagram.clone(), tunnel, true));
                }
                if chance(&mut adv.rng, adv.spec.replay) && !adv.history.is_empty() {
                    let i = adv.rng.next_u64() as usize % adv.history.len();
                    let (l, d, old, t) = adv.history[i].clone();
                    adv.summary.replayed += 1;
                    acts.push("replay");
                    extra.push((now, l, d, old, t, true));
                }
                if chance(&mut adv.rng, adv.spec.reorder) && keep && adv.held.is_none() {
                    adv.summary.reordered += 1;
                    acts.push("reorder");
                    adv.held = Some((link, dir, datagram.clone(), tunnel));
                    keep = false;
                }
                if chance(&mut adv.rng, adv.spec.delay_probability)
                    && keep
                    && adv.spec.delay > SimDuration::ZERO
                {
                    adv.summary.delayed += 1;
                    acts.push("delay");
                    extra.push((
                        now + adv.spec.delay,
                        link,
                        dir,
                        datagram.clone(),
                        tunnel,
                        false,
                    ));
                    keep = false;
                }
            }
            if keep && ahead {
                extra.push((now, link, dir, datagram.clone(), tunnel, false));
                keep = false;
            }
            // This one goes on now: the one held back follows it.
            if keep && let Some((l, d, held, t)) = adv.held.take() {
                extra.push((now, l, d, held, t, false));
            }
            adv.history.push_back((link, dir, datagram.clone(), tunnel));
            if adv.history.len() > HISTORY {
                adv.history.pop_front();
            }
            let entity = adv.entity;
            for action in acts {
                let line = Act {
                    gateway: &self.gateways[gw].name,
                    action,
                    bytes: datagram.payload.len(),
                };
                self.sim.trace(entity, &line);
            }
            for (at, link, dir, datagram, tunnel, copy) in extra {
                self.sim.schedule_at(
                    entity,
                    at,
                    Ev::Deliver {
                        link: link as u32,
                        dir: dir as u8,
                        datagram,
                        tunnel: tunnel.map(|t| t as u32),
                        screened: true,
                        copy,
                    },
                );
            }
            if !keep {
                return None;
            }
        }
        Some(datagram)
    }

    /// One IKE_SA_INIT of adversary `a`'s flood, from the next of its gateway's peers'
    /// addresses, then the next one's event.
    pub(super) fn flood(&mut self, a: usize) {
        let now = self.sim.now();
        let adv = &self.adversaries[a];
        if !adv.active(now) || adv.spec.flood_pps <= 0.0 {
            return;
        }
        let gw = adv.gw;
        let peers = &self.gateways[gw].peer_cfgs;
        if peers.is_empty() {
            return;
        }
        let peer = &peers[adv.summary.injected as usize % peers.len()];
        let (from, proposal) = (peer.remote, peer.ike.first().cloned());
        let Some(proposal) = proposal else { return };
        let adv = &mut self.adversaries[a];
        let method = proposal
            .of(tt::KE)
            .next()
            .and_then(|k| KeMethod::from_id(k.id));
        let Some(method) = method else { return };
        let (_, ke) = self.esp_crypto.ke_initiate(method, &mut adv.rng);
        let mut nonce = vec![0; 32];
        adv.rng.fill_bytes(&mut nonce);
        let spi_i = adv.rng.next_u64() | 1;
        let request = Message {
            header: Header {
                spi_i,
                spi_r: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
            },
            payloads: vec![
                Payload::Sa(vec![proposal.to_wire(1, Vec::new())]),
                Payload::Ke {
                    method: method.id(),
                    data: ke,
                },
                Payload::Nonce(nonce),
                Payload::Notify(Notify::new(notify::INTERMEDIATE_EXCHANGE_SUPPORTED, vec![])),
            ],
        }
        .encode();
        adv.summary.injected += 1;
        let (entity, interval) = (
            adv.entity,
            (1e9 / adv.spec.flood_pps).round().max(1.0) as u64,
        );
        let line = Act {
            gateway: &self.gateways[gw].name,
            action: "inject",
            bytes: request.len(),
        };
        self.sim.trace(entity, &line);
        self.sim.schedule(
            entity,
            SimDuration::from_nanos(interval),
            Ev::Flood { adversary: a },
        );
        if self.gateways[gw].down {
            return;
        }
        let ns = self.now_ns();
        self.gateways[gw].ep.handle_datagram(ns, from, &request);
        self.drain(gw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_ike_keeps_the_header() {
        let h = Header {
            spi_i: 0x1111,
            spi_r: 0x2222,
            exchange: exchange::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: 1,
        };
        let m = Message {
            header: h,
            payloads: vec![Payload::Nonce(vec![1; 32])],
        };
        let d = Datagram {
            src: "10.0.0.1:500".parse().unwrap(),
            dst: "10.0.0.2:500".parse().unwrap(),
            payload: m.encode(),
        };
        let mut rng = sim_core::entity::stream(1, "x", "y");
        let (back, f) = forge(&mut rng, &d, false).unwrap();
        let got = Message::decode(&f.payload).unwrap();
        assert!(!back);
        assert_eq!(got.header, h);
    }
}
