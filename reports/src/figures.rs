//! The figures, each drawn once for SVG (inlined in the report) and once for PNG.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use results::{DropReason, Results};

pub use crate::charts::register_fonts;
use crate::charts::{
    Curve, DrawResult, Entry, PALETTE_SIZE, caption, cdf_chart, color, legend_column, percentiles,
};

const NS_PER_H: f64 = 3.6e12;

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart over the run's simulated time (hours) from 0 to `ymax`, titled and labelled.
fn time_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    hours: f64,
    ymax: f64,
    y_desc: &str,
) -> Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption("").1)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..hours.max(1e-9), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("simulated time (h)")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    Ok(chart)
}

/// Draws each (label, points) as a coloured line with a legend entry, then the legend.
fn draw_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    lines: impl IntoIterator<Item = (String, Vec<(f64, f64)>)>,
    legend_at: SeriesLabelPosition,
) -> DrawResult<DB> {
    for (i, (label, pts)) in lines.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
}

/// A cumulative count over time (in hours) from event times, as a step line to `hours`.
fn cumulative(mut times: Vec<u64>, hours: f64) -> Vec<(f64, f64)> {
    times.sort_unstable();
    let mut pts = vec![(0.0, 0.0)];
    for (n, t) in times.iter().enumerate() {
        let x = *t as f64 / NS_PER_H;
        pts.push((x, n as f64));
        pts.push((x, (n + 1) as f64));
    }
    pts.push((hours, times.len() as f64));
    pts
}

/// The (time, level) rows of one pool half.
fn levels(d: &Results, p: &results::PoolSummary) -> Vec<(u64, u64)> {
    d.rows
        .pool_samples
        .iter()
        .filter(|s| s.link == p.link && s.owner == p.owner)
        .map(|s| (s.time_ns, s.level_bits))
        .collect()
}

/// Keys (of 256 bits) in each QKD pool half over time.
pub fn pool_levels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    d: &Results,
) -> DrawResult<DB> {
    let pools: Vec<_> = d.pools.iter().filter(|p| p.capacity_bits > 0).collect();
    if pools.len() > PALETTE_SIZE {
        return pool_levels_aggregated(root, d, &pools);
    }
    root.fill(&WHITE)?;
    let hours = d.duration_ns as f64 / NS_PER_H;
    // Up to the highest level seen or threshold drawn (a near-empty pool in a large
    // store would otherwise be a line on the axis).
    let ymax = d
        .pools
        .iter()
        .filter(|p| p.capacity_bits > 0)
        .flat_map(|p| {
            let scale = p.key_size_bits.max(1) as f64 / 256.0;
            levels(d, p).into_iter().map(|s| s.1 as f64 / 256.0).chain([
                p.warning_below_keys as f64 * scale,
                p.resume_at_keys as f64 * scale,
            ])
        })
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = time_chart(
        &root,
        "QKD key pool level",
        hours,
        ymax * 1.05,
        "stored keys (256 bit)",
    )?;
    let key_bits = |p: &results::PoolSummary| p.key_size_bits.max(1) as f64;
    // Periods a pool held less than one key: shaded behind the lines.
    for (i, p) in pools.iter().enumerate() {
        let c = color(i);
        let mut from: Option<f64> = None;
        let samples = levels(d, p)
            .into_iter()
            .map(|(t, b)| (t as f64 / NS_PER_H, b as f64));
        for (t, bits) in samples.chain(std::iter::once((hours, f64::MAX))) {
            match (from, bits < key_bits(p)) {
                (None, true) => from = Some(t),
                (Some(f), false) => {
                    chart.draw_series([Rectangle::new(
                        [(f, 0.0), (t, ymax * 1.05)],
                        c.mix(0.12).filled(),
                    )])?;
                    from = None;
                }
                _ => {}
            }
        }
    }
    // The thresholds (in keys of the pool's size): Warning below, and where a pool that
    // ran empty resumes.
    for (i, p) in pools.iter().enumerate() {
        let c = color(i);
        let scale = key_bits(p) / 256.0;
        for (keys, what) in [
            (p.warning_below_keys, "warning"),
            (p.resume_at_keys, "resume"),
        ] {
            if keys == 0 || (keys == 1 && what == "resume") {
                continue; // no warning level, or no hysteresis
            }
            let y = keys as f64 * scale;
            chart.draw_series(DashedLineSeries::new(
                [(0.0, y), (hours, y)],
                6,
                4,
                c.stroke_width(1),
            ))?;
            chart.draw_series([Text::new(
                format!("{what} ({keys} keys)"),
                (hours * 0.01, y + ymax * 0.01),
                ("sans-serif", 11),
            )])?;
        }
    }
    let mut lines = Vec::new();
    for p in &pools {
        // A step function: hold each level until the next sample.
        let mut pts = Vec::new();
        for (j, (t, bits)) in levels(d, p).into_iter().enumerate() {
            let y = bits as f64 / 256.0;
            if j > 0 {
                pts.push((
                    t as f64 / NS_PER_H,
                    pts.last().map_or(y, |l: &(f64, f64)| l.1),
                ));
            }
            pts.push((t as f64 / NS_PER_H, y));
        }
        if let Some(&last) = pts.last() {
            pts.push((hours, last.1));
        }
        lines.push((format!("{} (drawn by {})", p.link, p.owner), pts));
    }
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperRight)?;
    root.present()
}

