//! `qsafe compare DIR DIR...`: runs and sweeps side by side. Each run directory
//! (`results.json`) is one series; each grid point of a sweep directory (`runs.json`)
//! is one, over its seeds. The report holds every metric of [`results::metrics`] per
//! series with its difference from the first series (with a 95 % Welch interval where
//! both have several seeds), and the distributions of handshake time and time to up
//! overlaid (for a grid point, the mean of its runs' quantile curves).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use results::{Results, SweepRow};

use crate::charts::{Curve, Entry, cdf_chart};
use crate::sweep::{short_param, short_value};
use crate::{ReportError, esc, md_to_html_table, read_json, stats};

/// One thing compared: a run, or a grid point of a sweep.
pub struct Series {
    pub label: String,
    /// Each metric's values over the series' runs (one for a run).
    pub metrics: BTreeMap<String, Vec<f64>>,
    /// Percentiles 0..=100 of handshake time and time to up (ns), averaged over runs.
    pub handshake: Vec<f64>,
    pub time_to_up: Vec<f64>,
}

/// The mean curve of several runs' percentiles (runs without any are left out).
fn mean_curve(curves: &[&Vec<u64>]) -> Vec<f64> {
    let curves: Vec<&&Vec<u64>> = curves.iter().filter(|c| c.len() == 101).collect();
    if curves.is_empty() {
        return Vec::new();
    }
    (0..101)
        .map(|i| curves.iter().map(|c| c[i] as f64).sum::<f64>() / curves.len() as f64)
        .collect()
}

fn dir_name(dir: &Path) -> String {
    dir.file_name().map_or(dir.display().to_string(), |n| {
        n.to_string_lossy().to_string()
    })
}

/// The series of a run or sweep directory.
pub fn load(dir: &Path) -> Result<Vec<Series>, ReportError> {
    let name = dir_name(dir);
    if dir.join("runs.json").exists() {
        let rows: Vec<SweepRow> = read_json(&dir.join("runs.json"))?;
        let mut out = Vec::new();
        for p in crate::sweep::points(&rows) {
            let runs: Vec<&SweepRow> = rows.iter().filter(|r| r.params == p.params).collect();
            let mut metrics: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &runs {
                for (k, v) in &r.metrics {
                    if let Some(v) = v {
                        metrics.entry(k.clone()).or_default().push(*v);
                    }
                }
            }
            // Whole results, where the sweep kept them.
            let results: Vec<Results> = runs
                .iter()
                .filter_map(|r| {
                    read_json(&dir.join("runs").join(&r.run_id).join("results.json")).ok()
                })
                .collect();
            let params: Vec<String> = p
                .params
                .iter()
                .map(|(k, v)| format!("{} {}", short_param(k), short_value(v)))
                .collect();
            out.push(Series {
                label: format!("{name}: {}", params.join(", ")),
                metrics,
                handshake: mean_curve(
                    &results
                        .iter()
                        .map(|r| &r.totals.handshake_ns.percentiles)
                        .collect::<Vec<_>>(),
                ),
                time_to_up: mean_curve(
                    &results
                        .iter()
                        .map(|r| &r.totals.time_to_up_ns.percentiles)
                        .collect::<Vec<_>>(),
                ),
            });
        }
        return Ok(out);
    }
    let r: Results = read_json(&dir.join("results.json"))?;
    Ok(vec![Series {
        label: name,
        metrics: results::metrics::of_run(&r)
            .into_iter()
            .filter_map(|(k, v)| Some((k, vec![v?])))
            .collect(),
        handshake: mean_curve(&[&r.totals.handshake_ns.percentiles]),
        time_to_up: mean_curve(&[&r.totals.time_to_up_ns.percentiles]),
    }])
}

/// Mean and sample variance.
fn moments(v: &[f64]) -> Option<(f64, f64, usize)> {
    let m = stats::mean(v)?;
    let var = match v.len() {
        0 | 1 => 0.0,
        n => v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64,
    };
    Some((m, var, v.len()))
}

/// The difference of means b - a with its 95 % Welch interval (none unless both have
/// at least two values).
pub fn difference(a: &[f64], b: &[f64]) -> Option<(f64, Option<(f64, f64)>)> {
    let (ma, va, na) = moments(a)?;
    let (mb, vb, nb) = moments(b)?;
    let d = mb - ma;
    if na < 2 || nb < 2 {
        return Some((d, None));
    }
    let (sa, sb) = (va / na as f64, vb / nb as f64);
    let se2 = sa + sb;
    if se2 == 0.0 {
        return Some((d, Some((d, d))));
    }
    // Welch-Satterthwaite degrees of freedom, rounded down (conservative).
    let df = se2 * se2 / (sa * sa / (na - 1) as f64 + sb * sb / (nb - 1) as f64);
    let half = stats::student_t_975(df.floor().max(1.0) as usize) * se2.sqrt();
    Some((d, Some((d - half, d + half))))
}

