//! Quantiles of a stream of values in fixed memory: a run of a million tunnels cannot
//! keep every handshake time to sort at the end.
//!
//! The first [`EXACT`] values are kept as they are, and quantiles of them are exact.
//! Past that the sketch turns into a log-linear histogram: values below 2^[`SUB_BITS`]
//! have a bucket each, larger ones 2^[`SUB_BITS`] buckets per power of two. A quantile
//! is the middle of the bucket holding the value of that rank, so it is within
//! [`RELATIVE_ERROR`] of that value (relative); [`QuantileSummary::relative_error`] says
//! which of the two a figure is. The histogram holds at most a few thousand counters
//! whatever the number of values.

use serde::{Deserialize, Serialize};

/// Values kept exactly before the sketch turns into a histogram.
pub const EXACT: usize = 1024;
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// The largest relative distance of a histogram quantile from the true value: half a
/// bucket, whose width is at most 1/2^SUB_BITS of its lower edge.
pub const RELATIVE_ERROR: f64 = 1.0 / (2 * SUB) as f64;

#[derive(Clone, Debug, Default)]
pub struct Sketch {
    exact: Vec<u64>,
    /// Counts per bucket, once past [`EXACT`] values.
    buckets: Vec<u64>,
    count: u64,
    sum: u128,
    max: u64,
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let shift = exp - SUB_BITS;
    (((shift + 1) as u64) << SUB_BITS | ((v >> shift) - SUB)) as usize
}

/// The smallest and largest value of bucket `b`.
fn bucket_range(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < SUB {
        return (b, b);
    }
    let shift = (b >> SUB_BITS) - 1;
    let low = ((b & (SUB - 1)) + SUB) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Sketch {
    pub fn record(&mut self, v: u64) {
        self.count += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
        if self.buckets.is_empty() && self.exact.len() < EXACT {
            self.exact.push(v);
            return;
        }
        for x in std::mem::take(&mut self.exact) {
            self.bump(x);
        }
        self.bump(v);
    }

    fn bump(&mut self, v: u64) {
        let b = bucket_of(v);
        if b >= self.buckets.len() {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `other`'s values: the same sketch as recording both streams, in any order
    /// (exact while the values together fit [`EXACT`], else the histogram).
    pub fn merge(&mut self, other: &Sketch) {
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
        if self.buckets.is_empty()
            && other.buckets.is_empty()
            && self.exact.len() + other.exact.len() <= EXACT
        {
            self.exact.extend_from_slice(&other.exact);
            return;
        }
        for x in std::mem::take(&mut self.exact)
            .into_iter()
            .chain(other.exact.iter().copied())
        {
            self.bump(x);
        }
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }

    /// The value of rank `round((n - 1) q)` (from 0) among the `n` values: exact while
    /// they were kept, else the middle of its bucket.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        if self.buckets.is_empty() {
            let mut v = self.exact.clone();
            let (_, x, _) = v.select_nth_unstable(rank as usize);
            return Some(*x);
        }
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen > rank {
                let (low, high) = bucket_range(b);
                return Some((low + (high - low) / 2).min(self.max));
            }
        }
        Some(self.max)
    }

    /// The quantiles at 0 %, 1 %, ..., 100 %.
    fn percentiles(&self) -> Vec<u64> {
        if !self.buckets.is_empty() {
            return (0..=100)
                .filter_map(|i| self.quantile(i as f64 / 100.0))
                .collect();
        }
        let mut sorted = self.exact.clone();
        sorted.sort_unstable();
        match sorted.len() {
            0 => Vec::new(),
            n => (0..=100)
                .map(|i| sorted[((n - 1) as f64 * i as f64 / 100.0).round() as usize])
                .collect(),
        }
    }

    pub fn summary(&self) -> QuantileSummary {
        QuantileSummary {
            count: self.count,
            mean: (self.count > 0).then(|| self.sum as f64 / self.count as f64),
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            max: (self.count > 0).then_some(self.max),
            percentiles: self.percentiles(),
            relative_error: if self.buckets.is_empty() {
                0.0
            } else {
                RELATIVE_ERROR
            },
        }
    }
}

/// Count, exact mean and maximum, and quantiles (rank `round((n - 1) q)`) of a stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantileSummary {
    pub count: u64,
    pub mean: Option<f64>,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
    /// The quantiles at 0 %, 1 %, ..., 100 % (empty with no values): enough to draw
    /// the distribution function.
    pub percentiles: Vec<u64>,
    /// 0 when the quantiles are exact, else the most a quantile can be off, relative
    /// to the true value.
    pub relative_error: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_sketches_are_the_sketch_of_both_streams() {
        let values: Vec<u64> = (0..3_000u64).map(|i| (i * 7919) % 100_003).collect();
        for split in [0, 10, 500, 1024, 1025, 2_000, 3_000] {
            for take in [600, 3_000] {
                let part = &values[..take];
                let (a, b) = part.split_at(split.min(take));
                let mut whole = Sketch::default();
                part.iter().for_each(|&v| whole.record(v));
                let (mut left, mut right) = (Sketch::default(), Sketch::default());
                a.iter().for_each(|&v| left.record(v));
                b.iter().for_each(|&v| right.record(v));
                right.merge(&left);
                assert_eq!(right.summary(), whole.summary(), "split {split} of {take}");
            }
        }
    }

    #[test]
    fn buckets_hold_what_they_say() {
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let (low, high) = bucket_range(bucket_of(v));
            assert!(low <= v && v <= high, "{v}: [{low}, {high}]");
            assert!((high - low) as f64 <= low as f64 / SUB as f64 + 1.0);
        }
    }

    #[test]
    fn exact_up_to_its_size_then_within_its_stated_error() {
        let mut s = Sketch::default();
        let values: Vec<u64> = (0..EXACT as u64).map(|i| (i * 7919) % 100_003).collect();
        for &v in &values {
            s.record(v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let exact = |q: f64, v: &[u64]| v[((v.len() - 1) as f64 * q).round() as usize];
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
            assert_eq!(s.quantile(q), Some(exact(q, &sorted)));
        }
        assert_eq!(s.summary().relative_error, 0.0);
        let pct = s.summary().percentiles;
        assert_eq!(pct.len(), 101);
        for (i, p) in pct.iter().enumerate() {
            assert_eq!(Some(*p), s.quantile(i as f64 / 100.0));
        }
        // A million values of a wide spread: every quantile within the error.
        let mut all = sorted;
        for i in 0..1_000_000u64 {
            let v = 1_000 + (i * 2_654_435_761) % 5_000_000_000;
            s.record(v);
            all.push(v);
        }
        all.sort_unstable();
        let sum = s.summary();
        assert_eq!(sum.relative_error, RELATIVE_ERROR);
        assert_eq!(sum.count, all.len() as u64);
        assert_eq!(sum.max, all.last().copied());
        for q in [0.01, 0.5, 0.9, 0.95, 0.99] {
            let (got, want) = (s.quantile(q).unwrap() as f64, exact(q, &all) as f64);
            assert!(
                (got - want).abs() <= want * RELATIVE_ERROR + 1.0,
                "{q}: {got} vs {want}"
            );
        }
        assert!(s.buckets.len() < 5000);
    }
}
