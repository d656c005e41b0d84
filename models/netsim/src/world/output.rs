//! What a run leaves behind besides its results rows: typed trace lines, the keylog
//! for Wireshark, and the [`Results`] assembled at the end.

use std::net::IpAddr;

use ikev2::endpoint::Event;
use serde::Serialize;
use sim_core::TraceEvent;

use super::World;
use super::tunnels::AttemptEnd;
use crate::results::{CpuSummary, LinkSummary, PoolSeries, Results};

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

    pub(super) fn results(mut self) -> Results {
        let now = self.sim.now();
        // The pools' counters up to the end.
        self.qkd.advance(now.as_nanos());
        // Exchanges still in flight count too (their rows say `unfinished`).
        self.ending = true;
        for gw in 0..self.gateways.len() {
            self.gateways[gw].ep.finish(now.as_nanos());
            self.drain(gw);
        }
        for t in &mut self.tunnels {
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
                self.handshakes.push(row);
            }
        }
        let pools = self
            .qkd
            .links
            .iter()
            .flat_map(|l| (0..2).map(move |end| (l, end)))
            .map(|(l, end)| {
                let owner = self.qkd.kmes[l.ends[end]].id.clone();
                let mut series = |what: &str| -> Vec<(u64, u64)> {
                    let g = self
                        .sim
                        .metrics
                        .gauge(&format!("qkd/{}/{owner}/{what}", l.name));
                    self.sim
                        .metrics
                        .series(g)
                        .iter()
                        .map(|&(t, v)| (t.as_nanos(), v as u64))
                        .collect()
                };
                let (samples, generated_samples) = (series("level_bits"), series("generated_bits"));
                let (key_size_bits, warning_below_keys, resume_at_keys) =
                    l.halves[end].thresholds();
                PoolSeries {
                    link: l.name.clone(),
                    owner,
                    capacity_bits: l.halves[end].capacity_bits(),
                    key_size_bits,
                    warning_below_keys,
                    resume_at_keys,
                    samples,
                    generated_samples,
                    generated_bits: l.halves[end].stats.generated_bits,
                    delivered_keys: l.halves[end].stats.delivered_keys,
                    refused_requests: l.halves[end].stats.refused_requests,
                }
            })
            .collect();
        let links = self
            .links
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
        let fingerprint = self.sim.trace.fingerprint().to_string();
        Results {
            seed: self.sim.seed(),
            crypto: self
                .gateways
                .first()
                .map_or("real", |g| g.ep.crypto_name())
                .to_string(),
            duration_ns: self.cfg.duration.as_nanos(),
            events: self.sim.events_processed(),
            fingerprint,
            tunnels: self.tunnels.iter().map(|t| t.summary.clone()).collect(),
            traffic: std::mem::take(&mut self.dp.flows)
                .into_values()
                .map(|mut f| {
                    f.lost_on_link = f.sent_packets - f.arrived.min(f.sent_packets);
                    f
                })
                .collect(),
            handshakes: self.handshakes,
            exchanges: self.exchanges,
            key_requests: self.key_requests,
            pools,
            links,
            qkd: self.qkd.stats.clone(),
            endpoints: self
                .gateways
                .iter()
                .map(|g| (g.name.clone(), g.ep.stats().clone()))
                .collect(),
            cpus: self
                .gateways
                .iter()
                .filter_map(|g| {
                    let cpu = g.cpu.as_ref()?;
                    Some(CpuSummary {
                        gateway: g.name.clone(),
                        cores: cpu.cores(),
                        busy_ns: cpu.busy_ns,
                        jobs: cpu.jobs,
                        max_wait_ns: cpu.max_wait_ns,
                    })
                })
                .collect(),
            violations: self.oracle.violations,
        }
    }
}
