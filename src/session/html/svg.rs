//! Small inline SVG charts for the HTML pages: rates with their intervals, stacked counts
//! (win/tie/loss), per-prompt values as a strip plot with p50 and p95 marked, and a histogram.
//! Pure strings; every label goes through `esc`. Charts scale down with the page (`viewBox`).

use std::fmt::Write;

use super::page::esc;
use crate::session::stats;

/// An `<svg>` element of a fixed size (the session page's latency bars).
pub fn open(w: f64, h: f64, label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    )
}

/// An `<svg>` element that shrinks to the width of the page (and of the paper when printed).
fn chart(w: f64, h: f64, label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    )
}

fn text(s: &mut String, x: f64, y: f64, anchor: &str, body: &str) {
    let _ = write!(
        s,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
        esc(body)
    );
}

fn line(s: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
    let _ = write!(
        s,
        "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" {style}/>"
    );
}

/// Tick values from 0 to at least `max`: steps of 1, 2 or 5 times a power of ten, about five.
fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Where the values of an interval chart lie, and how to read it.
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    /// A dashed line (0.5 for win rates: as good as the other side; 0 for scores).
    pub reference: Option<(f64, &'static str)>,
    /// Bars from `lo` to the value (rates); else a dot at the value (scores).
    pub bars: bool,
}

/// One row of an interval chart.
pub struct IntervalRow {
    pub label: String,
    pub value: Option<f64>,
    /// Intervals drawn as whiskers, the first thick; the legend names them.
    pub intervals: Vec<[f64; 2]>,
    /// Written after the chart, e.g. `0.625 [0.41–0.80]`.
    pub note: String,
}

/// Exact-match accuracies on a 0–1 axis, each with its 95 % Wilson interval.
pub fn accuracy(rows: &[IntervalRow], label: &str) -> String {
    intervals(
        rows,
        &Axis {
            lo: 0.0,
            hi: 1.0,
            reference: None,
            bars: true,
        },
        &["95 % Wilson interval"],
        label,
    )
}

/// Rows of a value with its intervals on a common axis: win rates with their 95 % intervals, or
/// Bradley–Terry scores with theirs. `legend` names the intervals in order.
pub fn intervals(rows: &[IntervalRow], axis: &Axis, legend: &[&str], label: &str) -> String {
    let (label_w, plot_w, note_w, row_h) = (190.0, 460.0, 330.0, 26.0);
    let top = 6.0;
    let h = top + rows.len() as f64 * row_h + 48.0;
    let span = (axis.hi - axis.lo).max(1e-9);
    let x = |v: f64| label_w + ((v.clamp(axis.lo, axis.hi) - axis.lo) / span) * plot_w;
    let mut s = chart(label_w + plot_w + note_w, h, label);
    let bottom = top + rows.len() as f64 * row_h;
    // Gridlines at quarters of the axis.
    for k in 0..=4 {
        let v = axis.lo + span * k as f64 / 4.0;
        line(
            &mut s,
            (x(v), top),
            (x(v), bottom),
            "stroke=\"#e3e6ec\" stroke-width=\"1\"",
        );
        text(&mut s, x(v), bottom + 13.0, "middle", &format!("{v:.2}"));
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let mid = y + row_h / 2.0;
        text(
            &mut s,
            label_w - 8.0,
            mid + 4.0,
            "end",
            &crate::text::truncate(&r.label, 30),
        );
        if let Some(v) = r.value.filter(|v| v.is_finite()) {
            if axis.bars {
                let _ = write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"#9db8e0\"/>",
                    x(axis.lo),
                    mid - 7.0,
                    (x(v) - x(axis.lo)).max(0.0)
                );
            } else {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{mid:.1}\" r=\"4.5\" fill=\"#3b6fb6\"/>",
                    x(v)
                );
            }
        }
        let n = r.intervals.len() as f64;
        for (k, ci) in r.intervals.iter().enumerate() {
            // Several intervals of one row side by side vertically, the first in black.
            let dy = (k as f64 - (n - 1.0) / 2.0) * 5.0;
            let (color, width) = if k == 0 {
                ("#111", 2.0)
            } else {
                ("#c2410c", 1.5)
            };
            let style = format!("stroke=\"{color}\" stroke-width=\"{width}\"");
            line(&mut s, (x(ci[0]), mid + dy), (x(ci[1]), mid + dy), &style);
            for end in [ci[0], ci[1]] {
                line(
                    &mut s,
                    (x(end), mid + dy - 4.0),
                    (x(end), mid + dy + 4.0),
                    &style,
                );
            }
        }
        text(&mut s, label_w + plot_w + 8.0, mid + 4.0, "start", &r.note);
    }
    if let Some((v, name)) = axis.reference {
        line(
            &mut s,
            (x(v), top - 2.0),
            (x(v), bottom + 2.0),
            "stroke=\"#555\" stroke-dasharray=\"4 3\"",
        );
        text(&mut s, x(v) + 4.0, bottom + 27.0, "start", name);
    }
    let legend: Vec<String> = legend
        .iter()
        .enumerate()
        .map(|(k, l)| format!("{} {l}", if k == 0 { "black:" } else { "orange:" }))
        .collect();
    text(&mut s, label_w, h - 3.0, "start", &legend.join(" · "));
    s.push_str("</svg>");
    s
}

