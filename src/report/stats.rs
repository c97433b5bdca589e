//! What `inspect` and the before/after tables show (the figures come from `ir::stats`).

use std::collections::BTreeMap;

pub use crate::ir::stats::{ModelStats, TensorInfo};
use crate::passes::FoldRecord;
use crate::runtime::bench::Benchmark;
use crate::runtime::compare::Comparison;
use crate::runtime::cost::Confirmation;

/// A compact before/after table for the terminal, with the latency of both models timed
/// against each other when measured (their medians and the median ratio) and the
/// output's fidelity to the original when compared.
pub fn before_after_table(
    before: &ModelStats,
    after: &ModelStats,
    latency: Option<&Benchmark>,
    fidelity: Option<&Comparison>,
) -> String {
    let ops = |s: &ModelStats| s.ops.values().sum::<usize>();
    let acts = |s: &ModelStats| s.activations.values().sum::<usize>();
    // Counts that miss layers of unknown dims are shown, but not compared.
    let macs_complete = before.macs_complete && after.macs_complete;
    let rows = [
        ("nodes", ops(before) as f64, ops(after) as f64, true),
        (
            "depth (linear layers)",
            before.depth as f64,
            after.depth as f64,
            true,
        ),
        ("activations", acts(before) as f64, acts(after) as f64, true),
        ("params", before.params as f64, after.params as f64, true),
        (
            if macs_complete {
                "MACs"
            } else {
                "MACs (partial)"
            },
            before.macs as f64,
            after.macs as f64,
            macs_complete,
        ),
    ];
    let mut table = format!(
        "{:<22} {:>12} {:>12} {:>8}\n",
        "", "before", "after", "ratio"
    );
    for (label, b, a, comparable) in rows {
        let ratio = if b > 0.0 && comparable {
            format!("{:.3}", a / b)
        } else {
            "-".into()
        };
        // A partial count of nothing is no figure: no layer's dims were known.
        let cell = |stats: &ModelStats, figure: f64| {
            if label.starts_with("MACs") && nothing_counted(stats) {
                "none counted".to_string()
            } else {
                human(figure)
            }
        };
        table += &format!(
            "{label:<22} {:>12} {:>12} {ratio:>8}\n",
            cell(before, b),
            cell(after, a)
        );
    }
    if let Some((t, engine)) = latency.and_then(|b| Some((b.pair()?, &b.engine.name))) {
        let ms = |s: f64| format!("{:.3} ms", s * 1e3);
        table += &format!(
            "{:<22} {:>12} {:>12} {:>8.3}\n",
            format!("latency ({engine})"),
            ms(t.a.median),
            ms(t.b.median),
            t.ratio.median
        );
    }
    if let Some(row) = fidelity.map(fidelity_row) {
        table += &row;
    }
    table
}

/// The lowest top-1 agreement over the outputs that have one, else the largest relative
/// error.
fn fidelity_row(comparison: &Comparison) -> String {
    let outputs = &comparison.outputs;
    let (label, value) = match outputs.iter().filter_map(|o| o.agreement).reduce(f64::min) {
        Some(agreement) => ("top-1 agreement", format!("{:.2} %", 100.0 * agreement)),
        None => (
            "max rel error",
            format!(
                "{:.3e}",
                outputs
                    .iter()
                    .map(|o| o.max_rel_error)
                    .fold(0.0, |max, e| if e.is_nan() || e > max { e } else { max })
            ),
        ),
    };
    format!("{label:<22} {:>12} {value:>12}\n", "")
}

