//! The invariant oracle, checked during every run: both peers of an IKE SA derive the
//! same keys; both ends of a Child SA hold the same key per direction; a QKD key serves
//! one IKE SA; the two ends of a live IKE SA hold the same Child SAs (tolerating one
//! exchange's time); no IKE negotiation stays stuck past its timeouts. (No ESP packet
//! delivered twice is the data plane's check.) Each broken invariant becomes one line
//! in the results' `violations`.

use std::collections::{BTreeMap, BTreeSet};

use ikev2::endpoint::{ChildSa, Event, PpkOutcome};
use ikev2::keys::IkeKeys;
use sim_core::{SimDuration, SimTime};

use super::net::Gateway;
use super::tunnels::Tunnel;
use crate::dataplane::DataPlane;

#[derive(Default)]
pub(super) struct Oracle {
    /// The keys the first side of each IKE SA (by SPIs) reported.
    sa_keys: BTreeMap<(u64, u64), IkeKeys>,
    /// Every PPK ID an IKE SA came up with.
    ppk_ids_used: BTreeSet<String>,
    /// (tunnel, SPI) -> the key one end of a Child SA reported for that direction.
    child_keys: BTreeMap<(usize, u32), Vec<u8>>,
    /// (gateway, inbound SPI) -> since when that Child SA has had no counterpart at the
    /// peer, and whether that was reported.
    orphans: BTreeMap<(usize, u32), (SimTime, bool)>,
    pub violations: Vec<String>,
}

impl Oracle {
    pub(super) fn report(&mut self, now: SimTime, what: impl std::fmt::Display) {
        self.violations.push(format!("at {now}: {what}"));
    }

    /// Both peers of an IKE SA must derive the same keys; a QKD key must serve one SA.
    pub(super) fn check_ike_keys(&mut self, now: SimTime, ev: &Event) {
        let (keys, keylog, ppk, initiator) = match ev {
            Event::IkeSaEstablished {
                keys,
                keylog,
                ppk,
                initiator,
                ..
            } => (keys, keylog, ppk, *initiator),
            // A rekeyed IKE SA carries the PPK of its predecessor: no new key used.
            Event::IkeSaRekeyed { keys, keylog, .. } => (keys, keylog, &PpkOutcome::NotUsed, false),
            _ => return,
        };
        let spis = (keylog.spi_i, keylog.spi_r);
        match self.sa_keys.remove(&spis) {
            Some(other) if &other != keys => self.report(
                now,
                format!(
                    "the peers of IKE SA {:016x}_{:016x} derived different keys",
                    spis.0, spis.1
                ),
            ),
            Some(_) => {}
            None => {
                self.sa_keys.insert(spis, keys.clone());
            }
        }
        if let (PpkOutcome::Used { id }, true) = (ppk, initiator)
            && !self
                .ppk_ids_used
                .insert(String::from_utf8_lossy(id).to_string())
        {
            let id = String::from_utf8_lossy(id);
            self.report(now, format!("QKD key {id} used by a second IKE SA"));
        }
    }

    /// Both ends of a Child SA must hold the same key for each direction (by tunnel and
    /// SPI: the receiver's SPI names a direction).
    pub(super) fn check_child_keys(&mut self, now: SimTime, t: usize, name: &str, child: &ChildSa) {
        for (spi, key) in [
            (child.spi_in, &child.encr_in),
            (child.spi_out, &child.encr_out),
        ] {
            match self.child_keys.remove(&(t, spi)) {
                Some(other) if &other != key => self.report(
                    now,
                    format!("the ends of Child SA {spi:08x} of tunnel {name} hold different keys"),
                ),
                Some(_) => {}
                None => {
                    self.child_keys.insert((t, spi), key.clone());
                }
            }
        }
    }

    /// The periodic look: Child SAs one end holds alone, then negotiations that made
    /// no progress for longer than their timeouts allow.
    pub(super) fn audit(
        &mut self,
        now: SimTime,
        tunnels: &mut [Tunnel],
        gateways: &[Gateway],
        dp: &DataPlane,
    ) {
        self.audit_child_sas(now, tunnels, gateways, dp);
        self.audit_stuck(now, tunnels, gateways);
    }