/// Rows of counts stacked in one bar each (win, tie, loss, undecided), each part in its colour,
/// with its count written inside when it fits. `parts` are (name, colour).
pub fn stacked(rows: &[(String, Vec<usize>)], parts: &[(&str, &str)], label: &str) -> String {
    let (label_w, plot_w, row_h) = (190.0, 520.0, 24.0);
    let h = rows.len() as f64 * row_h + 26.0;
    let mut s = chart(label_w + plot_w + 20.0, h, label);
    let most = rows
        .iter()
        .map(|(_, c)| c.iter().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    for (i, (name, counts)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 3.0;
        text(
            &mut s,
            label_w - 8.0,
            y + 13.0,
            "end",
            &crate::text::truncate(name, 30),
        );
        let mut x0 = label_w;
        for (k, c) in counts.iter().enumerate() {
            let w = *c as f64 / most * plot_w;
            if w <= 0.0 {
                continue;
            }
            let color = parts.get(k).map_or("#999", |p| p.1);
            let _ = write!(
                s,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" fill=\"{color}\"><title>{} {c}</title></rect>",
                esc(parts.get(k).map_or("", |p| p.0))
            );
            if w >= 18.0 {
                text(&mut s, x0 + w / 2.0, y + 13.0, "middle", &c.to_string());
            }
            x0 += w;
        }
    }
    let mut lx = label_w;
    for (name, color) in parts {
        let _ = write!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/>",
            h - 13.0
        );
        text(&mut s, lx + 14.0, h - 4.0, "start", name);
        lx += 24.0 + name.chars().count() as f64 * 6.5;
    }
    s.push_str("</svg>");
    s
}

