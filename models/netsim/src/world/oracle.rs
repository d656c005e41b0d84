//! The invariant oracle, checked during every run: both peers of an IKE SA derive the
//! same keys; both ends of a Child SA hold the same key per direction; a QKD key serves
//! one IKE SA; no IKE SA of a peer whose PPK is `required` comes up without one; the two ends of a live IKE SA hold the same Child SAs (tolerating one
//! exchange's time); no IKE negotiation stays stuck past its timeouts. (No ESP packet
//! delivered twice is the data plane's check.) Each broken invariant becomes one line
//! in the results' `violations`. Each invariant is checked where an event can break
//! it, at a cost per event that does not grow with the number of tunnels.

use std::collections::BTreeSet;

use sim_core::hash::FastMap;

use ikev2::crypto::AeadKey;
use ikev2::endpoint::{ChildSa, Event, PeerConfig, PpkOutcome, PpkPolicy, SaId};
use ikev2::keys::IkeKeys;
use sim_core::{SimDuration, SimTime};

use super::net::Gateway;
use super::tunnels::Tunnel;
use super::{Ev, World};
use crate::dataplane::{DataPlane, PairChange};

#[derive(Default)]
pub(super) struct Oracle {
    /// The keys the first side of each IKE SA (by SPIs) reported.
    sa_keys: FastMap<(u64, u64), IkeKeys>,
    /// Every PPK ID an IKE SA came up with. QKD key IDs are UUIDs, kept as their 16
    /// bytes (a run at scale uses a few per tunnel and day); any other ID as it is.
    ppk_ids_used: BTreeSet<[u8; 16]>,
    other_ppk_ids_used: BTreeSet<Vec<u8>>,
    /// (tunnel, SPI) -> the key one end of a Child SA reported for that direction.
    child_keys: FastMap<(usize, u32), AeadKey>,
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
                self.sa_keys.insert(spis, *keys);
            }
        }
        if let (PpkOutcome::Used { id }, true) = (ppk, initiator)
            && !match std::str::from_utf8(id)
                .ok()
                .and_then(qkd::etsi014::parse_uuid)
            {
                Some(uuid) => self.ppk_ids_used.insert(uuid),
                None => self.other_ppk_ids_used.insert(id.clone()),
            }
        {
            let id = String::from_utf8_lossy(id);
            self.report(now, format!("QKD key {id} used by a second IKE SA"));
        }
    }

    /// An IKE SA with a peer whose PPK policy is `required` must have mixed one in, at
    /// either end (RFC 8784: no PPK, no IKE SA), whatever happened on the path.
    pub(super) fn check_required_ppk(
        &mut self,
        now: SimTime,
        gateway: &str,
        peers: &[PeerConfig],
        ev: &Event,
    ) {
        if let Event::IkeSaEstablished { peer, ppk, .. } = ev
            && peers[*peer].ppk == PpkPolicy::Required
            && !matches!(ppk, PpkOutcome::Used { .. })
        {
            let tunnel = &peers[*peer].name;
            self.report(
                now,
                format!(
                    "{gateway}: tunnel {tunnel}'s IKE SA up without its required PPK ({ppk:?})"
                ),
            );
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
                    self.child_keys.insert((t, spi), *key);
                }
            }
        }
    }

    /// A negotiation must end (in success or failure) within its timeouts. Any
    /// exchange fails after its retransmissions, a PPK answer is awaited for a bounded
    /// time, so an attempt that made no progress for longer than both together is
    /// stuck. Returns when to look again (`None`: reported, or no negotiation).
    pub(super) fn check_stuck(
        &mut self,
        now: SimTime,
        tun: &mut Tunnel,
        gateways: &[Gateway],
    ) -> Option<SimTime> {
        let Some((a, Some(_))) = &mut tun.attempt else {
            return None;
        };
        let limit = stuck_limit(tun.initiator, tun.peer, gateways);
        let quiet = now.saturating_since(a.progress);
        if quiet <= limit {
            return Some(a.progress + limit + SimDuration::from_nanos(1));
        }
        if !a.reported_stuck {
            let msg = format!(
                "tunnel {}: the IKE negotiation started at {} made no progress for {quiet}",
                tun.name, a.ike_started,
            );
            a.reported_stuck = true;
            self.report(now, msg);
        }
        None
    }

    /// The two ends of an IKE SA hold the same Child SAs. A pair one end holds and the
    /// other does not is normal for a moment (a rekey's response or Delete on its way,
    /// with retransmissions); longer than an exchange can take, while both ends still
    /// hold the IKE SA, it is a broken invariant. (An IKE SA one end gave up or forgot
    /// in a reboot is dead peer detection's business, not this check's.)
    ///
    /// Checked where it can break: a pair installed at one end, or removed at one end,
    /// is looked at again one grace time later ([`World::watch_pair`]); a newer change
    /// to the same pair replaces the older look. Called for the look of `since`, which
    /// is the pair's latest.
    fn check_pair(
        &mut self,
        now: SimTime,
        (gw, spi_in, since): (usize, u32, SimTime),
        (t, sa, spi_out): (usize, SaId, u32),
        tunnels: &[Tunnel],
        gateways: &[Gateway],
        dp: &DataPlane,
    ) {
        let tun = &tunnels[t];
        let peer = tun.other_end(gw);
        // The peer's half first: it is there nearly always, and the IKE SAs' state
        // then need not be looked up at both gateways.
        let both_hold_ike_sa = || {
            gateways[gw]
                .ep
                .peer_spi(sa)
                .is_some_and(|peer_sa| gateways[peer].ep.is_established(peer_sa))
        };
        if !dp.has(peer, spi_out) && both_hold_ike_sa() {
            self.report(
                now,
                format!(
                    "tunnel {}: {} holds Child SA {spi_in:08x}, {} has not held its other half since {since}",
                    tun.name, gateways[gw].name, gateways[peer].name
                ),
            );
        }
    }
}

