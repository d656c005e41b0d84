//! A sweep's tables and report. `runs.json`/`runs.csv` hold one row per run with every
//! metric of [`results::metrics`]; `summary.json`/`summary.csv` one row per grid point
//! with each metric's mean over the point's seeds and its 95 % interval (Student's t).
//! The report shows the grid point table, figures of chosen metrics (the sweep file's
//! `[[plot]]` entries, or the metrics that vary) against a parameter with one line per
//! value of another and the interval as a band, and every run that broke an invariant
//! with its replay command.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
pub use results::SweepRow;
use results::parquet::{Column, Values};
use serde::{Deserialize, Serialize};

use crate::charts::{caption, color};
use crate::{ReportError, esc, md_to_html_table, read_json, stats};

/// A metric over a grid point's seeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Runs the metric applied to.
    pub n: usize,
    pub mean: Option<f64>,
    /// 95 % interval of the mean (Student's t; none from fewer than two runs).
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
}

impl Estimate {
    /// The estimate of metric `name` from its values. Every metric is at least 0 and a
    /// `_ratio` at most 1, so the interval is cut to that range.
    pub(crate) fn of(name: &str, values: &[f64]) -> Estimate {
        let high = if name.ends_with("_ratio") {
            1.0
        } else {
            f64::INFINITY
        };
        let ci = stats::mean_ci(values).map(|(a, b)| (a.clamp(0.0, high), b.clamp(0.0, high)));
        Estimate {
            n: values.len(),
            mean: stats::mean(values),
            ci95_low: ci.map(|c| c.0),
            ci95_high: ci.map(|c| c.1),
        }
    }
}

/// One grid point: its parameters and every metric over its seeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub params: BTreeMap<String, String>,
    pub seeds: Vec<u64>,
    /// Invariant violations in all its runs.
    pub violations: usize,
    pub metrics: BTreeMap<String, Estimate>,
}

/// The metric names in table order.
pub fn metric_names() -> Vec<String> {
    results::metrics::all().iter().map(|m| m.name()).collect()
}

