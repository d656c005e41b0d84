//! Metrics: counters, gauges recorded as time series, and histograms.
//!
//! Metrics are registered once by name and then updated through small integer handles,
//! so a hot path pays an index, not a string lookup. Names are kept in a `BTreeMap`, and
//! every export is sorted by name: output never depends on hashing or registration order.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::time::{SimDuration, SimTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterId(u32);
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaugeId(u32);
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramId(u32);

/// A run's metrics.
#[derive(Default)]
pub struct Metrics {
    counter_names: BTreeMap<String, CounterId>,
    counters: Vec<u64>,
    gauge_names: BTreeMap<String, GaugeId>,
    gauges: Vec<Vec<(SimTime, f64)>>,
    histogram_names: BTreeMap<String, HistogramId>,
    histograms: Vec<Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter called `name`, created at zero on first use.
    pub fn counter(&mut self, name: &str) -> CounterId {
        if let Some(&id) = self.counter_names.get(name) {
            return id;
        }
        let id = CounterId(self.counters.len() as u32);
        self.counters.push(0);
        self.counter_names.insert(name.to_string(), id);
        id
    }

    pub fn add(&mut self, id: CounterId, n: u64) {
        self.counters[id.0 as usize] += n;
    }

    pub fn counter_value(&self, id: CounterId) -> u64 {
        self.counters[id.0 as usize]
    }

    /// The gauge called `name`; it has no value until first set.
    pub fn gauge(&mut self, name: &str) -> GaugeId {
        if let Some(&id) = self.gauge_names.get(name) {
            return id;
        }
        let id = GaugeId(self.gauges.len() as u32);
        self.gauges.push(Vec::new());
        self.gauge_names.insert(name.to_string(), id);
        id
    }

    /// Sets a gauge at `now`. Only changes are stored: the series is a step function.
    pub fn set(&mut self, id: GaugeId, now: SimTime, value: f64) {
        let series = &mut self.gauges[id.0 as usize];
        match series.last_mut() {
            Some(last) if last.1 == value => {}
            Some(last) if last.0 == now => last.1 = value,
            _ => series.push((now, value)),
        }
    }

    /// The change points of a gauge, in time order.
    pub fn series(&self, id: GaugeId) -> &[(SimTime, f64)] {
        &self.gauges[id.0 as usize]
    }

    /// The gauge sampled every `step` from `start` through `end` (inclusive), holding
    /// each value until the next change; `None` before the first value.
    pub fn sample(
        &self,
        id: GaugeId,
        start: SimTime,
        end: SimTime,
        step: SimDuration,
    ) -> Vec<(SimTime, Option<f64>)> {
        assert!(!step.is_zero(), "sampling step must be positive");
        let series = self.series(id);
        let mut out = Vec::new();
        let mut i = 0;
        let mut current = None;
        let mut t = start;
        while t <= end {
            while i < series.len() && series[i].0 <= t {
                current = Some(series[i].1);
                i += 1;
            }
            out.push((t, current));
            if t == SimTime::MAX {
                break;
            }
            t += step;
        }
        out
    }

    pub fn histogram(&mut self, name: &str) -> HistogramId {
        if let Some(&id) = self.histogram_names.get(name) {
            return id;
        }
        let id = HistogramId(self.histograms.len() as u32);
        self.histograms.push(Histogram::default());
        self.histogram_names.insert(name.to_string(), id);
        id
    }

    pub fn record(&mut self, id: HistogramId, value: u64) {
        self.histograms[id.0 as usize].record(value);
    }

    pub fn histogram_ref(&self, id: HistogramId) -> &Histogram {
        &self.histograms[id.0 as usize]
    }

    /// Everything, sorted by name, ready to serialize.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            counters: self
                .counter_names
                .iter()
                .map(|(n, id)| (n.clone(), self.counters[id.0 as usize]))
                .collect(),
            gauges: self
                .gauge_names
                .iter()
                .map(|(n, id)| (n.clone(), self.gauges[id.0 as usize].clone()))
                .collect(),
            histograms: self
                .histogram_names
                .iter()
                .map(|(n, id)| (n.clone(), self.histograms[id.0 as usize].summary()))
                .collect(),
        }
    }
}

/// A serializable copy of all metrics.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, Vec<(SimTime, f64)>>,
    pub histograms: BTreeMap<String, HistogramSummary>,
}

/// Sub-buckets per power of two: quantiles are within 1/32 (about 3 %) of the truth.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of `u64` values (e.g. nanoseconds or bytes) with exact count,
/// sum, min and max.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        v as usize
    } else {
        let exp = 63 - v.leading_zeros();
        let shift = exp - SUB_BITS;
        (((exp - SUB_BITS + 1) as u64) << SUB_BITS | ((v >> shift) - SUB)) as usize
    }
}

/// The largest value that falls into bucket `b`.
fn bucket_high(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        b
    } else {
        let group = (b >> SUB_BITS) - 1; // = exp - SUB_BITS
        let mantissa = (b & (SUB - 1)) + SUB;
        (((mantissa + 1) as u128) << group)
            .saturating_sub(1)
            .min(u64::MAX as u128) as u64
    }
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        let b = bucket_of(v);
        if b >= self.buckets.len() {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += 1;
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += v as u128;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` in [0, 1], as the upper edge of its bucket clamped to
    /// the observed range (so `quantile(1.0) == max`).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_high(b).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    pub fn summary(&self) -> HistogramSummary {
        HistogramSummary {
            count: self.count,
            min: (self.count > 0).then_some(self.min),
            max: (self.count > 0).then_some(self.max),
            mean: self.mean(),
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramSummary {
    pub count: u64,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub mean: Option<f64>,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> SimTime {
        s.parse().unwrap()
    }

    #[test]
    fn counters_and_gauges() {
        let mut m = Metrics::new();
        let c = m.counter("link/a-b/drops");
        m.add(c, 2);
        let again = m.counter("link/a-b/drops");
        assert_eq!(again, c);
        m.add(again, 3);
        assert_eq!(m.counter_value(c), 5);

        let g = m.gauge("qkd/pool");
        m.set(g, t("0s"), 10.0);
        m.set(g, t("1s"), 10.0); // unchanged: not stored
        m.set(g, t("2s"), 4.0);
        m.set(g, t("2s"), 5.0); // same instant: replaced
        assert_eq!(m.series(g), &[(t("0s"), 10.0), (t("2s"), 5.0)]);
        let s = m.sample(g, t("0s"), t("3s"), "1s".parse().unwrap());
        let values: Vec<_> = s.iter().map(|x| x.1).collect();
        assert_eq!(values, [Some(10.0), Some(10.0), Some(5.0), Some(5.0)]);

        let snap = m.snapshot();
        assert_eq!(snap.counters["link/a-b/drops"], 5);
        assert_eq!(snap.gauges["qkd/pool"].len(), 2);
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(
            (s.count, s.min, s.max),
            (10_000, Some(1000), Some(10_000_000))
        );
        assert_eq!(s.mean, Some(5_000_500.0));
        let p50 = s.p50.unwrap() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.04, "{p50}");
        let p99 = s.p99.unwrap() as f64;
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(h.quantile(1.0), Some(10_000_000));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    proptest! {
        #[test]
        fn every_value_lies_within_its_bucket(v in any::<u64>()) {
            let b = bucket_of(v);
            prop_assert!(v <= bucket_high(b));
            if b > 0 {
                prop_assert!(v > bucket_high(b - 1));
            }
        }
    }
}