    /// An IKE negotiation must end (in success or failure) within its timeouts. Any
    /// exchange fails after its retransmissions, a PPK answer is awaited for a bounded
    /// time, so an attempt that made no progress for longer than both together is stuck.
    fn audit_stuck(&mut self, now: SimTime, tunnels: &mut [Tunnel], gateways: &[Gateway]) {
        for tun in tunnels {
            let Some((a, Some(_))) = &mut tun.attempt else {
                continue;
            };
            let timers = &gateways[tun.initiator].peer_cfgs[tun.peer].timers;
            let limit = timers.exchange_timeout_ns() + timers.ppk_timeout_ns + 1_000_000_000;
            let quiet = now.saturating_since(a.progress).as_nanos();
            if quiet > limit && !a.reported_stuck {
                let msg = format!(
                    "tunnel {}: the IKE negotiation started at {} made no progress for {}",
                    tun.name,
                    a.ike_started,
                    SimDuration::from_nanos(quiet)
                );
                a.reported_stuck = true;
                self.report(now, msg);
            }
        }
    }

    /// The two ends of an IKE SA hold the same Child SAs. A pair one end holds and the
    /// other does not is normal for a moment (a rekey's response or Delete on its way,
    /// with retransmissions); longer than an exchange can take, while both ends still
    /// hold the IKE SA, it is a broken invariant. (An IKE SA one end gave up or forgot
    /// in a reboot is dead peer detection's business, not this check's.)
    fn audit_child_sas(
        &mut self,
        now: SimTime,
        tunnels: &[Tunnel],
        gateways: &[Gateway],
        dp: &DataPlane,
    ) {
        let mut still = BTreeMap::new();
        let mut broken = Vec::new();
        for (gw, t, sa, spi_in, spi_out) in dp.all() {
            let tun = &tunnels[t];
            let peer = if gw == tun.initiator {
                tun.responder
            } else {
                tun.initiator
            };
            let both_hold_ike_sa = gateways[gw]
                .ep
                .peer_spi(sa)
                .is_some_and(|peer_sa| gateways[peer].ep.is_established(peer_sa));
            if dp.has(peer, spi_out) || !both_hold_ike_sa {
                continue;
            }
            let (since, reported) = self
                .orphans
                .get(&(gw, spi_in))
                .copied()
                .unwrap_or((now, false));
            let timers = &gateways[tun.initiator].peer_cfgs[tun.peer].timers;
            let limit = SimDuration::from_nanos(timers.exchange_timeout_ns() + 1_000_000_000);
            let report = !reported && now.saturating_since(since) > limit;
            if report {
                broken.push(format!(
                    "tunnel {}: {} holds Child SA {spi_in:08x}, {} has not held its other half since {since}",
                    tun.name, gateways[gw].name, gateways[peer].name
                ));
            }
            still.insert((gw, spi_in), (since, reported || report));
        }
        for b in broken {
            self.report(now, b);
        }
        self.orphans = still;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tunnels::HandshakeAttempt;
    use super::super::{Ev, World};
    use super::*;
    use crate::WorldConfig;
    use ikev2::crypto::AeadAlg;
    use ikev2::endpoint::KeylogEntry;
    use sim_core::Tracer;

    fn established(keys: &IkeKeys, initiator: bool, ppk: PpkOutcome) -> Event {
        Event::IkeSaEstablished {
            sa: 1,
            peer: 0,
            initiator,
            proposal: String::new(),
            ppk,
            keys: keys.clone(),
            keylog: KeylogEntry {
                spi_i: 1,
                spi_r: 2,
                sk_ei: vec![],
                sk_er: vec![],
                aead: AeadAlg::AesGcm16_256,
            },
        }
    }

    /// Gateways `a` and `b` on one link, with tunnel `t` between them.
    fn two_gateways(duration: &str) -> World {
        let cfg: WorldConfig = serde_json::from_str(&format!(
            r#"{{"duration": "{duration}",
                "gateway": [{{"name": "a", "address": "10.0.0.1"}}, {{"name": "b", "address": "10.0.0.2"}}],
                "link": [{{"a": "a", "b": "b"}}],
                "tunnel": [{{"name": "t", "initiator": "a", "responder": "b"}}]}}"#
        ))
        .unwrap();
        World::new(cfg, 1, Tracer::new()).unwrap()
    }

    #[test]
    fn the_oracle_catches_different_keys_and_reused_qkd_keys() {
        let mut o = Oracle::default();
        let now = SimTime::ZERO;
        let k = |b: u8| IkeKeys {
            sk_d: vec![b],
            sk_ai: vec![],
            sk_ar: vec![],
            sk_ei: vec![],
            sk_er: vec![],
            sk_pi: vec![],
            sk_pr: vec![],
        };
        let used = PpkOutcome::Used {
            id: b"key-1".to_vec(),
        };
        o.check_ike_keys(now, &established(&k(1), true, used.clone()));
        o.check_ike_keys(now, &established(&k(1), false, used.clone()));
        assert!(o.violations.is_empty());
        o.check_ike_keys(now, &established(&k(1), true, used));
        o.check_ike_keys(now, &established(&k(2), false, PpkOutcome::NotUsed));
        assert_eq!(o.violations.len(), 2, "{:?}", o.violations);
        assert!(o.violations[0].contains("QKD key key-1 used by a second IKE SA"));
        assert!(o.violations[1].contains("derived different keys"));
        // Child SAs: each end names the other's inbound SPI as its outbound one.
        o.violations.clear();
        let child = |spi_in, spi_out, k_in: u8, k_out: u8| ChildSa {
            spi_in,
            spi_out,
            proposal: String::new(),
            aead: AeadAlg::AesGcm16_256,
            esn: false,
            encr_in: vec![k_in],
            encr_out: vec![k_out],
            local_ts: vec![],
            remote_ts: vec![],
        };
        o.check_child_keys(now, 0, "t", &child(1, 2, 10, 20));
        o.check_child_keys(now, 0, "t", &child(2, 1, 20, 10));
        assert!(o.violations.is_empty() && o.child_keys.is_empty());
        o.check_child_keys(now, 0, "t", &child(3, 4, 30, 40));
        o.check_child_keys(now, 0, "t", &child(4, 3, 40, 31));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains("Child SA 00000003"));
    }

    #[test]
    fn the_oracle_reports_a_child_sa_only_one_end_holds() {
        let mut w = two_gateways("10m");
        let run_until = |w: &mut World, s: u64| {
            while let Some(ev) = w
                .sim
                .next_event_until(SimTime::from_nanos(s * 1_000_000_000))
            {
                w.handle(ev.event);
            }
        };
        run_until(&mut w, 5);
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
        // The responder loses its half of the Child SA (its IKE SA stays up).
        let (_, _, _, spi_in, _) = w.dp.all().find(|p| p.0 == 1).unwrap();
        w.dp.remove(1, spi_in);
        // Tolerated while an exchange could still be under way (165 s), then reported,
        // once.
        run_until(&mut w, 150);
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
        run_until(&mut w, 400);
        let v = &w.oracle.violations;
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("tunnel t: a holds Child SA")
                && v[0].contains("b has not held its other half since 10s"),
            "{v:?}"
        );
    }

    #[test]
    fn the_oracle_reports_a_negotiation_stuck_past_its_timeouts_once() {
        let mut w = two_gateways("1h");
        // Move the clock to 300 s without running anything.
        let world = w.sim.entities().lookup("world").unwrap();
        w.sim
            .schedule_at(world, SimTime::from_nanos(300_000_000_000), Ev::Sample);
        while w.sim.next_event().is_some() {}
        let now = w.sim.now();
        let attempt = |progress_s: u64| HandshakeAttempt {
            progress: SimTime::from_nanos(progress_s * 1_000_000_000),
            ..Default::default()
        };
        let audit = |w: &mut World| w.oracle.audit_stuck(now, &mut w.tunnels, &w.gateways);
        // 165.06 s of retransmissions and 60 s for a PPK: 250 s of quiet is too long,
        // 200 s is not.
        w.tunnels[0].attempt = Some((attempt(100), Some(7)));
        audit(&mut w);
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
        w.tunnels[0].attempt = Some((attempt(50), Some(7)));
        audit(&mut w);
        audit(&mut w);
        assert_eq!(w.oracle.violations.len(), 1, "{:?}", w.oracle.violations);
        assert!(w.oracle.violations[0].contains("tunnel t: the IKE negotiation"));
        // Waiting for a QKD key before IKE starts is not a negotiation.
        w.oracle.violations.clear();
        w.tunnels[0].attempt = Some((attempt(0), None));
        audit(&mut w);
        assert!(w.oracle.violations.is_empty());
    }
}