/// With more pool halves than colours: the mean level over the halves, the band from
/// the lowest to the highest, and how many halves hold less than one key.
fn pool_levels_aggregated<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    d: &Results,
    pools: &[&results::PoolSummary],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let hours = d.duration_ns as f64 / NS_PER_H;
    let index: BTreeMap<(&str, &str), usize> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.link.as_str(), p.owner.as_str()), i))
        .collect();
    // Each half's level (in 256-bit keys) holds until its next row; walk the rows in
    // time order keeping every half's latest level.
    let mut rows: Vec<(u64, usize, f64)> = d
        .rows
        .pool_samples
        .iter()
        .filter_map(|s| {
            let i = *index.get(&(s.link.as_str(), s.owner.as_str()))?;
            Some((s.time_ns, i, s.level_bits as f64 / 256.0))
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    let key = |i: usize| pools[i].key_size_bits.max(1) as f64 / 256.0;
    let mut level = vec![0.0; pools.len()];
    // (time h, mean, min, max, halves below one key)
    let mut pts: Vec<(f64, f64, f64, f64, f64)> = Vec::new();
    let mut j = 0;
    while j < rows.len() {
        let t = rows[j].0;
        while j < rows.len() && rows[j].0 == t {
            level[rows[j].1] = rows[j].2;
            j += 1;
        }
        let n = level.len() as f64;
        let (lo, hi) = level
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let empty = (0..level.len()).filter(|&i| level[i] < key(i)).count() as f64;
        pts.push((
            t as f64 / NS_PER_H,
            level.iter().sum::<f64>() / n,
            lo,
            hi,
            empty,
        ));
    }
    if let Some(&last) = pts.last() {
        pts.push((hours, last.1, last.2, last.3, last.4));
    }
    let ymax = pts.iter().map(|p| p.3.max(p.4)).fold(1.0, f64::max) * 1.1;
    let (w, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(w - (w as f64 * 0.28) as u32);
    let mut chart = time_chart(
        &plot,
        &format!("QKD key pool level ({} pool halves)", pools.len()),
        hours,
        ymax,
        "stored keys (256 bit) / halves",
    )?;
    // Steps: each value holds until the next point.
    let step = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| -> Vec<(f64, f64)> {
        pts.windows(2)
            .flat_map(|w| [(w[0].0, f(&w[0])), (w[1].0, f(&w[0]))])
            .collect()
    };
    let (upper, lower) = (step(|p| p.3), step(|p| p.2));
    let band: Vec<(f64, f64)> = upper
        .iter()
        .copied()
        .chain(lower.iter().rev().copied())
        .collect();
    chart.draw_series(std::iter::once(Polygon::new(
        band,
        color(0).mix(0.2).filled(),
    )))?;
    chart.draw_series(LineSeries::new(step(|p| p.1), color(0).stroke_width(2)))?;
    chart.draw_series(LineSeries::new(step(|p| p.4), color(3).stroke_width(2)))?;
    legend_column(
        &legend,
        "pool halves",
        &[
            Entry {
                label: "mean level",
                color: color(0),
                dashed: false,
            },
            Entry {
                label: "lowest to highest",
                color: RGBColor(174, 199, 232),
                dashed: false,
            },
            Entry {
                label: "halves below one key",
                color: color(3),
                dashed: false,
            },
        ],
    )?;
    root.present()
}

/// QKD keys generated (all pools, in keys of each pool's size), drawn by initiators,
/// wasted (drawn for an IKE SA that failed or came up without it), and requests
/// refused, cumulatively over time.
pub fn keys_over_time<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    d: &Results,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let hours = d.duration_ns as f64 / NS_PER_H;
    let draws = |ok: bool| {
        d.rows
            .key_requests
            .iter()
            .filter(|k| (k.op == "enc_keys" || k.op == "key") && (k.status == 200) == ok)
            .map(|k| k.time_ns)
            .collect::<Vec<u64>>()
    };
    let wasted: Vec<u64> = d
        .rows
        .handshakes
        .iter()
        .filter(|h| {
            !h.ppk_id.is_empty()
                && (h.outcome.starts_with("failed") || h.ppk.starts_with("downgraded"))
        })
        .map(|h| h.ended_ns)
        .collect();
    // Generation: a pool half's row comes when it changed; the total at a time holds
    // each half's latest value.
    let key_size: BTreeMap<(&str, &str), f64> = d
        .pools
        .iter()
        .map(|p| ((&p.link[..], &p.owner[..]), p.key_size_bits.max(1) as f64))
        .collect();
    let mut latest: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    let mut generated: Vec<(f64, f64)> = Vec::new();
    for s in &d.rows.pool_samples {
        let half = (&s.link[..], &s.owner[..]);
        let keys = s.generated_bits as f64 / key_size.get(&half).copied().unwrap_or(256.0);
        latest.insert(half, keys);
        let point = (s.time_ns as f64 / NS_PER_H, latest.values().sum());
        match generated.last_mut() {
            Some(last) if last.0 == point.0 => *last = point,
            _ => generated.push(point),
        }
    }
    let series = [
        ("keys generated (all pools)", generated),
        ("keys drawn", cumulative(draws(true), hours)),
        ("keys wasted", cumulative(wasted, hours)),
        (
            "requests refused (pool empty or device down)",
            cumulative(draws(false), hours),
        ),
    ];
    let ymax = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let mut chart = time_chart(
        &root,
        "QKD keys generated, drawn and wasted; requests refused",
        hours,
        ymax * 1.05,
        "cumulative count",
    )?;
    let lines = series
        .into_iter()
        .map(|(name, pts)| (name.to_string(), pts));
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperLeft)?;
    root.present()
}

