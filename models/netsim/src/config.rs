//! What a simulation is made of: gateways, links, QKD key managers and QKD links,
//! tunnels, and how long to run. Every type derives serde: scenario files hold them.

use std::net::Ipv4Addr;

use link::{LinkConfig, Transition};
use qkd::PoolConfig;
use serde::{Deserialize, Serialize};
use sim_core::{SimDuration, SimTime};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    /// The master seed, unless the command line gives one.
    #[serde(default)]
    pub seed: Option<u64>,
    pub duration: SimDuration,
    /// `real` (default) or `model` crypto for every gateway.
    #[serde(default)]
    pub crypto: CryptoMode,
    #[serde(default = "default_sample")]
    pub sample_every: SimDuration,
    /// Per trusted-node hop of a relayed QKD key.
    #[serde(default)]
    pub relay_latency: SimDuration,
    #[serde(rename = "gateway")]
    pub gateways: Vec<GatewayConfig>,
    #[serde(rename = "link", default)]
    pub links: Vec<LinkSpec>,
    #[serde(rename = "kme", default)]
    pub kmes: Vec<KmeConfig>,
    #[serde(rename = "qkd_link", default)]
    pub qkd_links: Vec<QkdLinkSpec>,
    #[serde(rename = "tunnel", default)]
    pub tunnels: Vec<TunnelSpec>,
}

fn default_sample() -> SimDuration {
    SimDuration::from_secs(10)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    #[default]
    Real,
    /// Insecure stand-ins with real sizes (see `ikev2::crypto::ModelCrypto`).
    Model,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub name: String,
    pub address: Ipv4Addr,
    /// The key manager this gateway takes QKD keys from.
    #[serde(default)]
    pub kme: Option<String>,
}

/// A link between two gateways, with the link model's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub a: String,
    pub b: String,
    #[serde(default)]
    pub params: LinkConfig,
}

/// Which key-delivery API gateways use with this KME.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyApi {
    #[default]
    Etsi014,
    Skip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmeConfig {
    pub name: String,
    #[serde(default)]
    pub api: KeyApi,
    /// Round-trip time of one key request from a co-located gateway.
    #[serde(default = "default_request_latency")]
    pub request_latency: SimDuration,
    /// Down/up transitions in time order; the device starts up.
    #[serde(default)]
    pub schedule: Vec<Transition>,
}

fn default_request_latency() -> SimDuration {
    SimDuration::from_millis(5)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QkdLinkSpec {
    pub a: String,
    pub b: String,
    pub pool: PoolConfig,
}

/// Whether a tunnel's IKE SA takes a QKD key as its PPK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PpkMode {
    #[default]
    Disabled,
    Optional,
    Required,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelSpec {
    pub name: String,
    pub initiator: String,
    pub responder: String,
    #[serde(default = "default_ike")]
    pub ike: Vec<String>,
    #[serde(default = "default_esp")]
    pub esp: Vec<String>,
    #[serde(default)]
    pub ppk: PpkMode,
    #[serde(default)]
    pub start: SimTime,
    /// Start a fresh IKE SA (a new PPK with RFC 8784) this often, deleting the old one.
    #[serde(default)]
    pub reauth_every: Option<SimDuration>,
    /// Rekey the Child SA this long after it came up (CREATE_CHILD_SA with PFS when the
    /// ESP proposal names a key exchange), again and again.
    #[serde(default)]
    pub child_rekey_every: Option<SimDuration>,
    /// Rekey the IKE SA this often with CREATE_CHILD_SA (new keys from new key
    /// exchanges, additional ones in IKE_FOLLOWUP_KE; no new QKD key).
    #[serde(default)]
    pub ike_rekey_every: Option<SimDuration>,
    /// Rekey up to this much earlier, uniformly at random (strongSwan's `rand_time`),
    /// so that tunnels set up together do not rekey together.
    #[serde(default)]
    pub child_rekey_jitter: SimDuration,
    /// Dead peer detection on both gateways (strongSwan's `dpd_delay`): an empty
    /// INFORMATIONAL after this long without a word from the peer. When the initiator
    /// finds the peer dead, it starts the tunnel again (`dpd_action = restart`).
    #[serde(default)]
    pub dpd_delay: Option<SimDuration>,
    /// After a failure, try again this much later (doubling, up to 16 times as long).
    #[serde(default = "default_retry")]
    pub retry_after: SimDuration,
    #[serde(default = "default_fragment_size")]
    pub fragment_size: usize,
    /// Offer IKE fragmentation (RFC 7383); without it large messages rely on IP
    /// fragmentation.
    #[serde(default = "yes")]
    pub fragmentation: bool,
}

fn yes() -> bool {
    true
}

fn default_ike() -> Vec<String> {
    vec!["aes256gcm16-prfsha256-x25519-ke1_mlkem768".into()]
}
fn default_esp() -> Vec<String> {
    vec!["aes256gcm16".into()]
}
fn default_retry() -> SimDuration {
    SimDuration::from_secs(1)
}
fn default_fragment_size() -> usize {
    1280
}
