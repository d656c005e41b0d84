//! The report of a sweep: `summary.json` (one row per run) grouped by grid point, with
//! seeded bootstrap intervals over the seeds, figures of handshake success rate and
//! completion time against a swept parameter (one line per value of the others, with
//! 95 % confidence bands), and every run that broke an invariant with its replay command.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
pub use results::SweepRow;

use crate::figures::{caption, color};
use crate::{ReportError, esc, md_to_html_table, stats};

/// The runs of one grid point (all its seeds).
pub struct Point<'a> {
    pub params: &'a BTreeMap<String, String>,
    pub runs: Vec<&'a SweepRow>,
}

/// Runs grouped by their parameters, in the grid's order.
pub fn group(rows: &[SweepRow]) -> Vec<Point<'_>> {
    let mut points: Vec<Point<'_>> = Vec::new();
    for r in rows {
        match points.iter_mut().find(|p| *p.params == r.params) {
            Some(p) => p.runs.push(r),
            None => points.push(Point {
                params: &r.params,
                runs: vec![r],
            }),
        }
    }
    points
}

/// Per-run handshake success rate: established of attempted (1 with no attempt).
fn success(r: &SweepRow) -> f64 {
    if r.attempts == 0 {
        1.0
    } else {
        r.established as f64 / r.attempts as f64
    }
}

/// A statistic over a point's seeds: mean and 95 % bootstrap interval of the mean.
fn summarize(values: &[f64], seed: u64) -> Option<(f64, Option<(f64, f64)>)> {
    Some((stats::mean(values)?, stats::mean_ci(values, seed)))
}

/// The grid point table as Markdown (also the golden-snapshot form of a sweep).
pub fn point_table(rows: &[SweepRow]) -> String {
    let points = group(rows);
    let names: Vec<&String> = points
        .first()
        .map(|p| p.params.keys().collect())
        .unwrap_or_default();
    let mut t = String::from("|");
    for n in &names {
        let _ = write!(t, " {n} |");
    }
    t += " runs | success rate | 95% CI | handshake p50 (ms) | 95% CI | availability | retransmissions per run | downgrades per run | violations |\n|";
    t += &"---|".repeat(names.len());
    t += "---:|---:|---|---:|---|---:|---:|---:|---:|\n";
    let fmt = |x: Option<(f64, Option<(f64, f64)>)>, scale: f64, digits: usize| match x {
        None => ("-".to_string(), "-".to_string()),
        Some((m, ci)) => (
            format!("{:.*}", digits, m * scale),
            ci.map_or("-".into(), |(a, b)| {
                format!("{:.*} to {:.*}", digits, a * scale, digits, b * scale)
            }),
        ),
    };
    for (i, p) in points.iter().enumerate() {
        t += "|";
        for n in &names {
            let _ = write!(t, " {} |", p.params.get(*n).map_or("", String::as_str));
        }
        let rates: Vec<f64> = p.runs.iter().map(|r| success(r)).collect();
        let p50: Vec<f64> = p.runs.iter().filter_map(|r| r.handshake_p50_ms).collect();
        let (rate, rate_ci) = fmt(summarize(&rates, i as u64), 100.0, 1);
        let (time, time_ci) = fmt(summarize(&p50, i as u64), 1.0, 1);
        // Means over the point's runs, as the other columns are.
        let mean = |f: fn(&SweepRow) -> u32| {
            p.runs.iter().map(|r| f(r) as f64).sum::<f64>() / p.runs.len() as f64
        };
        let _ = writeln!(
            t,
            " {} | {rate}% | {rate_ci} | {time} | {time_ci} | {:.2}% | {:.1} | {:.1} | {} |",
            p.runs.len(),
            100.0 * p.runs.iter().map(|r| r.availability).sum::<f64>() / p.runs.len() as f64,
            mean(|r| r.retransmissions),
            mean(|r| r.downgrades),
            p.runs.iter().map(|r| r.violations.len()).sum::<usize>()
        );
    }
    t
}

/// The axis of the sweep figures: the parameter with the most distinct values that are
/// all numbers (a loss rate, an MTU), else the first parameter, by position.
fn x_axis(points: &[Point<'_>]) -> Option<(String, bool)> {
    let names: Vec<String> = points.first()?.params.keys().cloned().collect();
    let values = |n: &String| {
        let mut v: Vec<&str> = points
            .iter()
            .filter_map(|p| p.params.get(n).map(String::as_str))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let numeric = names
        .iter()
        .filter(|n| values(n).iter().all(|v| v.parse::<f64>().is_ok()) && values(n).len() > 1)
        .max_by_key(|n| values(n).len());
    match numeric {
        Some(n) => Some((n.clone(), true)),
        None => names.first().map(|n| (n.clone(), false)),
    }
}

/// (series label, points as (x, mean, low, high)) for one statistic.
type Lines = Vec<(String, Vec<(f64, f64, f64, f64)>)>;

/// What a run contributes to a figure.
type Statistic = fn(&SweepRow) -> Option<f64>;

fn lines(points: &[Point<'_>], x: &str, numeric: bool, stat: Statistic) -> Lines {
    let mut categories: Vec<&str> = Vec::new();
    let mut out: BTreeMap<String, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        let xv = p.params.get(x).map_or("", String::as_str);
        let xpos = if numeric {
            xv.parse::<f64>().unwrap_or(0.0)
        } else {
            match categories.iter().position(|c| *c == xv) {
                Some(k) => k as f64,
                None => {
                    categories.push(xv);
                    (categories.len() - 1) as f64
                }
            }
        };
        let label: Vec<String> = p
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != x)
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let values: Vec<f64> = p.runs.iter().filter_map(|r| stat(r)).collect();
        if let Some((m, ci)) = summarize(&values, i as u64) {
            let (lo, hi) = ci.unwrap_or((m, m));
            out.entry(label.join(", "))
                .or_default()
                .push((xpos, m, lo, hi));
        }
    }
    out.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, v)
        })
        .collect()
}

