//! The run's chart: for each system, 1-stream TCP throughput each way (left) and the CPU-seconds
//! its tunnel processes spent per GB moved (right), as horizontal bars of the median with a
//! line from the fastest to the slowest run. Drawn as SVG with plotters.
//!
//! [`bars`] picks the figures out of the runs (pure, tested with made-up runs); [`svg`] draws
//! them.

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::report::RunRecord;
use super::stats::Summary;

/// The tests the chart draws, with the direction each measures.
const TESTS: &[(&str, Direction)] = &[
    ("iperf-tcp-1", Direction::Upload),
    ("iperf-tcp-1-reverse", Direction::Download),
];
/// Pixel sizes.
const WIDTH: u32 = 1100;
const ROW_HEIGHT: u32 = 24;
const FRAME_HEIGHT: u32 = 110;
const LABEL_WIDTH: u32 = 230;
const UPLOAD: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const DOWNLOAD: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// Which way a bar's data went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Upload,
    /// Server to client.
    Download,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Self::Upload => "↑",
            Self::Download => "↓",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Self::Upload => UPLOAD,
            Self::Download => DOWNLOAD,
        }
    }
}

/// One row of the chart: a system in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The system.
    pub system: String,
    /// Which way.
    pub direction: Direction,
    /// Goodput in Gbit/s over the successful runs.
    pub gbps: Option<Summary>,
    /// CPU-seconds per GB of the tunnel's processes (none for the bare link).
    pub cpu_s_per_gb: Option<Summary>,
    /// Why there is no bar: `failed to start`, `failed`.
    pub note: Option<String>,
}

/// The bars for `systems` (in order, upload then download), from the runs of the 1-stream
/// TCP tests; a test that did not run has no bars.
pub fn bars(systems: &[String], runs: &[RunRecord]) -> Vec<Bar> {
    let mut out = Vec::new();
    for system in systems {
        for &(test, direction) in TESTS {
            let mine: Vec<&RunRecord> = runs
                .iter()
                .filter(|r| r.test == test && &r.system == system)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let ok: Vec<&RunRecord> = mine.iter().copied().filter(|r| r.error.is_none()).collect();
            let summary = |key: &str| {
                let values: Vec<f64> = ok
                    .iter()
                    .filter_map(|r| r.metrics.get(key).copied())
                    .collect();
                Summary::of(&values)
            };
            let note = if !ok.is_empty() {
                None
            } else if mine.iter().any(|r| r.failed_to_start) {
                Some("failed to start".to_owned())
            } else {
                Some("failed".to_owned())
            };
            out.push(Bar {
                system: system.clone(),
                direction,
                gbps: summary("gbps"),
                cpu_s_per_gb: summary("cpu_tunnel_s_per_gb"),
                note,
            });
        }
    }
    out
}

/// The chart as an SVG document, or `None` without bars.
pub fn svg(bars: &[Bar], subtitle: &str) -> Result<Option<String>> {
    if bars.is_empty() {
        return Ok(None);
    }
    let height = FRAME_HEIGHT + ROW_HEIGHT * bars.len() as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (top, body) = root.split_vertically(44);
        top.draw(&Text::new(
            "1-stream TCP through each system: ↑ upload (client → server), ↓ download",
            (10, 6),
            ("sans-serif", 17).into_font(),
        ))
        .map_err(draw_error)?;
        top.draw(&Text::new(
            subtitle.to_owned(),
            (10, 26),
            ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(draw_error)?;
        let (left, right) = body.split_horizontally(LABEL_WIDTH + (WIDTH - LABEL_WIDTH) / 2);
        panel(&left, bars, Panel::Throughput)?;
        panel(&right, bars, Panel::Cpu)?;
        root.present().map_err(draw_error)?;
    }
    Ok(Some(out))
}

/// The two halves of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Panel {
    Throughput,
    Cpu,
}

impl Panel {
    fn value(self, bar: &Bar) -> Option<Summary> {
        match self {
            Self::Throughput => bar.gbps,
            Self::Cpu => bar.cpu_s_per_gb,
        }
    }

