//! A simulation: the clock, the event queue, the entity registry with its random
//! streams, the trace and the metrics of one run.
//!
//! The run loop is written out by the caller, as str0m does it: take the next event,
//! hand it to the model, repeat. The model owns its state; the simulation owns time.
//!
//! ```
//! use sim_core::{Simulation, SimDuration, SimTime};
//! let mut sim = Simulation::<u32>::new(42);
//! let me = sim.register("node/a").unwrap();
//! sim.schedule(me, SimDuration::from_millis(5), 1);
//! while let Some(ev) = sim.next_event_until(SimTime::ZERO + SimDuration::from_secs(1)) {
//!     if ev.event < 3 {
//!         sim.schedule(me, SimDuration::from_millis(5), ev.event + 1);
//!     }
//! }
//! assert_eq!(sim.events_processed(), 3);
//! ```

use crate::entity::{self, Entities, EntityError, EntityId, SimRng};
use crate::metrics::Metrics;
use crate::queue::{EventQueue, Scheduled, TimerId};
use crate::time::{SimDuration, SimTime};
use crate::trace::{TraceEvent, Tracer};

/// One simulation run over events of type `E`.
pub struct Simulation<E> {
    seed: u64,
    now: SimTime,
    queue: EventQueue<E>,
    entities: Entities,
    processed: u64,
    pub trace: Tracer,
    pub metrics: Metrics,
}

impl<E> Simulation<E> {
    /// A simulation at time zero whose streams all derive from `seed`; it fingerprints
    /// its trace but writes none (see [`Simulation::with_tracer`]).
    pub fn new(seed: u64) -> Self {
        Self::with_tracer(seed, Tracer::new())
    }

    pub fn with_tracer(seed: u64, trace: Tracer) -> Self {
        Simulation {
            seed,
            now: SimTime::ZERO,
            queue: EventQueue::new(),
            entities: Entities::new(),
            processed: 0,
            trace,
            metrics: Metrics::new(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> SimTime {
        self.now
    }

    pub fn events_processed(&self) -> u64 {
        self.processed
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    pub fn register(&mut self, name: &str) -> Result<EntityId, EntityError> {
        self.entities.register(name)
    }

    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    pub fn name(&self, id: EntityId) -> &str {
        self.entities.name(id)
    }

    /// The random stream of `entity` for `purpose` (e.g. "loss", "ike"). Each call
    /// starts the stream afresh, so an entity takes its streams once and keeps them.
    pub fn rng(&self, entity: EntityId, purpose: &str) -> SimRng {
        entity::stream(self.seed, self.entities.name(entity), purpose)
    }

    /// Schedules `event` after `delay`, on behalf of `source`.
    pub fn schedule(&mut self, source: EntityId, delay: SimDuration, event: E) {
        self.queue.schedule(self.now + delay, source, event);
    }

    /// Schedules `event` at the absolute time `at`.
    ///
    /// # Panics
    /// If `at` is in the past: that is a bug in the model, not bad input.
    pub fn schedule_at(&mut self, source: EntityId, at: SimTime, event: E) {
        self.queue.schedule(at, source, event);
    }

    /// Arms a cancellable timer at `at`.
    pub fn set_timer(&mut self, source: EntityId, at: SimTime, event: E) -> TimerId {
        self.queue.schedule_timer(at, source, event)
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.queue.cancel(timer)
    }

    /// Cancels `old` (if still pending) and arms a new timer in its place.
    pub fn reset_timer(
        &mut self,
        old: Option<TimerId>,
        source: EntityId,
        at: SimTime,
        event: E,
    ) -> TimerId {
        if let Some(old) = old {
            self.queue.cancel(old);
        }
        self.queue.schedule_timer(at, source, event)
    }

    pub fn timer_pending(&self, timer: TimerId) -> bool {
        self.queue.is_pending(timer)
    }

    /// Drops every pending event (and its memory): for a run that ends before them.
    pub fn discard_pending(&mut self) {
        self.queue = EventQueue::new();
    }

    /// Takes the next event and advances the clock to it.
    pub fn next_event(&mut self) -> Option<Scheduled<E>> {
        let ev = self.queue.pop()?;
        self.now = ev.time;
        self.processed += 1;
        Some(ev)
    }

    /// The event [`next_event`](Self::next_event) would take out now, left queued:
    /// what the model may prefetch for while it handles the current one.
    pub fn peek_event(&mut self) -> Option<&E> {
        self.queue.peek()
    }

    /// Like [`next_event`](Self::next_event), but stops (leaving the event queued)
    /// before any event later than `end`; the clock then moves to `end`.
    pub fn next_event_until(&mut self, end: SimTime) -> Option<Scheduled<E>> {
        match self.queue.peek_time() {
            Some(t) if t <= end => self.next_event(),
            _ => {
                self.now = self.now.max(end);
                None
            }
        }
    }

    /// Records a trace event of `entity` at the current time.
    pub fn trace<T: TraceEvent + ?Sized>(&mut self, entity: EntityId, event: &T) {
        let entities = &self.entities;
        (self.trace).record(self.now, entity, || entities.name(entity), event);
    }
}
