//! Attackers on the path (`[[adversary]]`): each sits in front of one gateway and,
//! while active, screens every datagram arriving there, dropping, delaying,
//! duplicating, replaying or bit-flipping some (its own random stream decides), and may
//! flood the gateway with IKE_SA_INIT requests from its peers' addresses. It holds no
//! keys: what it changes in protected messages fails their checks, which the endpoints
//! and the ESP data plane count, and the oracles watch the rest.

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
use crate::dataplane::ESP_PORT;

/// Datagrams kept for replays.
const HISTORY: usize = 64;

pub(super) struct Adversary {
    pub spec: AdversarySpec,
    pub gw: usize,
    pub entity: EntityId,
    rng: SimRng,
    /// Recent datagrams that passed, with their link, direction and tunnel.
    history: VecDeque<(usize, usize, Datagram, Option<usize>)>,
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
    /// Copies it makes are delivered unscreened.
    pub(super) fn screen(
        &mut self,
        gw: usize,
        link: usize,
        dir: usize,
        mut datagram: Datagram,
        tunnel: Option<usize>,
    ) -> Option<Datagram> {
        let now = self.sim.now();
        let esp = datagram.dst.port() == ESP_PORT;
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
            let mut extra: Vec<(SimTime, usize, usize, Datagram, Option<usize>)> = Vec::new();
            let mut keep = true;
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
                if chance(&mut adv.rng, adv.spec.duplicate) {
                    adv.summary.duplicated += 1;
                    acts.push("duplicate");
                    extra.push((now, link, dir, datagram.clone(), tunnel));
                }
                if chance(&mut adv.rng, adv.spec.replay) && !adv.history.is_empty() {
                    let i = adv.rng.next_u64() as usize % adv.history.len();
                    let (l, d, old, t) = adv.history[i].clone();
                    adv.summary.replayed += 1;
                    acts.push("replay");
                    extra.push((now, l, d, old, t));
                }
                if chance(&mut adv.rng, adv.spec.delay_probability)
                    && adv.spec.delay > SimDuration::ZERO
                {
                    adv.summary.delayed += 1;
                    acts.push("delay");
                    extra.push((now + adv.spec.delay, link, dir, datagram.clone(), tunnel));
                    keep = false;
                }
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
            for (at, link, dir, datagram, tunnel) in extra {
                self.sim.schedule_at(
                    entity,
                    at,
                    Ev::Deliver {
                        link,
                        dir,
                        datagram,
                        tunnel,
                        screened: true,
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
