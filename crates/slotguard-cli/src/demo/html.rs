//! `slotguard demo --report FILE`: one self-contained HTML page (inline
//! SVG drawn with `plotters`, no script, nothing fetched) with, per phase,
//! a per-second chart of goodput, errors and p99 with the fault's start and
//! the promotion marked, and the share of answers per path.

use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::PhaseReport;
use super::table::{format_pct, table};

const CHART_SIZE: (u32, u32) = (960, 320);
const SHARE_SIZE: (u32, u32) = (960, 96);

const GOODPUT: RGBColor = RGBColor(31, 119, 180);
const ERRORS: RGBColor = RGBColor(214, 39, 40);
const P99: RGBColor = RGBColor(255, 127, 14);
const FAULT: RGBColor = RGBColor(40, 40, 40);
const PROMOTION: RGBColor = RGBColor(44, 160, 44);
/// primary, replica, client-side caching, near-cache, store
const PATHS: [(&str, RGBColor); 5] = [
    ("primary", RGBColor(120, 170, 210)),
    ("replica", RGBColor(148, 103, 189)),
    ("client cache", RGBColor(140, 86, 75)),
    ("near-cache", RGBColor(23, 190, 207)),
    ("store", RGBColor(188, 189, 34)),
];

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}\
pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:12px}\
h2{margin-top:36px;border-bottom:1px solid #ccc}\
.ok{color:#2a7d2a;font-weight:bold}.miss{color:#c62828;font-weight:bold}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}";

/// The whole page: `header` (the settings), the table, then one section per phase.
pub(crate) fn page(header: &str, reports: &[PhaseReport]) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<title>slotguard demo</title><style>");
    s.push_str(STYLE);
    s.push_str("</style></head><body>\n<h1>slotguard demo</h1>\n");
    let met = reports.iter().all(|r| r.targets_missed.is_empty());
    let _ = writeln!(
        s,
        "<p class=\"{}\">{}</p>",
        if met { "ok" } else { "miss" },
        if met {
            "every phase met its targets".to_owned()
        } else {
            let n = reports
                .iter()
                .filter(|r| !r.targets_missed.is_empty())
                .count();
            format!("{n} of {} phases missed targets", reports.len())
        }
    );
    let _ = writeln!(s, "<pre>{}</pre>", escape(header));
    let _ = writeln!(s, "<pre>{}</pre>", escape(&table(reports)));
    for r in reports {
        s.push_str(&section(r));
    }
    s.push_str("</body></html>\n");
    s
}

fn section(r: &PhaseReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<h2 id=\"{0}\">{0}</h2>", escape(r.name));
    if r.targets_missed.is_empty() {
        s.push_str("<p class=\"ok\">every target met</p>\n");
    } else {
        let _ = writeln!(
            s,
            "<p class=\"miss\">targets missed: {}</p><ul>",
            escape(&r.targets_missed.join(", "))
        );
        for m in &r.misses {
            let _ = writeln!(s, "<li>{}</li>", escape(m));
        }
        s.push_str("</ul>\n");
    }
    if let Some(f) = &r.fault {
        let mut line = format!("{} at {:.1} s", f.action, f.at_s);
        if let (Some(p), Some(after)) = (&f.promoted, f.promoted_after_ms) {
            let _ = write!(line, "; {p} promoted {after:.0} ms later");
        }
        let _ = writeln!(s, "<p>fault: {}</p>", escape(&line));
    }
    let _ = writeln!(
        s,
        "<p>{} ops, reads answered {} %, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, \
         {} stale reads, lost writes {} before / {} after the fault</p>",
        r.ops,
        format_pct(r.reads_answered_pct),
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.stale_reads,
        r.lost_writes_before_fault,
        r.lost_writes_after_fault
    );
    if !r.errors_by_kind.is_empty() {
        let kinds: Vec<String> = r
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "<p>errors by kind: {}</p>", escape(&kinds.join(", ")));
    }
    match chart_svg(r) {
        Ok(svg) => s.push_str(&svg),
        Err(e) => {
            let _ = writeln!(s, "<p class=\"miss\">chart failed: {}</p>", escape(&e));
        }
    }
    match share_svg(r) {
        Ok(svg) => {
            s.push_str(&svg);
            s.push_str(&share_legend(r));
        }
        Err(e) => {
            let _ = writeln!(s, "<p class=\"miss\">chart failed: {}</p>", escape(&e));
        }
    }
    s.push('\n');
    s
}

