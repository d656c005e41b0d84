//! Tunnels: handshake attempts (why the tunnel wanted an IKE SA, its key wait, its
//! exchanges, how it ended: one [`HandshakeRow`] each), when a tunnel is up and down,
//! retries with backoff, reauthentication, dead peers, and the rekey schedules of IKE
//! and Child SAs. A QKD key drawn for an attempt that then fails, or that the SA came
//! up without, is counted as wasted.

use ikev2::consts::exchange;
use ikev2::endpoint::{
    ChildSa, ExchangeStats, FailReason, KeylogEntry, Ppk, PpkOutcome, SaId, Start,
};
use sim_core::{RngExt, SimDuration, SimRng, SimTime};

use super::output::NetTrace;
use super::{Ev, World};
use crate::config::PpkMode;
use crate::results::{ExchangeRow, HandshakeRow, TunnelSummary};

/// One attempt to bring a tunnel's IKE SA up, from wanting it to its end.
#[derive(Default)]
pub(super) struct HandshakeAttempt {
    /// Why the tunnel wanted an IKE SA: start, reauthentication, retry, dead peer,
    /// gateway restart.
    pub why: &'static str,
    /// When the negotiation last moved on (IKE started, an exchange completed).
    pub progress: SimTime,
    pub reported_stuck: bool,
    pub requested: SimTime,
    pub key_wait: SimDuration,
    pub ike_started: SimTime,
    pub key_drawn: bool,
    pub ppk_id: String,
    pub retransmissions: u32,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    pub fragments_sent: usize,
    pub fragments_received: usize,
}

impl HandshakeAttempt {
    /// The attempt's row, ending at `now` with `outcome`.
    pub(super) fn row(
        &self,
        tunnel: &str,
        number: u32,
        now: SimTime,
        outcome: String,
        proposal: String,
        ppk: String,
    ) -> HandshakeRow {
        HandshakeRow {
            tunnel: tunnel.to_string(),
            attempt: number,
            why: self.why.to_string(),
            requested_ns: self.requested.as_nanos(),
            key_wait_ns: self.key_wait.as_nanos(),
            ike_started_ns: self.ike_started.as_nanos(),
            ended_ns: now.as_nanos(),
            outcome,
            duration_ns: now.saturating_since(self.ike_started).as_nanos(),
            proposal,
            ppk,
            ppk_id: self.ppk_id.clone(),
            retransmissions: self.retransmissions,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            fragments_sent: self.fragments_sent,
            fragments_received: self.fragments_received,
        }
    }
}

pub(super) struct Tunnel {
    pub name: String,
    pub initiator: usize,
    pub responder: usize,
    /// Peer index at the initiator's endpoint.
    pub peer: usize,
    pub ppk: PpkMode,
    pub reauth_every: Option<SimDuration>,
    pub child_rekey_every: Option<SimDuration>,
    pub child_rekey_jitter: SimDuration,
    pub ike_rekey_every: Option<SimDuration>,
    /// The tunnel's own streams: rekey jitter, packet gaps and sizes, volume-limit
    /// jitter (drawn at the initiator's entity).
    pub rekey_rng: SimRng,
    pub traffic_rng: SimRng,
    pub life_rng: SimRng,
    pub retry_after: SimDuration,
    /// The IKE SA that is up, and since when the tunnel has been up (across
    /// reauthentications and rekeys).
    pub current: Option<(SaId, SimTime)>,
    /// The attempt in progress and its SA (once started).
    pub attempt: Option<(HandshakeAttempt, Option<SaId>)>,
    pub pending_ppk: Option<Ppk>,
    pub consecutive_failures: u32,
    pub summary: TunnelSummary,
}

impl Tunnel {
    /// IKE SA `sa` is up; returns the one it replaces (a reauthentication).
    fn go_up(&mut self, sa: SaId, now: SimTime) -> Option<SaId> {
        let since = self.current.map_or(now, |c| c.1);
        self.current.replace((sa, since)).map(|c| c.0)
    }

    /// The tunnel has no IKE SA (any more): its up period ends.
    pub(super) fn go_down(&mut self, now: SimTime) {
        if let Some((_, since)) = self.current.take() {
            self.summary.up_ns += now.saturating_since(since).as_nanos();
            self.summary
                .up_periods
                .push((since.as_nanos(), now.as_nanos()));
        }
    }

    /// The attempt in progress if it runs IKE SA `sa`.
    fn attempt_on(&mut self, sa: SaId) -> Option<&mut HandshakeAttempt> {
        match self.attempt.as_mut() {
            Some((a, Some(s))) if *s == sa => Some(a),
            _ => None,
        }
    }

