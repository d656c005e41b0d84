//! What a simulation is made of: gateways, links, QKD key managers and QKD links,
//! tunnels, and how long to run. Every type derives serde: scenario files hold them.

use std::net::Ipv4Addr;

use link::{LinkConfig, Transition};
use qkd::PoolConfig;

pub use crate::cpu::CpuConfig;
use serde::{Deserialize, Serialize};
use sim_core::{SimDuration, SimTime};

/// A scenario: what to simulate, for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    /// The master seed, unless the command line gives one.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Simulated time the run covers.
    pub duration: SimDuration,
    /// `real` (default) or `model` crypto for every gateway.
    #[serde(default)]
    pub crypto: CryptoMode,
    /// How often the QKD pool levels are sampled for results.
    #[serde(default = "default_sample")]
    pub sample_every: SimDuration,
    /// Per trusted-node hop of a relayed QKD key.
    #[serde(default)]
    pub relay_latency: SimDuration,
    /// The IPsec gateways.
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
    /// Attackers on the path in front of gateways.
    #[serde(rename = "adversary", default)]
    pub adversaries: Vec<AdversarySpec>,
}

/// An attacker on the path in front of a gateway: every datagram that arrives at the
/// gateway passes it while it is active, and it may drop, delay, duplicate, replay or
/// modify each (with the given probabilities, from its own random stream), and flood
/// the gateway with IKE_SA_INIT requests from its peers' addresses. Without the keys:
/// what it changes in protected messages fails their integrity checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdversarySpec {
    /// The gateway's `name`.
    pub gateway: String,
    /// When it starts acting.
    #[serde(default)]
    pub from: SimTime,
    /// When it stops (unset: the run's end).
    #[serde(default)]
    pub until: Option<SimTime>,
    /// Which datagrams it acts on.
    #[serde(default)]
    pub only: AdversaryTarget,
    /// Probability that a datagram is dropped.
    #[serde(default)]
    pub drop: f64,
    /// Probability that a datagram is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability that a datagram is followed by one seen earlier (of the last 64),
    /// delivered again.
    #[serde(default)]
    pub replay: f64,
    /// Probability that one random bit of a datagram is flipped.
    #[serde(default)]
    pub modify: f64,
    /// Probability that one header field of a datagram is rewritten with random
    /// bytes: in IKE the SPIs, next payload, version, exchange type, flags, message ID
    /// or length; in ESP the SPI or the sequence number.
    #[serde(default)]
    pub rewrite: f64,
    /// Probability that a datagram prompts a forgery: an IKE_SA_INIT request an error
    /// response (NO_PROPOSAL_CHOSEN or INVALID_KE_PAYLOAD) sent back to its sender
    /// ahead of the real one; any other IKE message an unprotected error notify under
    /// its SPIs; an ESP packet one with its SPI, the next sequence number and a random
    /// body.
    #[serde(default)]
    pub forge: f64,
    /// Probability that a datagram is held back until the next one it screens has
    /// passed, then delivered right after it (the two swap places).
    #[serde(default)]
    pub reorder: f64,
    /// Probability that a datagram is held back by `delay`.
    #[serde(default)]
    pub delay_probability: f64,
    /// How long a delayed datagram is held.
    #[serde(default)]
    pub delay: SimDuration,
    /// IKE_SA_INIT requests per second sent to the gateway from the addresses of its
    /// configured peers (spoofed), each with a fresh SPI, nonce and key share: the
    /// half-open SAs they leave make the gateway demand COOKIEs.
    #[serde(default)]
    pub flood_pps: f64,
}

/// The datagrams an adversary acts on.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AdversaryTarget {
    /// IKE and ESP.
    #[default]
    All,
    /// IKE.
    Ike,
    /// ESP.
    Esp,
}