/// Runs grouped by their parameters, in the grid's order, with each metric estimated.
pub fn points(rows: &[SweepRow]) -> Vec<Point> {
    let mut groups: Vec<(&BTreeMap<String, String>, Vec<&SweepRow>)> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|g| *g.0 == r.params) {
            Some(g) => g.1.push(r),
            None => groups.push((&r.params, vec![r])),
        }
    }
    let names = metric_names();
    groups
        .into_iter()
        .map(|(params, runs)| Point {
            params: params.clone(),
            seeds: runs.iter().map(|r| r.seed).collect(),
            violations: runs.iter().map(|r| r.violations.len()).sum(),
            metrics: names
                .iter()
                .map(|n| {
                    let v: Vec<f64> = runs.iter().filter_map(|r| r.metric(n)).collect();
                    (n.clone(), Estimate::of(n, &v))
                })
                .collect(),
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn number(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x}"))
}

fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    fs::write(path, text).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `runs.{json,csv,parquet}` and `summary.{json,csv,parquet}` into `dir`;
/// returns the points.
pub fn write_tables(dir: &Path, rows: &[SweepRow]) -> Result<Vec<Point>, ReportError> {
    let names = metric_names();
    let params: BTreeSet<&String> = rows.iter().flat_map(|r| r.params.keys()).collect();
    write(&dir.join("runs.json"), &json(&rows))?;
    let mut csv = String::from("run_id,seed");
    for p in &params {
        csv += &format!(",{}", csv_field(p));
    }
    for n in &names {
        csv += &format!(",{n}");
    }
    csv += ",violations,fingerprint,input\n";
    for r in rows {
        csv += &format!("{},{}", r.run_id, r.seed);
        for p in &params {
            csv += &format!(",{}", csv_field(r.params.get(*p).map_or("", |v| v)));
        }
        for n in &names {
            csv += &format!(",{}", number(r.metric(n)));
        }
        csv += &format!(",{},{},{}\n", r.violations.len(), r.fingerprint, r.input);
    }
    write(&dir.join("runs.csv"), &csv)?;
    let text =
        |f: &dyn Fn(&SweepRow) -> String| Values::Text(rows.iter().map(|r| Some(f(r))).collect());
    let mut columns = vec![
        Column::new("run_id", text(&|r| r.run_id.clone())),
        Column::new(
            "seed",
            Values::Int(rows.iter().map(|r| Some(r.seed as i64)).collect()),
        ),
    ];
    for p in &params {
        let v = rows.iter().map(|r| r.params.get(*p).cloned()).collect();
        columns.push(Column::new(p.as_str(), Values::Text(v)));
    }
    for n in &names {
        let v = rows.iter().map(|r| r.metric(n)).collect();
        columns.push(Column::new(n.as_str(), Values::Float(v)));
    }
    columns.push(Column::new(
        "violations",
        Values::Int(
            rows.iter()
                .map(|r| Some(r.violations.len() as i64))
                .collect(),
        ),
    ));
    columns.push(Column::new("fingerprint", text(&|r| r.fingerprint.clone())));
    columns.push(Column::new("input", text(&|r| r.input.clone())));
    results::parquet::write(&dir.join("runs.parquet"), &columns)?;

    let points = points(rows);
    write(&dir.join("summary.json"), &json(&points))?;
    let mut csv = String::new();
    for p in &params {
        csv += &format!("{},", csv_field(p));
    }
    csv += "runs";
    for n in &names {
        csv += &format!(",{n}:mean_over_seeds,{n}:ci95_low,{n}:ci95_high");
    }
    csv += ",violations_in_runs\n";
    for pt in &points {
        for p in &params {
            csv += &format!("{},", csv_field(pt.params.get(*p).map_or("", |v| v)));
        }
        csv += &pt.seeds.len().to_string();
        for n in &names {
            let e = &pt.metrics[n];
            csv += &format!(
                ",{},{},{}",
                number(e.mean),
                number(e.ci95_low),
                number(e.ci95_high)
            );
        }
        csv += &format!(",{}\n", pt.violations);
    }
    write(&dir.join("summary.csv"), &csv)?;
    let mut columns = Vec::new();
    for p in &params {
        let v = points.iter().map(|pt| pt.params.get(*p).cloned()).collect();
        columns.push(Column::new(p.as_str(), Values::Text(v)));
    }
    columns.push(Column::new(
        "runs",
        Values::Int(points.iter().map(|p| Some(p.seeds.len() as i64)).collect()),
    ));
    for n in &names {
        type Part = fn(&Estimate) -> Option<f64>;
        let parts: [(&str, Part); 3] = [
            ("mean_over_seeds", |e| e.mean),
            ("ci95_low", |e| e.ci95_low),
            ("ci95_high", |e| e.ci95_high),
        ];
        for (suffix, part) in parts {
            let v = points.iter().map(|p| part(&p.metrics[n])).collect();
            columns.push(Column::new(format!("{n}:{suffix}"), Values::Float(v)));
        }
    }
    columns.push(Column::new(
        "violations_in_runs",
        Values::Int(points.iter().map(|p| Some(p.violations as i64)).collect()),
    ));
    results::parquet::write(&dir.join("summary.parquet"), &columns)?;
    Ok(points)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("plain data serializes") + "\n"
}

/// The columns of the grid point table: (metric, heading, scale, decimals).
const TABLE: [(&str, &str, f64, usize); 6] = [
    ("availability_mean_ratio", "availability (%)", 100.0, 2),
    (
        "handshake_success_rate_ratio",
        "handshake success (%)",
        100.0,
        1,
    ),
    ("handshake_p50_ms", "handshake p50 (ms)", 1.0, 1),
    ("time_to_up_p95_ms", "time to up p95 (ms)", 1.0, 1),
    (
        "retransmissions_total_count",
        "retransmissions per run",
        1.0,
        1,
    ),
    ("downgrades_total_count", "downgrades per run", 1.0, 1),
];

/// The grid point table as Markdown (also the golden-snapshot form of a sweep): the
/// headline metrics, each a mean over the point's seeds with its 95 % interval.
pub fn point_table(points: &[Point]) -> String {
    let names: Vec<&String> = points
        .first()
        .map(|p| p.params.keys().collect())
        .unwrap_or_default();
    let mut t = String::from("|");
    for n in &names {
        let _ = write!(t, " {n} |");
    }
    t += " runs |";
    for (_, heading, _, _) in TABLE {
        let _ = write!(t, " {heading} | 95% CI |");
    }
    t += " violations |\n|";
    t += &"---|".repeat(names.len());
    t += "---:|";
    t += &"---:|---|".repeat(TABLE.len());
    t += "---:|\n";
    for p in points {
        t += "|";
        for n in &names {
            let _ = write!(t, " {} |", p.params.get(*n).map_or("", String::as_str));
        }
        let _ = write!(t, " {} |", p.seeds.len());
        for (metric, _, scale, d) in TABLE {
            let e = &p.metrics[metric];
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.*}", d, v * scale));
            let ci = match (e.ci95_low, e.ci95_high) {
                (Some(a), Some(b)) => format!("{} to {}", f(Some(a)), f(Some(b))),
                _ => "-".into(),
            };
            let _ = write!(t, " {} | {ci} |", f(e.mean));
        }
        let _ = writeln!(t, " {} |", p.violations);
    }
    t
}