/// Distributions of handshake time (IKE_SA_INIT sent to up, solid) and time to up (IKE
/// SA wanted to up, QKD key wait included, dashed) per tunnel, or per proposal when
/// there are more tunnels than colours.
pub fn handshake_cdf<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    d: &Results,
) -> DrawResult<DB> {
    let by_proposal = d.tunnels.len() > PALETTE_SIZE;
    let mut per: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for h in d
        .rows
        .handshakes
        .iter()
        .filter(|h| h.outcome == "established")
    {
        let key = if by_proposal { &h.proposal } else { &h.tunnel };
        let e = per.entry(key).or_default();
        e.0.push(h.duration_ns as f64);
        if let Some(t) = h.time_to_up_ns {
            e.1.push(t as f64);
        }
    }
    let groups: Vec<(String, Vec<f64>, Vec<f64>)> = per
        .into_iter()
        .take(PALETTE_SIZE)
        .map(|(k, (hs, up))| {
            let name = match by_proposal {
                true => crate::sweep::short_value(k),
                false => k.to_string(),
            };
            (name, percentiles(hs), percentiles(up))
        })
        .collect();
    let labels: Vec<(String, String)> = groups
        .iter()
        .map(|(k, _, _)| (format!("{k}: handshake"), format!("{k}: time to up")))
        .collect();
    let mut curves = Vec::new();
    for (i, ((_, hs, up), (lh, lu))) in groups.iter().zip(&labels).enumerate() {
        for (q, label, dashed) in [(hs, lh, false), (up, lu, true)] {
            if !q.is_empty() {
                curves.push(Curve {
                    entry: Entry {
                        label,
                        color: color(i),
                        dashed,
                    },
                    quantiles: q,
                });
            }
        }
    }
    cdf_chart(
        root,
        "Handshake time (solid), time to up (dashed)",
        "time (ms)",
        if by_proposal {
            "by proposal"
        } else {
            "by tunnel"
        },
        &curves,
    )
}

