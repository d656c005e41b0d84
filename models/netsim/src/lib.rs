//! `netsim`: the simulated IPsec network. Gateways run the `ikev2` endpoint over
//! `link` channels; key managers from the `qkd` crate serve PPKs through ETSI 014 or
//! SKIP; `sim-core` drives it all deterministically from one seed.

pub mod config;
pub mod cpu;
pub mod dataplane;
pub mod shard;
pub use ::results;
pub mod world;

pub use config::WorldConfig;
pub use results::Results;
pub use world::{
    BuildError, EventCost, EventCosts, Keylog, Outputs, World, qkd_network, tunnel_psk,
};
