//! The demo's report as an SVG picture: the probe's echoes, the iSCSI
//! data and the marks on one time axis.
use crate::report::{Panel, Report, zero_filled};
use anyhow::Result;
use std::path::Path;

/// IOPS, TCP throughput and probe echoes over time, with the time line marked.
pub fn svg(r: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let end_s = r.probe.per_10ms.len() as f64 / 100.0;
    let root = SVGBackend::new(path, (1100, 780)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((3, 1));
    let iops_max = r.iops_series.iter().map(|x| x.1 as f64).fold(1.0, f64::max) * 1.15;
    let gbps_max = r.tcp_gbps_series.iter().map(|x| x.1).fold(0.1, f64::max) * 1.15;
    let echo_max = r.probe.per_10ms.iter().copied().max().unwrap_or(1) as f64 * 1.15;
    let series: [Panel; 3] = [
        (
            "iSCSI IOPS (iscsi-perf, 16 x 8 KiB reads)",
            iops_max,
            zero_filled(&r.iops_series)
                .iter()
                .map(|(t, v)| (t / 1000.0, *v as f64))
                .collect(),
            BLUE,
        ),
        (
            "TCP Gbit/s (iperf3)",
            gbps_max,
            r.tcp_gbps_series
                .iter()
                .map(|(t, v)| (t / 1000.0, *v))
                .collect(),
            GREEN,
        ),
        (
            "UDP probe echoes per 10 ms (10 kHz sent)",
            echo_max,
            r.probe
                .per_10ms
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64 / 100.0, f64::from(*v)))
                .collect(),
            RED,
        ),
    ];
    for (panel, (title, ymax, points, color)) in panels.iter().zip(series) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end_s, 0f64..ymax)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .disable_x_mesh()
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, m) in r.timeline.iter().filter(|m| is_key(&m.label)).enumerate() {
            let x = m.t_ms / 1000.0;
            chart
                .draw_series(LineSeries::new(
                    vec![(x, 0.0), (x, ymax)],
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let y = ymax * (0.92 - 0.12 * (i % 4) as f64);
            chart
                .draw_series(std::iter::once(Text::new(
                    short(&m.label),
                    (x + 0.1, y),
                    ("sans-serif", 11),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn is_key(label: &str) -> bool {
    label.contains("pulled")
        || label.contains("plugged")
        || label.contains("failed (")
        || label.contains(" done in ")
        || label.starts_with("last of")
}

fn short(label: &str) -> String {
    if label.contains("pulled") {
        "cable pulled".into()
    } else if label.contains("plugged") {
        "cable plugged".into()
    } else if label.contains("failed (") {
        "failure declared".into()
    } else if label.starts_with("last of") {
        "announcements done".into()
    } else {
        label
            .split(" done in")
            .next()
            .unwrap_or(label)
            .split(' ')
            .next()
            .unwrap_or("move")
            .to_string()
            + " done"
    }
}
