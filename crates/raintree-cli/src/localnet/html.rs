//! `--report DIR`: one self-contained HTML page (inline SVG charts drawn with `plotters`, no
//! script, no external resource), so it opens anywhere without a network.

use std::collections::HashSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use raintree_proto::wire::Strategy;

use super::collect::Seen;
use super::report::{Report, RunData};
use super::tree_plan::exact_plan;

/// What the page needs beyond the run and its report.
pub struct PageSettings {
    /// The tree strategy (the planned tree is drawn for `exact` only).
    pub strategy: Strategy,
    /// The ACK deadline, to tell deliveries that waited for one.
    pub ack_timeout_ms: u64,
}

/// At most this many faint per-message lines, so a long run still gives a light page.
const MAX_LINES: usize = 400;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err(e: impl Display) -> String {
    format!("cannot draw the report: {e}")
}

/// Writes `DIR/index.html`; returns its path.
pub fn write(
    dir: &Path,
    run: &RunData,
    report: &Report,
    settings: &PageSettings,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let page = render(run, report, settings)?;
    let path = dir.join("index.html");
    std::fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The page as a string.
pub fn render(run: &RunData, report: &Report, settings: &PageSettings) -> Result<String, String> {
    let msgs = run.live_deliveries();
    let curves: Vec<(usize, Vec<f64>)> = msgs
        .iter()
        .map(|(_, s, seen)| {
            let lat: Vec<f64> = seen.iter().map(|d| d.latency_us as f64 / 1000.0).collect();
            (run.receivers(s.origin), lat)
        })
        .collect();
    let coverage = svg(900, 420, |a| coverage_chart(a, &curves))?;
    let cdf = svg(900, 380, |a| latency_cdf(a, &curves))?;
    let copies = svg(900, 300, |a| per_node_chart(a, run, NodeFigure::Copies))?;
    let bytes = svg(900, 300, |a| per_node_chart(a, run, NodeFigure::Bytes))?;
    // The slowest message shows the most: resends, clean-up and the dead are in its tree.
    let slowest = msgs
        .iter()
        .max_by_key(|(_, _, seen)| seen.last().map_or(0, |d| d.latency_us));
    let (tree, tree_note) = match slowest {
        Some((key, sent, seen)) => (
            svg(1100, 520, |a| {
                tree_chart(a, run, sent.origin, seen, settings)
            })?,
            format!(
                "Message {}…/{} from node {}, the slowest to reach every live node{}.",
                &key.0[..8],
                key.1,
                sent.origin,
                match run.killed_at_us {
                    Some(k) if sent.at_us < k => format!(
                        ", broadcast {:.0} ms before the kill",
                        (k - sent.at_us) as f64 / 1000.0
                    ),
                    Some(k) => format!(
                        ", broadcast {:.0} ms after the kill",
                        (sent.at_us - k) as f64 / 1000.0
                    ),
                    None => String::new(),
                }
            ),
        ),
        None => (String::new(), "No message was sent.".into()),
    };
    let summary = serde_json::to_value(report).map_err(|e| e.to_string())?;
    let mut rows = String::new();
    if let Some(obj) = summary.as_object() {
        for (k, v) in obj {
            if k == "failed_nodes" {
                continue;
            }
            rows.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                escape(k),
                escape(&v.to_string())
            ));
        }
    }
    let tree_legend = match settings.strategy {
        Strategy::Exact => "Nodes sit at their depth in the exact strategy's planned tree (spread downwards within a depth); a line joins each node \
             to its planned parent (deliveries do not record which peer actually sent the first copy). \
             Green: delivered at its planned depth before an ACK deadline. Orange: delivered at another \
             depth or after an ACK deadline, i.e. through a resend or the clean-up (inferred from hops \
             and time). Red cross: killed. Grey: alive but never reached.",
        Strategy::Reference => "Nodes sit at their hop count (the reference tree has no one-parent plan to draw). \
             Orange: delivered after an ACK deadline (a resend or the clean-up, inferred from time). \
             Red cross: killed. Grey: alive but never reached.",
    };
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raintree LocalNet report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 2px 10px; text-align: left; }}
figure {{ margin: 1.5em 0; }} figcaption {{ font-size: 0.9em; color: #555; max-width: 900px; }}
</style></head><body>
<h1>raintree LocalNet: {nodes} nodes, {messages} broadcasts</h1>
<table>
{rows}</table>
<figure class="chart" id="coverage">{coverage}<figcaption>Fraction of the nodes alive at the end that hold each
message, against time since it was broadcast: one faint line per message (at most {MAX_LINES}), the median bold.</figcaption></figure>
<figure class="chart" id="latency-cdf">{cdf}<figcaption>Share of deliveries (and of messages' full coverage)
reached by a given time since broadcast.</figcaption></figure>
<figure class="chart" id="copies">{copies}<figcaption>Payload copies each node received over the broadcast
phase (deliveries plus duplicates). Red: killed before the run; orange: killed during it (counted up to its kill).</figcaption></figure>
<figure class="chart" id="bytes">{bytes}<figcaption>Transport bytes each node sent over the broadcast phase.</figcaption></figure>
<figure class="chart" id="tree">{tree}<figcaption>{tree_note} {tree_legend}</figcaption></figure>
</body></html>
"#,
        nodes = report.nodes,
        messages = report.messages,
    ))
}

