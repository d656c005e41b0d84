//! Faults injected by the scenario: a gateway reboot (all state lost; peers recover by
//! dead peer detection and the initiator starts its tunnels again once it is back) and
//! a corrupted Child SA key (for testing the oracle; armed in the dispatch).

use ikev2::endpoint::{Endpoint, EndpointConfig, SaId};
use sim_core::SimDuration;

use super::build::gateway_crypto;
use super::tunnels::AttemptEnd;
use super::{Ev, World};

impl World {
    /// A reboot: the gateway's endpoint starts from nothing (a new random stream), its
    /// ESP SAs and timers are gone, and its tunnels forget their SAs. Peers keep theirs.
    pub(super) fn gateway_down(&mut self, gw: usize, down_for: SimDuration) {
        let now = self.sim.now();
        let g = &mut self.gateways[gw];
        g.restarts += 1;
        g.down = true;
        if let Some(timer) = g.timer.take() {
            self.sim.cancel_timer(timer);
        }
        let entity = g.entity;
        let rng = Box::new(self.sim.rng(entity, &format!("ike/restart-{}", g.restarts)));
        let crypto = gateway_crypto(self.cfg.crypto, g.cpu.as_ref());
        let config = EndpointConfig::new(g.addr.into());
        g.ep = Endpoint::new(config, g.peer_cfgs.clone(), crypto, rng);
        // In SPI order, whatever the map's: a restart is rare, the walk may be long.
        let mut gone: Vec<SaId> = (self.sa_tunnel.keys())
            .filter(|&&(g, _)| g == gw)
            .map(|&(_, sa)| sa)
            .collect();
        gone.sort_unstable();
        for sa in gone {
            self.sa_tunnel.remove(&(gw, sa));
            self.dp.remove_sa(gw, sa);
        }
        for t in 0..self.tunnels.len() {
            let tun = &mut self.tunnels[t];
            if tun.responder == gw {
                tun.down_now("peer restart");
                self.refresh_up(t);
                continue;
            }
            if tun.initiator != gw {
                continue;
            }
            tun.down_now("gateway restart");
            tun.current = None;
            self.refresh_up(t);
            let tun = &mut self.tunnels[t];
            if let Some((a, sa)) = tun.attempt.take() {
                tun.summary.failed += 1;
                // (Its key wait is not added to the tunnel's total.)
                let outcome = "failed: gateway restart".to_string();
                let row = a.row(
                    &tun.name,
                    tun.summary.attempts,
                    sa,
                    now,
                    AttemptEnd::not_up(outcome),
                );
                self.rows.handshake(t, row);
            }
        }
        self.sim.schedule(entity, down_for, Ev::GatewayUp { gw });
    }

    /// Back from a reboot: the tunnels this gateway initiates start again.
    pub(super) fn gateway_up(&mut self, gw: usize) {
        self.gateways[gw].down = false;
        let entity = self.gateways[gw].entity;
        for t in 0..self.tunnels.len() {
            if self.tunnels[t].initiator == gw {
                self.tunnels[t].summary.restarts += 1;
                let ev = Ev::TunnelStart {
                    tunnel: t,
                    why: "gateway restart",
                };
                self.sim.schedule(entity, SimDuration::ZERO, ev);
            }
        }
    }
}