/// One sweep figure: a statistic against the x parameter, with bands.
fn band_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    data: &Lines,
    y_from_zero: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // Rates fall from the top as conditions worsen, times rise from the bottom: keep the
    // legend out of the way.
    let legend = match y_from_zero {
        true => SeriesLabelPosition::UpperLeft,
        false => SeriesLabelPosition::LowerLeft,
    };
    root.fill(&WHITE)?;
    let all = data.iter().flat_map(|(_, v)| v.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for &(x, _, _, hi) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(hi);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    let pad = ((x1 - x0) * 0.05).max(1e-9);
    let y1 = if y_from_zero {
        y1.max(1e-9) * 1.1
    } else {
        1.05
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption(title).0, caption("").1)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0 - pad..x1 + pad, 0f64..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (label, pts)) in data.iter().enumerate() {
        let c = color(i);
        // The band: the upper edge left to right, the lower edge back.
        let band: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| (p.0, p.3))
            .chain(pts.iter().rev().map(|p| (p.0, p.2)))
            .collect();
        chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled())))?;
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
        let name = if label.is_empty() { "all runs" } else { label };
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()
}

/// The two sweep figures as (file stem, title, SVG text); PNGs are written beside.
fn draw(rows: &[SweepRow], dir: &Path) -> Result<Vec<(String, String)>, ReportError> {
    let points = group(rows);
    let Some((x, numeric)) = x_axis(&points) else {
        return Ok(Vec::new());
    };
    let x_desc = if numeric {
        x.clone()
    } else {
        format!("{x} (by position)")
    };
    let figures: [(&str, &str, &str, Statistic, bool); 3] = [
        (
            "sweep_availability",
            "Tunnel availability (mean over seeds, 95% CI)",
            "time up / time since start",
            |r| Some(r.availability),
            false,
        ),
        (
            "sweep_success",
            "Handshake success rate (mean over seeds, 95% CI)",
            "established / attempted",
            |r| Some(success(r)),
            false,
        ),
        (
            "sweep_time",
            "Handshake completion time p50 (mean over seeds, 95% CI)",
            "completion time (ms)",
            |r| r.handshake_p50_ms,
            true,
        ),
    ];
    let out = crate::figures_dir(dir)?;
    let mut svgs = Vec::new();
    for (stem, title, y_desc, stat, from_zero) in figures {
        let data = lines(&points, &x, numeric, stat);
        let svg = crate::save_figure(
            &out,
            stem,
            |a| band_chart(a, title, &x_desc, y_desc, &data, from_zero).map_err(|e| e.to_string()),
            |a| band_chart(a, title, &x_desc, y_desc, &data, from_zero).map_err(|e| e.to_string()),
        )?;
        svgs.push((title.to_string(), svg));
    }
    Ok(svgs)
}

/// Reads `dir/summary.json` and writes `dir/report.html` with the figures beside it.
pub fn write_sweep_report(dir: &Path) -> Result<PathBuf, ReportError> {
    let p = dir.join("summary.json");
    let text = fs::read_to_string(&p).map_err(|source| ReportError::Read {
        path: p.display().to_string(),
        source,
    })?;
    let rows: Vec<SweepRow> = serde_json::from_str(&text).map_err(|source| ReportError::Parse {
        path: p.display().to_string(),
        source,
    })?;
    let svgs = draw(&rows, dir)?;
    let mut h = crate::html_head("qsafe sweep report");
    let seeds: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.seed).collect();
    let _ = write!(
        h,
        "<h2 id=\"sweep\">Sweep</h2>\n<table>\n<tr><th>runs</th><td>{}</td></tr>\n<tr><th>grid points</th><td>{}</td></tr>\n\
         <tr><th>seeds</th><td>{}</td></tr>\n</table>\n",
        rows.len(),
        group(&rows).len(),
        seeds.len()
    );
    let _ = write!(
        h,
        "<h2 id=\"points\">Grid points</h2>\n<p>Means over seeds; intervals are 95 % percentile bootstraps of the mean.</p>\n{}",
        md_to_html_table(&point_table(&rows))
    );
    h += &crate::figures_html(&svgs);
    let _ = writeln!(h, "<h2 id=\"violations\">Invariant violations</h2>");
    let failing: Vec<&SweepRow> = rows.iter().filter(|r| !r.violations.is_empty()).collect();
    if failing.is_empty() {
        let _ = writeln!(h, "<p>None: every run kept every invariant.</p>");
    }
    for r in failing {
        let _ = writeln!(
            h,
            "<p>run {} (seed {}): {}<br><code>{}</code></p>",
            esc(&r.run_id),
            r.seed,
            esc(&r.violations.join("; ")),
            esc(&r.reproduce)
        );
    }
    let _ = write!(
        h,
        "<h2 id=\"runs\">Runs</h2>\n<p>Every row with its parameters: <code>summary.csv</code>, <code>summary.json</code>.</p>\n</body></html>\n"
    );
    crate::write_page(dir, &h)
}
