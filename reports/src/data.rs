//! The parts of a run's `results.json` that reports read. Reports depend on the result
//! format only, never on the simulator: unknown fields are ignored.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RunData {
    pub seed: u64,
    pub crypto: String,
    pub duration_ns: u64,
    pub events: u64,
    pub fingerprint: String,
    pub tunnels: Vec<Tunnel>,
    pub handshakes: Vec<Handshake>,
    pub exchanges: Vec<Exchange>,
    pub key_requests: Vec<KeyRequest>,
    pub pools: Vec<Pool>,
    pub links: Vec<Link>,
    pub qkd: Qkd,
    pub traffic: Vec<Traffic>,
}

/// ESP traffic through one tunnel (see netsim's `TrafficSummary`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Traffic {
    pub tunnel: String,
    pub mode: String,
    pub offered_packets: u64,
    pub delivered_packets: u64,
    pub no_sa: u64,
    pub expired: u64,
    pub unknown_spi: u64,
    pub replayed: u64,
    pub integrity_failures: u64,
    pub malformed: u64,
    pub lost_on_link: u64,
    pub volume_rekeys: u32,
    pub hard_expiries: u32,
}

impl Traffic {
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

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Tunnel {
    pub tunnel: String,
    pub attempts: u32,
    pub established: u32,
    pub failed: u32,
    pub downgrades: u32,
    pub keys_drawn: u32,
    pub keys_wasted: u32,
    pub key_wait_ns: u64,
    pub up_ns: u64,
    pub up_periods: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Handshake {
    pub tunnel: String,
    pub attempt: u32,
    pub requested_ns: u64,
    pub key_wait_ns: u64,
    pub ike_started_ns: u64,
    pub ended_ns: u64,
    pub outcome: String,
    pub duration_ns: u64,
    pub proposal: String,
    pub ppk: String,
    pub ppk_id: String,
    pub retransmissions: u32,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Exchange {
    pub tunnel: String,
    pub gateway: String,
    pub exchange: String,
    pub started_ns: u64,
    pub request_bytes: usize,
    pub request_fragments: usize,
    pub response_bytes: usize,
    pub response_fragments: usize,
    pub retransmissions: u32,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyRequest {
    pub time_ns: u64,
    pub gateway: String,
    pub op: String,
    pub status: u16,
    pub latency_ns: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pool {
    pub link: String,
    pub owner: String,
    pub capacity_bits: u64,
    pub key_size_bits: u32,
    pub warning_below_keys: u64,
    pub resume_at_keys: u64,
    pub samples: Vec<(u64, u64)>,
    pub generated_samples: Vec<(u64, u64)>,
    pub generated_bits: u64,
    pub delivered_keys: u64,
    pub refused_requests: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Link {
    pub link: String,
    pub direction: String,
    pub stats: LinkStats,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LinkStats {
    pub datagrams_sent: u64,
    pub datagrams_delivered: u64,
    pub drops: Vec<u64>,
}

/// Names of the link drop counters, in the order `results.json` stores them.
pub const DROP_REASONS: [&str; 8] = [
    "link_down",
    "queue_full",
    "loss",
    "fragment_lost",
    "reassembly_timeout",
    "too_big",
    "fragments_filtered",
    "oversized",
];

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Qkd {
    pub keys_delivered: u64,
    pub keys_fetched: u64,
    pub keys_wasted: u64,
    pub requests_refused: u64,
    pub relay_keys: u64,
}
