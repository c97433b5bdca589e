//! The selection walk as an SVG chart: fidelity against cost ratio, one point per step
//! of the gate schedule, joined in schedule order, the chosen step ringed.

use std::fmt::Write;

use crate::gates::{Step, Walk};
use crate::runtime::interval::Interval;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
/// Plot area inside the margins left for axes, ticks and labels.
const LEFT: f64 = 70.0;
const RIGHT: f64 = WIDTH - 20.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = HEIGHT - 55.0;
const TICKS: usize = 5;

/// What the vertical axis shows: agreement when the model has class outputs.
struct Fidelity {
    label: &'static str,
    of: fn(&Step) -> Option<f64>,
    interval: fn(&Step) -> Option<Interval>,
}

const AGREEMENT: Fidelity = Fidelity {
    label: "top-1 agreement with the original, held out (%)",
    of: |s| s.agreement.map(|a| 100.0 * a),
    interval: |s| {
        let interval = s.intervals.as_ref()?.agreement?;
        Some(Interval {
            low: 100.0 * interval.low,
            high: 100.0 * interval.high,
        })
    },
};
const ERROR: Fidelity = Fidelity {
    label: "max relative error, held out",
    of: |s| s.max_error,
    interval: |s| s.intervals.as_ref()?.max_rel_error,
};

/// A standalone SVG document of `walk`, its latency measured in `engine`.
pub fn walk_svg(walk: &Walk, engine: &str) -> String {
    let fidelity = if walk.steps.iter().any(|s| s.agreement.is_some()) {
        AGREEMENT
    } else {
        ERROR
    };
    let measured = walk.steps.iter().all(|s| s.latency_ratio.is_some());
    let x_label = if measured {
        format!("latency ratio to the original ({engine}, median of pairs)")
    } else {
        "MAC ratio to the original (an estimate: latency not measured)".to_string()
    };
    let points: Vec<(f64, f64)> = walk
        .steps
        .iter()
        .map(|s| (s.cost_ratio(), (fidelity.of)(s).unwrap_or(0.0)))
        .collect();
    let intervals: Vec<Option<Interval>> = walk.steps.iter().map(fidelity.interval).collect();
    let x = Axis::spanning(points.iter().map(|p| p.0).chain([1.0]));
    let ends = intervals.iter().flatten().flat_map(|i| [i.low, i.high]);
    let y = Axis::spanning(points.iter().map(|p| p.1).chain(ends));
    let at = |(px, py): (f64, f64)| (x.to(px, LEFT, RIGHT), y.to(py, BOTTOM, TOP));

    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">Selection walk: each step folds one more gate group</text>
"#,
        WIDTH / 2.0
    );
    draw_axes(&mut svg, &x, &y, &x_label, fidelity.label);
    let path: Vec<String> = points
        .iter()
        .map(|&p| {
            let (px, py) = at(p);
            format!("{px:.1},{py:.1}")
        })
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline class="walk" points="{}" fill="none" stroke="#4477aa" stroke-width="1.5"/>"##,
        path.join(" ")
    );
    for (&(px, _), interval) in points.iter().zip(&intervals) {
        let Some(interval) = interval else { continue };
        let (px, low, high) = (
            at((px, 0.0)).0,
            y.to(interval.low, BOTTOM, TOP),
            y.to(interval.high, BOTTOM, TOP),
        );
        let _ = writeln!(
            svg,
            r##"<line class="interval" x1="{px:.1}" y1="{low:.1}" x2="{px:.1}" y2="{high:.1}" stroke="#228833" stroke-opacity="0.5" stroke-width="2"/>"##
        );
    }
    for (step, &p) in walk.steps.iter().zip(&points) {
        let (px, py) = at(p);
        let (fill, verdict) = if step.within_budget {
            ("#228833", "within budget")
        } else {
            ("white", "over budget")
        };
        let _ = writeln!(
            svg,
            r##"<circle class="step" cx="{px:.1}" cy="{py:.1}" r="4" fill="{fill}" stroke="#228833"><title>{} groups folded: {verdict}</title></circle>"##,
            step.groups
        );
    }
    let (cx, cy) = at(points[walk.chosen]);
    // The label goes on the side of the point with room for it.
    let (label_x, anchor) = if cx > (LEFT + RIGHT) / 2.0 {
        (cx - 12.0, "end")
    } else {
        (cx + 12.0, "start")
    };
    let label_y = if cy - 12.0 > TOP {
        cy - 12.0
    } else {
        cy + 22.0
    };
    let _ = write!(
        svg,
        r##"<circle class="chosen" cx="{cx:.1}" cy="{cy:.1}" r="9" fill="none" stroke="#cc3311" stroke-width="2"/>
<text x="{label_x:.1}" y="{label_y:.1}" text-anchor="{anchor}" fill="#cc3311">chosen: {} folded</text>
<text x="{LEFT}" y="{}" fill="#555">bars: {} % intervals; filled: within budget at their worst end; hollow: over budget</text>
</svg>
"##,
        match walk.steps[walk.chosen].groups {
            1 => "1 group".to_string(),
            n => format!("{n} groups"),
        },
        TOP - 16.0,
        100.0 * walk.held_out.confidence
    );
    svg
}