/// Per-prompt values of several groups (latency of MoA and of the baseline, or of each variant) on
/// one axis: a dot per prompt, p50 as a solid tick and p95 as a dashed one, both written. Values
/// in milliseconds, shown in seconds.
pub fn strip(groups: &[(String, Vec<f64>, &str)], label: &str) -> String {
    let (label_w, plot_w, row_h) = (190.0, 560.0, 46.0);
    let top = 4.0;
    let h = top + groups.len() as f64 * row_h + 22.0;
    let max = groups
        .iter()
        .flat_map(|g| g.1.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let ticks = ticks(max);
    let end = ticks.last().copied().unwrap_or(1.0).max(1.0);
    let x = |v: f64| label_w + (v.max(0.0) / end) * plot_w;
    let mut s = chart(label_w + plot_w + 40.0, h, label);
    let bottom = top + groups.len() as f64 * row_h;
    for t in &ticks {
        line(
            &mut s,
            (x(*t), top),
            (x(*t), bottom),
            "stroke=\"#e3e6ec\" stroke-width=\"1\"",
        );
        text(
            &mut s,
            x(*t),
            bottom + 13.0,
            "middle",
            &format!("{} s", trim_seconds(*t)),
        );
    }
    for (i, (name, values, color)) in groups.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let mid = y + 20.0;
        text(
            &mut s,
            label_w - 8.0,
            mid + 4.0,
            "end",
            &crate::text::truncate(name, 30),
        );
        for (k, v) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            // A fixed spread over the row's height keeps equal values apart.
            let dy = ((k * 7) % 11) as f64 - 5.0;
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\" fill-opacity=\"0.55\"/>",
                x(*v),
                mid + dy
            );
        }
        for (q, dash, name) in [(0.5, "", "p50"), (0.95, " stroke-dasharray=\"3 2\"", "p95")] {
            let Some(p) = stats::percentile(values, q) else {
                continue;
            };
            line(
                &mut s,
                (x(p), mid - 11.0),
                (x(p), mid + 11.0),
                &format!("stroke=\"#111\" stroke-width=\"2\"{dash}"),
            );
            let anchor = if name == "p50" { "end" } else { "start" };
            let dx = if name == "p50" { -3.0 } else { 3.0 };
            text(
                &mut s,
                x(p) + dx,
                mid + 22.0,
                anchor,
                &format!("{name} {:.2} s", p / 1000.0),
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn trim_seconds(ms: f64) -> String {
    let s = format!("{:.2}", ms / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A histogram of values in [lo, hi] in `bins` equal bins, a count above each bar.
pub fn histogram(values: &[f64], bins: usize, (lo, hi): (f64, f64), label: &str) -> String {
    let bins = bins.max(1);
    let (left, plot_w, plot_h) = (30.0, 440.0, 110.0);
    let mut counts = vec![0usize; bins];
    for v in values.iter().filter(|v| v.is_finite()) {
        let k = (((v - lo) / (hi - lo).max(1e-9)) * bins as f64).floor();
        counts[(k.max(0.0) as usize).min(bins - 1)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let h = plot_h + 40.0;
    let mut s = chart(left + plot_w + 20.0, h, label);
    let bw = plot_w / bins as f64;
    let base = plot_h + 14.0;
    for (k, c) in counts.iter().enumerate() {
        let bh = *c as f64 / most * plot_h;
        let x0 = left + k as f64 * bw;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#6b8fc9\"/>",
            x0 + 1.0,
            base - bh,
            bw - 2.0
        );
        if *c > 0 {
            text(
                &mut s,
                x0 + bw / 2.0,
                base - bh - 3.0,
                "middle",
                &c.to_string(),
            );
        }
    }
    line(
        &mut s,
        (left, base),
        (left + plot_w, base),
        "stroke=\"#555\"",
    );
    for k in 0..=bins {
        let v = lo + (hi - lo) * k as f64 / bins as f64;
        if bins <= 10 || k % 2 == 0 {
            text(
                &mut s,
                left + k as f64 * bw,
                base + 14.0,
                "middle",
                &format!("{v:.1}"),
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_maximum_in_round_steps() {
        assert_eq!(
            ticks(4300.0),
            vec![0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
        );
        let t = ticks(0.0);
        assert_eq!((t.len(), t[5]), (6, 1.0), "{t:?}");
        let t = ticks(137.0);
        assert!(*t.last().unwrap() >= 137.0 && t.len() <= 7, "{t:?}");
    }

    #[test]
    fn labels_are_escaped_and_values_fall_in_their_bins() {
        let h = histogram(&[0.05, 0.15, 0.15, 1.0, f64::NAN], 10, (0.0, 1.0), "a<b");
        assert!(h.contains("aria-label=\"a&lt;b\""), "{h}");
        // Counts written above bars: 1, 2 and the 1.0 in the last bin.
        assert_eq!(h.matches(">2</text>").count(), 1, "{h}");
        assert_eq!(h.matches(">1</text>").count(), 2, "{h}");
        let s = strip(
            &[("<script>".into(), vec![100.0, 200.0, 3000.0], "#333")],
            "latency",
        );
        assert!(
            s.contains("&lt;script&gt;") && !s.contains("<script>"),
            "{s}"
        );
        assert!(s.contains("p50 0.20 s") && s.contains("p95 3.00 s"), "{s}");
    }
}