    /// Ends the attempt in progress with `outcome`: its row, and its key wait counted.
    pub(super) fn end_attempt(
        &mut self,
        now: SimTime,
        outcome: String,
        proposal: String,
        ppk: String,
    ) -> Option<HandshakeRow> {
        let (a, _) = self.attempt.take()?;
        self.summary.key_wait_ns += a.key_wait.as_nanos();
        Some(a.row(
            &self.name,
            self.summary.attempts,
            now,
            outcome,
            proposal,
            ppk,
        ))
    }
}

fn describe(r: &FailReason) -> String {
    match r {
        FailReason::RetransmitTimeout { exchange: x } => format!(
            "retransmit timeout in {}",
            exchange::name(*x).unwrap_or("?")
        ),
        other => format!("{other:?}"),
    }
}

impl World {
    pub(super) fn start_attempt(&mut self, t: usize, why: &'static str) {
        let tun = &mut self.tunnels[t];
        if tun.attempt.is_some() {
            return; // one attempt at a time
        }
        tun.summary.attempts += 1;
        tun.attempt = Some((
            HandshakeAttempt {
                why,
                requested: self.sim.now(),
                ..Default::default()
            },
            None,
        ));
        if tun.ppk == PpkMode::Disabled {
            self.initiate(t);
        } else {
            self.ask_kme_draw(t, self.sim.now(), 0);
        }
    }

    /// The attempt's key question is settled: IKE_SA_INIT goes out.
    pub(super) fn initiate(&mut self, t: usize) {
        let (gw, peer) = (self.tunnels[t].initiator, self.tunnels[t].peer);
        let now = self.sim.now();
        if let Some((a, _)) = self.tunnels[t].attempt.as_mut() {
            a.key_wait = now.saturating_since(a.requested);
            a.ike_started = now;
            a.progress = now;
        }
        let sa = self.gateways[gw].ep.initiate(now.as_nanos(), peer);
        self.sa_tunnel.insert((gw, sa), t);
        if let Some((_, s)) = self.tunnels[t].attempt.as_mut() {
            *s = Some(sa);
        }
        self.drain(gw);
    }

    /// A rekey that found its IKE SA busy with another exchange goes again a second
    /// later (strongSwan queues it behind the active task).
    pub(super) fn retry_if_busy(&mut self, gw: usize, start: Start, ev: Ev) {
        if start == Start::Busy {
            let entity = self.gateways[gw].entity;
            self.sim.schedule(entity, SimDuration::from_secs(1), ev);
        }
    }

    fn schedule_ike_rekey(&mut self, t: usize, sa: SaId) {
        if let Some(every) = self.tunnels[t].ike_rekey_every {
            let entity = self.gateways[self.tunnels[t].initiator].entity;
            self.sim
                .schedule(entity, every, Ev::IkeRekey { tunnel: t, sa });
        }
    }

    /// The initiator's periodic Child SA rekey, on the IKE SA that is up now (an IKE SA
    /// rekey moves Child SAs over; a reauthentication replaces them, and the endpoint
    /// ignores an SPI it no longer has).
    pub(super) fn timed_child_rekey(&mut self, tunnel: usize, spi_in: u32) {
        let gw = self.tunnels[tunnel].initiator;
        if let Some((sa, _)) = self.tunnels[tunnel].current
            && self.dp.rekeyable(gw, spi_in).is_some()
        {
            let now = self.now_ns();
            let start = self.gateways[gw].ep.rekey_child(now, sa, spi_in);
            self.drain(gw);
            if start == Start::Started {
                self.dp.rekey_started(gw, spi_in);
            }
            self.retry_if_busy(gw, start, Ev::TimedChildRekey { tunnel, spi_in });
        }
    }

    /// The initiator's periodic IKE SA rekey, if `sa` is still the one that is up.
    pub(super) fn rekey_ike(&mut self, tunnel: usize, sa: SaId) {
        let gw = self.tunnels[tunnel].initiator;
        if self.tunnels[tunnel].current.is_some_and(|(s, _)| s == sa) {
            let now = self.now_ns();
            let start = self.gateways[gw].ep.rekey_ike(now, sa);
            self.drain(gw);
            self.retry_if_busy(gw, start, Ev::IkeRekey { tunnel, sa });
        }
    }

    pub(super) fn exchange_started(&mut self, gw: usize, sa: SaId) {
        let now = self.sim.now();
        if let Some(&t) = self.sa_tunnel.get(&(gw, sa))
            && let Some(a) = self.tunnels[t].attempt_on(sa)
        {
            a.progress = now;
        }
    }

