//! The metrics of a run: every number a sweep tabulates, plots or compares, each
//! defined once here, from a run's [`Results`].
//!
//! A metric's name says what it counts, how, and in what unit:
//! `{what}_{statistic}_{unit}`, for example `availability_mean_ratio` (the mean over
//! tunnels of a fraction), `retransmissions_total_count` (a sum over the run) or
//! `handshake_p95_ms`. A metric that does not apply to a run (a quantile of no
//! handshakes, a CPU figure without a CPU model) has no value rather than a zero.

use std::collections::BTreeMap;

use crate::{QuantileSummary, Results};

/// How a metric summarizes its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    /// A sum over the run.
    Total,
    /// A mean over the run's tunnels, attempts or gateways (the metric's text says which).
    Mean,
    /// One sum divided by another.
    Rate,
    /// A quantile of a distribution (within the sketch's stated relative error).
    P50,
    P95,
    P99,
    /// The largest value.
    Max,
}

impl Statistic {
    pub fn word(self) -> &'static str {
        match self {
            Statistic::Total => "total",
            Statistic::Mean => "mean",
            Statistic::Rate => "rate",
            Statistic::P50 => "p50",
            Statistic::P95 => "p95",
            Statistic::P99 => "p99",
            Statistic::Max => "max",
        }
    }
}

type Value = Box<dyn Fn(&Results) -> Option<f64> + Send + Sync>;

/// One metric: its parts, its meaning and how a run's results give it.
pub struct Metric {
    /// What is measured, e.g. `handshake`.
    pub what: String,
    pub statistic: Statistic,
    /// `count`, `ratio` (0 to 1), `s`, `ms` or `bytes`.
    pub unit: &'static str,
    pub about: String,
    value: Value,
}

impl Metric {
    /// `{what}_{statistic}_{unit}`.
    pub fn name(&self) -> String {
        format!("{}_{}_{}", self.what, self.statistic.word(), self.unit)
    }

    pub fn value(&self, r: &Results) -> Option<f64> {
        // `+ 0.0` turns the -0.0 of an empty float sum into 0.
        (self.value)(r).filter(|v| v.is_finite()).map(|v| v + 0.0)
    }
}

fn metric(
    what: &str,
    statistic: Statistic,
    unit: &'static str,
    about: impl Into<String>,
    value: impl Fn(&Results) -> Option<f64> + Send + Sync + 'static,
) -> Metric {
    Metric {
        what: what.into(),
        statistic,
        unit,
        about: about.into(),
        value: Box::new(value),
    }
}

/// The exchange types whose bytes are reported one by one, in the order a handshake
/// uses them.
pub const EXCHANGES: [&str; 6] = [
    "IKE_SA_INIT",
    "IKE_INTERMEDIATE",
    "IKE_AUTH",
    "CREATE_CHILD_SA",
    "IKE_FOLLOWUP_KE",
    "INFORMATIONAL",
];

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

fn tunnel_sum(r: &Results, f: impl Fn(&crate::TunnelSummary) -> f64) -> f64 {
    r.tunnels.iter().map(f).sum()
}

/// The quantile metrics of one distribution in ns, reported in ms.
fn quantiles(
    out: &mut Vec<Metric>,
    what: &str,
    about: &str,
    get: fn(&Results) -> &QuantileSummary,
) {
    let ms = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e6);
    out.push(metric(
        what,
        Statistic::Mean,
        "ms",
        format!("{about}: mean"),
        move |r| get(r).mean.map(|ns| ns / 1e6),
    ));
    out.push(metric(
        what,
        Statistic::P50,
        "ms",
        format!("{about}: median"),
        move |r| ms(get(r).p50),
    ));
    out.push(metric(
        what,
        Statistic::P95,
        "ms",
        format!("{about}: 95th percentile"),
        move |r| ms(get(r).p95),
    ));
    out.push(metric(
        what,
        Statistic::P99,
        "ms",
        format!("{about}: 99th percentile"),
        move |r| ms(get(r).p99),
    ));
}

