//! The selection walk as an SVG chart: fidelity against cost ratio, one point per step
//! of the gate schedule, joined in schedule order, the chosen step ringed.

use std::fmt::Write;

use crate::gates::{Step, Walk};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
/// Plot area inside the margins left for axes, ticks and labels.
const LEFT: f64 = 70.0;
const RIGHT: f64 = WIDTH - 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = HEIGHT - 55.0;
const TICKS: usize = 5;

/// What the vertical axis shows: agreement when the model has class outputs.
struct Fidelity {
    label: &'static str,
    of: fn(&Step) -> Option<f64>,
}

const AGREEMENT: Fidelity = Fidelity {
    label: "top-1 agreement with the original, held out (%)",
    of: |s| s.agreement.map(|a| 100.0 * a),
};
const ERROR: Fidelity = Fidelity {
    label: "max relative error, held out",
    of: |s| s.max_error,
};

/// A standalone SVG document of `walk`.
pub fn walk_svg(walk: &Walk) -> String {
    let fidelity = if walk.steps.iter().any(|s| s.agreement.is_some()) {
        AGREEMENT
    } else {
        ERROR
    };
    let measured = walk.steps.iter().all(|s| s.latency_ratio.is_some());
    let x_label = if measured {
        "latency ratio to the original (tract, median of pairs)"
    } else {
        "MAC ratio to the original (an estimate: latency not measured)"
    };
    let points: Vec<(f64, f64)> = walk
        .steps
        .iter()
        .map(|s| (s.cost_ratio(), (fidelity.of)(s).unwrap_or(0.0)))
        .collect();
    let x = Axis::spanning(points.iter().map(|p| p.0).chain([1.0]));
    let y = Axis::spanning(points.iter().map(|p| p.1));
    let at = |(px, py): (f64, f64)| (x.to(px, LEFT, RIGHT), y.to(py, BOTTOM, TOP));

    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">Selection walk: each step folds one more gate group</text>
"#,
        WIDTH / 2.0
    );
    draw_axes(&mut svg, &x, &y, x_label, fidelity.label);
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
    let _ = write!(
        svg,
        r##"<circle class="chosen" cx="{cx:.1}" cy="{cy:.1}" r="9" fill="none" stroke="#cc3311" stroke-width="2"/>
<text x="{:.1}" y="{:.1}" fill="#cc3311">chosen: {} groups</text>
<text x="{RIGHT}" y="{}" text-anchor="end" fill="#555">filled: within budget; hollow: over budget</text>
</svg>
"##,
        cx + 12.0,
        cy - 10.0,
        walk.steps[walk.chosen].groups,
        TOP - 6.0
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

/// A linear axis over the values it must show, padded so no point sits on a border.
struct Axis {
    low: f64,
    high: f64,
}

impl Axis {
    fn spanning(values: impl Iterator<Item = f64>) -> Axis {
        let (low, high) = values
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (low, high) = if low <= high { (low, high) } else { (0.0, 1.0) };
        let pad = ((high - low) * 0.08).max(high.abs() * 1e-3).max(1e-6);
        Axis {
            low: low - pad,
            high: high + pad,
        }
    }

    /// `value` mapped onto the pixel range from `start` (low) to `end` (high).
    fn to(&self, value: f64, start: f64, end: f64) -> f64 {
        start + (value - self.low) / (self.high - self.low) * (end - start)
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let step = (self.high - self.low) / TICKS as f64;
        (0..=TICKS).map(move |i| self.low + step * i as f64)
    }

    /// Enough digits to tell neighbouring ticks apart.
    fn format(&self, value: f64) -> String {
        let step = (self.high - self.low) / TICKS as f64;
        let digits = (-step.log10().floor()).max(0.0) as usize + 1;
        format!("{value:.digits$}")
    }
}
