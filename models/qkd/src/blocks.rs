//! Poisson key blocks, drawn lazily: how many blocks of a `poisson` supply arrive up to a
//! time, at a cost that does not grow with the number of blocks.
//!
//! A Poisson process of rate `λ` is cut into epochs of a fixed length `E`: the number of
//! blocks in epoch `k` is Poisson(`λE`), and given that number the blocks fall uniformly
//! in the epoch. Both facts are exact, so the process below is the Poisson process, not
//! an approximation of it. The counts come from one stream, one draw per epoch in order;
//! the times inside epoch `k` come from a second stream positioned at `k`, and are drawn
//! only when someone asks for the level in the middle of that epoch. So the answer for
//! any time is the same however often, and at which times, the pool was asked before:
//! sampling a pool more often cannot change the keys a run gets.
//!
//! `E` is chosen so that an epoch holds about [`BLOCKS_PER_EPOCH`] blocks: a count is a
//! search in the Poisson(`λE`) distribution function, tabulated once per link; a
//! question in the middle of an epoch draws that epoch's arrival times and counts those
//! before it.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Poisson distribution functions by the bits of their mean.
pub(crate) type Tables = BTreeMap<u64, Arc<Inverse>>;

/// Entries of an [`Inverse`]'s guide table.
const GUIDE: usize = 256;

/// A distribution function, P(count <= k) for k = 0, 1, ..., with a guide table that
/// finds where a uniform draw falls in about one comparison instead of a binary search
/// (the "indexed search" of Chen and Asau): every link draws a count per epoch, and
/// at scale this is much of a day's cost.
pub(crate) struct Inverse {
    cdf: Vec<f64>,
    /// `guide[j]`: the first k with `cdf[k] > j / GUIDE`, where a draw in
    /// `[j / GUIDE, (j + 1) / GUIDE)` starts looking.
    guide: Vec<u32>,
}

impl Inverse {
    fn new(cdf: Vec<f64>) -> Self {
        let guide = (0..GUIDE)
            .map(|j| cdf.partition_point(|&c| c <= j as f64 / GUIDE as f64) as u32)
            .collect();
        Inverse { cdf, guide }
    }

    /// The first k with `cdf[k] > u`, for `u` in [0, 1): what `partition_point` finds.
    /// The last entry is 1, so the walk ends.
    fn count(&self, u: f64) -> u32 {
        // Exact: `u` has 53 bits and GUIDE is a power of two.
        let mut k = self.guide[(u * GUIDE as f64) as usize] as usize;
        while self.cdf[k] <= u {
            k += 1;
        }
        k as u32
    }
}

/// Mean blocks per epoch.
const BLOCKS_PER_EPOCH: f64 = 32.0;

/// The block arrivals of one QKD link.
pub(crate) struct Blocks {
    epoch_ns: u64,
    /// P(count <= k), k = 0, 1, ...: the Poisson(`λE`) distribution function.
    cdf: Arc<Inverse>,
    counts: ChaCha20Rng,
    /// The key of the times stream, which is positioned afresh for every epoch.
    times: [u8; 32],
    /// The epoch under way: its index, start, block count, and how many of its blocks
    /// were already handed out.
    epoch: u64,
    start_ns: u64,
    count: u32,
    handed: u32,
}

impl Blocks {
    /// Blocks with a mean gap of `mean_gap_ns`; `counts` and `times` are the link's two
    /// streams for them. `tables` holds the distribution functions made so far, shared
    /// by links of the same mean (a network's links mostly have one rate).
    pub(crate) fn new(
        mean_gap_ns: f64,
        tables: &mut Tables,
        counts: ChaCha20Rng,
        times: ChaCha20Rng,
    ) -> Self {
        let epoch_ns = (BLOCKS_PER_EPOCH * mean_gap_ns).round().max(1.0) as u64;
        let mean = epoch_ns as f64 / mean_gap_ns;
        let cdf = tables
            .entry(mean.to_bits())
            .or_insert_with(|| Inverse::new(poisson_cdf(mean)).into())
            .clone();
        let mut b = Blocks {
            epoch_ns,
            cdf,
            counts,
            times: times.get_seed(),
            epoch: 0,
            start_ns: 0,
            count: 0,
            handed: 0,
        };
        b.count = b.draw_count();
        b
    }

    /// The number of blocks that arrive after the previous call and at or before
    /// `now_ns` (times never go back).
    pub(crate) fn arrived_until(&mut self, now_ns: u64) -> u64 {
        let mut arrived = 0u64;
        loop {
            let end = self.start_ns + self.epoch_ns;
            if now_ns >= end {
                arrived += (self.count - self.handed) as u64;
                self.epoch += 1;
                self.start_ns = end;
                self.count = self.draw_count();
                self.handed = 0;
                continue;
            }
            if self.handed < self.count {
                let due = self.due_by(now_ns - self.start_ns);
                arrived += (due - self.handed) as u64;
                self.handed = due;
            }
            return arrived;
        }
    }

    fn draw_count(&mut self) -> u32 {
        let u = unit(&mut self.counts);
        self.cdf.count(u)
    }

    /// How many of the current epoch's blocks arrive within `since_start` of its start.
    /// Their times, uniform in the epoch, are drawn again on every such question rather
    /// than kept: a few dozen draws now and then, against a vector per link for the
    /// whole run.
    fn due_by(&self, since_start: u64) -> u32 {
        let mut rng = ChaCha20Rng::from_seed(self.times);
        rng.set_stream(self.epoch);
        rng.set_word_pos(0);
        let epoch_ns = self.epoch_ns as u128;
        (0..self.count)
            .filter(|_| ((rng.next_u64() as u128 * epoch_ns) >> 64) as u64 <= since_start)
            .count() as u32
    }
}

