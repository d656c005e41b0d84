//! Summary statistics: Student's t intervals for means over seeds, and bootstrap
//! intervals (from a seeded stream, so a report is reproducible to the byte) for medians.

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

/// A 95 % interval for the mean of a few independent runs (a sweep point's seeds):
/// Student's t, mean +- t(0.975, n - 1) s / sqrt(n). With three seeds a bootstrap
/// interval would be far too narrow; t is honest about how little three runs say.
pub fn mean_ci(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let m = mean(values)?;
    let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1) as f64;
    let half = student_t_975(n - 1) * (var / n as f64).sqrt();
    Some((m - half, m + half))
}

/// The 97.5 % quantile of Student's t with `df` degrees of freedom: tabulated to 30,
/// then the Cornish-Fisher expansion about the normal quantile z (two terms, within
/// 0.0005 of the exact value from 31 on).
pub(crate) fn student_t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        _ => {
            let (z, d) = (1.959_964_f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * d)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
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
        // 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.303: 2 +- 4.303 / sqrt(3).
        let (lo, hi) = mean_ci(&[1.0, 2.0, 3.0]).unwrap();
        assert!((lo - (2.0 - 2.4843)).abs() < 1e-3 && (hi - (2.0 + 2.4843)).abs() < 1e-3);
        assert_eq!(mean_ci(&[3.0, 3.0, 3.0]), Some((3.0, 3.0)));
        assert_eq!(mean_ci(&[3.0]), None);
        // Far out, the table's tail meets the normal limit.
        assert!((student_t_975(31) - 2.0395).abs() < 0.0005);
        assert!((student_t_975(120) - 1.9799).abs() < 0.0005);
    }
}
