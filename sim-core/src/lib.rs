//! sim-core: the deterministic discrete-event engine of qsafe.
//!
//! It knows nothing about IPsec. It provides integer-nanosecond time ([`SimTime`],
//! [`SimDuration`]), an event queue with a total order and cancellable timers
//! ([`EventQueue`]), entities with independent seeded ChaCha streams ([`entity`]),
//! typed JSON-lines tracing with a run fingerprint ([`trace`], over the binary records of
//! [`canonical`]), metrics ([`metrics`]),
//! IPv4/UDP wire images ([`ipv4`]), pcap capture ([`pcap`]) and cache prefetch hints
//! for a model that looks at the next event ahead ([`prefetch`]).
//!
//! Determinism rules: one run is one thread; no wall clock (except the progress line,
//! which only prints); no OS entropy; nothing iterates a hash map.

/// Implements serde for a type through its `Display` and `FromStr` (human strings such
/// as "250ms" or "10Mbps" in scenario files and results), and its JSON schema (a
/// string of the given format, described for `qsafe explain`).
#[macro_export]
macro_rules! serde_via_string {
    ($t:ty, $format:literal, $about:literal) => {
        impl $crate::schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $format.into()
            }
            fn json_schema(_: &mut $crate::schemars::SchemaGenerator) -> $crate::schemars::Schema {
                $crate::schemars::json_schema!({"type": "string", "format": $format, "description": $about})
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// For `serde_via_string!` in other crates.
pub use schemars;

pub mod canonical;
pub mod entity;
pub mod hash;
pub mod ipv4;
pub mod metrics;
pub mod pcap;
pub mod prefetch;
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
