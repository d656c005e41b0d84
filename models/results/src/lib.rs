//! The result schema: what a run writes (`results.json`: rows per handshake attempt,
//! per exchange and per key request, pool levels over time, and totals) and what a
//! sweep writes (`summary.json`: one [`SweepRow`] per run). The simulator writes these
//! types and the reports read the same types; no field has a default, so a field that
//! is missing or renamed is an error when a file is read, never a silent zero. Rows,
//! not only totals: studies query them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The models' own counters, as results carry them.
pub use ikev2::endpoint::EndpointStats;
pub use link::{ChannelStats, DropReason};
pub use qkd::network::NetworkStats;

/// One attempt to bring a tunnel's IKE SA up (first setup, retry or reauthentication).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeRow {
    pub tunnel: String,
    pub attempt: u32,
    /// Why: `start`, `reauthentication`, `retry` (after a failure), `dead peer` (dead
    /// peer detection gave up on the SA that was up), `gateway restart`.
    pub why: String,
    /// When the tunnel wanted an IKE SA.
    pub requested_ns: u64,
    /// Time spent waiting for a QKD key before IKE_SA_INIT.
    pub key_wait_ns: u64,
    pub ike_started_ns: u64,
    pub ended_ns: u64,
    /// `established`, `failed: <reason>`, or `unfinished` (still going when the run ended).
    pub outcome: String,
    /// IKE_SA_INIT sent to IKE SA established (or failed), at the initiator.
    pub duration_ns: u64,
    pub proposal: String,
    /// `none`, `used`, or `downgraded (<reason>)`.
    pub ppk: String,
    pub ppk_id: String,
    pub retransmissions: u32,
    /// Bytes the initiator sent and received in the handshake's exchanges.
    pub bytes_sent: usize,
    pub bytes_received: usize,
    pub fragments_sent: usize,
    pub fragments_received: usize,
}

/// One exchange an endpoint initiated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRow {
    pub tunnel: String,
    pub gateway: String,
    pub exchange: String,
    pub started_ns: u64,
    pub completed_ns: u64,
    pub request_bytes: usize,
    pub request_fragments: usize,
    pub response_bytes: usize,
    pub response_fragments: usize,
    pub retransmissions: u32,
}

/// One call to a key manager.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyRequestRow {
    pub time_ns: u64,
    pub gateway: String,
    pub tunnel: String,
    pub kme: String,
    /// `etsi014` or `skip`.
    pub api: String,
    /// `enc_keys` / `dec_keys` (ETSI), `key` / `key_by_id` (SKIP).
    pub op: String,
    pub status: u16,
    pub latency_ns: u64,
}

/// One half of a QKD link's pool, sampled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSeries {
    pub link: String,
    /// The KME that owns (draws from) this half.
    pub owner: String,
    pub capacity_bits: u64,
    /// The half's thresholds: key size, Warning below this many keys, after running
    /// empty refusing until it holds `resume_at_keys` again.
    pub key_size_bits: u32,
    pub warning_below_keys: u64,
    pub resume_at_keys: u64,
    pub samples: Vec<(u64, u64)>,
    /// Bits generated so far, at the same times.
    pub generated_samples: Vec<(u64, u64)>,
    pub generated_bits: u64,
    pub delivered_keys: u64,
    pub refused_requests: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TunnelSummary {
    pub tunnel: String,
    pub attempts: u32,
    pub established: u32,
    pub failed: u32,
    pub downgrades: u32,
    pub keys_drawn: u32,
    pub keys_wasted: u32,
    /// Total time spent waiting for QKD keys.
    pub key_wait_ns: u64,
    /// Total time with an established IKE SA.
    pub up_ns: u64,
    /// The periods with an established IKE SA, (from, to) in ns.
    pub up_periods: Vec<(u64, u64)>,
    /// IKE SA rekeys completed (CREATE_CHILD_SA).
    pub ike_rekeys: u32,
    /// Established IKE SAs that dead peer detection found dead (then restarted).
    pub dead_peers: u32,
    /// Times its initiator came back from a reboot and started it afresh.
    pub restarts: u32,
}

