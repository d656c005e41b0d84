//! Tunnels: handshake attempts (why the tunnel wanted an IKE SA, its key wait, its
//! exchanges, how it ended: one [`HandshakeRow`] each), when a tunnel is up and down,
//! retries with backoff, reauthentication, dead peers, and the rekey schedules of IKE
//! and Child SAs. A QKD key drawn for an attempt that then fails, or that the SA came
//! up without, is counted as wasted.

use ikev2::consts::exchange;
use ikev2::endpoint::{
    ChildSa, ExchangeStats, FailReason, KeylogEntry, Ppk, PpkOutcome, SaId, Start,
};
use sim_core::entity::{ColdStream, LazyStream};
use sim_core::{RngExt, SimDuration, SimTime};

use super::output::NetTrace;
use super::{Ev, World};
use crate::config::{Lifetimes, PpkMode, TunnelSpec};
use crate::results::{ExchangeRow, HandshakeRow, Outage, TunnelSummary};

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

/// How an attempt ended, for its row.
pub(super) struct AttemptEnd {
    outcome: String,
    proposal: String,
    ppk: String,
}

impl AttemptEnd {
    pub(super) fn established(proposal: String, ppk: String) -> Self {
        let outcome = "established".into();
        AttemptEnd {
            outcome,
            proposal,
            ppk,
        }
    }

    /// Failed (`failed: <reason>`) or unfinished: no proposal, no PPK.
    pub(super) fn not_up(outcome: String) -> Self {
        let (proposal, ppk) = (String::new(), String::new());
        AttemptEnd {
            outcome,
            proposal,
            ppk,
        }
    }
}

