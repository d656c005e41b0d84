//! The result schema: what a run writes (`results.json`: summaries and totals; the rows
//! per handshake attempt, per exchange, per key request and per pool sample go to their
//! own files as they happen, see [`rows`]) and what a sweep writes (`summary.json`: one
//! [`SweepRow`] per run). The simulator writes these types and the reports read the
//! same types; no field has a default, so a field that is missing or renamed is an
//! error when a file is read, never a silent zero. Rows, not only totals: studies
//! query them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod merge;
pub mod metrics;
pub mod parquet;
pub mod rows;
pub mod sketch;

pub use rows::{CsvRows, PoolSample, RowSelection, RowSink, Rows};
pub use sketch::{QuantileSummary, Sketch};

/// The models' own counters, as results carry them.
pub use ikev2::endpoint::EndpointStats;
pub use link::{ChannelStats, DropReason};
pub use qkd::network::NetworkStats;

/// One attempt to bring a tunnel's IKE SA up (first setup, retry or reauthentication).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeRow {
    pub tunnel: String,
    pub attempt: u32,
    /// The initiator's SPI of the attempt's IKE SA (16 hex digits; empty if IKE never
    /// started): its exchanges are the [`ExchangeRow`]s with this `ike_sa`.
    pub ike_sa: String,
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
    /// For an established attempt: from wanting the IKE SA (`requested_ns`, so the key
    /// wait included) to established.
    pub time_to_up_ns: Option<u64>,
    pub proposal: String,
    /// `none`, `used`, or `downgraded (<reason>)`.
    pub ppk: String,
    pub ppk_id: String,
    /// Requests of the attempt's exchanges sent again: the sum of their rows'
    /// `retransmissions`.
    pub retransmissions: u32,
    /// Bytes the initiator sent and received in the attempt's exchanges, answered or
    /// not: the sums of their rows' `request_bytes` and `response_bytes`.
    pub bytes_sent: usize,
    pub bytes_received: usize,
    pub fragments_sent: usize,
    pub fragments_received: usize,
}

/// One exchange an endpoint initiated, however it ended. A gateway's rows add up to
/// its endpoint counters: their `retransmissions` to [`EndpointStats::retransmissions`],
/// their `retransmitted_datagrams` to [`EndpointStats::retransmitted_datagrams`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRow {
    pub tunnel: String,
    pub gateway: String,
    /// The initiating gateway's SPI of the IKE SA (16 hex digits).
    pub ike_sa: String,
    pub exchange: String,
    pub started_ns: u64,
    /// When the response completed it, or when it was given up.
    pub completed_ns: u64,
    /// `answered`, `timed out` (no response after every retransmission), `abandoned`
    /// (the IKE SA failed otherwise, or was deleted, under it) or `unfinished` (still in
    /// flight when the run ended).
    pub outcome: String,
    /// One copy of the request; the response as received (all its fragments).
    pub request_bytes: usize,
    pub request_fragments: usize,
    pub response_bytes: usize,
    pub response_fragments: usize,
    /// Times the request was sent again (once per resend, however many fragments).
    pub retransmissions: u32,
    /// Datagrams those resends took (each fragment counts).
    pub retransmitted_datagrams: u32,
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
    /// From the gateway asking to its answer: the KME's `request_latency`, plus any
    /// wait in line and service at a busy KME.
    pub latency_ns: u64,
}

/// One half of a QKD link's pool over the run (its levels over time are
/// [`PoolSample`] rows).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSummary {
    pub link: String,
    /// The KME that owns (draws from) this half.
    pub owner: String,
    pub capacity_bits: u64,
    /// The half's thresholds: key size, Warning below this many keys, after running
    /// empty refusing until it holds `resume_at_keys` again.
    pub key_size_bits: u32,
    pub warning_below_keys: u64,
    pub resume_at_keys: u64,
    pub generated_bits: u64,
    pub delivered_keys: u64,
    pub refused_requests: u64,
}

/// The exchanges of one type over the run: the sums of their rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeTotals {
    pub exchange: String,
    pub count: u64,
    pub answered: u64,
    pub retransmissions: u64,
    pub retransmitted_datagrams: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub request_fragments: u64,
    pub response_fragments: u64,
}

/// Totals over every row of the run, whichever rows were written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunTotals {
    /// Which rows the run wrote.
    pub rows: RowSelection,
    /// Established attempts: IKE_SA_INIT sent to established.
    pub handshake_ns: QuantileSummary,
    /// Established attempts: IKE SA wanted (key wait included) to established.
    pub time_to_up_ns: QuantileSummary,
    /// Every attempt's wait for a QKD key.
    pub key_wait_ns: QuantileSummary,
    pub key_request_latency_ns: QuantileSummary,
    /// By exchange type, in name order.
    pub exchanges: Vec<ExchangeTotals>,
}

