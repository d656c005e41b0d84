//! `reports`: from a run's result files to statistics, figures and an HTML report. It
//! reads results and never runs a simulation.
//!
//! [`write_report`] draws every figure as SVG (inlined into `report.html`, which is
//! self-contained) and as PNG beside it, and tabulates per-tunnel statistics with
//! seeded bootstrap intervals, the QKD totals, the manifest and the reproduce command.
//! [`write_sweep_report`] does the same for a sweep's `summary.json` ([`sweep`]).

mod charts;
pub mod compare;
pub mod figures;
pub mod stats;
pub mod sweep;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

pub use results::Results;
pub use sweep::write_sweep_report;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a results file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("reading the rows: {0}")]
    Rows(#[from] results::rows::RowsError),
    #[error(transparent)]
    Parquet(#[from] results::parquet::ParquetError),
    #[error("sweep figures: {0}")]
    Plot(String),
    #[error("drawing {figure}: {message}")]
    Draw { figure: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// One figure: its file stem, title, and drawing function for both backends.
struct Figure {
    stem: &'static str,
    title: &'static str,
    svg: fn(DrawingArea<SVGBackend, plotters::coord::Shift>, &Results) -> Result<(), String>,
    png: fn(DrawingArea<BitMapBackend, plotters::coord::Shift>, &Results) -> Result<(), String>,
}

macro_rules! figure {
    ($stem:literal, $title:literal, $f:path) => {
        Figure {
            stem: $stem,
            title: $title,
            svg: |a, d| $f(a, d).map_err(|e| e.to_string()),
            png: |a, d| $f(a, d).map_err(|e| e.to_string()),
        }
    };
}

fn all_figures() -> Vec<Figure> {
    vec![
        figure!("pool_levels", "QKD key pool level", figures::pool_levels),
        figure!(
            "keys_over_time",
            "QKD keys generated, drawn and wasted",
            figures::keys_over_time
        ),
        figure!(
            "handshake_cdf",
            "Handshake completion time",
            figures::handshake_cdf
        ),
        figure!(
            "exchange_bytes",
            "Bytes on the wire per exchange",
            figures::exchange_bytes
        ),
        figure!("drops", "Drops and retransmissions", figures::drops),
        figure!("timeline", "Tunnel states over time", figures::timeline),
        figure!(
            "state_counts",
            "Tunnels by state over time",
            figures::state_counts
        ),
        figure!(
            "exchanges_over_time",
            "Exchanges started over time",
            figures::exchanges_over_time
        ),
        figure!(
            "esp_losses",
            "ESP packets lost, by reason",
            figures::esp_losses
        ),
    ]
}

pub(crate) const SIZE: (u32, u32) = (900, 520);

/// Creates `dir/figures/`, where every figure goes.
pub(crate) fn figures_dir(dir: &Path) -> Result<PathBuf, ReportError> {
    figures::register_fonts();
    let out = dir.join("figures");
    fs::create_dir_all(&out).map_err(|source| ReportError::Write {
        path: out.display().to_string(),
        source,
    })?;
    Ok(out)
}

type SvgArea<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type PngArea<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws one figure twice, as `out/<stem>.svg` and `out/<stem>.png`; returns the SVG.
pub(crate) fn save_figure(
    out: &Path,
    stem: &str,
    svg: impl FnOnce(SvgArea<'_>) -> Result<(), String>,
    png: impl FnOnce(PngArea<'_>) -> Result<(), String>,
) -> Result<String, ReportError> {
    let draw = |message| ReportError::Draw {
        figure: stem.to_string(),
        message,
    };
    let mut text = String::new();
    svg(SVGBackend::with_string(&mut text, SIZE).into_drawing_area()).map_err(draw)?;
    let svg_path = out.join(format!("{stem}.svg"));
    fs::write(&svg_path, &text).map_err(|source| ReportError::Write {
        path: svg_path.display().to_string(),
        source,
    })?;
    let png_path = out.join(format!("{stem}.png"));
    png(BitMapBackend::new(&png_path, SIZE).into_drawing_area()).map_err(draw)?;
    Ok(text)
}

/// The figures section of a report page.
pub(crate) fn figures_html<T: AsRef<str>>(svgs: &[(T, String)]) -> String {
    let mut h = String::from("<h2 id=\"figures\">Figures</h2>\n");
    for (title, svg) in svgs {
        let _ = write!(
            h,
            "<figure>\n<figcaption>{}</figcaption>\n{}\n</figure>\n",
            esc(title.as_ref()),
            svg
        );
    }
    h
}

/// Draws every figure into `dir/figures/` (SVG and PNG); returns (title, SVG text).
pub fn draw_figures(d: &Results, dir: &Path) -> Result<Vec<(&'static str, String)>, ReportError> {
    let out = figures_dir(dir)?;
    all_figures()
        .into_iter()
        .map(|f| {
            let svg = save_figure(&out, f.stem, |a| (f.svg)(a, d), |a| (f.png)(a, d))?;
            Ok((f.title, svg))
        })
        .collect()
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The per-tunnel table as Markdown (also the golden-snapshot form of a run's summary).
/// Handshake times are IKE's (IKE_SA_INIT to established); "to up" adds the wait for a
/// QKD key (from wanting the IKE SA to having it).
pub fn tunnel_table(d: &Results) -> String {
    tunnel_rows(d, &d.tunnels.iter().collect::<Vec<_>>())
}

/// Most tunnels the report's table lists one by one.
const TABLE_TUNNELS: usize = 40;

/// The tunnels the report lists: all of a small run, else the [`TABLE_TUNNELS`] with
/// the lowest availability (the ones a reader looks for), worst first.
fn worst_tunnels(d: &Results) -> Vec<&results::TunnelSummary> {
    let mut v: Vec<&results::TunnelSummary> = d.tunnels.iter().collect();
    if v.len() > TABLE_TUNNELS {
        v.sort_by(|a, b| {
            a.availability(d.duration_ns)
                .total_cmp(&b.availability(d.duration_ns))
                .then_with(|| a.tunnel.cmp(&b.tunnel))
        });
        v.truncate(TABLE_TUNNELS);
    }
    v
}

fn tunnel_rows(d: &Results, tunnels: &[&results::TunnelSummary]) -> String {
    let mut established: BTreeMap<&str, Vec<&results::HandshakeRow>> = BTreeMap::new();
    for h in d
        .rows
        .handshakes
        .iter()
        .filter(|h| h.outcome == "established")
    {
        established.entry(&h.tunnel).or_default().push(h);
    }
    let mut t = String::from(
        "| tunnel | attempts | established | failed | downgrades | keys drawn | keys wasted | key wait (s) | handshake p50 (ms) | 95% CI of p50 | p95 (ms) | to up p50 (ms) | availability | outages | down (s) | first up (s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    for tun in tunnels {
        let up = established
            .get(tun.tunnel.as_str())
            .map_or(&[][..], Vec::as_slice)
            .iter();
        let v = sorted(up.clone().map(|h| h.duration_ns as f64 / 1e6).collect());
        let to_up = sorted(
            up.filter_map(|h| h.time_to_up_ns)
                .map(|ns| ns as f64 / 1e6)
                .collect(),
        );
        let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}"));
        let ci =
            stats::median_ci(&v, d.seed).map_or("-".into(), |(a, b)| format!("{a:.1} to {b:.1}"));
        let down_s: u64 = tun.outages.iter().map(|o| o.to_ns - o.from_ns).sum();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.2}% | {} | {:.1} | {} |",
            tun.tunnel,
            tun.attempts,
            tun.established,
            tun.failed,
            tun.downgrades,
            tun.keys_drawn,
            tun.keys_wasted,
            tun.key_wait_ns as f64 / 1e9,
            fmt(stats::quantile(&v, 0.5)),
            ci,
            fmt(stats::quantile(&v, 0.95)),
            fmt(stats::quantile(&to_up, 0.5)),
            100.0 * tun.availability(d.duration_ns),
            tun.outages.len(),
            down_s as f64 / 1e9,
            fmt(tun.first_up_ns.map(|ns| ns as f64 / 1e9)),
        );
    }
    t
}

/// The start of a self-contained report page, up to its `<h1>`.
pub(crate) fn html_head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
         pre{{background:#f7f7f7;padding:1em;overflow:auto}}figure{{margin:1.5em 0}}\
         </style></head><body>\n<h1>{t}</h1>\n",
        t = esc(title)
    )
}

/// The gateways with a CPU model, as Markdown: core time spent, its share of the run's
/// core time, jobs, and the longest wait for a core.
fn cpu_table(d: &Results) -> String {
    let mut t = String::from(
        "| gateway | cores | busy (s) | utilization | jobs | longest wait (ms) |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for c in &d.cpus {
        let capacity = (c.cores as u64 * d.duration_ns).max(1);
        let _ = writeln!(
            t,
            "| {} | {} | {:.3} | {:.2}% | {} | {:.3} |",
            c.gateway,
            c.cores,
            c.busy_ns as f64 / 1e9,
            100.0 * c.busy_ns as f64 / capacity as f64,
            c.jobs,
            c.max_wait_ns as f64 / 1e6
        );
    }
    t
}

/// ESP traffic per tunnel, as Markdown.
fn traffic_table(d: &Results) -> String {
    let mut t = String::from(
        "| tunnel | mode | offered | delivered | no Child SA | lost on link | unknown SPI | past hard lifetime | replayed | failed ICV | volume rekeys | hard expiries |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in &d.traffic {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.3}% | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.tunnel,
            f.mode,
            f.offered_packets,
            100.0 * f.delivered_packets as f64 / f.offered_packets.max(1) as f64,
            f.no_sa,
            f.lost_on_link,
            f.unknown_spi,
            f.expired,
            f.replayed,
            f.integrity_failures,
            f.volume_rekeys,
            f.hard_expiries
        );
    }
    t
}

pub(crate) fn md_to_html_table(md: &str) -> String {
    let mut html = String::from("<table>\n");
    for (i, line) in md.lines().enumerate().filter(|(i, _)| *i != 1) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let tag = if i == 0 { "th" } else { "td" };
        html += "<tr>";
        for c in cells {
            let _ = write!(html, "<{tag}>{}</{tag}>", esc(c));
        }
        html += "</tr>\n";
    }
    html + "</table>\n"
}

/// Reads `dir/results.json`, the row files (see [`results::rows`]; figures of rows
/// the run did not write are empty) and `dir/manifest.json` if present, and writes
/// `dir/report.html` with the figures beside it. Returns the report's path.
pub fn write_report(dir: &Path) -> Result<PathBuf, ReportError> {
    let mut d: Results = read_json(&dir.join("results.json"))?;
    d.rows = results::Rows::read_csv(dir)?;
    let manifest: serde_json::Value = read_json(&dir.join("manifest.json")).unwrap_or_default();
    let svgs = draw_figures(&d, dir)?;

    let mut h = html_head("qsafe run report");
    let m = |k: &str| {
        manifest
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let _ = write!(
        h,
        "<h2 id=\"run\">Run</h2>\n<table>\n<tr><th>scenario</th><td>{}</td></tr>\n<tr><th>seed</th><td>{}</td></tr>\n\
         <tr><th>crypto</th><td>{}</td></tr>\n<tr><th>simulated time</th><td>{:.2} h</td></tr>\n<tr><th>events</th><td>{}</td></tr>\n\
         <tr><th>fingerprint</th><td><code>{}</code></td></tr>\n<tr><th>reproduce</th><td><code>{}</code></td></tr>\n</table>\n",
        esc(&m("scenario")),
        d.seed,
        esc(&d.crypto),
        d.duration_ns as f64 / 3.6e12,
        d.events,
        esc(&d.fingerprint),
        esc(&m("reproduce")),
    );
    let _ = write!(
        h,
        "<h2 id=\"tunnels\">Tunnels</h2>\n{}{}",
        match d.tunnels.len() {
            n if n > TABLE_TUNNELS => format!(
                "<p>The {TABLE_TUNNELS} of {n} tunnels with the lowest availability, worst \
                 first; every tunnel is in <code>tunnels.csv</code>.</p>\n"
            ),
            _ => String::new(),
        },
        md_to_html_table(&tunnel_rows(&d, &worst_tunnels(&d)))
    );
    if !d.traffic.is_empty() {
        let _ = write!(
            h,
            "<h2 id=\"traffic\">ESP traffic</h2>\n{}",
            md_to_html_table(&traffic_table(&d))
        );
    }
    if !d.cpus.is_empty() {
        let _ = write!(
            h,
            "<h2 id=\"cpu\">Gateway CPUs</h2>\n{}",
            md_to_html_table(&cpu_table(&d))
        );
    }
    let q = &d.qkd;
    let _ = write!(
        h,
        "<h2 id=\"qkd\">QKD key delivery</h2>\n<table>\n<tr><th>keys delivered</th><td>{}</td></tr>\n<tr><th>keys fetched by peers</th><td>{}</td></tr>\n\
         <tr><th>keys wasted</th><td>{}</td></tr>\n<tr><th>requests refused</th><td>{}</td></tr>\n<tr><th>relay hops paid</th><td>{}</td></tr>\n</table>\n",
        q.keys_delivered, q.keys_fetched, q.keys_wasted, q.requests_refused, q.relay_keys
    );
    h += &figures_html(&svgs);
    let _ = write!(
        h,
        "<h2 id=\"manifest\">Manifest</h2>\n<pre>{}</pre>\n</body></html>\n",
        esc(&serde_json::to_string_pretty(&manifest).unwrap_or_default())
    );
    write_page(dir, &h)
}

/// Writes `dir/report.html`; returns its path.
/// A JSON file of the result schema; errors name the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, ReportError> {
    let text = fs::read_to_string(p).map_err(|source| ReportError::Read {
        path: p.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Parse {
        path: p.display().to_string(),
        source,
    })
}

pub(crate) fn write_page(dir: &Path, html: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join("report.html");
    fs::write(&path, html).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}
