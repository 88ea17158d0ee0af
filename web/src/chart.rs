//! The two kinds of chart the page draws, with plotters into SVG text: bars over categories
//! (grouped or stacked, upright or lying) and lines over a numeric axis. The SVG goes into the
//! page as it is: no script, no fonts to fetch (text is left to the browser's sans-serif).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, WebError};

/// Size of every chart, in pixels.
const SIZE: (u32, u32) = (640, 360);
/// Series colours, in order (Tableau 10: tells apart well, also in grey print).
const PALETTE: [RGBColor; 8] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(156, 117, 95),
];

/// The colour of the `index`th series.
pub fn color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// One series of bars: a value per category (`None` draws nothing there).
pub struct Bars {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// How a bar chart lays its series out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Side by side within each category, bars upright.
    Grouped,
    /// On top of each other, bars upright.
    Stacked,
    /// Side by side, bars lying (for long category names).
    GroupedLying,
}

/// A bar chart of `series` over `categories`, with an optional reference line (value, label).
pub fn bar_chart(
    value_label: &str,
    categories: &[String],
    series: &[Bars],
    layout: Layout,
    reference: Option<(f64, &str)>,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_bars(&root, value_label, categories, series, layout, reference)
            .map_err(|e| WebError::Chart(e.to_string()))?;
        root.present().map_err(|e| WebError::Chart(e.to_string()))?;
    }
    Ok(svg)
}

/// The value axis's range: zero, every bar end and the reference line, with headroom.
fn value_range(series: &[Bars], layout: Layout, reference: Option<f64>) -> (f64, f64) {
    let mut ends: Vec<f64> = reference.into_iter().collect();
    if layout == Layout::Stacked {
        let categories = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
        for i in 0..categories {
            let (mut up, mut down) = (0.0, 0.0);
            for v in series
                .iter()
                .filter_map(|s| s.values.get(i).copied().flatten())
            {
                if v >= 0.0 { up += v } else { down += v }
            }
            ends.extend([up, down]);
        }
    } else {
        ends.extend(
            series
                .iter()
                .flat_map(|s| s.values.iter().flatten().copied()),
        );
    }
    let finite = ends.into_iter().filter(|v| v.is_finite());
    let (low, high) = finite.fold((0.0f64, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if low == high {
        return (0.0, 1.0);
    }
    let pad = (high - low) * 0.08;
    (if low < 0.0 { low - pad } else { 0.0 }, high + pad)
}

/// Where bar `s` of `count` side-by-side bars sits within category `i`: its two edges.
fn slot(i: usize, s: usize, count: usize, layout: Layout) -> (f64, f64) {
    if layout == Layout::Stacked {
        return (i as f64 - 0.35, i as f64 + 0.35);
    }
    let width = 0.8 / count.max(1) as f64;
    let start = i as f64 - 0.4 + s as f64 * width;
    (start + width * 0.08, start + width * 0.92)
}

/// A series' name, colour and bars (two corners each).
type SeriesShapes = (String, RGBColor, Vec<[(f64, f64); 2]>);

fn draw_bars<'b, 'a: 'b>(
    root: &'b DrawingArea<SVGBackend<'a>, Shift>,
    value_label: &str,
    categories: &[String],
    series: &[Bars],
    layout: Layout,
    reference: Option<(f64, &str)>,
) -> std::result::Result<(), Box<dyn std::error::Error + 'b>> {
    root.fill(&WHITE)?;
    let (low, high) = value_range(series, layout, reference.map(|r| r.0));
    let n = categories.len().max(1);
    let axis = -0.5..(n as f64 - 0.5);
    // Category ticks fall on whole numbers (one per category): label those, nothing else.
    let name_of = |x: &f64| -> String {
        let i = x.round();
        if (x - i).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        categories.get(i as usize).cloned().unwrap_or_default()
    };
    let lying = layout == Layout::GroupedLying;
    let longest = categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let mut builder = ChartBuilder::on(root);
    builder.margin(12);
    if lying {
        builder
            .x_label_area_size(40)
            .y_label_area_size((longest * 7 + 12).min(300));
    } else {
        builder.x_label_area_size(40).y_label_area_size(70);
    }
    let mut rects: Vec<SeriesShapes> = Vec::new();
    let mut base = vec![(0.0f64, 0.0f64); categories.len()];
    for (s, bars) in series.iter().enumerate() {
        let mut shapes = Vec::new();
        for (i, value) in bars.values.iter().enumerate().take(categories.len()) {
            let Some(v) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let (a, b) = slot(i, s, series.len(), layout);
            let (from, to) = if layout == Layout::Stacked {
                let (up, down) = &mut base[i];
                let edge = if v >= 0.0 { up } else { down };
                let from = *edge;
                *edge += v;
                (from, *edge)
            } else {
                (0.0, v)
            };
            shapes.push(if lying {
                [(from, a), (to, b)]
            } else {
                [(a, from), (b, to)]
            });
        }
        rects.push((bars.name.clone(), color(s), shapes));
    }
    let (x_range, y_range) = if lying {
        (low..high, axis.clone())
    } else {
        (axis.clone(), low..high)
    };
    let mut chart = builder.build_cartesian_2d(x_range, y_range)?;
    let mut mesh = chart.configure_mesh();
    if lying {
        mesh.disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&name_of)
            .x_desc(value_label)
            .x_label_formatter(&short_number);
    } else {
        mesh.disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&name_of)
            .y_desc(value_label)
            .y_label_formatter(&short_number);
    }
    mesh.draw()?;
    for (name, c, shapes) in rects {
        chart
            .draw_series(shapes.into_iter().map(|r| Rectangle::new(r, c.filled())))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    if let Some((value, label)) = reference {
        let across = if lying {
            [(value, axis.start), (value, axis.end)]
        } else {
            [(axis.start, value), (axis.end, value)]
        };
        chart
            .draw_series(LineSeries::new(across, BLACK.stroke_width(1)))?
            .label(label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK));
    }
    legend(&mut chart)?;
    Ok(())
}