/// How long a negotiation may go without progress: every retransmission of an
/// exchange, the PPK answer's wait, and a second.
fn stuck_limit(gw: usize, peer: usize, gateways: &[Gateway]) -> SimDuration {
    let timers = &gateways[gw].peer_cfgs[peer].timers;
    SimDuration::from_nanos(timers.exchange_timeout_ns() + timers.ppk_timeout_ns + 1_000_000_000)
}

impl World {
    /// The pair `spi_in` at `gw` changed (installed, or its other half removed): its
    /// other half must be at the peer within an exchange's time (see
    /// [`Oracle::check_pair`]). Nothing to wait for when the other half is there
    /// already (the second end of a rekey to install it); a look that waits is
    /// cancelled when the other half comes or the pair goes, so a run without faults
    /// looks at no pair again later, when its state has gone cold.
    fn watch_pair(&mut self, gw: usize, t: usize, spi_in: u32) {
        if self.dp.settle(gw, spi_in) != Some(false) {
            return; // not held (nothing can go stale), or whole
        }
        let now = self.sim.now();
        let tun = &self.tunnels[t];
        let timers = &self.gateways[tun.initiator].peer_cfgs[tun.peer].timers;
        let grace = SimDuration::from_nanos(timers.exchange_timeout_ns() + 1_000_000_000);
        let look = Ev::CheckPair {
            gw,
            spi_in,
            since: now,
        };
        let look = self.sim.set_timer(self.entity, now + grace, look);
        self.dp.set_look(gw, spi_in, look);
    }

    /// Watches the pairs the data plane changed while handling an event (an installed
    /// half, and the peer's half of a removed one), and cancels the timers the changes
    /// made moot.
    pub(super) fn watch_changed_pairs(&mut self) {
        while let Some(c) = self.dp.changed.pop() {
            match c {
                PairChange::Installed { gw, tunnel, spi_in } => self.watch_pair(gw, tunnel, spi_in),
                PairChange::Removed {
                    gw,
                    tunnel,
                    spi_out,
                } => {
                    let peer = self.tunnels[tunnel].other_end(gw);
                    self.watch_pair(peer, tunnel, spi_out);
                }
            }
        }
        for timer in self.dp.moot_timers.drain(..) {
            self.sim.cancel_timer(timer);
        }
    }