/// Totals of one exchange type.
#[derive(Clone, Copy, Default)]
struct Sums {
    req_bytes: f64,
    resp_bytes: f64,
    req_frags: f64,
    resp_frags: f64,
    count: f64,
}

/// Mean bytes on the wire per exchange type (request and response), with fragments.
pub fn exchange_bytes<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    d: &Results,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    // By exchange and fragment count (which shows the path MTU's effect), and by
    // proposal when tunnels differ in it (the proposal a tunnel's IKE SAs came up with).
    let proposal: BTreeMap<&str, &str> = d
        .rows
        .handshakes
        .iter()
        .filter(|h| h.outcome == "established")
        .map(|h| (h.tunnel.as_str(), h.proposal.as_str()))
        .collect();
    let several = proposal
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        > 1;
    // (exchange, request fragments, response fragments, proposal) -> totals.
    type Key<'a> = (&'a str, usize, usize, &'a str);
    let mut per: BTreeMap<Key<'_>, Sums> = BTreeMap::new();
    for e in &d.rows.exchanges {
        let variant = match several {
            true => proposal.get(e.tunnel.as_str()).copied().unwrap_or("?"),
            false => "",
        };
        let key = (
            e.exchange.as_str(),
            e.request_fragments,
            e.response_fragments,
            variant,
        );
        let s = per.entry(key).or_default();
        s.req_bytes += e.request_bytes as f64;
        s.resp_bytes += e.response_bytes as f64;
        s.req_frags += e.request_fragments as f64;
        s.resp_frags += e.response_fragments as f64;
        s.count += 1.0;
    }
    // In the order a handshake uses them, then by fragments.
    let order = |name: &str| {
        results::metrics::EXCHANGES
            .iter()
            .position(|x| *x == name)
            .unwrap_or(usize::MAX)
    };
    let mut kinds: Vec<_> = per.into_iter().collect();
    kinds.sort_by_key(|((name, rf, sf, v), _)| (order(name), *rf, *sf, *v));
    kinds.truncate(16);
    let ymax = kinds
        .iter()
        .map(|(_, s)| (s.req_bytes + s.resp_bytes) / s.count)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            caption("Bytes on the wire per exchange (mean; fragments in labels)").0,
            caption("").1,
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..kinds.len().max(1) as f64, 0f64..ymax * 1.2)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("exchange")
        .y_desc("bytes (request + response)")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, ((name, _, _, variant), s)) in kinds.iter().enumerate() {
        let (req, resp) = (s.req_bytes / s.count, s.resp_bytes / s.count);
        let x0 = i as f64 + 0.15;
        chart.draw_series([Text::new(
            name.to_string(),
            (x0, req + resp + ymax * 0.09),
            ("sans-serif", 13, FontStyle::Bold),
        )])?;
        if !variant.is_empty() {
            chart.draw_series([Text::new(
                variant.to_string(),
                (x0, req + resp + ymax * 0.15),
                ("sans-serif", 10),
            )])?;
        }
        chart.draw_series([
            Rectangle::new([(x0, 0.0), (x0 + 0.7, req)], color(0).filled()),
            Rectangle::new([(x0, req), (x0 + 0.7, req + resp)], color(1).filled()),
        ])?;
        let label = format!(
            "{:.0} + {:.0} B, {:.1}/{:.1} frag",
            req,
            resp,
            s.req_frags / s.count,
            s.resp_frags / s.count
        );
        chart.draw_series([Text::new(
            label,
            (x0, req + resp + ymax * 0.03),
            ("sans-serif", 12),
        )])?;
    }
    let (w, _) = root.dim_in_pixel();
    for (i, what) in ["request", "response"].into_iter().enumerate() {
        let (x, y) = (w as i32 - 130, 50 + 20 * i as i32);
        root.draw(&Rectangle::new(
            [(x, y), (x + 14, y + 14)],
            color(i).filled(),
        ))?;
        root.draw(&Text::new(what, (x + 20, y), ("sans-serif", 13)))?;
    }
    root.present()
}