fn fmt(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e6) {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// The metric table as Markdown: a row per metric, a column per series (mean, with
/// its 95 % t interval over seeds), and each later series' difference from the first.
pub fn table(series: &[Series]) -> String {
    let mut t = String::from("| metric |");
    for (i, s) in series.iter().enumerate() {
        let _ = write!(t, " {} |", s.label);
        if i > 0 {
            t += " difference from the first | 95% CI |";
        }
    }
    t += "\n|---|";
    t += &"---:|".repeat(1 + 3 * series.len().saturating_sub(1));
    t += "\n";
    for name in crate::sweep::metric_names() {
        let values: Vec<&[f64]> = series
            .iter()
            .map(|s| s.metrics.get(&name).map_or(&[][..], Vec::as_slice))
            .collect();
        if values.iter().all(|v| v.is_empty()) {
            continue;
        }
        let _ = write!(t, "| {name} |");
        for (i, v) in values.iter().enumerate() {
            let e = crate::sweep::Estimate::of(&name, v);
            let cell = match (e.mean, e.ci95_low, e.ci95_high) {
                (None, _, _) => "-".to_string(),
                (Some(m), Some(lo), Some(hi)) => {
                    format!("{} ({} to {})", fmt(m), fmt(lo), fmt(hi))
                }
                (Some(m), _, _) => fmt(m),
            };
            let _ = write!(t, " {cell} |");
            if i > 0 {
                let (d, ci) = match difference(values[0], v) {
                    None => ("-".to_string(), "-".to_string()),
                    Some((d, ci)) => (
                        format!("{}{}", if d > 0.0 { "+" } else { "" }, fmt(d)),
                        ci.map_or("-".into(), |(a, b)| format!("{} to {}", fmt(a), fmt(b))),
                    ),
                };
                let _ = write!(t, " {d} | {ci} |");
            }
        }
        t += "\n";
    }
    t
}

/// Writes `out/report.html`, `out/compare.md` and the CDF figures for `dirs`.
pub fn write_compare(out: &Path, dirs: &[PathBuf]) -> Result<PathBuf, ReportError> {
    let mut series = Vec::new();
    for d in dirs {
        series.extend(load(d)?);
    }
    fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.display().to_string(),
        source,
    })?;
    let md = table(&series);
    fs::write(out.join("compare.md"), &md).map_err(|source| ReportError::Write {
        path: out.join("compare.md").display().to_string(),
        source,
    })?;
    let figures = crate::figures_dir(out)?;
    let mut svgs = Vec::new();
    type Pick = fn(&Series) -> &Vec<f64>;
    let quantities: [(&str, &str, &str, Pick); 2] = [
        (
            "compare_handshake_cdf",
            "Handshake time (IKE_SA_INIT sent to IKE SA up)",
            "handshake time (ms)",
            |s| &s.handshake,
        ),
        (
            "compare_time_to_up_cdf",
            "Time to up (IKE SA wanted to up, key wait included)",
            "time to up (ms)",
            |s| &s.time_to_up,
        ),
    ];
    for (stem, title, x_desc, pick) in quantities {
        let curves: Vec<Curve<'_>> = series
            .iter()
            .enumerate()
            .filter(|(_, s)| !pick(s).is_empty())
            .map(|(i, s)| Curve {
                entry: Entry::nth(i, &s.label),
                quantiles: pick(s),
            })
            .collect();
        if curves.is_empty() {
            continue;
        }
        let svg = crate::save_figure(
            &figures,
            stem,
            |a| cdf_chart(a, title, x_desc, "series", &curves).map_err(|e| e.to_string()),
            |a| cdf_chart(a, title, x_desc, "series", &curves).map_err(|e| e.to_string()),
        )?;
        svgs.push((title.to_string(), svg));
    }
    let mut h = crate::html_head("qsafe comparison");
    let _ = writeln!(h, "<h2 id=\"inputs\">Compared</h2>\n<ul>");
    for d in dirs {
        let _ = writeln!(h, "<li><code>{}</code></li>", esc(&d.display().to_string()));
    }
    let _ = write!(
        h,
        "</ul>\n<h2 id=\"metrics\">Metrics</h2>\n<p>Each cell is a run's value, or a grid \
         point's mean over its seeds with its 95 % Student's t interval; differences are \
         from the first column, with a 95 % Welch interval where both sides have several \
         seeds. A difference whose interval holds 0 is not established by these runs. \
         The table is also in <code>compare.md</code>.</p>\n{}",
        md_to_html_table(&md)
    );
    let _ = write!(
        h,
        "{}<p>Distribution curves are the quantiles of each run's handshake sketch (within \
         its stated relative error); a grid point's curve is the mean of its runs' \
         quantile curves.</p>\n</body></html>\n",
        crate::figures_html(&svgs)
    );
    crate::write_page(out, &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_difference_of_means() {
        // Means 2 and 5, variances 1 and 1, n 3 and 3: se = sqrt(2/3), df = 4,
        // t = 2.776: 3 +- 2.266.
        let (d, ci) = difference(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert_eq!(d, 3.0);
        let (lo, hi) = ci.unwrap();
        assert!(
            (lo - 0.7335).abs() < 1e-3 && (hi - 5.2665).abs() < 1e-3,
            "{lo} {hi}"
        );
        // One run against another: a difference, no interval.
        assert_eq!(difference(&[1.0], &[4.0]), Some((3.0, None)));
        assert_eq!(difference(&[], &[4.0]), None);
    }
}
