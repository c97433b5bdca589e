//! What `gate` prints: one row per gate.

use crate::gates::gated::Manifest;
use crate::report::aligned;
use crate::report::stats::human;

/// Each gate, its activations, what removing them saves and its weight in the penalty.
pub fn gates_table(manifest: &Manifest) -> String {
    let gain = |g: f64| match manifest.gain_unit.as_str() {
        "seconds" => format!("{:.3} ms", g * 1e3),
        _ => format!("{} MACs", human(g)),
    };
    let header = ["gate", "activations", "gain", "weight"].map(String::from);
    let rows = manifest.groups.iter().map(|group| {
        vec![
            group.gate.clone(),
            group.activations.join(", "),
            gain(group.gain),
            format!("{:.3}", group.weight),
        ]
    });
    let table: Vec<Vec<String>> = std::iter::once(header.to_vec()).chain(rows).collect();
    format!(
        "{} gates, y = act(x) + α·(x − act(x)), α = 0; a gate at or past {} counts as removed\n{}",
        manifest.groups.len(),
        manifest.threshold,
        aligned(&table, 2)
    )
}