/// One line of a line chart; `dashed` for a modelled or reference curve.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
}

/// A line chart, with `marks` (x, y, colour) drawn as dots: where each series stands today.
pub fn line_chart(
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    marks: &[(f64, f64, RGBColor)],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_lines(&root, x_label, y_label, lines, marks)
            .map_err(|e| WebError::Chart(e.to_string()))?;
        root.present().map_err(|e| WebError::Chart(e.to_string()))?;
    }
    Ok(svg)
}

fn draw_lines<'b, 'a: 'b>(
    root: &'b DrawingArea<SVGBackend<'a>, Shift>,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    marks: &[(f64, f64, RGBColor)],
) -> std::result::Result<(), Box<dyn std::error::Error + 'b>> {
    root.fill(&WHITE)?;
    let points = || {
        lines
            .iter()
            .flat_map(|l| l.points.iter().copied())
            .chain(marks.iter().map(|(x, y, _)| (*x, *y)))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in points() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 >= x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0.0..y1 * 1.08)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .y_label_formatter(&short_number)
        .draw()?;
    for line in lines {
        let c = line.color;
        let style = c.stroke_width(2);
        let drawn = if line.dashed {
            chart.draw_series(DashedLineSeries::new(line.points.clone(), 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(line.points.clone(), style))?
        };
        drawn
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c.stroke_width(2)));
    }
    chart.draw_series(
        marks
            .iter()
            .map(|(x, y, c)| Circle::new((*x, *y), 4, c.filled())),
    )?;
    legend(&mut chart)?;
    Ok(())
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> std::result::Result<(), Box<dyn std::error::Error + 'a>>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// Axis numbers kept short: 1200 → 1.2k, 0.0004 → 0.0004.
fn short_number(v: &f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || *v == 0.0 {
        format!("{v:.0}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_bars_reach_the_sum_of_their_parts() {
        let series = [
            Bars {
                name: "a".into(),
                values: vec![Some(1.0), Some(2.0)],
            },
            Bars {
                name: "b".into(),
                values: vec![Some(3.0), None],
            },
        ];
        let (low, high) = value_range(&series, Layout::Stacked, None);
        assert_eq!(low, 0.0);
        assert!((high - 4.0 * 1.08).abs() < 1e-9);
        let (low, _) = value_range(&series, Layout::Grouped, Some(-2.0));
        assert!(low < -2.0);
    }

    #[test]
    fn a_chart_is_svg_with_its_category_names() {
        let svg = bar_chart(
            "USD",
            &["invoice".into(), "support_ticket".into()],
            &[Bars {
                name: "cost".into(),
                values: vec![Some(1.5), Some(0.2)],
            }],
            Layout::Grouped,
            Some((1.0, "break-even")),
        )
        .unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["invoice", "support_ticket", "cost", "break-even"] {
            assert!(
                svg.contains(&format!(">{text}<")) || svg.contains(&format!(">\n{text}\n<")),
                "{text} in {svg}"
            );
        }
    }
}