/// One line per fold: what it replaced, exact or not (with the measured error of an
/// approximate fold), and the cost model's verdict (± the standard error of a measured
/// ratio).
pub fn folds_table(folds: &[FoldRecord]) -> String {
    folds
        .iter()
        .map(|f| {
            let unit = match (f.verdict.estimate, f.verdict.standard_error) {
                (true, _) => "MACs (estimate)".to_string(),
                (false, error) if error > 0.0 => format!("± {error:.3} measured"),
                (false, _) => "measured".to_string(),
            };
            let exactness = match (f.exact, f.border_error) {
                (true, _) => "exact".to_string(),
                (false, Some(error)) => format!("approximate border, error {error:.2e}"),
                (false, None) => "approximate border".to_string(),
            };
            format!(
                "fold {} layers → {} ({exactness}; cost {:.2}× {unit}{})\n",
                f.sources.len(),
                f.result,
                f.verdict.ratio(),
                if f.forced { ", linearised" } else { "" }
            )
        })
        .collect()
}

/// What timing the whole model with the judged folds against the model without them, in
/// `engine`, decided: kept or dropped, with the ratio, its standard error and the upper
/// bound the decision read. Dropped folds are named: the folds table no longer shows them.
pub fn confirmation_line(confirmation: &Confirmation, engine: &str) -> String {
    let (folds, them) = match confirmation.folds.len() {
        1 => ("the judged fold".to_string(), "it"),
        n => (format!("the {n} judged folds"), "them"),
    };
    let (decision, bound) = match confirmation.kept {
        true => ("confirmed", "<"),
        false => ("dropped", "≥"),
    };
    let dropped = match confirmation.kept {
        true => String::new(),
        false => format!(": {}", confirmation.folds.join(", ")),
    };
    format!(
        "whole model: {folds} {decision} in {engine}, {:.3}× ± {:.3} the model without {them} \
         (upper bound {:.3} {bound} 1){dropped}\n",
        confirmation.ratio,
        confirmation.standard_error,
        confirmation.upper_ratio()
    )
}