/// Datagrams dropped on links, by reason, and IKE retransmissions.
pub fn drops<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, d: &Results) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let mut bars: Vec<(String, f64)> = DropReason::ALL
        .iter()
        .map(|&r| {
            (
                r.as_str().replace('_', " "),
                d.links.iter().map(|l| l.stats.dropped(r)).sum::<u64>() as f64,
            )
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    bars.push((
        "IKE retransmissions".into(),
        d.rows
            .exchanges
            .iter()
            .map(|e| e.retransmissions as f64)
            .sum(),
    ));
    let ymax = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            caption("Drops by reason, and retransmissions").0,
            caption("").1,
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..bars.len() as f64, 0f64..ymax * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("reason")
        .y_desc("datagrams")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, (name, n)) in bars.iter().enumerate() {
        let x0 = i as f64 + 0.2;
        chart.draw_series([Rectangle::new(
            [(x0, 0.0), (x0 + 0.6, *n)],
            color(3).filled(),
        )])?;
        chart.draw_series([Text::new(
            format!("{name}: {n:.0}"),
            (x0, n + ymax * 0.03),
            ("sans-serif", 12),
        )])?;
    }
    root.present()
}

/// Each tunnel's state over time: up (with or without its PPK), rekeying, waiting for
/// a QKD key, establishing, failed; gaps are down. The first 30 tunnels are drawn.
pub fn timeline<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, d: &Results) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let hours = d.duration_ns as f64 / NS_PER_H;
    const ROWS: usize = 30;
    let tunnels: Vec<&results::TunnelSummary> = d.tunnels.iter().take(ROWS).collect();
    let names: Vec<&str> = tunnels.iter().map(|t| t.tunnel.as_str()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption("Tunnel states over time").0, caption("").1)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(110)
        .build_cartesian_2d(0f64..hours.max(1e-9), 0f64..names.len().max(1) as f64)?;
    let x_desc = if d.tunnels.len() > ROWS {
        format!(
            "simulated time (h); the first {ROWS} of {} tunnels",
            d.tunnels.len()
        )
    } else {
        "simulated time (h)".to_string()
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        // Ticks every half row; name the rows at their middles.
        .y_labels(2 * names.len().max(1) + 1)
        .y_label_formatter(&|y| {
            let row = y - 0.5;
            if (row - row.round()).abs() < 1e-6 {
                names
                    .get(row.round() as usize)
                    .map_or(String::new(), |t| t.to_string())
            } else {
                String::new()
            }
        })
        .x_desc(x_desc)
        .label_style(("sans-serif", 13))
        .draw()?;
    let h = |ns: u64| ns as f64 / NS_PER_H;
    let (up, wait, busy, fail, downgraded, rekey) =
        (color(2), color(1), color(0), color(3), color(4), BLACK);
    let bar = |c: RGBColor, a: u64, b: u64, y: f64, lo: f64, hi: f64| {
        Rectangle::new(
            [(h(a), y + lo), (h(b).max(h(a) + hours * 0.002), y + hi)],
            c.filled(),
        )
    };
    for (row, tun) in tunnels.iter().enumerate() {
        let y = row as f64;
        let mut rows: Vec<_> = d
            .rows
            .handshakes
            .iter()
            .filter(|x| x.tunnel == tun.tunnel)
            .collect();
        rows.sort_by_key(|x| x.requested_ns);
        // Attempts first, the thinner up bar on top: a reauthentication waiting for a
        // key or running its handshake does not take the tunnel down.
        for x in &rows {
            if x.key_wait_ns > 0 {
                let end = x.requested_ns + x.key_wait_ns;
                chart.draw_series([bar(wait, x.requested_ns, end, y, 0.2, 0.8)])?;
            }
            chart.draw_series([bar(busy, x.ike_started_ns, x.ended_ns, y, 0.2, 0.8)])?;
            if x.outcome.starts_with("failed") {
                chart.draw_series([bar(fail, x.ended_ns, x.ended_ns, y, 0.2, 0.8)])?;
            }
        }
        // Up periods, recoloured where the IKE SA came up without its PPK.
        for &(a, b) in &tun.up_periods {
            chart.draw_series([bar(up, a, b, y, 0.4, 0.6)])?;
        }
        let established: Vec<_> = rows.iter().filter(|x| x.outcome == "established").collect();
        for (i, x) in established.iter().enumerate() {
            if x.ppk.starts_with("downgraded") {
                let until = established.get(i + 1).map_or(d.duration_ns, |n| n.ended_ns);
                chart.draw_series([bar(downgraded, x.ended_ns, until, y, 0.4, 0.6)])?;
            }
        }
        // Rekeys (CREATE_CHILD_SA and IKE_FOLLOWUP_KE, by either end): thin marks.
        for e in d.rows.exchanges.iter().filter(|e| {
            e.tunnel == tun.tunnel
                && (e.exchange == "CREATE_CHILD_SA" || e.exchange == "IKE_FOLLOWUP_KE")
        }) {
            chart.draw_series([bar(rekey, e.started_ns, e.started_ns, y, 0.35, 0.65)])?;
        }
    }
    for (name, c) in [
        ("up", up),
        ("up without PPK (downgraded)", downgraded),
        ("rekeying", rekey),
        ("waiting for a QKD key", wait),
        ("establishing", busy),
        ("failed", fail),
    ] {
        // An empty series carries each legend entry.
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()
}

/// Exchanges of each kind started, cumulatively over time: the rekey load.
pub fn exchanges_over_time<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    d: &Results,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let hours = d.duration_ns as f64 / NS_PER_H;
    let mut per: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &d.rows.exchanges {
        per.entry(&e.exchange).or_default().push(e.started_ns);
    }
    let ymax = per.values().map(Vec::len).max().unwrap_or(1).max(1) as f64;
    let mut chart = time_chart(
        &root,
        "Exchanges started over time (rekeys, deletes, new IKE SAs)",
        hours,
        ymax * 1.05,
        "cumulative exchanges",
    )?;
    let lines = per
        .into_iter()
        .map(|(kind, times)| (kind.to_string(), cumulative(times, hours)));
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperLeft)?;
    root.present()
}

