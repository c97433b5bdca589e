//! The selection walk for the terminal: what fine-tuning before it reached, a table with
//! one row per step of the gate schedule, what the judgement rests on, and what came
//! closest when no step fits the budget.

use crate::gates::{Budget, Evaluation, Step, Training, Walk};
use crate::report::{aligned, percent, scientific};
use crate::runtime::compare::FidelityIntervals;
use crate::runtime::interval::Interval;

/// Below this many held-out groups, intervals are too coarse to trust without a warning.
const FEW_GROUPS: usize = 5;

/// `groups  removed  agreement  pairwise flips  error  MACs  latency  budget`, each
/// fidelity figure with its interval, the latency with its standard error, the chosen step
/// marked with `*`.
pub fn walk_table(walk: &Walk) -> String {
    let mut rows = vec![
        [
            "",
            "groups",
            "activations removed",
            "agreement",
            "pairwise flips",
            "max rel error",
            "MACs",
            "latency",
            "budget",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(
        walk.steps
            .iter()
            .enumerate()
            .map(|(k, step)| row(k == walk.chosen, step)),
    );
    aligned(&rows, 1)
}

/// One line on a fine-tuning run: its steps, samples and speed, and the held-out
/// agreement (or loss, without class outputs) before, at the written step, and at the end.
pub fn fine_tuning_line(training: &Training) -> Option<String> {
    let best = training.best_step?;
    let measured = |e: &Evaluation| match e.agreement {
        Some(a) => format!("{:.1} %", 100.0 * a),
        None => format!("loss {:.4}", e.loss),
    };
    let at = |e: &Evaluation| match e.step {
        0 => format!("{} before", measured(e)),
        step => format!("{} at step {step}", measured(e)),
    };
    let evaluations = &training.evaluations;
    let mut path: Vec<String> = evaluations.first().map(at).into_iter().collect();
    if let Some(written) = evaluations.iter().find(|e| e.step == best) {
        if written.step != evaluations[0].step {
            path.push(at(written));
        }
        *path.last_mut().expect("one pushed") += " (written)";
    }
    if let Some(last) = evaluations.last().filter(|e| e.step > best) {
        path.push(at(last));
    }
    let what = match evaluations.iter().any(|e| e.agreement.is_some()) {
        true => "held-out agreement",
        false => "held-out",
    };
    Some(format!(
        "fine-tuned {} steps on {} training samples ({:.1} samples/s): {what} {}\n",
        training.steps,
        training.samples_seen,
        training.throughput.samples_per_second,
        path.join(" → ")
    ))
}

/// Says that only the exact-only model fits, and what the step that lost the least lost
/// against which budget.
pub fn nothing_fits(walk: &Walk, budget: &Budget) -> String {
    let mut text =
        "no step of the schedule fits the budget: writing the exact-only model\n".to_string();
    if let Some(step) = walk.closest_miss() {
        let mut lost = Vec::new();
        if let (Some(agreement), Some(flips)) = (step.agreement, step.pairwise_flips) {
            lost.push(format!(
                "agreement {}, pairwise flips {} (max drop {} points)",
                percent(agreement, interval(step, |i| i.agreement)),
                percent(flips, interval(step, |i| i.pairwise_flips)),
                budget.max_drop
            ));
        }
        if let Some(error) = step.max_error {
            lost.push(format!(
                "max rel error {} (max error {})",
                scientific(error, interval(step, |i| i.max_rel_error)),
                budget.max_error
            ));
        }
        let removed = match step.removed.as_slice() {
            [one] => format!("1 activation removed ({})", short(one)),
            [.., last] => format!(
                "{} activations removed (last: {})",
                step.removed.len(),
                short(last)
            ),
            [] => "none removed".into(),
        };
        text += &format!("closest: {removed}: {}\n", lost.join("; "));
    }
    text
}

/// What the judgement rests on: the held-out samples and groups, and the confidence.
pub fn basis(walk: &Walk) -> String {
    let held_out = &walk.held_out;
    let resampled = match held_out.groups {
        Some(groups) => format!("from {groups} groups, resampled whole"),
        None => "resampled one by one (the data has no groups)".to_string(),
    };
    let pooled = match held_out.splits {
        1 => String::new(),
        k => format!(", pooled over {k} folds (each sample held out once)"),
    };
    format!(
        "each step judged at the worst end of its {} % intervals: {} held-out samples {resampled}{pooled}\n",
        100.0 * held_out.confidence,
        held_out.samples
    )
}

/// A warning when the held-out samples come from so few groups that the intervals, and
/// the judgement on them, are coarse: how wide the agreement's interval got.
pub fn few_groups_warning(walk: &Walk) -> Option<String> {
    let groups = walk.held_out.groups.filter(|&g| g < FEW_GROUPS)?;
    let widest = walk
        .steps
        .iter()
        .filter_map(|s| interval(s, |i| i.agreement))
        .map(|i| i.half_width())
        .reduce(f64::max);
    let effect = match widest {
        Some(half) => format!(
            "its {} % interval is up to ±{:.1} points",
            100.0 * walk.held_out.confidence,
            100.0 * half
        ),
        None => "the intervals are as coarse".to_string(),
    };
    let plural = if groups == 1 { "" } else { "s" };
    Some(format!(
        "agreement estimated from {groups} held-out group{plural} of samples: {effect}; give more varied data (more groups){}",
        match walk.held_out.splits {
            1 => ", or hold every group out in turn (k-fold)",
            _ => "",
        }
    ))
}

fn interval(step: &Step, of: fn(&FidelityIntervals) -> Option<Interval>) -> Option<Interval> {
    step.intervals.as_ref().and_then(of)
}

fn row(chosen: bool, step: &Step) -> Vec<String> {
    let removed = match step.removed.as_slice() {
        [] => "none (exact only)".to_string(),
        [.., last] => format!("{} (last: {})", step.removed.len(), short(last)),
    };
    vec![
        if chosen { "*" } else { "" }.to_string(),
        step.groups.to_string(),
        removed,
        step.agreement
            .map_or("-".into(), |a| percent(a, interval(step, |i| i.agreement))),
        step.pairwise_flips.map_or("-".into(), |f| {
            percent(f, interval(step, |i| i.pairwise_flips))
        }),
        step.max_error.map_or("-".into(), |e| {
            scientific(e, interval(step, |i| i.max_rel_error))
        }),
        format!("{:.3}×", step.mac_ratio),
        step.latency_ratio
            .zip(step.latency_noise)
            .map_or("not measured".into(), |(r, noise)| {
                format!("{r:.3}× ±{noise:.3}")
            }),
        if step.within_budget { "fits" } else { "over" }.to_string(),
    ]
}

/// The last 40 characters of a node name: its tail says the most.
fn short(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    match chars.len() {
        n if n > 40 => format!("…{}", chars[n - 39..].iter().collect::<String>()),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::HeldOut;

    fn step(removed: &[&str], agreement: f64, flips: f64, within_budget: bool) -> Step {
        let around = |value: f64| Interval {
            low: (value - 0.05).max(0.0),
            high: (value + 0.05).min(1.0),
        };
        Step {
            groups: removed.len(),
            removed: removed.iter().map(|r| r.to_string()).collect(),
            folds: Vec::new(),
            refitted: Vec::new(),
            fidelity: Vec::new(),
            agreement: Some(agreement),
            pairwise_flips: Some(flips),
            max_error: None,
            intervals: Some(FidelityIntervals {
                agreement: Some(around(agreement)),
                pairwise_flips: Some(around(flips)),
                max_rel_error: None,
            }),
            mac_ratio: 1.0,
            latency_ratio: None,
            latency_noise: None,
            within_budget,
        }
    }

    fn walk(groups: Option<usize>) -> Walk {
        Walk {
            steps: vec![
                step(&[], 1.0, 0.0, true),
                step(&["a"], 0.90, 0.05, false),
                step(&["a", "b"], 0.95, 0.02, false),
            ],
            chosen: 0,
            held_out: HeldOut {
                samples: 102,
                groups,
                confidence: 0.95,
                splits: 1,
            },
            model: crate::ir::Model::from_proto(crate::ir::builder::ModelBuilder::new(13).build())
                .unwrap(),
        }
    }

    fn fine_tuned(best_step: usize, agreements: &[(usize, f64)]) -> Training {
        Training {
            schedule: Vec::new(),
            steps: 250,
            losses: Vec::new(),
            evaluations: agreements
                .iter()
                .map(|&(step, agreement)| Evaluation {
                    step,
                    samples_seen: 16 * step,
                    agreement: Some(agreement),
                    loss: 0.2,
                    accuracy: None,
                    linear: 1,
                })
                .collect(),
            best_step: Some(best_step),
            samples_seen: 4000,
            throughput: crate::gates::Throughput {
                samples: 4000,
                seconds: 200.0,
                samples_per_second: 20.0,
            },
            weights: None,
        }
    }

    #[test]
    fn fine_tuning_is_told_from_before_to_the_written_step_and_the_end() {
        let line = fine_tuning_line(&fine_tuned(100, &[(0, 0.6), (100, 0.76), (250, 0.74)]));
        assert_eq!(
            line.as_deref(),
            Some(
                "fine-tuned 250 steps on 4000 training samples (20.0 samples/s): held-out agreement 60.0 % before → 76.0 % at step 100 (written) → 74.0 % at step 250\n"
            )
        );
        let untrained = fine_tuning_line(&fine_tuned(0, &[(0, 0.6), (250, 0.5)])).unwrap();
        assert!(
            untrained.ends_with("60.0 % before (written) → 50.0 % at step 250\n"),
            "{untrained}"
        );
        let mut gates_only = fine_tuned(0, &[]);
        gates_only.best_step = None;
        assert_eq!(fine_tuning_line(&gates_only), None);
    }

    #[test]
    fn when_nothing_fits_the_step_that_lost_the_least_is_named_with_its_budget_and_intervals() {
        let text = nothing_fits(&walk(None), &Budget::default());
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "no step of the schedule fits the budget: writing the exact-only model",
                "closest: 2 activations removed (last: b): agreement 95.00 % [90.00, 100.00], pairwise flips 2.00 % [0.00, 7.00] (max drop 1 points)",
            ]
        );
    }

    #[test]
    fn the_basis_names_the_samples_and_groups_and_few_groups_are_warned_of() {
        assert_eq!(
            basis(&walk(Some(2))),
            "each step judged at the worst end of its 95 % intervals: 102 held-out samples from 2 groups, resampled whole\n"
        );
        assert_eq!(
            basis(&walk(None)),
            "each step judged at the worst end of its 95 % intervals: 102 held-out samples resampled one by one (the data has no groups)\n"
        );
        assert_eq!(
            few_groups_warning(&walk(Some(2))).as_deref(),
            Some(
                "agreement estimated from 2 held-out groups of samples: its 95 % interval is up to ±5.0 points; give more varied data (more groups), or hold every group out in turn (k-fold)"
            )
        );
        assert_eq!(few_groups_warning(&walk(Some(5))), None);
        assert_eq!(few_groups_warning(&walk(None)), None);
    }
}