/// ESP traffic through one tunnel, both directions together. Every offered packet ends
/// in exactly one of: delivered, `no_sa`, `expired`, `unknown_spi`, `replayed`,
/// `integrity_failures`, `malformed`, `lost_on_link` (on the link, or in flight at the end).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSummary {
    pub tunnel: String,
    /// `packets` (every packet sealed, sent and opened) or `aggregate` (counted only).
    pub mode: String,
    pub offered_packets: u64,
    pub offered_bytes: u64,
    /// Sealed and put on the link.
    pub sent_packets: u64,
    /// Reached the peer gateway.
    pub arrived: u64,
    pub delivered_packets: u64,
    pub delivered_bytes: u64,
    /// Dropped at the sender: no Child SA up.
    pub no_sa: u64,
    /// Refused by an SA past its hard lifetime (at either end).
    pub expired: u64,
    /// Arrived for an SA the receiver did not hold (not yet, or no longer): the packets
    /// a rekey or a delete lost.
    pub unknown_spi: u64,
    pub replayed: u64,
    pub integrity_failures: u64,
    pub malformed: u64,
    pub lost_on_link: u64,
    /// Child SA rekeys started because a soft byte or packet limit was reached.
    pub volume_rekeys: u32,
    /// Child SAs deleted at a hard limit (time, bytes or packets).
    pub hard_expiries: u32,
}

impl TrafficSummary {
    /// The ways a packet is lost, as (label, count), in the order figures show them.
    pub fn losses(&self) -> [(&'static str, u64); 7] {
        [
            ("no SA", self.no_sa),
            ("link", self.lost_on_link),
            ("unknown SPI", self.unknown_spi),
            ("expired", self.expired),
            ("replayed", self.replayed),
            ("bad ICV", self.integrity_failures),
            ("malformed", self.malformed),
        ]
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    pub link: String,
    pub direction: String,
    pub stats: ChannelStats,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub seed: u64,
    pub crypto: String,
    pub duration_ns: u64,
    pub events: u64,
    pub fingerprint: String,
    pub tunnels: Vec<TunnelSummary>,
    /// One row per tunnel with traffic.
    pub traffic: Vec<TrafficSummary>,
    pub handshakes: Vec<HandshakeRow>,
    pub exchanges: Vec<ExchangeRow>,
    pub key_requests: Vec<KeyRequestRow>,
    pub pools: Vec<PoolSeries>,
    pub links: Vec<LinkSummary>,
    pub qkd: NetworkStats,
    pub endpoints: Vec<(String, EndpointStats)>,
    /// Invariants the run broke (peers with different keys, a QKD key used twice);
    /// empty in a correct run.
    pub violations: Vec<String>,
}

impl Results {
    /// The handshake rows as CSV (header line first).
    pub fn handshakes_csv(&self) -> String {
        let mut out = String::from(
            "tunnel,attempt,why,requested_ns,key_wait_ns,ike_started_ns,ended_ns,outcome,duration_ns,proposal,ppk,ppk_id,retransmissions,bytes_sent,bytes_received,fragments_sent,fragments_received\n",
        );
        for h in &self.handshakes {
            out += &format!(
                "{},{},{},{},{},{},{},\"{}\",{},{},\"{}\",{},{},{},{},{},{}\n",
                h.tunnel,
                h.attempt,
                h.why,
                h.requested_ns,
                h.key_wait_ns,
                h.ike_started_ns,
                h.ended_ns,
                h.outcome,
                h.duration_ns,
                h.proposal,
                h.ppk,
                h.ppk_id,
                h.retransmissions,
                h.bytes_sent,
                h.bytes_received,
                h.fragments_sent,
                h.fragments_received
            );
        }
        out
    }
}

/// One run of a sweep: its parameters and a summary of its results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub run_id: String,
    pub seed: u64,
    /// Parameter path -> value, as TOML text.
    pub params: BTreeMap<String, String>,
    pub tunnels: usize,
    pub attempts: u32,
    pub established: u32,
    pub failed: u32,
    pub downgrades: u32,
    pub keys_drawn: u32,
    pub keys_wasted: u32,
    pub key_wait_s: f64,
    pub handshake_p50_ms: Option<f64>,
    pub handshake_p95_ms: Option<f64>,
    pub retransmissions: u32,
    pub fingerprint: String,
    /// Invariants the run broke (empty when it is sound).
    pub violations: Vec<String>,
    /// The command that replays this run alone, bit for bit.
    pub reproduce: String,
}
