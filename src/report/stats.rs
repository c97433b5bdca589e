//! What `inspect` and the before/after tables show (the figures come from `ir::stats`).

use std::collections::BTreeMap;

pub use crate::ir::stats::{ModelStats, TensorInfo};
use crate::passes::FoldRecord;
use crate::runtime::bench::PairTiming;

/// A compact before/after table for the terminal, with tract latency when measured.
pub fn before_after_table(
    before: &ModelStats,
    after: &ModelStats,
    latency: Option<&PairTiming>,
) -> String {
    let ops = |s: &ModelStats| s.ops.values().sum::<usize>();
    let acts = |s: &ModelStats| s.activations.values().sum::<usize>();
    let rows = [
        ("nodes", ops(before) as f64, ops(after) as f64),
        (
            "depth (linear layers)",
            before.depth as f64,
            after.depth as f64,
        ),
        ("activations", acts(before) as f64, acts(after) as f64),
        ("params", before.params as f64, after.params as f64),
        ("MACs", before.macs as f64, after.macs as f64),
    ];
    let mut table = format!(
        "{:<22} {:>12} {:>12} {:>8}\n",
        "", "before", "after", "ratio"
    );
    for (label, b, a) in rows {
        let ratio = if b > 0.0 {
            format!("{:.3}", a / b)
        } else {
            "-".into()
        };
        table += &format!("{label:<22} {:>12} {:>12} {ratio:>8}\n", human(b), human(a));
    }
    if let Some(t) = latency {
        let ms = |s: f64| format!("{:.3} ms", s * 1e3);
        table += &format!(
            "{:<22} {:>12} {:>12} {:>8.3}\n",
            "latency (tract, median)",
            ms(t.a.median),
            ms(t.b.median),
            t.ratio.median
        );
    }
    table
}

/// One line per fold: what it replaced, exact or not, and the cost model's verdict.
pub fn folds_table(folds: &[FoldRecord]) -> String {
    folds
        .iter()
        .map(|f| {
            let unit = if f.verdict.estimate {
                "MACs (estimate)"
            } else {
                "measured"
            };
            format!(
                "fold {} layers → {} ({}; cost {:.2}× {unit}{})\n",
                f.sources.len(),
                f.result,
                if f.exact {
                    "exact"
                } else {
                    "approximate border"
                },
                f.verdict.ratio(),
                if f.forced { ", linearised" } else { "" }
            )
        })
        .collect()
}

/// 3.5M, 300.8M, 12.0k, or the plain number below a thousand.
pub fn human(x: f64) -> String {
    match x.abs() {
        v if v >= 1e9 => format!("{:.2}G", x / 1e9),
        v if v >= 1e6 => format!("{:.2}M", x / 1e6),
        v if v >= 1e4 => format!("{:.1}k", x / 1e3),
        _ => format!("{x}"),
    }
}

/// The `inspect` text view.
pub fn render(stats: &ModelStats) -> String {
    let io = |infos: &[TensorInfo]| {
        infos
            .iter()
            .map(|t| {
                let dims: Vec<String> = t
                    .shape
                    .iter()
                    .map(|d| d.to_string().trim_matches('"').to_string())
                    .collect();
                format!("  {} {} [{}]\n", t.name, t.dtype, dims.join(", "))
            })
            .collect::<String>()
    };
    let counts = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "inputs:\n{}outputs:\n{}",
        io(&stats.inputs),
        io(&stats.outputs)
    );
    out += &format!("ops: {}\n", counts(&stats.ops));
    out += &format!(
        "activations: {}\n",
        if stats.activations.is_empty() {
            "none".into()
        } else {
            counts(&stats.activations)
        }
    );
    out += &format!("params: {}\n", human(stats.params as f64));
    let by_op = stats
        .macs_by_op
        .iter()
        .map(|(k, v)| format!("{k} {}", human(*v as f64)))
        .collect::<Vec<_>>()
        .join(", ");
    let partial = if stats.macs_complete {
        ""
    } else {
        " (partial: some dims are unknown; pin them with --input-shape)"
    };
    out += &format!(
        "MACs (batch 1): {} ({by_op}){partial}\n",
        human(stats.macs as f64)
    );
    out += &format!("depth: {} linear layers\n", stats.depth);
    out
}