fn draw_axes(svg: &mut String, x: &Axis, y: &Axis, x_label: &str, y_label: &str) {
    let _ = writeln!(
        svg,
        r##"<path d="M{LEFT},{TOP} V{BOTTOM} H{RIGHT}" fill="none" stroke="black"/>"##
    );
    for value in x.ticks() {
        let px = x.to(value, LEFT, RIGHT);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{BOTTOM}" x2="{px:.1}" y2="{}" stroke="black"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            BOTTOM + 5.0,
            BOTTOM + 18.0,
            x.format(value)
        );
    }
    for value in y.ticks() {
        let py = y.to(value, BOTTOM, TOP);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{py:.1}" x2="{LEFT}" y2="{py:.1}" stroke="black"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 5.0,
            LEFT - 8.0,
            py + 4.0,
            y.format(value)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text class="x-label" x="{:.1}" y="{}" text-anchor="middle">{x_label}</text>
<text class="y-label" transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{y_label}</text>"##,
        (LEFT + RIGHT) / 2.0,
        HEIGHT - 12.0,
        (TOP + BOTTOM) / 2.0
    );
}

/// A linear axis over the values it must show, from and to round ticks.
struct Axis {
    low: f64,
    high: f64,
    step: f64,
}

impl Axis {
    fn spanning(values: impl Iterator<Item = f64>) -> Axis {
        let (low, high) = values
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (low, high) = if low < high {
            (low, high)
        } else if low == high {
            (
                low - 0.5 * low.abs().max(1e-3),
                high + 0.5 * high.abs().max(1e-3),
            )
        } else {
            (0.0, 1.0)
        };
        let step = round_step((high - low) / TICKS as f64);
        Axis {
            low: (low / step).floor() * step,
            high: (high / step).ceil() * step,
            step,
        }
    }

    /// `value` mapped onto the pixel range from `start` (low) to `end` (high).
    fn to(&self, value: f64, start: f64, end: f64) -> f64 {
        start + (value - self.low) / (self.high - self.low) * (end - start)
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let count = ((self.high - self.low) / self.step).round() as usize;
        (0..=count).map(move |i| self.low + self.step * i as f64)
    }

    /// Enough digits to tell neighbouring ticks apart.
    fn format(&self, value: f64) -> String {
        let digits = (-self.step.log10().floor()).max(0.0) as usize;
        format!("{value:.digits$}")
    }
}

/// The 1, 2 or 5 times a power of ten nearest above `raw`.
fn round_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_run_between_round_ticks_around_the_data() {
        let axis = Axis::spanning([0.27, 0.95, 1.0].into_iter());
        assert_eq!((axis.low, axis.high, axis.step), (0.2, 1.0, 0.2));
        let ticks: Vec<String> = axis.ticks().map(|t| axis.format(t)).collect();
        assert_eq!(ticks, ["0.2", "0.4", "0.6", "0.8", "1.0"]);
        let agreement = Axis::spanning([7.69, 92.3, 100.0].into_iter());
        assert_eq!((agreement.low, agreement.high), (0.0, 100.0));
        assert_eq!(agreement.to(50.0, 300.0, 100.0), 200.0);
    }
}