impl HandshakeAttempt {
    /// The attempt's row, ending at `now` as `end` says.
    pub(super) fn row(
        &self,
        tunnel: &str,
        number: u32,
        sa: Option<SaId>,
        now: SimTime,
        end: AttemptEnd,
    ) -> HandshakeRow {
        let AttemptEnd {
            outcome,
            proposal,
            ppk,
        } = end;
        let time_to_up_ns =
            (outcome == "established").then(|| now.saturating_since(self.requested).as_nanos());
        HandshakeRow {
            tunnel: tunnel.to_string(),
            attempt: number,
            ike_sa: sa.map(|sa| format!("{sa:016x}")).unwrap_or_default(),
            why: self.why.to_string(),
            requested_ns: self.requested.as_nanos(),
            key_wait_ns: self.key_wait.as_nanos(),
            ike_started_ns: self.ike_started.as_nanos(),
            ended_ns: now.as_nanos(),
            outcome,
            duration_ns: now.saturating_since(self.ike_started).as_nanos(),
            time_to_up_ns,
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
    pub life: Lifetimes,
    /// When the current IKE SA's line (it and its rekeyed successors) re-authenticates:
    /// a rekeyed IKE SA inherits it, as strongSwan's does.
    pub reauth_due: Option<SimTime>,
    /// The tunnel's own streams: IKE and Child SA rekey jitter, packet gaps and sizes,
    /// volume-limit jitter (drawn at the initiator's entity).
    /// Cold: the lifetime streams are drawn a few times an hour; lazy: tunnels without
    /// traffic never draw from theirs.
    pub ike_life_rng: ColdStream,
    pub rekey_rng: ColdStream,
    pub traffic_rng: LazyStream,
    pub life_rng: ColdStream,
    pub retry_after: SimDuration,
    /// The initiator's IKE SA of the tunnel: the newest established one.
    pub current: Option<SaId>,
    /// The current IKE SA meets the tunnel's PPK policy.
    pub ppk_ok: bool,
    pub up: UpState,
    /// The attempt in progress and its SA (once started).
    pub attempt: Option<(HandshakeAttempt, Option<SaId>)>,
    pub pending_ppk: Option<Ppk>,
    pub consecutive_failures: u32,
    /// Both ends rekey the tunnel's Child SAs (see `TunnelSpec::child_rekey_both_ends`).
    pub child_rekey_both_ends: bool,
    /// The tunnel's specification, kept past the build only when it has traffic or
    /// volume lifetimes (what its packets read); the run needs nothing else of it, and
    /// at scale the specifications are a good part of the memory.
    pub spec: Option<Box<TunnelSpec>>,
    pub summary: TunnelSummary,
}

/// Whether a tunnel is up, and what is about to take it down.
#[derive(Default)]
pub(super) struct UpState {
    /// Up since then.
    since: Option<SimTime>,
    /// Down, after having been up, since then and for this reason.
    down: Option<(SimTime, &'static str)>,
    /// Set by a deliberate Delete of the current IKE SA (answered a round trip later),
    /// read when the tunnel goes down; dropped when another IKE SA takes over.
    hint: Option<&'static str>,
    /// Set by an event that removes state at once, read by the refresh that follows it.
    now: Option<&'static str>,
}

impl Tunnel {
    /// The tunnel's gateway at the other end from `gw`.
    pub(super) fn other_end(&self, gw: usize) -> usize {
        if gw == self.initiator {
            self.responder
        } else {
            self.initiator
        }
    }

    /// What is about to take the tunnel down: a Delete of its IKE SA, sent now.
    pub(super) fn expect_down(&mut self, cause: &'static str) {
        self.up.hint.get_or_insert(cause);
    }

    /// What takes the tunnel down, if it goes down now.
    pub(super) fn down_now(&mut self, cause: &'static str) {
        self.up.now = Some(cause);
    }

    /// The tunnel is up or down now: up periods and outages as they change.
    pub(super) fn set_up(&mut self, up: bool, now: SimTime) {
        let immediate = self.up.now.take();
        match (self.up.since, up) {
            (None, true) => {
                if let Some((from, cause)) = self.up.down.take() {
                    self.summary.outages.push(Outage {
                        from_ns: from.as_nanos(),
                        to_ns: now.as_nanos(),
                        cause: cause.into(),
                    });
                }
                self.summary.first_up_ns.get_or_insert(now.as_nanos());
                self.up.since = Some(now);
                self.up.hint = None;
            }
            (Some(since), false) => {
                self.summary.up_ns += now.saturating_since(since).as_nanos();
                let period = (since.as_nanos(), now.as_nanos());
                self.summary.up_periods.push(period);
                self.up.since = None;
                let cause = self.up.hint.take().or(immediate).unwrap_or("other");
                self.up.down = Some((now, cause));
            }
            _ => {}
        }
    }

    /// The run ends: the period up, or the outage, in progress ends with it.
    pub(super) fn close(&mut self, now: SimTime) {
        if let Some((from, cause)) = self.up.down.take() {
            self.summary.outages.push(Outage {
                from_ns: from.as_nanos(),
                to_ns: now.as_nanos(),
                cause: cause.into(),
            });
        }
        if let Some(since) = self.up.since.take() {
            self.summary.up_ns += now.saturating_since(since).as_nanos();
            let period = (since.as_nanos(), now.as_nanos());
            self.summary.up_periods.push(period);
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
    pub(super) fn end_attempt(&mut self, now: SimTime, end: AttemptEnd) -> Option<HandshakeRow> {
        let (a, sa) = self.attempt.take()?;
        self.summary.key_wait_ns += a.key_wait.as_nanos();
        Some(a.row(&self.name, self.summary.attempts, sa, now, end))
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
        } else if !self.key_from_cache(t) {
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
            let attempt = self.tunnels[t].summary.attempts;
            self.check_stuck(t, attempt);
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

    /// The lifetimes of the initiator's IKE SA `sa`, as strongSwan runs them: a rekey
    /// at `rekey_time` less a random part of `rand_time`; a re-authentication likewise
    /// (a fresh SA only: a rekeyed one inherits its predecessor's); the hard limit
    /// `over_time` after the earlier of the two.
    fn schedule_ike_lifetimes(&mut self, t: usize, sa: SaId, fresh: bool) {
        let now = self.sim.now();
        let entity = self.gateways[self.tunnels[t].initiator].entity;
        let tun = &mut self.tunnels[t];
        let life = tun.life;
        let rng = &mut tun.ike_life_rng;
        let mut jittered =
            |d: SimDuration| d - SimDuration::from_nanos(rng.below_or_eq(life.rand.as_nanos()));
        let rekey = life.rekey.map(&mut jittered);
        if fresh {
            tun.reauth_due = life.reauth.map(|d| now + jittered(d));
            if let Some(due) = tun.reauth_due {
                self.sim
                    .schedule_at(entity, due, Ev::Reauthenticate { tunnel: t, due });
            }
        }
        let tun = &self.tunnels[t];
        if let Some(after) = rekey {
            self.sim
                .schedule(entity, after, Ev::IkeRekey { tunnel: t, sa });
        }
        let due = [rekey.map(|d| now + d), tun.reauth_due]
            .into_iter()
            .flatten()
            .min();
        if let Some(due) = due {
            self.sim
                .schedule_at(entity, due + life.over, Ev::IkeSaExpire { tunnel: t, sa });
        }
    }

    /// The re-authentication of the current IKE SA's line is due: a new IKE SA, beside
    /// the old one (make-before-break) or after deleting it.
    pub(super) fn reauthenticate(&mut self, t: usize, due: SimTime) {
        let tun = &self.tunnels[t];
        if tun.reauth_due != Some(due) {
            return; // a newer IKE SA replaced that line
        }
        if let (false, Some(sa)) = (tun.life.make_before_break, tun.current) {
            self.tunnels[t].expect_down("reauthentication");
            let gw = self.tunnels[t].initiator;
            let now = self.now_ns();
            self.gateways[gw].ep.delete(now, sa);
            self.drain(gw);
        }
        self.start_attempt(t, "reauthentication");
    }

    /// The hard limit of IKE SA `sa`: if neither its rekey nor its re-authentication
    /// replaced it, it is deleted with its Child SAs.
    pub(super) fn ike_sa_expire(&mut self, t: usize, sa: SaId) {
        let tun = &mut self.tunnels[t];
        if tun.current != Some(sa) {
            return;
        }
        tun.summary.ike_expiries += 1;
        // What kept the replacement from coming up in time.
        let cause = match &tun.attempt {
            Some((_, None)) if tun.ppk != PpkMode::Disabled => "no key",
            Some(_) => "handshake in progress",
            None if tun.consecutive_failures > 0 => "handshake failed",
            None => "expired",
        };
        tun.expect_down(cause);
        let gw = tun.initiator;
        let now = self.now_ns();
        self.gateways[gw].ep.delete(now, sa);
        self.drain(gw);
    }

    /// The initiator's periodic Child SA rekey, on the IKE SA that is up now (an IKE SA
    /// rekey moves Child SAs over; a reauthentication replaces them, and the endpoint
    /// ignores an SPI it no longer has).
    pub(super) fn timed_child_rekey(&mut self, tunnel: usize, spi_in: u32) {
        let gw = self.tunnels[tunnel].initiator;
        if let Some(sa) = self.tunnels[tunnel].current
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
        if self.tunnels[tunnel].current == Some(sa) {
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
        let kind = exchange::name(stats.exchange).unwrap_or("?");
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
        let name = t.map_or("", |t| self.tunnels[t].name.as_str());
        let entity = self.gateways[gw].entity;
        let trace = NetTrace::Exchange {
            tunnel: name,
            exchange: kind,
            outcome: stats.outcome.as_str(),
            bytes: stats.request_bytes + stats.response_bytes,
            fragments: stats.request_fragments + stats.response_fragments,
            retransmissions: stats.retransmissions,
        };
        self.sim.trace(entity, &trace);
        // Every exchange adds to the totals; the fields they do not read are filled in
        // only for a row that is kept (a run at scale keeps few or none).
        let key = t.unwrap_or(gw);
        let kept = self.rows.keeps_tunnel(key);
        let text = |s: &str| if kept { s.to_string() } else { String::new() };
        let row = ExchangeRow {
            tunnel: text(name),
            gateway: text(&self.gateways[gw].name),
            ike_sa: if kept {
                format!("{sa:016x}")
            } else {
                String::new()
            },
            exchange: kind.to_string(),
            started_ns: stats.started_ns,
            completed_ns: stats.completed_ns,
            outcome: stats.outcome.as_str().into(),
            request_bytes: stats.request_bytes,
            request_fragments: stats.request_fragments,
            response_bytes: stats.response_bytes,
            response_fragments: stats.response_fragments,
            retransmissions: stats.retransmissions,
            retransmitted_datagrams: stats.retransmitted_datagrams,
        };
        self.rows.exchange(key, row);
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
        if let Some(row) = tun.end_attempt(now, AttemptEnd::established(proposal, ppk_text)) {
            tun.summary.handshake_ns += row.duration_ns;
            self.rows.handshake(t, row);
        }
        let tun = &mut self.tunnels[t];
        tun.ppk_ok = tun.ppk != PpkMode::Required || matches!(ppk, PpkOutcome::Used { .. });
        // A reauthentication replaces the SA that was up (and whatever was to take it
        // down no longer will).
        tun.up.hint = None;
        if let Some(old) = tun.current.replace(sa) {
            self.gateways[gw].ep.delete(now.as_nanos(), old);
        }
        self.schedule_ike_lifetimes(t, sa, true);
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
        let was_current = tun.current == Some(sa);
        if was_current {
            tun.current = None;
        }
        self.sa_tunnel.remove(&(gw, sa));
        let entity = self.gateways[gw].entity;
        if !is_attempt {
            tun.down_now("peer dead");
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
        if let Some(row) = tun.end_attempt(now, AttemptEnd::not_up(outcome)) {
            self.rows.handshake(t, row);
        }
        let tun = &self.tunnels[t];
        let backoff = tun
            .retry_after
            .saturating_mul(1 << tun.consecutive_failures.min(5).saturating_sub(1));
        let why = "retry";
        self.sim
            .schedule(entity, backoff, Ev::TunnelStart { tunnel: t, why });
    }

    pub(super) fn ike_sa_deleted(&mut self, gw: usize, sa: SaId, by_peer: bool) {
        if let Some(t) = self.sa_tunnel.remove(&(gw, sa)) {
            let tun = &mut self.tunnels[t];
            if tun.current == Some(sa) {
                tun.current = None;
            }
            if by_peer {
                tun.down_now("deleted by peer");
            }
        }
    }

    /// Whether tunnel `t` is up now: its initiator holds an established IKE SA that
    /// meets the PPK policy, and a Child SA it can send on whose other half the
    /// responder holds. (The path between them is not asked: a link outage shows in
    /// the links' counters, and in the tunnel once dead peer detection notices.)
    fn carries_traffic(&self, t: usize) -> bool {
        let tun = &self.tunnels[t];
        tun.current.is_some() && tun.ppk_ok && self.dp.carries(tun.initiator, t, tun.responder)
    }

    /// Brings tunnel `t`'s up and down bookkeeping to now.
    pub(super) fn refresh_up(&mut self, t: usize) {
        let up = self.carries_traffic(t);
        let now = self.sim.now();
        self.tunnels[t].set_up(up, now);
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
        let both_ends = self.tunnels[t].child_rekey_both_ends;
        let tun = &mut self.tunnels[t];
        let rekeys_here = gw == tun.initiator || both_ends;
        if let (true, Some(every)) = (rekeys_here, tun.life.child_rekey) {
            let jitter = tun.life.child_rand.as_nanos().min(every.as_nanos());
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
        if tun.current == Some(old) {
            tun.current = Some(new);
        }
        if gw == tun.initiator {
            tun.summary.ike_rekeys += 1;
            self.schedule_ike_lifetimes(t, new, false);
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