/// Some dims are unknown and no layer's MACs could be counted: a 0 would be no figure.
fn nothing_counted(stats: &ModelStats) -> bool {
    !stats.macs_complete && stats.macs == 0
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
    let counted = if nothing_counted(stats) {
        "none counted".to_string()
    } else if by_op.is_empty() {
        "0".to_string()
    } else {
        format!("{} ({by_op})", human(stats.macs as f64))
    };
    let partial = if stats.macs_complete {
        ""
    } else {
        " (partial: some dims are unknown; pin the inputs' dims)"
    };
    out += &format!("MACs (batch 1): {counted}{partial}\n");
    out += &format!("depth: {} linear layers\n", stats.depth);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cost::Verdict;

    fn record(exact: bool, border_error: Option<f64>) -> FoldRecord {
        FoldRecord {
            sources: vec!["a".into(), "b".into()],
            result: "b.folded".into(),
            layers: Vec::new(),
            exact,
            verdict: Verdict::exact(2.0, 1.0),
            forced: true,
            border_error,
        }
    }

    #[test]
    fn the_folds_table_shows_the_border_error_of_an_approximate_fold() {
        let table = folds_table(&[record(true, None), record(false, Some(0.0123))]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "fold 2 layers → b.folded (exact; cost 0.50× measured, linearised)",
                "fold 2 layers → b.folded (approximate border, error 1.23e-2; cost 0.50× measured, linearised)",
            ]
        );
    }

    #[test]
    fn the_folds_table_shows_a_measured_ratio_with_its_standard_error() {
        let judged = FoldRecord {
            verdict: Verdict {
                standard_error: 0.0126,
                ..record(true, None).verdict
            },
            forced: false,
            ..record(true, None)
        };
        assert_eq!(
            folds_table(&[judged]),
            "fold 2 layers → b.folded (exact; cost 0.50× ± 0.013 measured)\n"
        );
    }

    #[test]
    fn the_confirmation_line_names_the_folds_it_dropped() {
        let confirmation = |ratio, kept| Confirmation {
            folds: vec!["a.folded".into(), "b.folded".into()],
            ratio,
            standard_error: 0.005,
            kept,
        };
        assert_eq!(
            confirmation_line(&confirmation(0.95, true), "tract"),
            "whole model: the 2 judged folds confirmed in tract, 0.950× ± 0.005 the model \
             without them (upper bound 0.960 < 1)\n"
        );
        assert_eq!(
            confirmation_line(&confirmation(0.995, false), "onnxruntime"),
            "whole model: the 2 judged folds dropped in onnxruntime, 0.995× ± 0.005 the model \
             without them (upper bound 1.005 ≥ 1): a.folded, b.folded\n"
        );
    }

    #[test]
    fn inspect_says_when_no_layer_could_be_counted() {
        let mut stats = ModelStats::of(&crate::ir::Graph::default(), &Default::default()).unwrap();
        let macs_line = |stats: &ModelStats| {
            render(stats)
                .lines()
                .find(|l| l.starts_with("MACs"))
                .unwrap()
                .to_string()
        };
        assert_eq!(macs_line(&stats), "MACs (batch 1): 0");
        stats.macs_complete = false;
        assert_eq!(
            macs_line(&stats),
            "MACs (batch 1): none counted (partial: some dims are unknown; pin the inputs' dims)"
        );
    }

    #[test]
    fn partial_mac_counts_are_marked_and_not_compared() {
        let complete = ModelStats::of(&crate::ir::Graph::default(), &Default::default()).unwrap();
        let mut partial = complete.clone();
        partial.macs = 1000;
        partial.macs_complete = false;
        let macs_row = |before: &ModelStats, after: &ModelStats| {
            let table = before_after_table(before, after, None, None);
            let row = table.lines().find(|l| l.starts_with("MACs")).unwrap();
            row.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let mut more = complete.clone();
        more.macs = 1500;
        let mut less = complete.clone();
        less.macs = 1000;
        assert_eq!(macs_row(&less, &more), "MACs 1000 1500 1.500");
        assert_eq!(macs_row(&partial, &more), "MACs (partial) 1000 1500 -");
        assert_eq!(macs_row(&more, &partial), "MACs (partial) 1500 1000 -");
    }

    #[test]
    fn the_table_says_none_counted_where_no_layer_could_be_counted() {
        let mut nothing =
            ModelStats::of(&crate::ir::Graph::default(), &Default::default()).unwrap();
        nothing.macs_complete = false;
        let mut counted = nothing.clone();
        counted.macs = 1500;
        counted.macs_complete = true;
        let table = before_after_table(&nothing, &counted, None, None);
        let row = table.lines().find(|l| l.starts_with("MACs")).unwrap();
        let row = row.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(row, "MACs (partial) none counted 1500 -");
        let complete_zero =
            ModelStats::of(&crate::ir::Graph::default(), &Default::default()).unwrap();
        let table = before_after_table(&complete_zero, &complete_zero, None, None);
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["MACs", "0", "0", "-"])
        );
    }

    #[test]
    fn the_last_row_is_the_lowest_agreement_or_else_the_largest_error() {
        use crate::runtime::compare::{Comparison, OutputComparison};
        let stats = ModelStats::of(&crate::ir::Graph::default(), &Default::default()).unwrap();
        let output = |agreement, max_rel_error| OutputComparison {
            name: "y".into(),
            shape: vec![8, 10],
            max_abs_error: 0.0,
            max_rel_error,
            cosine: 1.0,
            agreement,
            pairwise_flips: None,
            intervals: None,
            outcomes: Default::default(),
        };
        let last_row = |outputs| {
            let comparison = Comparison {
                samples: 8,
                inputs: "random 8 seed 0".into(),
                groups: None,
                confidence: None,
                outputs,
            };
            let table = before_after_table(&stats, &stats, None, Some(&comparison));
            table
                .lines()
                .last()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            last_row(vec![
                output(Some(0.75), 0.5),
                output(Some(0.5), 0.1),
                output(None, 9.0)
            ]),
            "top-1 agreement 50.00 %"
        );
        assert_eq!(
            last_row(vec![output(None, 2e-5), output(None, f64::NAN)]),
            "max rel error NaN"
        );
        assert_eq!(last_row(vec![output(None, 2e-5)]), "max rel error 2.000e-5");
    }
}
