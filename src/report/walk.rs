//! The selection walk for the terminal: a table with one row per step of the gate
//! schedule, and what came closest when no step fits the budget.

use crate::gates::{Budget, Step, Walk};
use crate::report::aligned;

/// `groups  removed  agreement  pairwise flips  error  MACs  latency  budget`, the latency
/// with its standard error, the chosen step marked with `*`.
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

/// Says that only the exact-only model fits, and what the step that lost the least lost
/// against which budget.
pub fn nothing_fits(walk: &Walk, budget: &Budget) -> String {
    let mut text =
        "no step of the schedule fits the budget: writing the exact-only model\n".to_string();
    if let Some(step) = walk.closest_miss() {
        let mut lost = Vec::new();
        if let (Some(agreement), Some(flips)) = (step.agreement, step.pairwise_flips) {
            lost.push(format!(
                "agreement {:.2} %, pairwise flips {:.2} % (--max-drop {})",
                100.0 * agreement,
                100.0 * flips,
                budget.max_drop
            ));
        }
        if let Some(error) = step.max_error {
            lost.push(format!(
                "max rel error {error:.2e} (--max-error {})",
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
            .map_or("-".into(), |a| format!("{:.2} %", 100.0 * a)),
        step.pairwise_flips
            .map_or("-".into(), |f| format!("{:.2} %", 100.0 * f)),
        step.max_error.map_or("-".into(), |e| format!("{e:.2e}")),
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

    fn step(removed: &[&str], agreement: f64, flips: f64, within_budget: bool) -> Step {
        Step {
            groups: removed.len(),
            removed: removed.iter().map(|r| r.to_string()).collect(),
            folds: Vec::new(),
            refitted: Vec::new(),
            fidelity: Vec::new(),
            agreement: Some(agreement),
            pairwise_flips: Some(flips),
            max_error: None,
            mac_ratio: 1.0,
            latency_ratio: None,
            latency_noise: None,
            within_budget,
        }
    }

    #[test]
    fn when_nothing_fits_the_step_that_lost_the_least_is_named_with_its_budget() {
        let walk = Walk {
            steps: vec![
                step(&[], 1.0, 0.0, true),
                step(&["a"], 0.90, 0.05, false),
                step(&["a", "b"], 0.95, 0.02, false),
            ],
            chosen: 0,
            model: crate::ir::Model::from_proto(crate::ir::builder::ModelBuilder::new(13).build())
                .unwrap(),
        };
        let text = nothing_fits(&walk, &Budget::default());
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "no step of the schedule fits the budget: writing the exact-only model",
                "closest: 2 activations removed (last: b): agreement 95.00 %, pairwise flips 2.00 % (--max-drop 1)",
            ]
        );
    }
}