/// Draws into a fresh SVG of `w` x `h` and returns its text.
fn svg(w: u32, h: u32, draw: impl FnOnce(&Area) -> Result<(), String>) -> Result<String, String> {
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        area.fill(&WHITE).map_err(err)?;
        draw(&area)?;
        area.present().map_err(err)?;
    }
    Ok(out)
}

/// Coverage fraction of one message at time `t`: `lat` is sorted.
fn covered_at(receivers: usize, lat: &[f64], t: f64) -> f64 {
    if receivers == 0 {
        return 1.0;
    }
    lat.partition_point(|&l| l <= t) as f64 / receivers as f64
}

fn x_max(curves: &[(usize, Vec<f64>)]) -> f64 {
    let m = curves
        .iter()
        .filter_map(|(_, l)| l.last().copied())
        .fold(0.0, f64::max);
    (m * 1.05).max(1.0)
}

/// A chart of a share (0 to 1) against milliseconds since broadcast, axes drawn.
fn share_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    y_desc: &str,
    xmax: f64,
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..xmax, 0.0..1.02)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("ms since broadcast")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

fn coverage_chart(area: &Area, curves: &[(usize, Vec<f64>)]) -> Result<(), String> {
    let xmax = x_max(curves);
    let mut chart = share_chart(
        area,
        "Coverage of live nodes",
        "fraction of live nodes",
        xmax,
    )?;
    let step = curves.len().div_ceil(MAX_LINES).max(1);
    for (receivers, lat) in curves.iter().step_by(step) {
        let mut pts = vec![(0.0, 0.0)];
        for (k, &l) in lat.iter().enumerate() {
            pts.push((l, k as f64 / (*receivers).max(1) as f64));
            pts.push((l, (k + 1) as f64 / (*receivers).max(1) as f64));
        }
        pts.push((xmax, covered_at(*receivers, lat, xmax)));
        chart
            .draw_series(LineSeries::new(pts, BLUE.mix(0.15)))
            .map_err(err)?;
    }
    let median: Vec<(f64, f64)> = (0..=300)
        .map(|k| {
            let t = xmax * k as f64 / 300.0;
            let mut c: Vec<f64> = curves.iter().map(|(r, l)| covered_at(*r, l, t)).collect();
            c.sort_by(|a, b| a.total_cmp(b));
            (t, c.get(c.len() / 2).copied().unwrap_or(0.0))
        })
        .collect();
    chart
        .draw_series(LineSeries::new(median, BLACK.stroke_width(3)))
        .map_err(err)?
        .label("median over messages")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn latency_cdf(area: &Area, curves: &[(usize, Vec<f64>)]) -> Result<(), String> {
    let mut all: Vec<f64> = curves.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let mut full: Vec<f64> = curves
        .iter()
        .filter(|(r, l)| l.len() >= *r)
        .filter_map(|(_, l)| l.last().copied())
        .collect();
    full.sort_by(|a, b| a.total_cmp(b));
    let xmax = x_max(curves);
    let mut chart = share_chart(area, "Latency CDF", "cumulative share", xmax)?;
    for (values, color, label) in [
        (&all, BLUE, "each delivery"),
        (&full, RED, "full coverage of a message"),
    ] {
        let n = values.len().max(1) as f64;
        let pts = std::iter::once((0.0, 0.0))
            .chain(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v, (i + 1) as f64 / n)),
            )
            .collect::<Vec<_>>();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

#[derive(Clone, Copy)]
enum NodeFigure {
    Copies,
    Bytes,
}

fn per_node_chart(area: &Area, run: &RunData, what: NodeFigure) -> Result<(), String> {
    let values: Vec<f64> = run
        .per_node
        .iter()
        .map(|s| {
            s.as_ref().map_or(0.0, |s| match what {
                NodeFigure::Copies => (s.engine.deliveries + s.engine.duplicates) as f64,
                NodeFigure::Bytes => s.transport.bytes_sent as f64 / 1024.0,
            })
        })
        .collect();
    let ymax = values.iter().copied().fold(0.0, f64::max).max(1.0) * 1.1;
    let (title, ydesc) = match what {
        NodeFigure::Copies => ("Copies received per node", "copies"),
        NodeFigure::Bytes => ("Bytes sent per node", "KiB"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..run.nodes as f64, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("node (sorted position)")
        .y_desc(ydesc)
        .draw()
        .map_err(err)?;
    let before: HashSet<usize> = run.killed_before.iter().copied().collect();
    let during: HashSet<usize> = run.killed_during.iter().copied().collect();
    chart
        .draw_series(values.iter().enumerate().map(|(i, &v)| {
            let color = if before.contains(&i) {
                RED
            } else if during.contains(&i) {
                RGBColor(230, 140, 0)
            } else {
                BLUE
            };
            // A killed-before node has no bar; a small red stub still marks it.
            let top = if before.contains(&i) { ymax * 0.02 } else { v };
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, top)],
                color.filled(),
            )
        }))
        .map_err(err)?;
    Ok(())
}