/// Every metric, in the order tables show them.
pub fn all() -> Vec<Metric> {
    use Statistic::*;
    let mut m = vec![
        metric("tunnels", Total, "count", "tunnels in the run", |r| {
            Some(r.tunnels.len() as f64)
        }),
        metric(
            "availability",
            Mean,
            "ratio",
            "mean over tunnels of the time up divided by the time from the tunnel's start to the run's end",
            |r| {
                ratio(
                    tunnel_sum(r, |t| t.availability(r.duration_ns)),
                    r.tunnels.len() as f64,
                )
            },
        ),
        metric(
            "outages",
            Total,
            "count",
            "times a tunnel went down after it had been up",
            |r| Some(tunnel_sum(r, |t| t.outages.len() as f64)),
        ),
        metric(
            "outage",
            Total,
            "s",
            "time tunnels spent down after they had first been up, summed over tunnels",
            |r| {
                Some(
                    tunnel_sum(r, |t| {
                        t.outages
                            .iter()
                            .map(|o| o.to_ns.saturating_sub(o.from_ns) as f64)
                            .sum::<f64>()
                    }) / 1e9,
                )
            },
        ),
        metric(
            "attempts",
            Total,
            "count",
            "attempts to bring an IKE SA up (first setup, retry, re-authentication)",
            |r| Some(tunnel_sum(r, |t| t.attempts as f64)),
        ),
        metric(
            "established",
            Total,
            "count",
            "attempts that established their IKE SA",
            |r| Some(tunnel_sum(r, |t| t.established as f64)),
        ),
        metric("failed", Total, "count", "attempts that failed", |r| {
            Some(tunnel_sum(r, |t| t.failed as f64))
        }),
        metric(
            "handshake_success",
            Rate,
            "ratio",
            "established attempts divided by attempts",
            |r| {
                ratio(
                    tunnel_sum(r, |t| t.established as f64),
                    tunnel_sum(r, |t| t.attempts as f64),
                )
            },
        ),
        metric(
            "downgrades",
            Total,
            "count",
            "IKE SAs established without the PPK their policy made optional",
            |r| Some(tunnel_sum(r, |t| t.downgrades as f64)),
        ),
    ];
    quantiles(
        &mut m,
        "handshake",
        "established attempts, IKE_SA_INIT sent to IKE SA established",
        |r| &r.totals.handshake_ns,
    );
    quantiles(
        &mut m,
        "time_to_up",
        "established attempts, IKE SA wanted (QKD key wait included) to established",
        |r| &r.totals.time_to_up_ns,
    );
    m.extend([
        metric(
            "key_wait",
            Total,
            "s",
            "time attempts spent waiting for a QKD key, summed",
            |r| Some(tunnel_sum(r, |t| t.key_wait_ns as f64) / 1e9),
        ),
        metric(
            "key_wait",
            P95,
            "ms",
            "an attempt's wait for a QKD key: 95th percentile",
            |r| r.totals.key_wait_ns.p95.map(|ns| ns as f64 / 1e6),
        ),
        metric(
            "key_wait_share",
            Rate,
            "ratio",
            "time spent waiting for QKD keys divided by the time spent waiting and handshaking",
            |r| {
                let wait = tunnel_sum(r, |t| t.key_wait_ns as f64);
                ratio(wait, wait + tunnel_sum(r, |t| t.handshake_ns as f64))
            },
        ),
        metric(
            "key_request_latency",
            P95,
            "ms",
            "a key manager request's latency: 95th percentile",
            |r| {
                r.totals
                    .key_request_latency_ns
                    .p95
                    .map(|ns| ns as f64 / 1e6)
            },
        ),
        metric(
            "keys_drawn",
            Total,
            "count",
            "QKD keys the initiators drew",
            |r| Some(tunnel_sum(r, |t| t.keys_drawn as f64)),
        ),
        metric(
            "keys_wasted",
            Total,
            "count",
            "QKD keys drawn but never used by an established IKE SA",
            |r| Some(tunnel_sum(r, |t| t.keys_wasted as f64)),
        ),
        metric(
            "keys_refused",
            Total,
            "count",
            "key requests the key managers refused for lack of key material",
            |r| Some(r.qkd.requests_refused as f64),
        ),
        metric(
            "retransmissions",
            Total,
            "count",
            "IKE requests sent again, in every exchange",
            |r| Some(r.totals.retransmissions() as f64),
        ),
        metric(
            "ike_datagrams",
            Total,
            "count",
            "IKE datagrams of every request and response (first transmissions): one per message, or one per fragment of a fragmented message",
            |r| {
                Some(
                    r.totals
                        .exchanges
                        .iter()
                        .map(|e| (e.request_fragments + e.response_fragments) as f64)
                        .sum(),
                )
            },
        ),
        metric(
            "ike",
            Total,
            "bytes",
            "IKE bytes of every exchange, requests and responses (first transmissions)",
            |r| {
                Some(
                    r.totals
                        .exchanges
                        .iter()
                        .map(|e| (e.request_bytes + e.response_bytes) as f64)
                        .sum(),
                )
            },
        ),
    ]);
    for x in EXCHANGES {
        let lower = x.to_lowercase();
        m.push(metric(
            &format!("{lower}_request"),
            Total,
            "bytes",
            format!("bytes of {x} requests"),
            move |r| Some(r.totals.exchange(x).request_bytes as f64),
        ));
        m.push(metric(
            &format!("{lower}_response"),
            Total,
            "bytes",
            format!("bytes of {x} responses"),
            move |r| Some(r.totals.exchange(x).response_bytes as f64),
        ));
    }
    m.extend([
        metric("ike_rekeys", Total, "count", "IKE SA rekeys completed", |r| {
            Some(tunnel_sum(r, |t| t.ike_rekeys as f64))
        }),
        metric("dead_peers", Total, "count", "IKE SAs that dead peer detection found dead", |r| {
            Some(tunnel_sum(r, |t| t.dead_peers as f64))
        }),
        metric("esp_offered", Total, "count", "ESP packets the traffic offered", |r| {
            Some(r.traffic.iter().map(|t| t.offered_packets as f64).sum())
        }),
        metric("esp_delivered", Total, "count", "ESP packets delivered to the far end", |r| {
            Some(r.traffic.iter().map(|t| t.delivered_packets as f64).sum())
        }),
        metric("esp_lost", Total, "count", "ESP packets lost, for every reason (no SA, the link, unknown SPI, expired, replayed, bad ICV, malformed)", |r| {
            Some(r.traffic.iter().flat_map(|t| t.losses()).map(|(_, n)| n as f64).sum())
        }),
        metric("esp_delivery", Rate, "ratio", "ESP packets delivered divided by packets offered", |r| {
            ratio(
                r.traffic.iter().map(|t| t.delivered_packets as f64).sum(),
                r.traffic.iter().map(|t| t.offered_packets as f64).sum(),
            )
        }),
        metric("cpu_busy", Mean, "ratio", "mean over gateways with a CPU model of core time busy divided by cores times the run's duration", |r| {
            let per: Vec<f64> = r.cpus.iter().filter_map(|c| ratio(c.busy_ns as f64, c.cores as f64 * r.duration_ns as f64)).collect();
            ratio(per.iter().sum(), per.len() as f64)
        }),
        metric("cpu_wait", Max, "ms", "the longest any IKE job waited for a core", |r| {
            r.cpus.iter().map(|c| c.max_wait_ns).max().map(|ns| ns as f64 / 1e6)
        }),
        metric("violations", Total, "count", "invariants the run broke", |r| {
            Some(r.violations.len() as f64)
        }),
    ]);
    m
}