/// Something that goes wrong during a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// The gateway reboots at `at`: it loses every IKE and ESP SA, is unreachable for
    /// `down_for`, then starts the tunnels it initiates afresh. Its peers find out by
    /// dead peer detection or a failing rekey.
    GatewayRestart {
        /// When the gateway goes down.
        at: SimTime,
        /// The gateway's `name`.
        gateway: String,
        /// How long it stays unreachable.
        #[serde(default)]
        down_for: SimDuration,
    },
    /// The next Child SA the gateway installs after `at` gets one bit of its outbound
    /// key flipped (a corrupted SA database): its packets fail the peer's ICV check, and
    /// the invariant oracle reports the two ends' different keys.
    CorruptChildKey {
        /// From when the next installed Child SA is corrupted.
        at: SimTime,
        /// The gateway's `name`.
        gateway: String,
    },
}

fn default_sample() -> SimDuration {
    SimDuration::from_secs(10)
}

/// Which cryptography the gateways run.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    /// ML-KEM, X25519, AES-GCM and the PRFs themselves.
    #[default]
    Real,
    /// Insecure stand-ins with real sizes (see `ikev2::crypto::ModelCrypto`).
    Model,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// How links, tunnels, faults and results name the gateway.
    pub name: String,
    /// Its IPv4 address (the source of its IKE and ESP packets).
    pub address: Ipv4Addr,
    /// The key manager this gateway takes QKD keys from.
    #[serde(default)]
    pub kme: Option<String>,
    /// A finite CPU: its IKE crypto costs time on `cores` cores (see [`crate::cpu`]).
    /// Unset: infinitely fast.
    #[serde(default)]
    pub cpu: Option<CpuConfig>,
    /// Keep QKD keys at hand for each peer, fetched ahead in batches with ETSI 014's
    /// `number`, as commercial encryptors do. Unset: one request per key, when needed.
    #[serde(default)]
    pub key_cache: Option<KeyCacheConfig>,
}

/// A gateway's QKD key cache, per peer gateway it initiates tunnels to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCacheConfig {
    /// Keys it holds when full.
    pub keys: u32,
    /// It fetches more (up to `keys`, in one request) when it holds fewer than this.
    #[serde(default = "one_key")]
    pub refill_below: u32,
    /// A key older than this is thrown away unused (counted as wasted): keep it below
    /// the key managers' `max_key_age_ns`, or the peer cannot fetch it any more.
    #[serde(default)]
    pub max_age: Option<SimDuration>,
}

fn one_key() -> u32 {
    1
}

/// A link between two gateways, with the link model's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One gateway's `name`.
    pub a: String,
    /// The other gateway's `name`.
    pub b: String,
    /// The link model: latency, jitter, bandwidth, MTU, loss, schedule.
    #[serde(default)]
    pub params: LinkConfig,
}

/// Which key-delivery API gateways use with this KME.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum KeyApi {
    /// ETSI GS QKD 014 (`enc_keys` by the initiator, `dec_keys` by ID by the responder).
    #[default]
    Etsi014,
    /// SKIP (draft-ietf-ipsecme-skip): a new key with its ID, then the key by ID.
    Skip,
}

/// A QKD key manager (KME): it holds the ends of its QKD links' key pools and serves
/// its gateways' key requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KmeConfig {
    /// How gateways (`gateway.*.kme`) and QKD links name it.
    pub name: String,
    /// The key-delivery API its gateways speak.
    #[serde(default)]
    pub api: KeyApi,
    /// Round-trip time of one key request from a co-located gateway.
    #[serde(default = "default_request_latency")]
    pub request_latency: SimDuration,
    /// Down/up transitions in time order; the device starts up.
    #[serde(default)]
    pub schedule: Vec<Transition>,
    /// Time the KME takes to serve one request (beyond `request_latency`), and how many
    /// it serves at once (0: any number); requests beyond that wait in line, so key
    /// waits include queueing at a busy KME.
    #[serde(default)]
    pub service_time: SimDuration,
    /// Requests served at once (0: any number); see `service_time`.
    #[serde(default)]
    pub concurrency: u32,
}

fn default_request_latency() -> SimDuration {
    SimDuration::from_millis(5)
}