    pub(super) fn check_pair(&mut self, gw: usize, spi_in: u32, since: SimTime) {
        let now = self.sim.now();
        let Some((t, sa, spi_out, other_holds)) = self.dp.take_look(gw, spi_in) else {
            return;
        };
        if other_holds {
            return; // as it should be
        }
        let pair = (t, sa, spi_out);
        let look = (gw, spi_in, since);
        (self.oracle).check_pair(now, look, pair, &self.tunnels, &self.gateways, &self.dp);
    }

    /// Looks for a stuck negotiation of tunnel `t`'s attempt number `attempt`, and
    /// again later while it goes on.
    pub(super) fn check_stuck(&mut self, t: usize, attempt: u32) {
        let now = self.sim.now();
        let tun = &mut self.tunnels[t];
        if tun.summary.attempts != attempt {
            return; // that attempt ended; a later one has its own look
        }
        if let Some(at) = self.oracle.check_stuck(now, tun, &self.gateways) {
            let after = at.saturating_since(now);
            self.schedule_world(after, Ev::CheckStuck { tunnel: t, attempt });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tunnels::HandshakeAttempt;
    use super::super::{Ev, World};
    use super::*;
    use crate::WorldConfig;
    use ikev2::crypto::{AeadAlg, PrfKey};
    use ikev2::endpoint::KeylogEntry;
    use sim_core::Tracer;

    fn established(keys: &IkeKeys, initiator: bool, ppk: PpkOutcome) -> Event {
        Event::IkeSaEstablished {
            sa: 1,
            peer: 0,
            initiator,
            proposal: String::new(),
            ppk,
            keys: *keys,
            keylog: KeylogEntry {
                spi_i: 1,
                spi_r: 2,
                sk_ei: AeadKey::new(&[]),
                sk_er: AeadKey::new(&[]),
                aead: AeadAlg::AesGcm16_256,
            },
        }
    }

    /// IKE SA keys told apart by `sk_d`.
    fn ike_keys(b: u8) -> IkeKeys {
        IkeKeys {
            sk_d: PrfKey::new(&[b]),
            sk_ei: AeadKey::new(&[]),
            sk_er: AeadKey::new(&[]),
            sk_pi: PrfKey::new(&[]),
            sk_pr: PrfKey::new(&[]),
        }
    }

    /// Gateways `a` and `b` on one link, with tunnel `t` between them.
    fn two_gateways(duration: &str) -> World {
        let cfg: WorldConfig = serde_json::from_str(&format!(
            r#"{{"duration": "{duration}",
                "gateway": [{{"name": "a", "address": "10.0.0.1"}}, {{"name": "b", "address": "10.0.0.2"}}],
                "link": [{{"a": "a", "b": "b"}}],
                "tunnel": [{{"name": "t", "initiator": "a", "responder": "b",
                             "child_rekey_time": "1h"}}]}}"#
        ))
        .unwrap();
        World::new(cfg, 1, Tracer::new()).unwrap()
    }

    #[test]
    fn the_oracle_reports_a_required_ppk_missing_at_either_end() {
        let mut o = Oracle::default();
        let keys = ike_keys(1);
        let mut peers = two_gateways("1s").gateways[0].peer_cfgs.to_vec();
        let used = PpkOutcome::Used { id: b"k".to_vec() };
        let downgraded = PpkOutcome::Downgraded {
            reason: ikev2::endpoint::DowngradeReason::PeerLacksPpk,
        };
        for policy in [
            PpkPolicy::Disabled,
            PpkPolicy::Optional,
            PpkPolicy::Required,
        ] {
            peers[0].ppk = policy;
            o.check_required_ppk(
                SimTime::ZERO,
                "a",
                &peers,
                &established(&keys, true, used.clone()),
            );
        }
        peers[0].ppk = PpkPolicy::Optional;
        o.check_required_ppk(
            SimTime::ZERO,
            "a",
            &peers,
            &established(&keys, true, downgraded.clone()),
        );
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        peers[0].ppk = PpkPolicy::Required;
        o.check_required_ppk(
            SimTime::ZERO,
            "a",
            &peers,
            &established(&keys, false, downgraded),
        );
        o.check_required_ppk(
            SimTime::ZERO,
            "a",
            &peers,
            &established(&keys, true, PpkOutcome::NotUsed),
        );
        assert_eq!(o.violations.len(), 2, "{:?}", o.violations);
        assert!(
            o.violations[0].contains("a: tunnel t's IKE SA up without its required PPK"),
            "{:?}",
            o.violations
        );
    }