impl RunTotals {
    /// The totals of exchange type `name` (zeros if none ran).
    pub fn exchange(&self, name: &str) -> ExchangeTotals {
        self.exchanges
            .iter()
            .find(|e| e.exchange == name)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests sent again, in every exchange.
    pub fn retransmissions(&self) -> u64 {
        self.exchanges.iter().map(|e| e.retransmissions).sum()
    }
}

/// Adds rows up into [`RunTotals`] as they happen.
#[derive(Clone, Default)]
pub struct TotalsBuilder {
    handshake: Sketch,
    time_to_up: Sketch,
    key_wait: Sketch,
    key_latency: Sketch,
    exchanges: BTreeMap<String, ExchangeTotals>,
}

impl TotalsBuilder {
    pub fn handshake(&mut self, h: &HandshakeRow) {
        self.key_wait.record(h.key_wait_ns);
        if h.outcome == "established" {
            self.handshake.record(h.duration_ns);
        }
        if let Some(t) = h.time_to_up_ns {
            self.time_to_up.record(t);
        }
    }

    pub fn exchange(&mut self, e: &ExchangeRow) {
        if !self.exchanges.contains_key(&e.exchange) {
            self.exchanges
                .insert(e.exchange.clone(), ExchangeTotals::default());
        }
        let t = self.exchanges.get_mut(&e.exchange).expect("just inserted");
        t.count += 1;
        t.answered += (e.outcome == "answered") as u64;
        t.retransmissions += e.retransmissions as u64;
        t.retransmitted_datagrams += e.retransmitted_datagrams as u64;
        t.request_bytes += e.request_bytes as u64;
        t.response_bytes += e.response_bytes as u64;
        t.request_fragments += e.request_fragments as u64;
        t.response_fragments += e.response_fragments as u64;
    }

    pub fn key_request(&mut self, k: &KeyRequestRow) {
        self.key_latency.record(k.latency_ns);
    }

    /// Adds the rows `other` added up: the same as adding both parts' rows here.
    pub fn merge(&mut self, other: &TotalsBuilder) {
        self.handshake.merge(&other.handshake);
        self.time_to_up.merge(&other.time_to_up);
        self.key_wait.merge(&other.key_wait);
        self.key_latency.merge(&other.key_latency);
        for (name, t) in &other.exchanges {
            let mine = self.exchanges.entry(name.clone()).or_default();
            mine.count += t.count;
            mine.answered += t.answered;
            mine.retransmissions += t.retransmissions;
            mine.retransmitted_datagrams += t.retransmitted_datagrams;
            mine.request_bytes += t.request_bytes;
            mine.response_bytes += t.response_bytes;
            mine.request_fragments += t.request_fragments;
            mine.response_fragments += t.response_fragments;
        }
    }

    pub fn finish(self, rows: RowSelection) -> RunTotals {
        RunTotals {
            rows,
            handshake_ns: self.handshake.summary(),
            time_to_up_ns: self.time_to_up.summary(),
            key_wait_ns: self.key_wait.summary(),
            key_request_latency_ns: self.key_latency.summary(),
            exchanges: self
                .exchanges
                .into_iter()
                .map(|(name, mut t)| {
                    t.exchange = name;
                    t
                })
                .collect(),
        }
    }
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
    /// The IKE times (IKE_SA_INIT sent to established) of its established attempts,
    /// added up: divided by `established`, their mean.
    pub handshake_ns: u64,
    /// When the tunnel was configured to start.
    pub start_ns: u64,
    /// When it first came up (`None`: never).
    pub first_up_ns: Option<u64>,
    /// Total time up: the initiator held an established IKE SA that meets the tunnel's
    /// PPK policy, and a Child SA it could send on whose other half the responder held.
    pub up_ns: u64,
    /// The periods up, (from, to) in ns.
    pub up_periods: Vec<(u64, u64)>,
    /// Every time the tunnel went down after it had first come up, and why.
    pub outages: Vec<Outage>,
    /// IKE SA rekeys completed (CREATE_CHILD_SA).
    pub ike_rekeys: u32,
    /// IKE SAs deleted at their hard lifetime (neither rekeyed nor re-authenticated
    /// within `over_time` of being due).
    pub ike_expiries: u32,
    /// Established IKE SAs that dead peer detection found dead (then restarted).
    pub dead_peers: u32,
    /// Times its initiator came back from a reboot and started it afresh.
    pub restarts: u32,
}

impl TunnelSummary {
    /// The fraction of the time from the tunnel's start to the run's end that it was up.
    pub fn availability(&self, duration_ns: u64) -> f64 {
        let span = duration_ns.saturating_sub(self.start_ns);
        if span == 0 {
            return 0.0;
        }
        self.up_ns as f64 / span as f64
    }
}

/// A gateway's cores over the run (with the CPU model).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSummary {
    pub gateway: String,
    pub cores: u32,
    /// Core time spent on IKE work.
    pub busy_ns: u64,
    /// Jobs run (one per input that needed work).
    pub jobs: u64,
    /// The longest a job waited for a free core.
    pub max_wait_ns: u64,
}

