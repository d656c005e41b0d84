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
    /// Faults at given times (links and key managers have their own up/down schedules).
    #[serde(rename = "fault", default)]
    pub faults: Vec<Fault>,
}

/// Something that goes wrong during a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// The gateway reboots at `at`: it loses every IKE and ESP SA, is unreachable for
    /// `down_for`, then starts the tunnels it initiates afresh. Its peers find out by
    /// dead peer detection or a failing rekey.
    GatewayRestart {
        at: SimTime,
        gateway: String,
        #[serde(default)]
        down_for: SimDuration,
    },
    /// The next Child SA the gateway installs after `at` gets one bit of its outbound
    /// key flipped (a corrupted SA database): its packets fail the peer's ICV check, and
    /// the invariant oracle reports the two ends' different keys.
    CorruptChildKey { at: SimTime, gateway: String },
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
    /// Both gateways run the `child_rekey_every` timer of each Child SA, as strongSwan
    /// does (each with its own jitter; crossing rekeys are settled by nonce). Off: only
    /// the initiator does, the simpler and more common setup in studies.
    #[serde(default)]
    pub child_rekey_both_ends: bool,
    /// Rekey the IKE SA this often with CREATE_CHILD_SA (new keys from new key
    /// exchanges, additional ones in IKE_FOLLOWUP_KE; no new QKD key).
    #[serde(default)]
    pub ike_rekey_every: Option<SimDuration>,
    /// Rekey up to this much earlier, uniformly at random (strongSwan's `rand_time`),
    /// so that tunnels set up together do not rekey together.
    #[serde(default)]
    pub child_rekey_jitter: SimDuration,
    /// Hard lifetime of each Child SA (strongSwan's `life_time`): a Child SA still there
    /// this long after it came up is deleted, at each end, and carries no more traffic.
    /// Unset: no time limit (strongSwan's default is 10 % more than its rekey time).
    #[serde(default)]
    pub child_life: Option<SimDuration>,
    /// Volume limits of each Child SA, counted per SA and direction at both ends
    /// (strongSwan's `rekey_bytes`, `life_bytes`, `rand_bytes` and the `_packets`
    /// forms): the end whose count reaches the soft limit (less a random part of
    /// `rand_*`) rekeys it; at the hard limit the SA refuses traffic and is deleted.
    #[serde(default)]
    pub rekey_bytes: Option<u64>,
    #[serde(default)]
    pub life_bytes: Option<u64>,
    #[serde(default)]
    pub rand_bytes: u64,
    #[serde(default)]
    pub rekey_packets: Option<u64>,
    #[serde(default)]
    pub life_packets: Option<u64>,
    #[serde(default)]
    pub rand_packets: u64,
    /// Traffic through the tunnel's Child SAs (none by default).
    #[serde(default)]
    pub traffic: Option<TrafficSpec>,
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

/// A traffic source through a tunnel, in each direction it sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    #[serde(default)]
    pub pattern: TrafficPattern,
    /// Packets per second in each sending direction.
    pub rate_pps: f64,
    /// Inner IP packet sizes in bytes (36..=65000), each equally likely per packet.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<usize>,
    #[serde(default)]
    pub direction: TrafficDirection,
    /// `packets` seals, sends and opens every packet; `aggregate` counts packets and
    /// bytes against both ends' SA lifetimes each `aggregate_tick`, without encrypting
    /// or sending them (for rates too high to simulate packet by packet; link losses do
    /// not apply, and the run's results name the mode).
    #[serde(default)]
    pub mode: TrafficMode,
    #[serde(default = "default_tick")]
    pub aggregate_tick: SimDuration,
    /// Anti-replay window of every inbound SA, in packets.
    #[serde(default = "default_replay_window")]
    pub replay_window: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficPattern {
    /// Constant bit rate: evenly spaced packets.
    #[default]
    Cbr,
    /// Exponentially distributed gaps with the same mean.
    Poisson,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficDirection {
    #[default]
    Both,
    /// Initiator to responder only.
    Forward,
    /// Responder to initiator only.
    Reverse,
}

impl TrafficDirection {
    /// Whether direction `dir` (0: initiator to responder, 1: back) sends.
    pub fn sends(self, dir: usize) -> bool {
        match self {
            TrafficDirection::Both => true,
            TrafficDirection::Forward => dir == 0,
            TrafficDirection::Reverse => dir == 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficMode {
    #[default]
    Packets,
    Aggregate,
}

fn default_sizes() -> Vec<usize> {
    vec![1000]
}
fn default_tick() -> SimDuration {
    SimDuration::from_millis(100)
}
fn default_replay_window() -> u64 {
    64
}
