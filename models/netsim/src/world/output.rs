//! What a run leaves behind besides its results rows: typed trace lines, the keylog
//! for Wireshark, and the [`Results`] assembled at the end.

use std::net::IpAddr;

use ikev2::endpoint::Event;
use serde::Serialize;
use sim_core::TraceEvent;

use super::World;
use super::tunnels::AttemptEnd;
use crate::results::{
    CpuSummary, ExchangeRow, HandshakeRow, KeyRequestRow, LinkSummary, PoolSample, PoolSummary,
    Results, RowSelection, RowSink, Rows, TotalsBuilder,
};

/// The run's rows on their way out: every row adds to the totals; the selected ones
/// wait here until the run loop hands them to its sink (without a sink, they stay for
/// the results).
pub(super) struct RowBuffer {
    pub rows: Rows,
    pub totals: TotalsBuilder,
    selection: RowSelection,
    /// With `sample`: rows of every k-th tunnel (rows without a tunnel: of every k-th
    /// gateway), pool samples of every k-th QKD link.
    every_tunnel: usize,
    every_link: usize,
    /// Per pool half (link * 2 + end): its last written (level, generated).
    last_sample: Vec<Option<(u64, u64)>>,
}

impl RowBuffer {
    /// `sample` picks from `of_tunnels` tunnels and `of_links` QKD links (the run's, or
    /// the whole's of which this run is a part); this run has `links` QKD links.
    pub fn new(selection: RowSelection, of_tunnels: usize, of_links: usize, links: usize) -> Self {
        RowBuffer {
            rows: Rows::default(),
            totals: TotalsBuilder::default(),
            selection,
            every_tunnel: of_tunnels.div_ceil(1000).max(1),
            every_link: of_links.div_ceil(100).max(1),
            last_sample: vec![None; 2 * links],
        }
    }

    fn keeps(&self, index: usize, every: usize) -> bool {
        match self.selection {
            RowSelection::All => true,
            RowSelection::Sample => index.is_multiple_of(every),
            RowSelection::None => false,
        }
    }

    /// A handshake attempt of tunnel `t` ended.
    pub fn handshake(&mut self, t: usize, row: HandshakeRow) {
        self.totals.handshake(&row);
        if self.keeps(t, self.every_tunnel) {
            self.rows.handshakes.push(row);
        }
    }

    /// Whether rows of tunnel `key` (or gateway, for rows without a tunnel) are kept.
    pub fn keeps_tunnel(&self, key: usize) -> bool {
        self.keeps(key, self.every_tunnel)
    }

    /// An exchange ended (`key`: its tunnel, or its gateway when it has none).
    pub fn exchange(&mut self, key: usize, row: ExchangeRow) {
        self.totals.exchange(&row);
        if self.keeps_tunnel(key) {
            self.rows.exchanges.push(row);
        }
    }

    /// A key request was answered (`key` as for [`RowBuffer::exchange`]).
    pub fn key_request(&mut self, key: usize, row: KeyRequestRow) {
        self.totals.key_request(&row);
        if self.keeps(key, self.every_tunnel) {
            self.rows.key_requests.push(row);
        }
    }

    /// Whether QKD link `link`'s pool samples are written.
    pub fn keeps_link(&self, link: usize) -> bool {
        self.keeps(link, self.every_link)
    }

    /// Pool half `end` of QKD link `link` at a sample time: a row if it changed.
    pub fn pool_sample(&mut self, (link, end): (usize, usize), row: PoolSample) {
        let now = Some((row.level_bits, row.generated_bits));
        let half = 2 * link + end;
        if self.last_sample[half] == now || !self.keeps_link(link) {
            return;
        }
        self.last_sample[half] = now;
        self.rows.pool_samples.push(row);
    }

    /// Hands the waiting rows to `sink`.
    pub fn flush(&mut self, sink: &mut dyn RowSink) {
        self.rows.drain_into(sink);
    }
}

/// Typed trace lines of the network.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum NetTrace<'a> {
    Established {
        tunnel: &'a str,
        spis: String,
        proposal: &'a str,
        ppk: &'a str,
        ppk_id: &'a str,
    },
    Failed {
        tunnel: &'a str,
        reason: String,
    },
    Exchange {
        tunnel: &'a str,
        exchange: &'a str,
        outcome: &'a str,
        bytes: usize,
        fragments: usize,
        retransmissions: u32,
    },
    KeyRequest {
        tunnel: &'a str,
        op: &'a str,
        status: u16,
    },
    Kme {
        up: bool,
    },
}

impl TraceEvent for NetTrace<'_> {
    fn kind(&self) -> &'static str {
        match self {
            NetTrace::Established { .. } => "ike.established",
            NetTrace::Failed { .. } => "ike.failed",
            NetTrace::Exchange { .. } => "ike.exchange",
            NetTrace::KeyRequest { .. } => "qkd.request",
            NetTrace::Kme { .. } => "qkd.device",
        }
    }
}

/// The keys a capture of the run needs, as records of Wireshark's two decryption
/// tables (its UAT files `ikev2_decryption_table` and `esp_sa`), taken at each tunnel's
/// initiator: every IKE key set (also after each RFC 9370 update and each IKE SA
/// rekey), and both directions of every Child SA.
#[derive(Debug, Default)]
pub struct Keylog {
    pub ike: Vec<String>,
    pub esp: Vec<String>,
}