/// A stretch of time a tunnel was down after it had been up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub from_ns: u64,
    /// When it came back up, or the run's end.
    pub to_ns: u64,
    /// What took it down: `no key` (the IKE SA reached its hard lifetime while its
    /// re-authentication waited for a QKD key), `handshake in progress` (or `handshake
    /// failed`: the replacement was still being negotiated, or kept failing),
    /// `expired` (nothing replaced it), `reauthentication` (break-before-make),
    /// `peer dead` (dead peer detection), `gateway restart`, `peer restart`, `child SA
    /// expired` (a Child SA reached its hard lifetime), `deleted by peer`, or `other`.
    pub cause: String,
}

/// ESP traffic through one tunnel, both directions together. Every offered packet ends
/// in exactly one of: delivered, `no_sa`, `expired`, `unknown_spi`, `replayed`,
/// `integrity_failures`, `malformed`, `lost_on_link` (on the link or by an attacker on
/// the path, or in flight at the end), by the first arrival of what its sender sent.
/// Copies (the link's or an attacker's duplicates, replays, forgeries) are counted
/// apart, in `copies_arrived` and `copies_delivered`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSummary {
    pub tunnel: String,
    /// `packets` (every packet sealed, sent and opened) or `aggregate` (counted only).
    pub mode: String,
    pub offered_packets: u64,
    pub offered_bytes: u64,
    /// Sealed and put on the link.
    pub sent_packets: u64,
    /// Reached the peer gateway (first arrivals; copies are `copies_arrived`).
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
    /// Arrivals that were not a sent packet's first: duplicates, replays, forgeries.
    pub copies_arrived: u64,
    /// Copies the receiver accepted: a duplicate or replay of a packet whose own first
    /// arrival was lost or refused (a forgery never passes; a packet accepted twice is a
    /// violation). The packet itself is counted where its first arrival ended.
    pub copies_delivered: u64,
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
    pub totals: RunTotals,
    pub pools: Vec<PoolSummary>,
    pub links: Vec<LinkSummary>,
    pub qkd: NetworkStats,
    pub endpoints: Vec<(String, EndpointStats)>,
    /// The gateways with a CPU model, what their cores did.
    pub cpus: Vec<CpuSummary>,
    /// What each `[[adversary]]` did.
    pub adversaries: Vec<AdversarySummary>,
    /// Invariants the run broke (peers with different keys, a QKD key used twice);
    /// empty in a correct run.
    pub violations: Vec<String>,
    /// The rows, when the run kept them in memory; a run that wrote them to files
    /// leaves this empty (see [`Rows::read_csv`]).
    #[serde(skip)]
    pub rows: Rows,
}

/// What an attacker in front of a gateway did to the datagrams that passed it (while
/// active) and how many it made up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdversarySummary {
    pub gateway: String,
    /// Datagrams that passed it while it was active (of the kinds it acts on).
    pub seen: u64,
    pub dropped: u64,
    pub delayed: u64,
    /// Held back until the next datagram had passed.
    pub reordered: u64,
    pub duplicated: u64,
    pub replayed: u64,
    /// Bits flipped.
    pub modified: u64,
    /// Header fields rewritten.
    pub rewritten: u64,
    /// Datagrams made up in answer to one seen (`forge`).
    pub forged: u64,
    /// IKE_SA_INIT requests of its flood.
    pub injected: u64,
}

/// One run of a sweep: its parameters and every metric of its results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub run_id: String,
    pub seed: u64,
    /// Parameter path -> value, as TOML text.
    pub params: BTreeMap<String, String>,
    /// A hash of what made the run: the expanded scenario with its parameters set, the
    /// seed and the simulator's version. A resumed sweep reuses the run only if the
    /// hash is the same.
    pub input: String,
    /// [`metrics::all`] by name; `None` where a metric does not apply.
    pub metrics: BTreeMap<String, Option<f64>>,
    pub fingerprint: String,
    /// Invariants the run broke (empty when it is sound).
    pub violations: Vec<String>,
    /// The command that replays this run alone, bit for bit.
    pub reproduce: String,
}

impl SweepRow {
    /// The value of metric `name` (`None`: no such metric, or it does not apply).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied().flatten()
    }
}
