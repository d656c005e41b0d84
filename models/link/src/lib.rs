//! Datagram links for the qsafe simulator.
//!
//! A link joins two interfaces with two [`Channel`]s, one per direction. A channel
//! models one-way latency and jitter, serialization at a bandwidth with a finite
//! tail-drop queue, an MTU with IPv4 fragmentation (or a path that drops oversize
//! packets, or one that discards fragments), Bernoulli and Gilbert-Elliott loss,
//! reordering, duplication, bit-flip corruption and an up/down schedule. Every drop is
//! counted under one [`DropReason`].
//!
//! [`probe`] runs two hosts exchanging probes over a link: the link characterization
//! experiment that `qsafe probe` exposes.

pub mod channel;
pub mod config;
pub mod probe;

pub use channel::{Channel, ChannelStats, Datagram, Delivery, DropReason, WirePacket};
pub use config::{Bandwidth, ConfigError, LinkConfig, LinkState, LossModel, Oversize, Transition};
