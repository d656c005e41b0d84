//! ESP traffic through the tunnels' Child SAs ([`crate::dataplane`] holds the SAs):
//! packets one by one or aggregate ticks, and the Child SA lifetimes that traffic
//! reaches (a soft limit rekeys, a hard one deletes), with the data plane kept in step
//! with the endpoints' Child SA events.

use std::net::SocketAddrV4;

use ikev2::endpoint::{ChildSa, Event, SaId, Start};
use sim_core::{RngExt, SimDuration, SimTime};

use super::{Ev, World};
use crate::config::TrafficPattern;
use crate::dataplane::{Crossed, ESP_PORT};

impl World {
    /// Sends one packet of a tunnel's traffic and schedules the next.
    pub(super) fn send_packet(&mut self, t: usize, dir: usize) {
        let tun = &mut self.tunnels[t];
        let tr = tun.spec.as_ref().and_then(|s| s.traffic.as_ref());
        let tr = tr.expect("a flow");
        let rng = &mut tun.traffic_rng;
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
        // Inner addresses: the sites behind the two gateways. The payload: the flow
        // sequence number, then zeros up to the packet's size.
        let site =
            |g: usize| SocketAddrV4::new([10, 200 + (g >> 8) as u8 % 50, g as u8, 1].into(), 9);
        let (src, dst) = (site(gw), site(peer));
        let inner =
            sim_core::ipv4::udp_packet_padded(src, dst, seq as u16, &seq.to_be_bytes(), size - 36);
        let Some((esp, crossed)) = self.dp.seal(&*self.esp_crypto, gw, t, &inner) else {
            return;
        };
        let dst = SocketAddrV4::new(*self.gateways[peer].addr.ip(), ESP_PORT);
        self.send_from(gw, ESP_PORT, dst, esp, Some(t));
        if let Some(c) = crossed {
            self.on_limit(gw, c);
        }
    }

    /// An ESP packet of tunnel `t` reached gateway `gw`.
    pub(super) fn esp_arrived(&mut self, t: usize, gw: usize, packet: &mut [u8], copy: bool) {
        // Direction 0 runs from the tunnel's initiator to its responder.
        let dir = usize::from(gw != self.tunnels[t].responder);
        match self.dp.open(&*self.esp_crypto, gw, t, dir, packet, copy) {
            Ok(Some(c)) => self.on_limit(gw, c),
            Ok(None) => {}
            Err(violation) => self.oracle.report(self.sim.now(), violation),
        }
    }

    /// Counts the last tick's packets of an aggregate flow in each sending direction.
    pub(super) fn aggregate_tick(&mut self, t: usize) {
        let tun = &self.tunnels[t];
        let tr = tun.spec.as_ref().and_then(|s| s.traffic.clone());
        let tr = tr.expect("a flow");
        let tick = tr.aggregate_tick;
        let start = SimTime::from_nanos(tun.summary.start_ns);
        let since_start = self.sim.now().saturating_since(start);
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

    pub(super) fn on_limit(&mut self, gw: usize, crossed: Crossed) {
        match crossed {
            Crossed::Soft(spi_in) => self.rekey_child(gw, spi_in, true),
            Crossed::Hard(spi_in) => self.child_expire(gw, spi_in),
        }
    }

    /// This gateway rekeys the Child SA: after a soft volume limit (strongSwan rekeys on
    /// the kernel's soft expire, whichever end sees it first) or a refused rekey.
    pub(super) fn rekey_child(&mut self, gw: usize, spi_in: u32, volume: bool) {
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
                    .and_then(|&t| self.dp.flow_mut(t))
            {
                f.volume_rekeys += 1;
            }
        }
        self.retry_if_busy(gw, start, Ev::GatewayChildRekey { gw, spi_in, volume });
    }

    /// A hard limit (time, bytes or packets): the Child SA carries nothing more and this
    /// gateway deletes it.
    pub(super) fn child_expire(&mut self, gw: usize, spi_in: u32) {
        let Some(sa) = self.dp.expire(gw, spi_in) else {
            return;
        };
        if let Some(&t) = self.sa_tunnel.get(&(gw, sa)) {
            self.tunnels[t].down_now("child SA expired");
            self.refresh_up(t);
        }
        let now = self.now_ns();
        let start = self.gateways[gw].ep.delete_child(now, sa, spi_in);
        self.drain(gw);
        if start == Start::Started
            && let Some(f) = self
                .sa_tunnel
                .get(&(gw, sa))
                .and_then(|&t| self.dp.flow_mut(t))
        {
            f.hard_expiries += 1;
        }
        self.retry_if_busy(gw, start, Ev::ChildExpire { gw, spi_in });
    }

    /// The lifetime of a new Child SA of tunnel `t`: the soft limits less their random
    /// part, drawn from the tunnel's own stream.
    pub(super) fn child_lifetime(&mut self, t: usize) -> esp::Lifetime {
        let tun = &mut self.tunnels[t];
        let Some(spec) = tun.spec.as_deref() else {
            return esp::Lifetime::default();
        };
        let rng = &mut tun.life_rng;
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
    pub(super) fn install_child(
        &mut self,
        gw: usize,
        t: usize,
        sa: SaId,
        child: &ChildSa,
        old_spi_in: Option<u32>,
    ) {
        let life = self.child_lifetime(t);
        self.dp.install(gw, t, sa, child, old_spi_in, life);
        if let Some(after) = self.tunnels[t].life.child_life {
            let entity = self.gateways[gw].entity;
            let spi_in = child.spi_in;
            let at = self.sim.now() + after;
            let expiry = self
                .sim
                .set_timer(entity, at, Ev::ChildExpire { gw, spi_in });
            self.dp.set_expiry(gw, spi_in, expiry);
        }
    }

    /// Keeps the data plane's ESP SAs in step with the endpoint's Child SAs.
    pub(super) fn update_data_plane(&mut self, gw: usize, ev: &Event) {
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
                    && self.tunnels[t]
                        .spec
                        .as_ref()
                        .is_some_and(|s| s.traffic.is_some())
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

    /// Traffic and no Child SA (the last one hit a hard limit): the initiator creates
    /// one on the IKE SA that is up.
    pub(super) fn create_child(&mut self, tunnel: usize) {
        let gw = self.tunnels[tunnel].initiator;
        if let Some(sa) = self.tunnels[tunnel].current
            && !self.dp.holds(gw, tunnel)
        {
            let now = self.now_ns();
            let start = self.gateways[gw].ep.create_child(now, sa);
            self.drain(gw);
            self.retry_if_busy(gw, start, Ev::CreateChild { tunnel });
        }
    }
}