/// ESP packets lost, by reason, over all tunnels with traffic.
pub fn esp_losses<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, d: &Results) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let mut bars: Vec<(&str, f64)> = results::TrafficSummary::default()
        .losses()
        .iter()
        .map(|(name, _)| (*name, 0.0))
        .collect();
    for t in &d.traffic {
        for (i, (_, n)) in t.losses().iter().enumerate() {
            bars[i].1 += *n as f64;
        }
    }
    let offered: u64 = d.traffic.iter().map(|t| t.offered_packets).sum();
    let delivered: u64 = d.traffic.iter().map(|t| t.delivered_packets).sum();
    let ymax = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption("ESP packets lost, by reason").0, caption("").1)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..bars.len() as f64, 0f64..ymax * 1.2)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc(if d.traffic.is_empty() {
            "no traffic in this run".to_string()
        } else {
            format!(
                "reason ({delivered} of {offered} packets delivered, {:.3}%)",
                100.0 * delivered as f64 / offered.max(1) as f64
            )
        })
        .y_desc("packets")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, (name, n)) in bars.iter().enumerate() {
        let x0 = i as f64 + 0.15;
        chart.draw_series([Rectangle::new(
            [(x0, 0.0), (x0 + 0.7, *n)],
            color(i).filled(),
        )])?;
        chart.draw_series([Text::new(
            format!("{name}: {n:.0}"),
            (x0, n + ymax * 0.04),
            ("sans-serif", 11),
        )])?;
    }
    root.present()
}