/// A QKD link between two key managers, with the key pool it fills.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QkdLinkSpec {
    /// One key manager's `name`.
    pub a: String,
    /// The other key manager's `name`.
    pub b: String,
    /// The key supply and the pool it fills.
    pub pool: PoolConfig,
    /// When the QKD link stops producing key and starts again (fiber cut, device
    /// alignment): `[{ at = "10m", state = "down" }, { at = "12m", state = "up" }]`.
    #[serde(default)]
    pub schedule: Vec<Transition>,
}

/// Whether a tunnel's IKE SA takes a QKD key as its PPK.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PpkMode {
    /// No PPK.
    #[default]
    Disabled,
    /// Use a QKD key when one comes; without one, bring the IKE SA up without (a
    /// downgrade, counted).
    Optional,
    /// No IKE SA without a QKD key (RFC 8784's mandatory PPK).
    Required,
}

/// An IPsec tunnel: an IKE SA and its Child SAs between two gateways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelSpec {
    /// How results and traces name the tunnel.
    pub name: String,
    /// The gateway that starts the IKE SA.
    pub initiator: String,
    /// The gateway that answers.
    pub responder: String,
    /// IKE proposals in strongSwan's syntax, in order of preference
    /// (`aes256gcm16-prfsha256-x25519-ke1_mlkem768`: X25519 in IKE_SA_INIT, ML-KEM-768
    /// in one IKE_INTERMEDIATE).
    #[serde(default = "default_ike")]
    pub ike: Vec<String>,
    /// ESP proposals in strongSwan's syntax (a key exchange in it means PFS for Child
    /// SA rekeys).
    #[serde(default = "default_esp")]
    pub esp: Vec<String>,
    /// Whether the IKE SA takes a QKD key as its PPK (RFC 8784).
    #[serde(default)]
    pub ppk: PpkMode,
    /// When the initiator first wants the tunnel.
    #[serde(default)]
    pub start: SimTime,
    /// IKE SA lifetimes, with strongSwan's names and meaning (swanctl.conf): rekey the
    /// IKE SA with CREATE_CHILD_SA (new keys from new key exchanges, no new QKD key)
    /// `rekey_time` after it came up, re-authenticate (a fresh IKE SA, and with a PPK a
    /// fresh QKD key) `reauth_time` after, each less a random part of `rand_time`. If
    /// neither has replaced the IKE SA `over_time` after it was due, the IKE SA is
    /// deleted with its Child SAs, replacement or not. Unset: no rekey, no
    /// re-authentication (strongSwan's default rekey_time is 4 h; scenarios say theirs).
    /// The tunnel's initiator runs these timers; the responder follows its Deletes.
    #[serde(default)]
    pub rekey_time: Option<SimDuration>,
    /// Re-authenticate (a fresh IKE SA, and a fresh QKD key with a PPK) this long
    /// after the IKE SA came up, less a random part of `rand_time`. Unset: never.
    #[serde(default)]
    pub reauth_time: Option<SimDuration>,
    /// How long after a rekey or re-authentication was due the IKE SA is deleted if
    /// neither has replaced it. Default: 10 % of the longer of `rekey_time` and `reauth_time`.
    #[serde(default)]
    pub over_time: Option<SimDuration>,
    /// The most that is taken at random off each rekey and re-authentication time.
    /// Default: `over_time`.
    #[serde(default)]
    pub rand_time: Option<SimDuration>,
    /// Re-authenticate make-before-break (strongSwan 6's default: the new IKE SA comes
    /// up beside the old one, then the old one is deleted) or, when false,
    /// break-before-make (strongSwan 5.9's: the old one is deleted first, a gap each
    /// time).
    #[serde(default = "yes")]
    pub make_before_break: bool,
    /// Rekey each Child SA `child_rekey_time` after it came up, less a random part of
    /// `child_rand_time` (CREATE_CHILD_SA with PFS when the ESP proposal names a key
    /// exchange); strongSwan's child `rekey_time` and `rand_time`. Unset: no rekey.
    #[serde(default)]
    pub child_rekey_time: Option<SimDuration>,
    /// The most taken at random off each Child SA's rekey time. Default:
    /// `child_life_time - child_rekey_time`, as strongSwan's.
    #[serde(default)]
    pub child_rand_time: Option<SimDuration>,
    /// Hard lifetime of each Child SA (strongSwan's child `life_time`): a Child SA still
    /// there this long after it came up is deleted, at each end, and carries no more
    /// traffic. Default: `child_rekey_time` + 10 %, as strongSwan's; `"0s"` (or no
    /// `child_rekey_time`): no time limit.
    #[serde(default)]
    pub child_life_time: Option<SimDuration>,
    /// Both gateways run the `child_rekey_time` timer of each Child SA, as strongSwan
    /// does (each with its own jitter; crossing rekeys are settled by nonce). Off: only
    /// the initiator does, the simpler and more common setup in studies.
    #[serde(default)]
    pub child_rekey_both_ends: bool,
    /// Keys of earlier versions, refused with the name of the key that replaced them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub reauth_every: Option<Renamed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub ike_rekey_every: Option<Renamed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub child_rekey_every: Option<Renamed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub child_rekey_jitter: Option<Renamed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub child_life: Option<Renamed>,
    /// Volume limits of each Child SA, counted per SA and direction at both ends
    /// (strongSwan's `rekey_bytes`, `life_bytes`, `rand_bytes` and the `_packets`
    /// forms): the end whose count reaches the soft limit (less a random part of
    /// `rand_*`) rekeys it; at the hard limit the SA refuses traffic and is deleted.
    #[serde(default)]
    pub rekey_bytes: Option<u64>,
    /// Hard byte limit of each Child SA and direction (unset: none); see `rekey_bytes`.
    #[serde(default)]
    pub life_bytes: Option<u64>,
    /// The most bytes taken at random off `rekey_bytes`.
    #[serde(default)]
    pub rand_bytes: u64,
    /// Soft packet limit (unset: none); see `rekey_bytes`.
    #[serde(default)]
    pub rekey_packets: Option<u64>,
    /// Hard packet limit (unset: none); see `rekey_bytes`.
    #[serde(default)]
    pub life_packets: Option<u64>,
    /// The most packets taken at random off `rekey_packets`.
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
    /// The largest IKE datagram (IP header included) before IKE fragmentation splits
    /// a message (strongSwan's `fragment_size`).
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