    #[test]
    fn the_oracle_catches_different_keys_and_reused_qkd_keys() {
        let mut o = Oracle::default();
        let now = SimTime::ZERO;
        let k = ike_keys;
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
        // QKD key IDs are UUIDs, kept as their 16 bytes: a reuse is caught all the same.
        o.violations.clear();
        let uuid = |s: &str| PpkOutcome::Used {
            id: s.as_bytes().to_vec(),
        };
        let (a, b) = (
            "3f1c0d2e-5b6a-4c7d-8e9f-0a1b2c3d4e5f",
            "3f1c0d2e-5b6a-4c7d-8e9f-0a1b2c3d4e60",
        );
        // (Each SA is reported by both ends: the first with the ID, the second without.)
        for id in [a, b, a] {
            o.check_ike_keys(now, &established(&k(3), true, uuid(id)));
            o.check_ike_keys(now, &established(&k(3), false, PpkOutcome::NotUsed));
            if id == b {
                assert!(o.violations.is_empty(), "{:?}", o.violations);
            }
        }
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains(&format!("QKD key {a} used by a second IKE SA")));
        // Child SAs: each end names the other's inbound SPI as its outbound one.
        o.violations.clear();
        let child = |spi_in, spi_out, k_in: u8, k_out: u8| ChildSa {
            spi_in,
            spi_out,
            proposal: "".into(),
            aead: AeadAlg::AesGcm16_256,
            esn: false,
            encr_in: AeadKey::new(&[k_in]),
            encr_out: AeadKey::new(&[k_out]),
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
                w.watch_changed_pairs();
            }
        };
        run_until(&mut w, 5);
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
        // Both halves are in place: nothing left to look at later.
        assert_eq!(w.dp.looks_pending(), 0);
        // The responder loses its half of the Child SA (its IKE SA stays up), at 5 s.
        let (_, _, _, spi_in, _) = w.dp.all().into_iter().find(|p| p.0 == 1).unwrap();
        let world = w.sim.entities().lookup("world").unwrap();
        w.sim
            .schedule_at(world, SimTime::from_nanos(5_000_000_000), Ev::Sample);
        run_until(&mut w, 5);
        w.dp.remove(1, spi_in);
        // Its hard lifetime's timer goes with it.
        let expiry = w.dp.moot_timers.clone();
        assert!(expiry.len() == 1 && w.sim.timer_pending(expiry[0]));
        w.watch_changed_pairs();
        assert!(!w.sim.timer_pending(expiry[0]));
        assert_eq!(w.dp.looks_pending(), 1);
        // Tolerated while an exchange could still be under way (166 s), then reported,
        // once.
        run_until(&mut w, 170);
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
        run_until(&mut w, 400);
        let v = &w.oracle.violations;
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("at 171.06112s: tunnel t: a holds Child SA")
                && v[0].contains("b has not held its other half since 5s"),
            "{v:?}"
        );
        assert_eq!(w.dp.looks_pending(), 0);
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
        let audit = |w: &mut World| w.oracle.check_stuck(now, &mut w.tunnels[0], &w.gateways);
        // 165.06 s of retransmissions and 60 s for a PPK: 250 s of quiet is too long,
        // 200 s is not.
        w.tunnels[0].attempt = Some((attempt(100), Some(7)));
        // Not yet: look again just after 226.06 s of quiet.
        let again = audit(&mut w).unwrap();
        assert_eq!(again, SimTime::from_nanos(326_061_120_001));
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
        w.tunnels[0].attempt = Some((attempt(50), Some(7)));
        assert_eq!(audit(&mut w), None);
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