/// A figure a sweep file asks for:
///
/// ```toml
/// [[plot]]
/// y = "availability"                # a metric, or the start of one's name
/// x = "qkd_link.*.pool.rate_bps"    # a grid parameter (default: the numeric one with most values)
/// by = "tunnel.*.ike"               # one line per value (default: every other parameter)
/// x_scale = "log"                   # or "linear" (default)
/// y_scale = "log"                   # or "linear" (default)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    pub y: String,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub x_scale: Option<String>,
    /// "linear" (default) or "log".
    #[serde(default)]
    pub y_scale: Option<String>,
}

/// The metric `y` names: its full name, or the one name it begins (`availability`,
/// `handshake_p95`); an error lists the candidates.
pub fn resolve_metric(y: &str) -> Result<String, String> {
    let names = metric_names();
    if names.iter().any(|n| n == y) {
        return Ok(y.to_string());
    }
    let matches: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("{y}_")))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "`{y}` is not a metric (`qsafe explain metrics` lists them)"
        )),
        many => Err(format!(
            "`{y}` could be any of {}: name one",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A figure resolved against the sweep: what it plots and how.
struct Figure {
    metric: String,
    x: String,
    numeric: bool,
    log: bool,
    log_y: bool,
    by: Option<String>,
}

/// The distinct values of parameter `name` in the points, in grid order.
fn values<'a>(points: &'a [Point], name: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for p in points {
        if let Some(x) = p.params.get(name)
            && !v.contains(&x.as_str())
        {
            v.push(x);
        }
    }
    v
}

/// Checks a spec against the sweep and fills in its defaults.
fn figure(points: &[Point], spec: &PlotSpec) -> Result<Figure, String> {
    let metric = resolve_metric(&spec.y)?;
    let params: Vec<&String> = points
        .first()
        .map(|p| p.params.keys().collect())
        .unwrap_or_default();
    let known = |name: &str, what: &str| {
        if params.iter().any(|p| *p == name) {
            Ok(name.to_string())
        } else {
            Err(format!(
                "plot of `{}`: {what} `{name}` is not a grid parameter (the grid has {})",
                spec.y,
                params
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let numeric = |n: &str| values(points, n).iter().all(|v| v.parse::<f64>().is_ok());
    let x = match &spec.x {
        Some(x) => known(x, "x")?,
        None => params
            .iter()
            .filter(|n| numeric(n) && values(points, n).len() > 1)
            .max_by_key(|n| values(points, n).len())
            .or(params.first())
            .map(|n| n.to_string())
            .ok_or("a plot needs a grid parameter for its x axis")?,
    };
    let by = spec.by.as_deref().map(|b| known(b, "by")).transpose()?;
    let scale = |which: &str, v: Option<&str>| match v {
        None | Some("linear") => Ok(false),
        Some("log") => Ok(true),
        Some(other) => Err(format!("{which} `{other}`: \"linear\" or \"log\"")),
    };
    let log = scale("x_scale", spec.x_scale.as_deref())?;
    let log_y = scale("y_scale", spec.y_scale.as_deref())?;
    let numeric = numeric(&x);
    if log
        && !(numeric
            && values(points, &x)
                .iter()
                .all(|v| v.parse::<f64>().unwrap_or(0.0) > 0.0))
    {
        return Err(format!("x_scale = \"log\" needs positive numbers in `{x}`"));
    }
    Ok(Figure {
        metric,
        x,
        numeric,
        log,
        log_y,
        by,
    })
}

/// Without `[[plot]]`: the headline metrics that differ between grid points, in order
/// of how much a reader is likely to ask for them (at most six).
fn default_specs(points: &[Point]) -> Vec<PlotSpec> {
    const PREFERRED: [&str; 12] = [
        "availability_mean_ratio",
        "time_to_up_p95_ms",
        "handshake_p50_ms",
        "handshake_success_rate_ratio",
        "key_wait_share_rate_ratio",
        "retransmissions_total_count",
        "ike_datagrams_total_count",
        "ike_total_bytes",
        "keys_wasted_total_count",
        "esp_delivery_rate_ratio",
        "cpu_busy_mean_ratio",
        "outage_total_s",
    ];
    let varies = |m: &str| {
        let means: Vec<f64> = points.iter().filter_map(|p| p.metrics[m].mean).collect();
        let (lo, hi) = means
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        !means.is_empty() && hi - lo > 1e-9 * hi.abs().max(1.0)
    };
    let mut chosen: Vec<&str> = PREFERRED
        .into_iter()
        .filter(|m| varies(m))
        .take(6)
        .collect();
    if chosen.is_empty() {
        chosen.push("availability_mean_ratio");
    }
    chosen
        .into_iter()
        .map(|m| PlotSpec {
            y: m.into(),
            ..Default::default()
        })
        .collect()
}

/// A parameter path in words: without the item list, `*` and `params`
/// (`link.*.params.loss.probability` -> `loss probability`).
pub fn short_param(path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    let kept: Vec<&str> = parts
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            !(*p == &"*"
                || *p == &"params"
                || p.parse::<usize>().is_ok()
                || (*i == 0 && parts.len() > 1))
        })
        .map(|(_, p)| *p)
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        kept.join(" ")
    }
}

/// A parameter value in words: a proposal list by its key exchanges
/// (`["aes256gcm16-prfsha256-x25519-ke1_mlkem768"]` -> `x25519+mlkem768`), other
/// lists joined, strings without quotes.
pub fn short_value(v: &str) -> String {
    let items: Vec<String> = match v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(inner) => inner
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => vec![v.trim_matches('"').to_string()],
    };
    let proposal = |p: &str| {
        let ke: Vec<&str> = p
            .split('-')
            .filter(|t| {
                ["x25519", "x448", "ecp", "modp", "mlkem", "ke"]
                    .iter()
                    .any(|k| t.starts_with(k))
            })
            .map(|t| {
                t.split_once('_')
                    .filter(|_| t.starts_with("ke"))
                    .map_or(t, |x| x.1)
            })
            .collect();
        if p.contains('-') && !ke.is_empty() {
            ke.join("+")
        } else {
            p.to_string()
        }
    };
    items
        .iter()
        .map(|i| proposal(i))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// (label, points (x, mean, low, high)) per line.
type Lines = Vec<(String, Vec<(f64, f64, f64, f64)>)>;

/// The lines of a figure. With `by`, the runs of each (x, by value) are pooled over
/// the other parameters; without it, each combination of the other parameters is a line.
fn lines(points: &[Point], rows: &[SweepRow], f: &Figure) -> (Lines, Vec<String>) {
    let categories: Vec<&str> = values(points, &f.x);
    let xpos = |v: &str| {
        if f.numeric {
            v.parse::<f64>().unwrap_or(0.0)
        } else {
            categories.iter().position(|c| *c == v).unwrap_or(0) as f64
        }
    };
    // Lines in the grid's order of their values, not alphabetical.
    let mut out: Lines = Vec::new();
    let mut push = |label: String, x: f64, e: &Estimate| {
        if let Some(m) = e.mean {
            let (lo, hi) = (e.ci95_low.unwrap_or(m), e.ci95_high.unwrap_or(m));
            match out.iter_mut().find(|(l, _)| *l == label) {
                Some((_, pts)) => pts.push((x, m, lo, hi)),
                None => out.push((label, vec![(x, m, lo, hi)])),
            }
        }
    };
    match &f.by {
        Some(by) => {
            for xv in &categories {
                for bv in values(points, by) {
                    let v: Vec<f64> = rows
                        .iter()
                        .filter(|r| {
                            r.params.get(&f.x).map(String::as_str) == Some(*xv)
                                && r.params.get(by).map(String::as_str) == Some(bv)
                        })
                        .filter_map(|r| r.metric(&f.metric))
                        .collect();
                    push(short_value(bv), xpos(xv), &Estimate::of(&f.metric, &v));
                }
            }
        }
        None => {
            for p in points {
                let label: Vec<String> = p
                    .params
                    .iter()
                    .filter(|(k, _)| **k != f.x && values(points, k).len() > 1)
                    .map(|(k, v)| format!("{} {}", short_param(k), short_value(v)))
                    .collect();
                let xv = p.params.get(&f.x).map_or("", String::as_str);
                push(label.join(", "), xpos(xv), &p.metrics[&f.metric]);
            }
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    (out, categories.iter().map(|c| short_value(c)).collect())
}

type Area<DB> = DrawingArea<DB, Shift>;

/// The axes' words, and the drawing of the lines into a chart of either x scale.
struct Axes<'a> {
    x_desc: String,
    y_desc: String,
    categories: &'a [String],
    numeric: bool,
}

impl Axes<'_> {
    fn draw<DB: DrawingBackend, X, Y>(
        &self,
        chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
        data: &Lines,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        let xfmt = |v: &f64| {
            if !self.numeric {
                let i = v.round();
                return match (
                    (v - i).abs() < 1e-6,
                    self.categories.get(i.max(0.0) as usize),
                ) {
                    (true, Some(c)) => c.clone(),
                    _ => String::new(),
                };
            }
            format!("{}", (v * 1e4).round() / 1e4)
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .x_label_formatter(&xfmt)
            .label_style(("sans-serif", 14));
        if !self.numeric {
            mesh.x_labels(self.categories.len() * 4 + 1);
        }
        mesh.draw()?;
        for (i, (_, pts)) in data.iter().enumerate() {
            let c = color(i);
            // The band: the upper edge left to right, the lower edge back; its edges
            // dashed so a narrow band still shows.
            let band: Vec<(f64, f64)> = pts
                .iter()
                .map(|p| (p.0, p.3))
                .chain(pts.iter().rev().map(|p| (p.0, p.2)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.22).filled())))?;
            for upper in [true, false] {
                let e: Vec<(f64, f64)> = pts
                    .iter()
                    .map(|p| (p.0, if upper { p.3 } else { p.2 }))
                    .collect();
                chart.draw_series(DashedLineSeries::new(e, 4, 3, c.mix(0.6).stroke_width(1)))?;
            }
            let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
            crate::charts::series_line(chart, line.clone(), &crate::charts::Entry::nth(i, ""))?;
            chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        Ok(())
    }
}

/// One sweep figure: the metric against x, a line and band per label, the legend in a
/// column of its own to the right of the data.
fn band_chart<DB: DrawingBackend>(
    root: Area<DB>,
    title: &str,
    f: &Figure,
    data: &Lines,
    categories: &[String],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let legend_width = if data.len() > 1 || !data.first().is_some_and(|d| d.0.is_empty()) {
        (w as f64 * 0.28) as u32
    } else {
        0
    };
    let (plot, legend) = root.split_horizontally(w - legend_width);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, m, lo, hi) in data.iter().flat_map(|(_, v)| v.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(lo.min(m));
        y1 = y1.max(hi.max(m));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // Ratios on 0..1 when they use most of it; others from zero unless that squashes them.
    let ratio = f.metric.ends_with("_ratio");
    let span = (y1 - y0).max(y1.abs() * 1e-6).max(1e-12);
    let (y0, y1) = if ratio && y0 > 0.5 {
        ((y0 - span * 0.15).max(0.0), (y1 + span * 0.15).min(1.0))
    } else if y0 >= 0.0 && y0 < span * 2.0 {
        (
            0.0,
            (y1 + span * 0.1).min(if ratio { 1.02 } else { f64::INFINITY }),
        )
    } else {
        (y0 - span * 0.15, y1 + span * 0.15)
    };
    let x_desc = short_param(&f.x) + if f.log { " (log scale)" } else { "" };
    let y_desc = metric_words(&f.metric) + if f.log_y { " (log scale)" } else { "" };
    let mut builder = ChartBuilder::on(&plot);
    builder
        .caption(caption(title).0, caption("").1)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80);
    let axes = Axes {
        x_desc,
        y_desc,
        categories,
        numeric: f.numeric,
    };
    // A log y axis starts at the smallest positive value; lower edges are cut there.
    let positive = data
        .iter()
        .flat_map(|(_, v)| v.iter().flat_map(|p| [p.1, p.2]))
        .filter(|&v| v > 0.0)
        .fold(f64::MAX, f64::min);
    let ylog = (positive.min(y1.max(1e-12)) * 0.8)..(y1.max(positive) * 1.25);
    let clipped: Lines;
    let data = match f.log_y {
        true => {
            clipped = data
                .iter()
                .map(|(l, v)| {
                    let lo = ylog.start;
                    let pts = v
                        .iter()
                        .map(|p| (p.0, p.1.max(lo), p.2.max(lo), p.3.max(lo)));
                    (l.clone(), pts.collect())
                })
                .collect();
            &clipped
        }
        false => data,
    };
    let pad = ((x1 - x0) * 0.05)
        .max(0.25 * (!f.numeric) as u8 as f64)
        .max(1e-9);
    let (xlin, xlog) = (x0 - pad..x1 + pad, (x0 / 1.15..x1 * 1.15).log_scale());
    match (f.log, f.log_y) {
        (true, true) => axes.draw(
            &mut builder.build_cartesian_2d(xlog, ylog.log_scale())?,
            data,
        )?,
        (true, false) => axes.draw(&mut builder.build_cartesian_2d(xlog, y0..y1)?, data)?,
        (false, true) => axes.draw(
            &mut builder.build_cartesian_2d(xlin, ylog.log_scale())?,
            data,
        )?,
        (false, false) => axes.draw(&mut builder.build_cartesian_2d(xlin, y0..y1)?, data)?,
    }
    if legend_width > 0 {
        let heading = match &f.by {
            Some(by) => short_param(by),
            None => "lines".into(),
        };
        let entries: Vec<crate::charts::Entry<'_>> = data
            .iter()
            .enumerate()
            .map(|(i, (l, _))| crate::charts::Entry::nth(i, l))
            .collect();
        crate::charts::legend_column(&legend, &heading, &entries)?;
    }
    root.present()
}

/// The figures as (title, SVG text); PNGs and SVGs are written beside.
fn draw(
    points: &[Point],
    rows: &[SweepRow],
    specs: &[PlotSpec],
    dir: &Path,
) -> Result<Vec<(String, String)>, ReportError> {
    if points.is_empty() || points[0].params.is_empty() {
        return Ok(Vec::new());
    }
    let defaults;
    let specs = if specs.is_empty() {
        defaults = default_specs(points);
        &defaults
    } else {
        specs
    };
    let out = crate::figures_dir(dir)?;
    let mut svgs = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let f = figure(points, spec).map_err(ReportError::Plot)?;
        let (data, categories) = lines(points, rows, &f);
        let pooled = match &f.by {
            Some(by) => {
                let others: Vec<String> = points[0]
                    .params
                    .keys()
                    .filter(|k| **k != f.x && *k != by && values(points, k).len() > 1)
                    .map(|k| short_param(k))
                    .collect();
                match others.len() {
                    0 => String::new(),
                    _ => format!(", pooled over {}", others.join(", ")),
                }
            }
            None => String::new(),
        };
        // Short on the image; the caption says how it was computed.
        let title = format!("{} by {}", metric_words(&f.metric), short_param(&f.x));
        let caption = format!("{} (mean over seeds{pooled}, 95% CI)", f.metric);
        let stem = format!("sweep_{:02}_{}", i + 1, f.metric);
        let svg = crate::save_figure(
            &out,
            &stem,
            |a| band_chart(a, &title, &f, &data, &categories).map_err(|e| e.to_string()),
            |a| band_chart(a, &title, &f, &data, &categories).map_err(|e| e.to_string()),
        )?;
        svgs.push((caption, svg));
    }
    Ok(svgs)
}

