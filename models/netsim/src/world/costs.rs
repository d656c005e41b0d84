//! Where a run's wall time goes, by kind of event (`qsafe run --event-costs`).
//!
//! A diagnostic of the machine a run ran on, never a result: the times are the wall
//! clock's, so they stay out of the results and the fingerprint. An event's time runs
//! from the end of the one before it to its own end, so it includes taking it from the
//! queue and hinting the next event's state into the cache; the kinds' times add up to
//! the whole event loop.

use std::time::{Duration, Instant};

use super::Ev;

/// The events of one kind and the wall time they took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCost {
    pub kind: &'static str,
    pub events: u64,
    pub wall: Duration,
}

/// Wall time by kind of event, in the order the kinds first occurred.
#[derive(Default, Debug)]
pub struct EventCosts {
    rows: Vec<EventCost>,
}

impl EventCosts {
    pub fn rows(&self) -> &[EventCost] {
        &self.rows
    }

    fn add(&mut self, kind: &'static str, wall: Duration) {
        // A linear search: a run has a few dozen kinds, and this runs only when asked.
        match self.rows.iter_mut().find(|r| r.kind == kind) {
            Some(r) => {
                r.events += 1;
                r.wall += wall;
            }
            None => self.rows.push(EventCost {
                kind,
                events: 1,
                wall,
            }),
        }
    }
}

/// Times the events of a run loop for an [`EventCosts`], if one was asked for.
pub(super) struct Stopwatch<'a> {
    costs: Option<(&'a mut EventCosts, Instant)>,
}

impl<'a> Stopwatch<'a> {
    pub(super) fn new(costs: Option<&'a mut EventCosts>) -> Self {
        Stopwatch {
            costs: costs.map(|c| (c, Instant::now())),
        }
    }

    /// The kind of `ev` if timing, before the event is consumed.
    pub(super) fn kind(&self, ev: &Ev) -> Option<&'static str> {
        self.costs.as_ref().map(|_| ev.kind())
    }

    /// The event of kind `kind` is done.
    pub(super) fn lap(&mut self, kind: Option<&'static str>) {
        if let (Some((costs, last)), Some(kind)) = (self.costs.as_mut(), kind) {
            let now = Instant::now();
            costs.add(kind, now - *last);
            *last = now;
        }
    }
}

impl Ev {
    /// A name for the kind of event, as `--event-costs` shows it.
    fn kind(&self) -> &'static str {
        match self {
            Ev::Deliver {
                tunnel: Some(_), ..
            } => "deliver ESP",
            Ev::Deliver { .. } => "deliver IKE",
            Ev::Flood { .. } => "adversary flood",
            Ev::GatewayTimer { .. } => "gateway IKE timer",
            Ev::Resume { .. } => "gateway CPU job done",
            Ev::Send { .. } => "gateway send",
            Ev::TunnelStart { .. } => "tunnel start",
            Ev::TimedChildRekey { .. } => "Child SA rekey (timed)",
            Ev::IkeRekey { .. } => "IKE SA rekey",
            Ev::Reauthenticate { .. } => "IKE SA reauthentication",
            Ev::IkeSaExpire { .. } => "IKE SA expiry",
            Ev::KeyDraw { .. } => "key request at KME",
            Ev::KeyRefill { .. } => "key cache refill",
            Ev::KeyFetch { .. } => "key fetch by ID at KME",
            Ev::KmeSwitch { .. } => "KME down or up",
            Ev::QkdLinkSwitch { .. } => "QKD link down or up",
            Ev::Sample => "pool sample",
            Ev::Packet { .. } => "traffic packet",
            Ev::AggregateTick { .. } => "aggregate traffic tick",
            Ev::GatewayChildRekey { .. } => "Child SA rekey (gateway)",
            Ev::ChildExpire { .. } => "Child SA expiry",
            Ev::CreateChild { .. } => "Child SA on demand",
            Ev::GatewayDown { .. } => "gateway reboot",
            Ev::GatewayUp { .. } => "gateway up",
            Ev::CorruptNextChild { .. } => "fault: corrupt Child SA",
            Ev::CheckPair { .. } => "oracle: Child SA pair",
            Ev::CheckStuck { .. } => "oracle: stuck negotiation",
        }
    }
}