impl World {
    /// Records the keys of tunnel initiators' events for Wireshark.
    pub(super) fn record_keys(&mut self, gw: usize, ev: &Event) {
        let Some(log) = self.keylog.as_mut() else {
            return;
        };
        let sa = match ev {
            Event::Keys { sa, .. }
            | Event::IkeSaRekeyed { old: sa, .. }
            | Event::ChildSaReady { sa, .. }
            | Event::ChildSaRekeyed { sa, .. } => *sa,
            _ => return,
        };
        let Some(&t) = self.sa_tunnel.get(&(gw, sa)) else {
            return;
        };
        let tun = &self.tunnels[t];
        if gw != tun.initiator {
            return;
        }
        let local = IpAddr::V4(*self.gateways[gw].addr.ip());
        let remote = IpAddr::V4(*self.gateways[tun.responder].addr.ip());
        match ev {
            Event::Keys { entry, .. } => log.ike.push(entry.wireshark_line()),
            Event::IkeSaRekeyed { keylog, .. } => log.ike.push(keylog.wireshark_line()),
            Event::ChildSaReady { child, .. } | Event::ChildSaRekeyed { child, .. } => {
                for outbound in [true, false] {
                    log.esp
                        .push(child.wireshark_esp_line(local, remote, outbound));
                }
            }
            _ => {}
        }
    }

    /// The results; `totals` (if given) gets a copy of the totals' builder.
    pub(super) fn results(mut self, totals: Option<&mut TotalsBuilder>) -> Results {
        let now = self.sim.now();
        // The pools' counters up to the end.
        self.qkd.advance(now.as_nanos());
        // Exchanges still in flight count too (their rows say `unfinished`).
        self.ending = true;
        for gw in 0..self.gateways.len() {
            self.gateways[gw].ep.finish(now.as_nanos());
            self.drain(gw);
        }
        for (t_index, t) in self.tunnels.iter_mut().enumerate() {
            t.close(now);
            // An attempt still going at the end (often: still waiting for a key).
            if let Some((mut a, sa)) = t.attempt.take() {
                if sa.is_none() {
                    a.key_wait = now.saturating_since(a.requested);
                    a.ike_started = now;
                }
                t.summary.key_wait_ns += a.key_wait.as_nanos();
                let outcome = "unfinished".to_string();
                let row = a.row(
                    &t.name,
                    t.summary.attempts,
                    sa,
                    now,
                    AttemptEnd::not_up(outcome),
                );
                self.rows.handshake(t_index, row);
            }
        }
        // What follows frees the world's state as it goes: at scale the results would
        // otherwise be built beside everything they summarize, and set the run's peak
        // memory. Events still queued will never run.
        self.sim.discard_pending();
        let flows = std::mem::take(&mut self.dp).into_flows();
        let violations = std::mem::take(&mut self.oracle).violations;
        let qkd_links = std::mem::take(&mut self.qkd.links);
        let pools = qkd_links
            .iter()
            .flat_map(|l| (0..2).map(move |end| (l, end)))
            .map(|(l, end)| {
                let owner = self.qkd.kmes[l.ends[end]].id.clone();
                let (key_size_bits, warning_below_keys, resume_at_keys) =
                    l.halves[end].thresholds();
                PoolSummary {
                    link: l.name.clone(),
                    owner,
                    capacity_bits: l.halves[end].capacity_bits(),
                    key_size_bits,
                    warning_below_keys,
                    resume_at_keys,
                    generated_bits: l.halves[end].stats.generated_bits,
                    delivered_keys: l.halves[end].stats.delivered_keys,
                    refused_requests: l.halves[end].stats.refused_requests,
                }
            })
            .collect();
        drop(qkd_links);
        let sim_links = std::mem::take(&mut self.links);
        let links = sim_links
            .iter()
            .flat_map(|l| {
                let names = [
                    &self.gateways[l.ends[0]].name,
                    &self.gateways[l.ends[1]].name,
                ];
                (0..2).map(move |d| LinkSummary {
                    link: l.name.clone(),
                    direction: format!("{}>{}", names[d], names[1 - d]),
                    stats: l.channels[d].stats().clone(),
                })
            })
            .collect();
        drop(sim_links);
        let tunnels = std::mem::take(&mut self.tunnels)
            .into_iter()
            .map(|t| t.summary)
            .collect();
        let crypto = self
            .gateways
            .first()
            .map_or("real", |g| g.ep.crypto_name())
            .to_string();
        let mut endpoints = Vec::with_capacity(self.gateways.len());
        let mut cpus = Vec::new();
        for g in std::mem::take(&mut self.gateways) {
            if let Some(cpu) = &g.cpu {
                cpus.push(CpuSummary {
                    gateway: g.name.clone(),
                    cores: cpu.cores(),
                    busy_ns: cpu.busy_ns,
                    jobs: cpu.jobs,
                    max_wait_ns: cpu.max_wait_ns,
                });
            }
            endpoints.push((g.name, g.ep.stats().clone()));
        }
        let fingerprint = self.sim.trace.fingerprint().to_string();
        Results {
            seed: self.sim.seed(),
            crypto,
            duration_ns: self.cfg.duration.as_nanos(),
            events: self.sim.events_processed(),
            fingerprint,
            tunnels,
            traffic: flows
                .map(|mut f| {
                    f.lost_on_link = f.sent_packets - f.arrived.min(f.sent_packets);
                    f
                })
                .collect(),
            totals: {
                let builder = std::mem::take(&mut self.rows.totals);
                if let Some(out) = totals {
                    *out = builder.clone();
                }
                builder.finish(self.rows.selection)
            },
            pools,
            links,
            qkd: self.qkd.stats.clone(),
            endpoints,
            cpus,
            adversaries: self.adversaries.into_iter().map(|a| a.summary).collect(),
            violations,
            rows: self.rows.rows,
        }
    }
}
