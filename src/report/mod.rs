//! What users read: terminal tables and JSON.

use crate::runtime::interval::Interval;

pub mod bench;
pub mod gated;
pub mod json;
pub mod optimize;
pub mod plot;
pub mod stats;
pub mod verify;
pub mod walk;

/// Rows as columns separated by two spaces: the first `left` columns (names, shapes)
/// left-aligned, the rest (numbers) right-aligned.
pub(crate) fn aligned(rows: &[Vec<String>], left: usize) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &Vec<String>| {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &width))| {
                if c < left {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        cells.join("  ") + "\n"
    };
    rows.iter().map(line).collect()
}

/// `92.31 % [84.62, 100.00]`.
pub(crate) fn percent(value: f64, interval: Option<Interval>) -> String {
    let mut text = format!("{:.2} %", 100.0 * value);
    if let Some(i) = interval {
        text += &format!(" [{:.2}, {:.2}]", 100.0 * i.low, 100.0 * i.high);
    }
    text
}

/// `1.20e-2 [8.00e-3, 1.50e-2]`.
pub(crate) fn scientific(value: f64, interval: Option<Interval>) -> String {
    let mut text = format!("{value:.2e}");
    if let Some(i) = interval {
        text += &format!(" [{:.2e}, {:.2e}]", i.low, i.high);
    }
    text
}