    fn caption(self) -> &'static str {
        match self {
            Self::Throughput => "Gbit/s (more is better)",
            Self::Cpu => "CPU-seconds per GB, tunnel processes (less is better)",
        }
    }

    fn decimals(self) -> usize {
        match self {
            Self::Throughput => 3,
            Self::Cpu => 2,
        }
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    bars: &[Bar],
    which: Panel,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let rows = bars.len() as i32;
    let max = bars
        .iter()
        .filter_map(|b| which.value(b))
        .map(|s| s.max)
        .fold(0.0_f64, f64::max);
    let x_max = if max > 0.0 { max * 1.3 } else { 1.0 };
    let label_width = if which == Panel::Throughput {
        LABEL_WIDTH
    } else {
        8
    };
    let mut chart = ChartBuilder::on(area)
        .caption(which.caption(), ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(label_width)
        // A discrete range counts both ends: 0..rows-1 is `rows` segments.
        .build_cartesian_2d(0.0..x_max, (0..rows - 1).into_segmented())
        .map_err(draw_error)?;
    // Row 0 is drawn at the top: plotters counts y upwards.
    let row_of = |i: usize| rows - 1 - i as i32;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(y) if which == Panel::Throughput && (0..rows).contains(y) => {
            let bar = &bars[(rows - 1 - y) as usize];
            format!("{} {}", bar.system, bar.direction.arrow())
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(bars.len())
        .y_label_formatter(&label)
        .x_labels(6)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(draw_error)?;
    let font = ("sans-serif", 11).into_font();
    for (i, bar) in bars.iter().enumerate() {
        let y = row_of(i);
        let Some(s) = which.value(bar) else {
            let why = match (&bar.note, which) {
                (Some(note), _) => note.clone(),
                (None, Panel::Cpu) => "n/a (no tunnel process)".to_owned(),
                (None, Panel::Throughput) => "n/a".to_owned(),
            };
            chart
                .draw_series([Text::new(
                    why,
                    (x_max * 0.01, SegmentValue::CenterOf(y)),
                    font.clone(),
                )])
                .map_err(draw_error)?;
            continue;
        };
        let color = bar.direction.color();
        let mut rect = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(y)),
                (s.median, SegmentValue::Exact(y + 1)),
            ],
            color.filled(),
        );
        rect.set_margin(4, 4, 0, 0);
        chart.draw_series([rect]).map_err(draw_error)?;
        if s.min < s.max {
            chart
                .draw_series([PathElement::new(
                    vec![
                        (s.min, SegmentValue::CenterOf(y)),
                        (s.max, SegmentValue::CenterOf(y)),
                    ],
                    BLACK.stroke_width(2),
                )])
                .map_err(draw_error)?;
        }
        let text = format!("{:.*}", which.decimals(), s.median);
        chart
            .draw_series([Text::new(
                text,
                (
                    s.max.max(s.median) + x_max * 0.01,
                    SegmentValue::CenterOf(y),
                ),
                font.clone(),
            )])
            .map_err(draw_error)?;
    }
    Ok(())
}

fn draw_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run(test: &str, system: &str, metrics: &[(&str, f64)], failed_to_start: bool) -> RunRecord {
        RunRecord {
            rep: 1,
            test: test.into(),
            system: system.into(),
            build: None,
            started: String::new(),
            elapsed_s: 1.0,
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            counters: BTreeMap::new(),
            error: failed_to_start.then(|| "no such thing".to_owned()),
            failed_to_start,
        }
    }

    #[test]
    fn bars_come_from_the_one_stream_tests() {
        let systems: Vec<String> = ["raw-veth", "ringway-udp", "openvpn"]
            .map(String::from)
            .to_vec();
        let runs = vec![
            run("iperf-tcp-1", "raw-veth", &[("gbps", 20.0)], false),
            run(
                "iperf-tcp-1",
                "ringway-udp",
                &[("gbps", 5.0), ("cpu_tunnel_s_per_gb", 2.0)],
                false,
            ),
            run(
                "iperf-tcp-1",
                "ringway-udp",
                &[("gbps", 7.0), ("cpu_tunnel_s_per_gb", 1.0)],
                false,
            ),
            run(
                "iperf-tcp-1-reverse",
                "ringway-udp",
                &[("gbps", 4.0)],
                false,
            ),
            run("iperf-tcp-1", "openvpn", &[], true),
            run("ping-idle", "raw-veth", &[("rtt_p50_ms", 0.1)], false),
        ];
        let b = bars(&systems, &runs);
        let rows: Vec<(&str, Direction)> =
            b.iter().map(|b| (b.system.as_str(), b.direction)).collect();
        assert_eq!(
            rows,
            [
                ("raw-veth", Direction::Upload),
                ("ringway-udp", Direction::Upload),
                ("ringway-udp", Direction::Download),
                ("openvpn", Direction::Upload),
            ]
        );
        assert_eq!(b[0].gbps.unwrap().median, 20.0);
        assert_eq!(b[0].cpu_s_per_gb, None);
        let udp = b[1].gbps.unwrap();
        assert_eq!((udp.median, udp.min, udp.max), (6.0, 5.0, 7.0));
        assert_eq!(b[1].cpu_s_per_gb.unwrap().median, 1.5);
        assert_eq!(b[3].note.as_deref(), Some("failed to start"));

        let svg = svg(&b, "2026-12-02, kernel 6.18").unwrap().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in [
            "ringway-udp ↑",
            "openvpn ↑",
            "failed to start",
            "6.000",
            "1.50",
            "n/a (no tunnel process)",
        ] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
        assert_eq!(super::svg(&[], "").unwrap(), None);
    }
}
