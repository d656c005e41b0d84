//! sim-core: the deterministic discrete-event engine of qsafe.
//!
//! It knows nothing about IPsec. It provides integer-nanosecond time ([`SimTime`],
//! [`SimDuration`]), an event queue with a total order and cancellable timers
//! ([`EventQueue`]), entities with independent seeded ChaCha streams ([`entity`]),
//! typed JSON-lines tracing with a run fingerprint ([`trace`]), metrics ([`metrics`]),
//! IPv4/UDP wire images ([`ipv4`]) and pcap capture ([`pcap`]).
//!
//! Determinism rules: one run is one thread; no wall clock (except the progress line,
//! which only prints); no OS entropy; nothing iterates a hash map.

pub mod entity;
pub mod ipv4;
pub mod metrics;
pub mod pcap;
pub mod progress;
pub mod queue;
pub mod sim;
pub mod time;
pub mod trace;

pub use entity::{EntityId, RngExt, SimRng};
pub use queue::{EventQueue, Scheduled, TimerId};
pub use rand_core::Rng;
pub use sim::Simulation;
pub use time::{SimDuration, SimTime};
pub use trace::{Fingerprint, TraceEvent, TraceFilter, Tracer};