/// A key an earlier version had, accepted by the parser only so that building the
/// world can refuse it with the name of its successor.
#[derive(Clone, Debug, PartialEq)]
pub struct Renamed;

impl<'de> Deserialize<'de> for Renamed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Renamed)
    }
}

impl Serialize for Renamed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

/// A tunnel's lifetimes with strongSwan's defaults filled in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetimes {
    pub rekey: Option<SimDuration>,
    pub reauth: Option<SimDuration>,
    /// Hard limit after the (earlier) rekey or reauthentication was due.
    pub over: SimDuration,
    pub rand: SimDuration,
    pub make_before_break: bool,
    pub child_rekey: Option<SimDuration>,
    pub child_rand: SimDuration,
    pub child_life: Option<SimDuration>,
}

impl TunnelSpec {
    /// Whether its Child SAs have a byte or packet limit.
    pub fn has_volume_limits(&self) -> bool {
        [
            self.rekey_bytes,
            self.life_bytes,
            self.rekey_packets,
            self.life_packets,
        ]
        .iter()
        .any(Option::is_some)
    }

    /// The lifetimes this tunnel runs, or the key (relative to the tunnel) that is wrong
    /// and why.
    pub fn lifetimes(&self) -> Result<Lifetimes, (&'static str, String)> {
        for (old, new, given) in [
            ("reauth_every", "reauth_time", self.reauth_every.is_some()),
            (
                "ike_rekey_every",
                "rekey_time",
                self.ike_rekey_every.is_some(),
            ),
            (
                "child_rekey_every",
                "child_rekey_time",
                self.child_rekey_every.is_some(),
            ),
            (
                "child_rekey_jitter",
                "child_rand_time",
                self.child_rekey_jitter.is_some(),
            ),
            ("child_life", "child_life_time", self.child_life.is_some()),
        ] {
            if given {
                return Err((
                    old,
                    format!(
                        "renamed `{new}` (strongSwan's name); IKE SAs now also have a hard \
                         limit (`over_time`) and a random part (`rand_time`), see the README"
                    ),
                ));
            }
        }
        let positive = |key, d: Option<SimDuration>| match d {
            Some(d) if d.as_nanos() == 0 => Err((key, "must be longer than zero".to_string())),
            d => Ok(d),
        };
        let rekey = positive("rekey_time", self.rekey_time)?;
        let reauth = positive("reauth_time", self.reauth_time)?;
        let longer = rekey.max(reauth).unwrap_or(SimDuration::ZERO);
        let over = self
            .over_time
            .unwrap_or(SimDuration::from_nanos(longer.as_nanos() / 10));
        let rand = self.rand_time.unwrap_or(over);
        let shorter = [rekey, reauth].into_iter().flatten().min();
        if shorter.is_some_and(|t| rand >= t) {
            return Err((
                "rand_time",
                "must be shorter than rekey_time and reauth_time".into(),
            ));
        }
        let child_rekey = positive("child_rekey_time", self.child_rekey_time)?;
        let child_life = match (self.child_life_time, child_rekey) {
            (Some(l), _) if l.as_nanos() == 0 => None,
            (Some(l), _) => Some(l),
            (None, Some(r)) => Some(SimDuration::from_nanos(r.as_nanos() + r.as_nanos() / 10)),
            (None, None) => None,
        };
        if let (Some(l), Some(r)) = (child_life, child_rekey)
            && l <= r
        {
            return Err((
                "child_life_time",
                "must be longer than child_rekey_time".into(),
            ));
        }
        let child_rand = match (self.child_rand_time, child_life, child_rekey) {
            (Some(d), ..) => d,
            (None, Some(l), Some(r)) => l - r,
            _ => SimDuration::ZERO,
        };
        if child_rekey.is_some_and(|r| child_rand >= r) {
            return Err((
                "child_rand_time",
                "must be shorter than child_rekey_time".into(),
            ));
        }
        Ok(Lifetimes {
            rekey,
            reauth,
            over,
            rand,
            make_before_break: self.make_before_break,
            child_rekey,
            child_rand,
            child_life,
        })
    }
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// How packets are spaced in time.
    #[serde(default)]
    pub pattern: TrafficPattern,
    /// Packets per second in each sending direction.
    pub rate_pps: f64,
    /// Inner IP packet sizes in bytes (36..=65000), each equally likely per packet.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<usize>,
    /// Which way packets flow.
    #[serde(default)]
    pub direction: TrafficDirection,
    /// `packets` seals, sends and opens every packet; `aggregate` counts packets and
    /// bytes against both ends' SA lifetimes each `aggregate_tick`, without encrypting
    /// or sending them (for rates too high to simulate packet by packet; link losses do
    /// not apply, and the run's results name the mode).
    #[serde(default)]
    pub mode: TrafficMode,
    /// With `aggregate`, how often the packets are counted.
    #[serde(default = "default_tick")]
    pub aggregate_tick: SimDuration,
    /// Anti-replay window of every inbound SA, in packets (32 to 4096; RFC 4303 asks
    /// for at least 32).
    #[serde(default = "default_replay_window")]
    pub replay_window: u64,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TrafficPattern {
    /// Constant bit rate: evenly spaced packets.
    #[default]
    Cbr,
    /// Exponentially distributed gaps with the same mean.
    Poisson,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TrafficDirection {
    /// Both ways, each at `rate_pps`.
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

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
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
