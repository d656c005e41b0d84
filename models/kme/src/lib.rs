//! Live QKD key managers: `qsafe kme` serves a scenario's KMEs over HTTPS with mutual
//! TLS (ETSI GS QKD 014 and SKIP, answered by the `qkd` crate's sans-IO handlers), and
//! live gateways fetch their PPKs from them. Nothing here is deterministic (wall clock,
//! sockets, OS entropy for test certificates), and nothing the simulator reports
//! depends on it.
//!
//! - [`server`]: the HTTPS driver around the handlers, one listener per KME;
//! - [`client`]: a gateway's key source (draw a key, fetch a key by ID);
//! - [`tls`]: rustls configurations (one crypto provider: ring) and the caller's SAE
//!   ID from its certificate;
//! - [`certs`]: a test PKI (`qsafe kme --make-certs`).

pub mod certs;
pub mod client;
pub mod server;
pub mod tls;

use std::time::Duration;

/// What can go wrong serving or fetching keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Pem(String, rustls_pki_types::pem::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("not an https:// URL with a host: {0}")]
    Url(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the key manager answered {status}: {body}")]
    Refused { status: u16, body: String },
}