fn tree_chart(
    area: &Area,
    run: &RunData,
    origin: usize,
    seen: &[Seen],
    settings: &PageSettings,
) -> Result<(), String> {
    let n = run.nodes;
    let plan = match settings.strategy {
        Strategy::Exact => Some(exact_plan(n)),
        Strategy::Reference => None,
    };
    let pos_of = |offset: usize| (origin + offset) % n;
    let offset_of = |pos: usize| (pos + n - origin) % n;
    let mut time_ms: Vec<Option<f64>> = vec![None; n];
    let mut hops: Vec<Option<u32>> = vec![None; n];
    time_ms[origin] = Some(0.0);
    hops[origin] = Some(0);
    for d in seen {
        time_ms[d.node] = Some(d.latency_us as f64 / 1000.0);
        hops[d.node] = Some(d.hops);
    }
    let level = |pos: usize| -> u32 {
        match &plan {
            Some(p) => p[offset_of(pos)].1,
            None => hops[pos].unwrap_or(0),
        }
    };
    // Nodes of one level spread a little downwards in ring order, so their labels stay apart.
    let mut rank = vec![0usize; n];
    let mut per_level: std::collections::HashMap<u32, usize> = Default::default();
    for off in 0..n {
        let pos = pos_of(off);
        let c = per_level.entry(level(pos)).or_default();
        rank[pos] = *c;
        *c += 1;
    }
    let depth = |pos: usize| -> f64 {
        let count = per_level.get(&level(pos)).copied().unwrap_or(1).max(1);
        f64::from(level(pos)) + 0.6 * rank[pos] as f64 / count as f64
    };
    let xmax = time_ms
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.08;
    let ymax = (0..n).map(depth).fold(0.0, f64::max) + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption("One broadcast's tree, with hop times", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-xmax * 0.03..xmax, (ymax)..-0.6)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("ms since broadcast (unreached and killed nodes at the right / left edge)")
        .y_desc(if plan.is_some() {
            "planned depth"
        } else {
            "hops"
        })
        .draw()
        .map_err(err)?;
    let dead: HashSet<usize> = run
        .killed_before
        .iter()
        .chain(&run.killed_during)
        .copied()
        .collect();
    let x_of = |pos: usize| -> f64 {
        match time_ms[pos] {
            Some(t) => t,
            None if dead.contains(&pos) => 0.0,
            None => xmax * 0.97,
        }
    };
    if let Some(p) = &plan {
        chart
            .draw_series((1..n).filter_map(|off| {
                let parent = pos_of(p[off].0?);
                let child = pos_of(off);
                Some(PathElement::new(
                    vec![(x_of(parent), depth(parent)), (x_of(child), depth(child))],
                    BLACK.mix(0.25),
                ))
            }))
            .map_err(err)?;
    }
    let late_ms = settings.ack_timeout_ms as f64;
    for pos in 0..n {
        let at = (x_of(pos), depth(pos));
        let label = Text::new(
            format!("{pos}"),
            (x_of(pos), depth(pos) - 0.06),
            ("sans-serif", 10),
        );
        let on_plan = |h: u32| plan.is_none() || level(pos) == h;
        if dead.contains(&pos) && time_ms[pos].is_none() {
            chart
                .draw_series([Cross::new(at, 6, RED.stroke_width(2))])
                .map_err(err)?;
        } else if let (Some(t), Some(h)) = (time_ms[pos], hops[pos]) {
            let color = if pos == origin {
                BLACK
            } else if t < late_ms && on_plan(h) {
                RGBColor(0, 150, 60)
            } else {
                RGBColor(230, 140, 0)
            };
            chart
                .draw_series([Circle::new(at, 5, color.filled())])
                .map_err(err)?;
        } else {
            chart
                .draw_series([Circle::new(at, 5, RGBColor(150, 150, 150).stroke_width(2))])
                .map_err(err)?;
        }
        chart.draw_series([label]).map_err(err)?;
    }
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_steps_count_receivers() {
        let lat = [1.0, 2.0, 2.0, 5.0];
        assert_eq!(covered_at(4, &lat, 0.5), 0.0);
        assert_eq!(covered_at(4, &lat, 2.0), 0.75);
        assert_eq!(covered_at(8, &lat, 9.0), 0.5);
        assert_eq!(covered_at(0, &[], 1.0), 1.0);
    }
}