/// Uniform in [0, 1) with 53 random bits.
fn unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The Poisson(`mean`) distribution function, up to where the remaining tail is below
/// 2^-53 (a count beyond the table is never drawn: its probability is below one in 10^16).
/// Built with IEEE basic operations only, so every platform gets the same table.
fn poisson_cdf(mean: f64) -> Vec<f64> {
    let mut p = exp_neg(mean);
    let (mut sum, mut cdf) = (p, vec![p]);
    let mut k = 0.0;
    while k < mean || (sum < 1.0 - f64::EPSILON / 2.0 && p > 1e-17) {
        k += 1.0;
        p *= mean / k;
        sum += p;
        cdf.push(sum);
    }
    // Rounding leaves the sum a few units in the last place from 1: scale it to 1, so a
    // draw never runs off the table.
    cdf.iter_mut().for_each(|c| *c /= sum);
    cdf
}

/// `e^-x` for `x >= 0` from its Taylor series at `x / 2^n` (below 1/2), squared `n` times.
fn exp_neg(x: f64) -> f64 {
    let mut n = 0;
    let mut y = x;
    while y > 0.5 {
        y /= 2.0;
        n += 1;
    }
    let (mut term, mut sum) = (1.0, 1.0);
    for k in 1..30 {
        term *= -y / k as f64;
        sum += term;
    }
    for _ in 0..n {
        sum *= sum;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn blocks(mean_gap_ns: f64) -> Blocks {
        Blocks::new(
            mean_gap_ns,
            &mut Tables::new(),
            ChaCha20Rng::seed_from_u64(1),
            ChaCha20Rng::seed_from_u64(2),
        )
    }

    #[test]
    fn exp_neg_matches_the_platform_to_rounding() {
        for x in [0.0, 0.1, 0.5, 1.0, 7.3, 32.0, 100.0] {
            let (ours, libm) = (exp_neg(x), (-x).exp());
            assert!((ours - libm).abs() <= 1e-13 * libm, "{x}: {ours} vs {libm}");
        }
    }

    #[test]
    fn the_table_is_a_distribution_function_with_the_right_mean() {
        let cdf = poisson_cdf(32.0);
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*cdf.last().unwrap(), 1.0);
        let mean: f64 = (0..cdf.len())
            .map(|k| k as f64 * (cdf[k] - if k == 0 { 0.0 } else { cdf[k - 1] }))
            .sum();
        assert!((mean - 32.0).abs() < 1e-9, "{mean}");
    }

    /// The guide table finds what a binary search finds, at every edge of the table too.
    #[test]
    fn the_guided_search_finds_what_binary_search_finds() {
        for mean in [0.5, 7.3, 32.0, 1000.0] {
            let inv = Inverse::new(poisson_cdf(mean));
            let mut rng = ChaCha20Rng::seed_from_u64(mean.to_bits());
            let edges = inv.cdf.iter().copied().filter(|&c| c < 1.0);
            let guides = (0..GUIDE).map(|j| j as f64 / GUIDE as f64);
            let random = (0..100_000).map(|_| unit(&mut rng));
            for u in edges
                .chain(guides)
                .chain(random)
                .chain([0.0, 1.0 - f64::EPSILON])
            {
                let binary = inv.cdf.partition_point(|&c| c <= u) as u32;
                assert_eq!(inv.count(u), binary, "mean {mean}, u {u}");
            }
        }
    }

    /// The count up to a time does not depend on the times asked before.
    #[test]
    fn arrivals_do_not_depend_on_when_they_are_asked() {
        let gap = 1_000_000.0; // 1 ms
        let mut once = blocks(gap);
        let total = once.arrived_until(10_000_000_000);
        let mut often = blocks(gap);
        let mut sum = 0;
        let mut t = 0;
        while t < 10_000_000_000 {
            t += 1 + (t * 7919 + 13) % 3_000_000;
            sum += often.arrived_until(t.min(10_000_000_000));
        }
        assert_eq!(sum, total);
        // Asking at every block of the first epochs finds each block exactly once.
        let mut fine = blocks(gap);
        let n: u64 = (1..=100_000).map(|i| fine.arrived_until(i * 1000)).sum();
        assert_eq!(n, blocks(gap).arrived_until(100_000_000));
    }

    /// Over 10^5 expected blocks the count is within 4 standard deviations of its mean,
    /// and counts in disjoint windows look like Poisson ones (variance near the mean).
    #[test]
    fn counts_are_poisson() {
        let gap = 128_000_000.0; // 256-bit blocks at 2000 bit/s
        let mut b = blocks(gap);
        let window = 10_000_000_000u64; // 78.125 blocks expected each
        let counts: Vec<f64> = (1..=2000)
            .map(|i| b.arrived_until(i * window) as f64)
            .collect();
        let n = counts.len() as f64;
        let mean = counts.iter().sum::<f64>() / n;
        let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let expected = window as f64 / gap;
        let sd_of_mean = (expected / n).sqrt();
        assert!(
            (mean - expected).abs() < 4.0 * sd_of_mean,
            "{mean} vs {expected}"
        );
        assert!(
            (var / expected - 1.0).abs() < 0.15,
            "variance {var}, mean {expected}"
        );
    }
}