/// Every metric of a run by name (no value: the metric does not apply).
pub fn of_run(r: &Results) -> BTreeMap<String, Option<f64>> {
    all().iter().map(|m| (m.name(), m.value(r))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExchangeTotals, TunnelSummary};

    #[test]
    fn names_are_unique_and_say_statistic_and_unit() {
        let names: Vec<String> = all().iter().map(Metric::name).collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        for m in all() {
            assert!(
                m.name()
                    .ends_with(&format!("_{}_{}", m.statistic.word(), m.unit))
            );
            assert!(["count", "ratio", "s", "ms", "bytes"].contains(&m.unit));
        }
    }

    #[test]
    fn values_follow_their_definitions() {
        let tunnel = |up_ns, attempts, established, key_wait_ns, handshake_ns| TunnelSummary {
            up_ns,
            attempts,
            established,
            key_wait_ns,
            handshake_ns,
            ..Default::default()
        };
        let r = Results {
            duration_ns: 1_000,
            tunnels: vec![tunnel(1_000, 2, 1, 300, 100), tunnel(500, 2, 2, 0, 100)],
            totals: crate::RunTotals {
                exchanges: vec![ExchangeTotals {
                    exchange: "IKE_AUTH".into(),
                    request_bytes: 10,
                    response_bytes: 7,
                    retransmissions: 3,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let v = of_run(&r);
        assert_eq!(v["esp_lost_total_count"], Some(0.0));
        assert_eq!(v["availability_mean_ratio"], Some(0.75));
        assert_eq!(v["handshake_success_rate_ratio"], Some(0.75));
        assert_eq!(v["key_wait_share_rate_ratio"], Some(0.6));
        assert_eq!(v["ike_total_bytes"], Some(17.0));
        assert_eq!(v["ike_auth_response_total_bytes"], Some(7.0));
        assert_eq!(v["retransmissions_total_count"], Some(3.0));
        assert!(
            v["outage_total_s"].unwrap().is_sign_positive(),
            "no -0 in tables"
        );
        let with_traffic = Results {
            traffic: vec![crate::TrafficSummary {
                offered_packets: 10,
                delivered_packets: 7,
                lost_on_link: 2,
                replayed: 1,
                ..Default::default()
            }],
            ..r.clone()
        };
        let t = of_run(&with_traffic);
        assert_eq!(t["esp_lost_total_count"], Some(3.0));
        assert_eq!(t["esp_delivery_rate_ratio"], Some(0.7));
        // Nothing to take a quantile of, no CPU model, no traffic: no value.
        assert_eq!(v["handshake_p50_ms"], None);
        assert_eq!(v["cpu_busy_mean_ratio"], None);
        assert_eq!(v["esp_delivery_rate_ratio"], None);
    }
}
