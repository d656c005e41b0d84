//! Summary statistics, with bootstrap confidence intervals drawn from a seeded stream so
//! that a report is reproducible to the byte.

/// The `q` quantile (0..=1) by nearest rank of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(sorted[i])
}

pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A 95 % percentile-bootstrap interval for the median (1,000 resamples, splitmix64
/// seeded with `seed`).
pub fn median_ci(values: &[f64], seed: u64) -> Option<(f64, f64)> {
    bootstrap_ci(values, seed, |s| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    })
}

/// The same for the mean (a sweep point's mean over its seeds).
pub fn mean_ci(values: &[f64], seed: u64) -> Option<(f64, f64)> {
    bootstrap_ci(values, seed, |s| s.iter().sum::<f64>() / s.len() as f64)
}

fn bootstrap_ci(values: &[f64], seed: u64, statistic: fn(&mut [f64]) -> f64) -> Option<(f64, f64)> {
    if values.len() < 2 {
        return None;
    }
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let n = values.len();
    let mut estimates: Vec<f64> = (0..1000)
        .map(|_| {
            let mut s: Vec<f64> = (0..n)
                .map(|_| values[(next() % n as u64) as usize])
                .collect();
            statistic(&mut s)
        })
        .collect();
    estimates.sort_by(f64::total_cmp);
    Some((quantile(&estimates, 0.025)?, quantile(&estimates, 0.975)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_means_and_intervals() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(51.0));
        assert_eq!(quantile(&v, 1.0), Some(101.0));
        assert_eq!(mean(&v), Some(51.0));
        let (lo, hi) = median_ci(&v, 1).unwrap();
        assert!(
            lo < 51.0 && hi > 51.0 && lo > 35.0 && hi < 67.0,
            "{lo} {hi}"
        );
        assert_eq!(median_ci(&v, 1), median_ci(&v, 1), "seeded: reproducible");
        assert_eq!(quantile(&[], 0.5), None);
        let (lo, hi) = mean_ci(&v, 1).unwrap();
        assert!(
            lo < 51.0 && hi > 51.0 && lo > 42.0 && hi < 60.0,
            "{lo} {hi}"
        );
        assert_eq!(mean_ci(&[3.0], 1), None);
    }
}
