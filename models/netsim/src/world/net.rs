//! The network: gateways (each an `ikev2` endpoint at one address) and links (one
//! `link` channel per direction), datagrams from an endpoint onto the link towards
//! their destination, deliveries back into the endpoint, and its timer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use ikev2::endpoint::{Endpoint, PeerConfig};
use link::{Channel, Datagram};
use sim_core::{EntityId, SimTime, TimerId};

use super::{Ev, World};
use crate::cpu::Cpu;
use crate::dataplane::ESP_PORT;

pub(super) const IKE_PORT: u16 = 500;

pub(super) struct Gateway {
    pub name: String,
    pub entity: EntityId,
    pub addr: SocketAddrV4,
    /// The route of a gateway with one link (most, in a hub and spoke): (neighbour's
    /// address, link, direction), read from this record instead of the world's routes,
    /// whose random entry would be one more cache miss per datagram at scale.
    pub sole_route: Option<(Ipv4Addr, u32, u8)>,
    pub ep: Endpoint,
    /// What a reboot starts again from.
    pub peer_cfgs: std::sync::Arc<[PeerConfig]>,
    pub restarts: u32,
    /// Rebooting: everything that arrives is lost.
    pub down: bool,
    /// A `corrupt-child-key` fault is armed for the next Child SA.
    pub corrupt_next: bool,
    pub kme: Option<usize>,
    pub timer: Option<TimerId>,
    /// Peer index in the endpoint -> tunnel.
    pub peer_tunnel: Vec<usize>,
    /// A finite CPU, if the scenario gives it one.
    pub cpu: Option<Cpu>,
    /// Its cache of QKD keys, if the scenario gives it one.
    pub key_cache: Option<crate::config::KeyCacheConfig>,
}

pub(super) struct SimLink {
    pub name: String,
    pub ends: [usize; 2],
    pub entities: [EntityId; 2],
    pub channels: [Channel; 2],
}

impl World {
    /// Sends what a gateway's endpoint queued, handles its events, re-arms its timer.
    pub(super) fn drain(&mut self, gw: usize) {
        let now = self.sim.now();
        let mut ready = now;
        loop {
            // With a CPU model, the work just done is a job on the gateway's cores; what
            // it sends leaves when the job ends.
            if let Some(cpu) = self.gateways[gw].cpu.as_mut() {
                let cost = cpu.meter.take();
                if cost > 0 {
                    ready = cpu.run(ready, cost);
                }
            }
            let entity = self.gateways[gw].entity;
            while let Some(t) = self.gateways[gw].ep.poll_transmit() {
                if ready == now {
                    self.send(gw, t.dst, t.payload);
                } else if let SocketAddr::V4(dst) = t.dst {
                    let payload = t.payload;
                    self.sim
                        .schedule_at(entity, ready, Ev::Send { gw, dst, payload });
                }
            }
            if ready > now && !self.ending {
                // The gateway acts on what the work found once the work is done.
                self.sim.schedule_at(entity, ready, Ev::Resume { gw });
                break;
            }
            let Some(ev) = self.gateways[gw].ep.poll_event() else {
                break;
            };
            self.on_endpoint_event(gw, ev);
        }
        let entity = self.gateways[gw].entity;
        let old = self.gateways[gw].timer.take();
        // A deadline already past (one an ended exchange had kept hidden, such as an
        // overdue liveness check) is due now: the endpoint is called at once.
        self.gateways[gw].timer = match self.gateways[gw].ep.poll_timeout() {
            Some(t) => Some(self.sim.reset_timer(
                old,
                entity,
                SimTime::from_nanos(t).max(now),
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

    pub(super) fn send(&mut self, gw: usize, dst: SocketAddr, payload: Vec<u8>) {
        if let SocketAddr::V4(dst) = dst {
            self.send_from(gw, IKE_PORT, dst, payload, None);
        }
    }

    /// Puts a UDP datagram from `gw`'s port `port` on the link towards `dst`; an ESP
    /// packet carries the tunnel it belongs to along (the simulator's bookkeeping, not
    /// on the wire), so that several tunnels between two gateways are told apart.
    pub(super) fn send_from(
        &mut self,
        gw: usize,
        port: u16,
        dst: SocketAddrV4,
        payload: Vec<u8>,
        tunnel: Option<usize>,
    ) {
        let route = match self.gateways[gw].sole_route {
            Some((to, link, dir)) if to == *dst.ip() => Some((link as usize, dir as usize)),
            _ => self.routes.get(&(gw, IpAddr::V4(*dst.ip()))).copied(),
        };
        let Some((link, dir)) = route else {
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
        // A second delivery of one send is the link's duplicate. (The scratch vector
        // goes back afterwards, its capacity kept for the next send.)
        let mut deliveries = std::mem::take(&mut self.deliveries);
        for (i, d) in deliveries.drain(..).enumerate() {
            self.sim.schedule_at(
                entity,
                d.at,
                Ev::Deliver {
                    link: link as u32,
                    dir: dir as u8,
                    datagram: d.datagram,
                    tunnel: tunnel.map(|t| t as u32),
                    screened: false,
                    copy: i > 0,
                },
            );
        }
        self.deliveries = deliveries;
    }

    /// A datagram arrives at the far end of `link`: past the adversaries in front of the
    /// gateway (unless it is one of their copies), ESP goes to the data plane, IKE to
    /// the gateway's endpoint (nothing, while the gateway is down).
    pub(super) fn deliver(
        &mut self,
        link: usize,
        dir: usize,
        datagram: Datagram,
        tunnel: Option<usize>,
        screened: bool,
        copy: bool,
    ) {
        let gw = self.links[link].ends[1 - dir];
        if self.gateways[gw].down {
            return;
        }
        let mut datagram = match screened || self.adversaries.is_empty() {
            true => datagram,
            false => match self.screen(gw, link, dir, datagram, tunnel) {
                Some(d) => d,
                None => return,
            },
        };
        if let (ESP_PORT, Some(t)) = (datagram.dst.port(), tunnel) {
            self.esp_arrived(t, gw, &mut datagram.payload, copy);
            return;
        }
        let from = SocketAddr::V4(datagram.src);
        let now = self.now_ns();
        if let Some(cpu) = &self.gateways[gw].cpu {
            cpu.meter.add(cpu.costs.message.as_nanos());
        }
        self.gateways[gw]
            .ep
            .handle_datagram(now, from, &datagram.payload);
        self.drain(gw);
    }

    /// The gateway's endpoint timer fired.
    pub(super) fn gateway_timer(&mut self, gw: usize) {
        self.gateways[gw].timer = None;
        let now = self.now_ns();
        self.gateways[gw].ep.handle_timeout(now);
        self.drain(gw);
    }
}
