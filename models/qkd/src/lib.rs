//! `qkd`: the key-management side of quantum key distribution, sans-IO.
//!
//! - [`pool`]: a key pool per QKD link (rate in bit/s or derived from fiber length,
//!   capacity, key size, thresholds with states, optional expiry), split between the
//!   link's two ends so that simultaneous draws never hand out the same key;
//! - [`network`]: KMEs with their gateways, QKD links as a petgraph graph, and keys
//!   relayed hop by hop through trusted nodes with one-time-pad XOR;
//! - [`etsi014`] and [`skip`]: the two key-delivery APIs as request/response functions
//!   (status codes and JSON bodies) over that state, for the simulator now and an HTTPS
//!   server later.
//!
//! No simulator dependency: time is integer nanoseconds from the caller, and every
//! random stream comes from a factory the caller supplies.

mod blocks;
pub mod etsi014;
pub mod http;
pub mod network;
pub mod pool;
pub mod skip;

pub use http::Response;
pub use network::{Delivered, DrawError, FetchError, QkdNetwork};
pub use pool::{FiberRate, PoolConfig, PoolState, Supply};