    /// An exchange this gateway initiated ended: its row, its trace line, and its
    /// share of the handshake attempt it belongs to.
    pub(super) fn exchange_done(&mut self, gw: usize, sa: SaId, stats: ExchangeStats) {
        let now = self.sim.now();
        let t = self.sa_tunnel.get(&(gw, sa)).copied();
        let name = t.map(|t| self.tunnels[t].name.clone()).unwrap_or_default();
        let kind = exchange::name(stats.exchange).unwrap_or("?").to_string();
        if let Some(t) = t
            && let Some(a) = self.tunnels[t].attempt_on(sa)
        {
            a.progress = now;
            a.retransmissions += stats.retransmissions;
            a.bytes_sent += stats.request_bytes;
            a.bytes_received += stats.response_bytes;
            a.fragments_sent += stats.request_fragments;
            a.fragments_received += stats.response_fragments;
        }
        let entity = self.gateways[gw].entity;
        let trace = NetTrace::Exchange {
            tunnel: &name,
            exchange: &kind,
            bytes: stats.request_bytes + stats.response_bytes,
            fragments: stats.request_fragments + stats.response_fragments,
            retransmissions: stats.retransmissions,
        };
        self.sim.trace(entity, &trace);
        self.exchanges.push(ExchangeRow {
            tunnel: name,
            gateway: self.gateways[gw].name.clone(),
            exchange: kind,
            started_ns: stats.started_ns,
            completed_ns: stats.completed_ns,
            request_bytes: stats.request_bytes,
            request_fragments: stats.request_fragments,
            response_bytes: stats.response_bytes,
            response_fragments: stats.response_fragments,
            retransmissions: stats.retransmissions,
        });
    }

