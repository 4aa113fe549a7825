//! SVG line charts for the reports of `bench policies --svg`, `trace` and
//! `replay`: several series over one pair of axes, a legend on the right.
//! Builds text only; the caller writes it.

use std::fmt::Write as _;

/// How a chart's axes read.
pub(crate) struct Axes<'a> {
    /// Caption under the plot.
    pub(crate) caption: &'a str,
    /// Logarithmic x axis.
    pub(crate) log_x: bool,
    /// Y values are ratios shown as percentages.
    pub(crate) percent: bool,
}

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 20.0;
const PLOT_W: f64 = 460.0;
const PLOT_H: f64 = 340.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#ff7f0e", "#7f7f7f", "#17becf", "#98df8a", "#ffbb78", "#c7c7c7",
];

/// Where values land on the plot: the x range of every series and the
/// largest y (at least 0.1).
struct Plot {
    min_x: f64,
    max_x: f64,
    max_y: f64,
    log_x: bool,
}

impl Plot {
    fn of(series: &[(String, Vec<(u64, f64)>)], axes: &Axes<'_>) -> Plot {
        let (min_x, max_x) = series
            .iter()
            .flat_map(|(_, line)| line.iter().map(|(x, _)| *x as f64))
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let max_y = series
            .iter()
            .flat_map(|(_, line)| line.iter().map(|(_, y)| *y))
            .fold(0.1f64, f64::max);
        Plot {
            min_x,
            max_x,
            max_y,
            log_x: axes.log_x,
        }
    }

    fn scale(&self, x: f64) -> f64 {
        if self.log_x { x.max(1e-9).ln() } else { x }
    }

    fn x_of(&self, x: f64) -> f64 {
        LEFT + (self.scale(x) - self.scale(self.min_x))
            / (self.scale(self.max_x) - self.scale(self.min_x)).max(1e-9)
            * PLOT_W
    }

    fn y_of(&self, y: f64) -> f64 {
        TOP + PLOT_H - y / self.max_y * PLOT_H
    }
}

/// A line chart of several series as SVG.
pub(crate) fn chart(series: &[(String, Vec<(u64, f64)>)], axes: &Axes<'_>) -> String {
    let plot = Plot::of(series, axes);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    draw_axes(&mut out, &plot, series, axes);
    for (index, (label, line)) in series.iter().enumerate() {
        draw_series(&mut out, &plot, index, label, line);
    }
    out.push_str("</svg>\n");
    out
}

/// The two axes, the y labels, up to ten x labels (the first series' x
/// values) and the caption.
fn draw_axes(out: &mut String, plot: &Plot, series: &[(String, Vec<(u64, f64)>)], axes: &Axes<'_>) {
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"black\"/>",
        TOP + PLOT_H,
        LEFT + PLOT_W,
        TOP + PLOT_H,
        TOP + PLOT_H
    );
    for step in 0..=5 {
        let y = plot.max_y * f64::from(step) / 5.0;
        let label = if axes.percent {
            format!("{:.0} %", y * 100.0)
        } else {
            format!("{y:.1}")
        };
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            LEFT - 6.0,
            plot.y_of(y) + 4.0
        );
    }
    if let Some((_, line)) = series.first() {
        let every = line.len().div_ceil(10).max(1);
        for (x, _) in line.iter().step_by(every) {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>",
                plot.x_of(*x as f64),
                TOP + PLOT_H + 16.0
            );
        }
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        LEFT + PLOT_W / 2.0,
        H - 12.0,
        axes.caption
    );
}

/// Series `index`: its line (dashed from the fifth series on, in groups of
/// four) and its legend entry.
fn draw_series(out: &mut String, plot: &Plot, index: usize, label: &str, line: &[(u64, f64)]) {
    let color = COLORS[index % COLORS.len()];
    let dash = if index / 4 % 2 == 1 {
        " stroke-dasharray=\"5,3\""
    } else {
        ""
    };
    let points: Vec<String> = line
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", plot.x_of(*x as f64), plot.y_of(*y)))
        .collect();
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
        points.join(" ")
    );
    let y = TOP + 14.0 * index as f64;
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{label}</text>",
        LEFT + PLOT_W + 20.0,
        LEFT + PLOT_W + 40.0,
        LEFT + PLOT_W + 46.0,
        y + 4.0
    );
}
