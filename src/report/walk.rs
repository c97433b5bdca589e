//! The selection walk as a terminal table: one row per step of the gate schedule.

use crate::gates::{Step, Walk};
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