/// How many tunnels are in each state over time, stacked so the states add up to the
/// tunnels: up; else establishing (an IKE negotiation under way); else waiting for a
/// QKD key; else down. Drawn for any number of tunnels (the timeline shows the first
/// 30 one by one).
pub fn state_counts<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    d: &Results,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let hours = d.duration_ns as f64 / NS_PER_H;
    const STEPS: usize = 400;
    let at = |i: usize| d.duration_ns / STEPS as u64 * i as u64;
    let mut by_tunnel: BTreeMap<&str, Vec<&results::HandshakeRow>> = BTreeMap::new();
    for h in &d.rows.handshakes {
        by_tunnel.entry(&h.tunnel).or_default().push(h);
    }
    // counts[instant][state], states in stacking order.
    let mut counts = [[0u32; 4]; STEPS];
    for tun in &d.tunnels {
        let hs = by_tunnel
            .get(tun.tunnel.as_str())
            .map_or(&[][..], Vec::as_slice);
        for (i, count) in counts.iter_mut().enumerate() {
            let t = at(i);
            let state = if tun.up_periods.iter().any(|&(a, b)| a <= t && t < b) {
                0
            } else if hs.iter().any(|h| h.ike_started_ns <= t && t < h.ended_ns) {
                1
            } else if hs
                .iter()
                .any(|h| h.requested_ns <= t && t < h.requested_ns + h.key_wait_ns)
            {
                2
            } else {
                3
            };
            count[state] += 1;
        }
    }
    let (w, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(w - (w as f64 * 0.25) as u32);
    let total = d.tunnels.len() as f64;
    let mut chart = time_chart(
        &plot,
        "Tunnels by state over time (stacked)",
        hours,
        total.max(1.0) * 1.05,
        "tunnels",
    )?;
    let names = ["up", "establishing", "waiting for a QKD key", "down"];
    let colors = [color(2), color(0), color(1), color(3)];
    let x = |i: usize| at(i) as f64 / NS_PER_H;
    let mut below = [0f64; STEPS];
    for (state, c) in colors.iter().enumerate() {
        let top: Vec<f64> = (0..STEPS)
            .map(|i| below[i] + counts[i][state] as f64)
            .collect();
        // A step band from `below` up to `top`.
        let upper = (0..STEPS).flat_map(|i| [(x(i), top[i]), (x(i + 1), top[i])]);
        let lower: Vec<(f64, f64)> = (0..STEPS)
            .flat_map(|i| [(x(i), below[i]), (x(i + 1), below[i])])
            .collect();
        let band: Vec<(f64, f64)> = upper.chain(lower.into_iter().rev()).collect();
        chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.75).filled())))?;
        below.copy_from_slice(&top);
    }
    let entries: Vec<Entry<'_>> = names
        .iter()
        .zip(colors)
        .map(|(label, color)| Entry {
            label,
            color,
            dashed: false,
        })
        .collect();
    legend_column(&legend, "state", &entries)?;
    root.present()
}