/// Fault start and promotion, in seconds into the phase.
fn markers(r: &PhaseReport) -> Vec<(f64, &'static str, RGBColor)> {
    let mut out = Vec::new();
    if let Some(f) = &r.fault {
        out.push((f.at_s, "fault", FAULT));
        if let Some(p) = f.promoted_after_ms {
            out.push((f.at_s + p / 1000.0, "promotion", PROMOTION));
        }
    }
    out
}

/// Goodput and errors per second (left axis) and p99 (right axis).
fn chart_svg(r: &PhaseReport) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        draw_chart(&root, r).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_chart(root: &DrawingArea<SVGBackend<'_>, Shift>, r: &PhaseReport) -> DrawResult {
    root.fill(&WHITE)?;
    let secs = r.per_second.len().max(1) as f64;
    let top = r
        .per_second
        .iter()
        .chain(&r.per_second_errors)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let p99_top = r.per_second_p99_ms.iter().copied().fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{}: per second", r.name),
            ("sans-serif", 16).into_font(),
        )
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..secs, 0f64..top)?
        .set_secondary_coord(0f64..secs, 0f64..p99_top);
    chart
        .configure_mesh()
        .x_desc("seconds into the phase")
        .y_desc("operations per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 latency (ms)")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    // Each whole second is drawn at its middle.
    let at = |i: usize| i as f64 + 0.5;
    chart
        .draw_series(LineSeries::new(
            r.per_second
                .iter()
                .enumerate()
                .map(|(i, &n)| (at(i), n as f64)),
            GOODPUT.stroke_width(2),
        ))?
        .label("goodput (answered ops/s)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GOODPUT.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            r.per_second_errors
                .iter()
                .enumerate()
                .map(|(i, &n)| (at(i), n as f64)),
            ERRORS.stroke_width(2),
        ))?
        .label("errors/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ERRORS.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            r.per_second_p99_ms
                .iter()
                .enumerate()
                .map(|(i, &ms)| (at(i), ms)),
            P99.stroke_width(2),
        ))?
        .label("p99 ms (right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], P99.stroke_width(2)));
    for (t, label, color) in markers(r) {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(t, 0.0), (t, top)],
                color.stroke_width(2),
            )))?
            .label(format!("{label} at {t:.1} s"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x + 9, y - 6), (x + 9, y + 6)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// One stacked bar: the share of answered reads per path.
fn share_svg(r: &PhaseReport) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SHARE_SIZE).into_drawing_area();
        draw_share(&root, r).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_share(root: &DrawingArea<SVGBackend<'_>, Shift>, r: &PhaseReport) -> DrawResult {
    root.fill(&WHITE)?;
    let total = r.served.total().max(1) as f64;
    let counts = [
        r.served.primary,
        r.served.replica,
        r.served.client_cache,
        r.served.near_cache,
        r.served.secondary,
    ];
    let mut chart = ChartBuilder::on(root)
        .caption(
            "share of answered reads by path (%)",
            ("sans-serif", 13).into_font(),
        )
        .margin(4)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..100f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(11)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        .draw()?;
    let mut x = 0.0;
    for ((_, color), n) in PATHS.iter().zip(counts) {
        let width = n as f64 * 100.0 / total;
        let (from, to) = (x, x + width);
        x = to;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(from, 0.1), (to, 0.9)],
            color.filled(),
        )))?;
    }
    Ok(())
}

/// The share bar's legend, with each path's share and count.
fn share_legend(r: &PhaseReport) -> String {
    let total = r.served.total().max(1) as f64;
    let counts = [
        r.served.primary,
        r.served.replica,
        r.served.client_cache,
        r.served.near_cache,
        r.served.secondary,
    ];
    let mut s = String::from("<p class=\"legend\">");
    for ((name, c), n) in PATHS.iter().zip(counts) {
        let _ = write!(
            s,
            "<span style=\"display:inline-block;width:12px;height:12px;background:rgb({},{},{})\">\
             </span> {name} {:.1} % ({n}) &nbsp; ",
            c.0,
            c.1,
            c.2,
            n as f64 * 100.0 / total
        );
    }
    s.push_str("</p>\n");
    s
}

/// Text for HTML content and attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