    /// The initiator's IKE SA `sa` is up: the attempt ends, the tunnel is up (a
    /// reauthentication deletes the SA it replaces), and its reauthentication and IKE
    /// SA rekey are scheduled.
    pub(super) fn tunnel_established(
        &mut self,
        gw: usize,
        sa: SaId,
        proposal: String,
        ppk: PpkOutcome,
        keylog: KeylogEntry,
    ) {
        let now = self.sim.now();
        let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
            return;
        };
        let (ppk_text, wasted) = match &ppk {
            PpkOutcome::NotUsed => ("none".to_string(), false),
            PpkOutcome::Used { .. } => ("used".to_string(), false),
            PpkOutcome::Downgraded { reason } => (format!("downgraded ({reason:?})"), true),
        };
        let name = self.tunnels[t].name.clone();
        let entity = self.gateways[gw].entity;
        let spis = format!("{:016x}_{:016x}", keylog.spi_i, keylog.spi_r);
        let ppk_id = self.tunnels[t]
            .attempt
            .as_ref()
            .map(|(a, _)| a.ppk_id.clone())
            .unwrap_or_default();
        let trace = NetTrace::Established {
            tunnel: &name,
            spis,
            proposal: &proposal,
            ppk: &ppk_text,
            ppk_id: &ppk_id,
        };
        self.sim.trace(entity, &trace);
        let tun = &mut self.tunnels[t];
        let key_drawn = match &tun.attempt {
            Some((a, _)) => a.key_drawn,
            None => return,
        };
        tun.summary.established += 1;
        tun.consecutive_failures = 0;
        if matches!(ppk, PpkOutcome::Downgraded { .. }) {
            tun.summary.downgrades += 1;
        }
        if wasted && key_drawn {
            tun.summary.keys_wasted += 1;
            self.qkd.report_wasted(1);
        }
        let tun = &mut self.tunnels[t];
        let row = tun.end_attempt(now, "established".into(), proposal, ppk_text);
        self.handshakes.extend(row);
        // A reauthentication replaces the SA that was up.
        if let Some(old) = self.tunnels[t].go_up(sa, now) {
            self.gateways[gw].ep.delete(now.as_nanos(), old);
        }
        if let Some(every) = self.tunnels[t].reauth_every {
            let why = "reauthentication";
            self.sim
                .schedule(entity, every, Ev::TunnelStart { tunnel: t, why });
        }
        self.schedule_ike_rekey(t, sa);
    }

    /// IKE SA `sa` failed: a failed attempt is retried with backoff; the SA that was up
    /// dying (dead peer detection) starts the tunnel again.
    pub(super) fn ike_sa_failed(&mut self, gw: usize, sa: SaId, reason: FailReason) {
        let now = self.sim.now();
        let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
            return;
        };
        let tun = &mut self.tunnels[t];
        let is_attempt =
            matches!(tun.attempt, Some((_, Some(s))) if s == sa) && gw == tun.initiator;
        let was_current = tun.current.is_some_and(|(s, _)| s == sa);
        if was_current {
            tun.go_down(now);
        }
        self.sa_tunnel.remove(&(gw, sa));
        let entity = self.gateways[gw].entity;
        if !is_attempt {
            // The SA that was up died (dead peer detection): the initiator starts the
            // tunnel again unless an attempt is already under way.
            let lost_current = was_current && gw == tun.initiator;
            if lost_current && tun.attempt.is_none() {
                tun.summary.dead_peers += 1;
                let why = "dead peer";
                self.sim.schedule(
                    entity,
                    SimDuration::ZERO,
                    Ev::TunnelStart { tunnel: t, why },
                );
            }
            return;
        }
        tun.summary.failed += 1;
        tun.consecutive_failures += 1;
        if tun.attempt.as_ref().is_some_and(|(a, _)| a.key_drawn) {
            tun.summary.keys_wasted += 1;
            self.qkd.report_wasted(1);
        }
        let name = self.tunnels[t].name.clone();
        let reason = describe(&reason);
        let trace = NetTrace::Failed {
            tunnel: &name,
            reason: reason.clone(),
        };
        self.sim.trace(entity, &trace);
        let tun = &mut self.tunnels[t];
        let outcome = format!("failed: {reason}");
        let row = tun.end_attempt(now, outcome, String::new(), String::new());
        self.handshakes.extend(row);
        let tun = &self.tunnels[t];
        let backoff = tun
            .retry_after
            .saturating_mul(1 << tun.consecutive_failures.min(5).saturating_sub(1));
        let why = "retry";
        self.sim
            .schedule(entity, backoff, Ev::TunnelStart { tunnel: t, why });
    }

    pub(super) fn ike_sa_deleted(&mut self, gw: usize, sa: SaId) {
        let now = self.sim.now();
        if let Some(t) = self.sa_tunnel.remove(&(gw, sa)) {
            let tun = &mut self.tunnels[t];
            if tun.current.is_some_and(|(s, _)| s == sa) {
                tun.go_down(now);
            }
        }
    }

    /// A Child SA came up (new or a rekey's successor): the oracle compares its keys
    /// with the other end's, and the gateway that rekeys it schedules its next rekey.
    pub(super) fn child_sa_up(&mut self, gw: usize, sa: SaId, child: &ChildSa) {
        let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
            return;
        };
        let now = self.sim.now();
        let name = &self.tunnels[t].name;
        self.oracle.check_child_keys(now, t, name, child);
        let both_ends = self.cfg.tunnels[t].child_rekey_both_ends;
        let tun = &mut self.tunnels[t];
        let rekeys_here = gw == tun.initiator || both_ends;
        if let (true, Some(every)) = (rekeys_here, tun.child_rekey_every) {
            let jitter = tun.child_rekey_jitter.as_nanos().min(every.as_nanos());
            let early = tun.rekey_rng.below_or_eq(jitter);
            let every = SimDuration::from_nanos(every.as_nanos() - early);
            let entity = self.gateways[gw].entity;
            let spi_in = child.spi_in;
            let rekey = match gw == tun.initiator {
                true => Ev::TimedChildRekey { tunnel: t, spi_in },
                false => Ev::GatewayChildRekey {
                    gw,
                    spi_in,
                    volume: false,
                },
            };
            self.sim.schedule(entity, every, rekey);
        }
    }

    pub(super) fn ike_sa_rekeyed(&mut self, gw: usize, old: SaId, new: SaId) {
        let Some(&t) = self.sa_tunnel.get(&(gw, old)) else {
            return;
        };
        self.sa_tunnel.insert((gw, new), t);
        let tun = &mut self.tunnels[t];
        if let Some((sa, _)) = tun.current.as_mut().filter(|(s, _)| *s == old) {
            *sa = new;
        }
        if gw == tun.initiator {
            tun.summary.ike_rekeys += 1;
            self.schedule_ike_rekey(t, new);
        }
    }

    /// A refused Child SA rekey (TEMPORARY_FAILURE while the peer is busy, say) goes
    /// again after the tunnel's retry time.
    pub(super) fn child_sa_refused(&mut self, gw: usize, sa: SaId) {
        let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
            return;
        };
        let (entity, after) = (self.gateways[gw].entity, self.tunnels[t].retry_after);
        for spi_in in self.dp.rekey_refused(gw, sa) {
            let ev = Ev::GatewayChildRekey {
                gw,
                spi_in,
                volume: false,
            };
            self.sim.schedule(entity, after, ev);
        }
    }

    /// A refused IKE SA rekey goes again after the tunnel's retry time.
    pub(super) fn ike_rekey_refused(&mut self, gw: usize, sa: SaId) {
        if let Some(&t) = self.sa_tunnel.get(&(gw, sa))
            && gw == self.tunnels[t].initiator
        {
            let (entity, after) = (self.gateways[gw].entity, self.tunnels[t].retry_after);
            self.sim
                .schedule(entity, after, Ev::IkeRekey { tunnel: t, sa });
        }
    }
}
