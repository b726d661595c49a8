//! Grouped bar charts with min-max whiskers, written as SVG by hand to keep
//! the harness free of plotting dependencies.

use std::fmt::Write;

use super::metric::format_value;
use crate::stats::Summary;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];

/// A chart: one group of bars per target, one bar per series.
pub struct Plot {
    pub file_name: String,
    pub title: String,
    pub unit: String,
    pub series: Vec<String>,
    /// Group label and one value per series (`None` leaves a gap).
    pub groups: Vec<(String, Vec<Option<Summary>>)>,
}

/// Renders the chart; bars show medians, whiskers min and max.
pub fn render(plot: &Plot) -> String {
    let top_value = plot
        .groups
        .iter()
        .flat_map(|(_, values)| values.iter().flatten())
        .map(|summary| summary.max.max(summary.median))
        .fold(0.0, f64::max);
    let scale_max = nice_ceiling(top_value);
    let plot_height = HEIGHT - TOP - BOTTOM;
    let y_of = |value: f64| TOP + plot_height * (1.0 - (value.max(0.0) / scale_max));

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#, WIDTH / 2.0, escape(&plot.title));
    write_axis(&mut svg, scale_max, &y_of, &plot.unit);

    let group_width = (WIDTH - LEFT - RIGHT) / plot.groups.len().max(1) as f64;
    let bar_width = (group_width * 0.8) / plot.series.len().max(1) as f64;
    for (group_index, (label, values)) in plot.groups.iter().enumerate() {
        let group_left = LEFT + group_width * group_index as f64 + group_width * 0.1;
        for (series_index, value) in values.iter().enumerate() {
            let Some(summary) = value else { continue };
            let x = group_left + bar_width * series_index as f64;
            write_bar(&mut svg, x, bar_width, summary, &y_of, COLORS[series_index % COLORS.len()]);
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            group_left + group_width * 0.4,
            HEIGHT - BOTTOM + 18.0,
            escape(label)
        );
    }
    write_legend(&mut svg, &plot.series);
    svg.push_str("</svg>\n");
    svg
}

fn write_axis(svg: &mut String, scale_max: f64, y_of: &impl Fn(f64) -> f64, unit: &str) {
    for step in 0..=4 {
        let value = scale_max * step as f64 / 4.0;
        let y = y_of(value);
        let _ = writeln!(svg, r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##, WIDTH - RIGHT);
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, format_value(value));
    }
    let middle = TOP + (HEIGHT - TOP - BOTTOM) / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{middle:.1}" text-anchor="middle" transform="rotate(-90 18 {middle:.1})">{}</text>"#,
        escape(unit)
    );
}

fn write_bar(svg: &mut String, x: f64, width: f64, summary: &Summary, y_of: &impl Fn(f64) -> f64, color: &str) {
    let top = y_of(summary.median);
    let bottom = y_of(0.0);
    let _ = writeln!(
        svg,
        r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
        width * 0.9,
        (bottom - top).max(0.0)
    );
    let center = x + width * 0.45;
    let (low, high) = (y_of(summary.min), y_of(summary.max));
    let _ = writeln!(svg, r#"<line x1="{center:.1}" x2="{center:.1}" y1="{low:.1}" y2="{high:.1}" stroke="black"/>"#);
    for y in [low, high] {
        let _ = writeln!(svg, r#"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="black"/>"#, center - 4.0, center + 4.0);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{center:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
        high.min(top) - 4.0,
        format_value(summary.median)
    );
}

fn write_legend(svg: &mut String, series: &[String]) {
    if series.len() < 2 {
        return;
    }
    for (index, name) in series.iter().enumerate() {
        let x = LEFT + 140.0 * index as f64;
        let y = HEIGHT - 22.0;
        let _ = writeln!(svg, r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#, y - 10.0, COLORS[index % COLORS.len()]);
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{y:.1}">{}</text>"#, x + 16.0, escape(name));
    }
}

/// Rounds `value` up to 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|factor| factor * power).find(|candidate| *candidate >= value).unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceiling_rounds_up() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(45_000.0), 50_000.0);
    }

    #[test]
    fn chart_has_a_bar_per_value() {
        let value = Some(Summary { median: 2.0, min: 1.0, max: 3.0 });
        let plot = Plot {
            file_name: "x.svg".into(),
            title: "t <&>".into(),
            unit: "us".into(),
            series: vec!["p50".into(), "p99".into()],
            groups: vec![("legate".into(), vec![value, value]), ("nginx".into(), vec![value, None])],
        };
        let svg = render(&plot);
        assert_eq!(svg.matches(r##"fill="#4e79a7"/>"##).count(), 3, "two p50 bars and one legend box");
        assert!(svg.contains("t &lt;&amp;&gt;"));
    }
}