/// A metric in words: `availability mean (ratio)`.
fn metric_words(name: &str) -> String {
    results::metrics::all()
        .into_iter()
        .find(|m| m.name() == name)
        .map_or(name.to_string(), |m| {
            format!(
                "{} {} ({})",
                m.what.replace('_', " "),
                m.statistic.word(),
                m.unit
            )
        })
}

/// Checks a sweep file's `[[plot]]` entries against its grid before anything runs.
pub fn check_plots(params: &[String], specs: &[PlotSpec]) -> Result<(), String> {
    let point = Point {
        params: params.iter().map(|p| (p.clone(), "1".into())).collect(),
        ..Default::default()
    };
    for s in specs {
        figure(std::slice::from_ref(&point), s)?;
    }
    Ok(())
}

/// Reads `dir/runs.json` (and the figures asked for in `dir/plots.json`, if any) and
/// writes `dir/report.html` with the figures beside it.
pub fn write_sweep_report(dir: &Path) -> Result<PathBuf, ReportError> {
    let rows: Vec<SweepRow> = read_json(&dir.join("runs.json"))?;
    let specs: Vec<PlotSpec> = match dir.join("plots.json") {
        p if p.exists() => read_json(&p)?,
        _ => Vec::new(),
    };
    let points = points(&rows);
    let svgs = draw(&points, &rows, &specs, dir)?;
    let mut h = crate::html_head("qsafe sweep report");
    let seeds: BTreeSet<u64> = rows.iter().map(|r| r.seed).collect();
    let _ = write!(
        h,
        "<h2 id=\"sweep\">Sweep</h2>\n<table>\n<tr><th>runs</th><td>{}</td></tr>\n<tr><th>grid points</th><td>{}</td></tr>\n\
         <tr><th>seeds</th><td>{}</td></tr>\n</table>\n",
        rows.len(),
        points.len(),
        seeds.len()
    );
    let _ = write!(
        h,
        "<h2 id=\"points\">Grid points</h2>\n<p>Each figure is a mean over the point's seeds (a \
         total per run is averaged like any other metric); intervals are 95 % Student's t \
         intervals of that mean. Every metric is in <code>summary.csv</code>.</p>\n{}",
        md_to_html_table(&point_table(&points))
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
        "<h2 id=\"runs\">Runs</h2>\n<p>Every run with its parameters and metrics: <code>runs.csv</code>, \
         <code>runs.json</code>; each run's whole results in <code>runs/ID/results.json</code>.</p>\n</body></html>\n"
    );
    crate::write_page(dir, &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_values_in_words() {
        assert_eq!(
            short_param("link.*.params.loss.probability"),
            "loss probability"
        );
        assert_eq!(short_param("qkd_link.*.pool.rate_bps"), "pool rate_bps");
        assert_eq!(short_param("tunnel.*.ike"), "ike");
        assert_eq!(short_param("seed"), "seed");
        assert_eq!(
            short_value("[\"aes256gcm16-prfsha256-x25519-ke1_mlkem768\"]"),
            "x25519+mlkem768"
        );
        assert_eq!(short_value("[\"aes256gcm16-prfsha256-x25519\"]"), "x25519");
        assert_eq!(short_value("required"), "required");
        assert_eq!(short_value("0.05"), "0.05");
    }

    #[test]
    fn metrics_are_named_in_full_or_by_a_unique_start() {
        assert_eq!(
            resolve_metric("availability").unwrap(),
            "availability_mean_ratio"
        );
        assert_eq!(resolve_metric("handshake_p95").unwrap(), "handshake_p95_ms");
        assert!(
            resolve_metric("handshake")
                .unwrap_err()
                .contains("handshake_p50_ms")
        );
        assert!(resolve_metric("nonsense").is_err());
    }

    #[test]
    fn plots_name_grid_parameters() {
        let grid = vec!["a.*.x".to_string(), "b.*.y".to_string()];
        let spec = |x: &str| PlotSpec {
            y: "availability".into(),
            x: Some(x.into()),
            ..Default::default()
        };
        assert!(check_plots(&grid, &[spec("a.*.x")]).is_ok());
        let e = check_plots(&grid, &[spec("c.*.z")]).unwrap_err();
        assert!(e.contains("`c.*.z` is not a grid parameter"), "{e}");
    }

    #[test]
    fn points_estimate_every_metric_over_their_seeds() {
        let row = |seed: u64, a: f64| SweepRow {
            seed,
            params: [("p".to_string(), "1".to_string())].into(),
            metrics: [("availability_mean_ratio".to_string(), Some(a))].into(),
            ..Default::default()
        };
        let pts = points(&[row(1, 0.5), row(2, 0.7), row(3, 0.9)]);
        assert_eq!(pts.len(), 1);
        let e = &pts[0].metrics["availability_mean_ratio"];
        assert_eq!(e.n, 3);
        assert!((e.mean.unwrap() - 0.7).abs() < 1e-12);
        // s = 0.2, t(2) = 4.303: 0.7 +- 0.4969, a ratio's interval cut at 1.
        assert!((e.ci95_low.unwrap() - 0.2031).abs() < 1e-3);
        assert_eq!(e.ci95_high, Some(1.0));
        assert_eq!(pts[0].metrics["handshake_p50_ms"].n, 0);
    }
}
