//! What every figure shares: the palette, fonts, captions, the legend column beside
//! the data, and distribution-function charts (a run's handshakes, compared runs).

use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

pub(crate) type DrawResult<DB> =
    Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub(crate) const PALETTE_SIZE: usize = PALETTE.len();

pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Fonts compiled in (DejaVu), so drawing needs no system fonts.
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
        let _ = plotters::style::register_font(
            "monospace",
            FontStyle::Normal,
            dejavu::sans_mono::regular(),
        );
    });
}

pub(crate) fn caption(title: &str) -> (&str, (&str, u32, FontStyle)) {
    (title, ("sans-serif", 22, FontStyle::Bold))
}

/// One entry of a legend: its label, colour, and whether its line is dashed.
pub(crate) struct Entry<'a> {
    pub label: &'a str,
    pub color: RGBColor,
    pub dashed: bool,
}

impl<'a> Entry<'a> {
    /// The `i`th series' entry: palette colours, dashed once the palette repeats.
    pub(crate) fn nth(i: usize, label: &'a str) -> Self {
        Entry {
            label,
            color: color(i),
            dashed: i >= PALETTE_SIZE,
        }
    }
}

/// A series' line, 2 px in its entry's colour, dashed if the entry says so (as its
/// legend stroke is).
pub(crate) fn series_line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: Vec<(f64, f64)>,
    entry: &Entry<'_>,
) -> DrawResult<DB>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let style = entry.color.stroke_width(2);
    if entry.dashed {
        chart.draw_series(DashedLineSeries::new(pts, 6, 4, style))?;
    } else {
        chart.draw_series(LineSeries::new(pts, style))?;
    }
    Ok(())
}

/// A legend in an area of its own beside the data (so it never covers a line): a
/// heading, then a stroke and label per entry.
pub(crate) fn legend_column<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    heading: &str,
    entries: &[Entry<'_>],
) -> DrawResult<DB> {
    area.draw(&Text::new(
        heading.to_string(),
        (8, 40),
        ("sans-serif", 14).into_font().style(FontStyle::Bold),
    ))?;
    for (i, e) in entries.iter().enumerate() {
        let y = 62 + 20 * i as i32;
        let strokes: &[(i32, i32)] = if e.dashed {
            &[(8, 15), (23, 30)]
        } else {
            &[(8, 30)]
        };
        for &(a, b) in strokes {
            area.draw(&PathElement::new(
                vec![(a, y + 7), (b, y + 7)],
                e.color.stroke_width(3),
            ))?;
        }
        let mut text = e.label.to_string();
        if text.chars().count() > 34 {
            text = text.chars().take(33).collect::<String>() + "…";
        }
        area.draw(&Text::new(text, (36, y), ("sans-serif", 13)))?;
    }
    Ok(())
}

/// A distribution curve: 101 quantiles (0 %, 1 %, ..., 100 %) in ns.
pub(crate) struct Curve<'a> {
    pub entry: Entry<'a>,
    pub quantiles: &'a [f64],
}

/// The 101 quantiles of `values` (rank `round((n - 1) q)`, as the sketches use).
pub(crate) fn percentiles(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => Vec::new(),
        n => (0..=100)
            .map(|i| values[((n - 1) as f64 * i as f64 / 100.0).round() as usize])
            .collect(),
    }
}

/// Distribution functions, a curve each, the legend beside them; the time axis (ms) is
/// logarithmic when the values span more than two orders of magnitude.
pub(crate) fn cdf_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    legend_heading: &str,
    curves: &[Curve<'_>],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(w - (w as f64 * 0.28) as u32);
    let ms = |ns: f64| ns / 1e6;
    let values = || {
        curves
            .iter()
            .flat_map(|c| c.quantiles.iter().map(|&ns| ms(ns)))
    };
    let xmax = values().fold(1e-3, f64::max);
    let xmin = values().filter(|&v| v > 0.0).fold(xmax, f64::min);
    let mut builder = ChartBuilder::on(&plot);
    builder
        .caption(caption(title).0, caption("").1)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let lines: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|c| {
            c.quantiles
                .iter()
                .enumerate()
                .map(|(p, &ns)| (ms(ns).max(xmin), p as f64 / 100.0))
                .collect()
        })
        .collect();
    fn draw<DB: DrawingBackend, X: Ranged<ValueType = f64> + ValueFormatter<f64>>(
        chart: &mut ChartContext<'_, DB, Cartesian2d<X, RangedCoordf64>>,
        x_desc: &str,
        curves: &[Curve<'_>],
        lines: &[Vec<(f64, f64)>],
    ) -> DrawResult<DB> {
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("fraction")
            .label_style(("sans-serif", 14))
            .draw()?;
        for (c, pts) in curves.iter().zip(lines) {
            series_line(chart, pts.clone(), &c.entry)?;
        }
        Ok(())
    }
    if xmax / xmin > 100.0 {
        let mut chart =
            builder.build_cartesian_2d((xmin * 0.9..xmax * 1.1).log_scale(), 0f64..1.0)?;
        draw(&mut chart, &format!("{x_desc} (log scale)"), curves, &lines)?;
    } else {
        let mut chart = builder.build_cartesian_2d(0f64..xmax * 1.05, 0f64..1.0)?;
        draw(&mut chart, x_desc, curves, &lines)?;
    }
    let entries: Vec<Entry<'_>> = curves
        .iter()
        .map(|c| Entry {
            label: c.entry.label,
            color: c.entry.color,
            dashed: c.entry.dashed,
        })
        .collect();
    legend_column(&legend, legend_heading, &entries)?;
    root.present()
}
