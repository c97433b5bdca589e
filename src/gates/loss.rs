//! Distillation from the original model, every output counting: class outputs by KL on
//! their logits, other outputs by variance-normalised squared error.
//!
//! An output produced by Softmax or LogSoftmax is a class output whose logits are that
//! node's input (so nothing is ever put through softmax twice); any other output of
//! shape [N, C] with C ≥ 2 is taken as logits; everything else is a regression output.
//! The user overrides per output ([`LearnOptions::output_kinds`](crate::gates::LearnOptions::output_kinds)).

use std::str::FromStr;

use ndarray::{ArrayD, Axis};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::ir::shape::Shapes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Class,
    Regression,
}

impl FromStr for OutputKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<OutputKind> {
        match s {
            "class" => Ok(OutputKind::Class),
            "regression" => Ok(OutputKind::Regression),
            other => Err(Error::Usage(format!(
                "output kind '{other}': expected class or regression"
            ))),
        }
    }
}

/// Parses `NAME:class` or `NAME:regression`.
pub fn parse_output_kind(spec: &str) -> Result<(String, OutputKind)> {
    let (name, kind) = spec.rsplit_once(':').ok_or_else(|| {
        Error::invalid(
            "output_kind",
            format!("'{spec}'"),
            "NAME:class or NAME:regression",
        )
    })?;
    Ok((name.to_string(), kind.parse()?))
}

/// What the distillation compares for one graph output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// The graph output.
    pub output: String,
    /// The value trained on: the output, or the logits a Softmax output is made from.
    pub tensor: String,
    pub kind: OutputKind,
}

/// One target per graph output, in output order. Every override must name an output.
pub fn targets(
    graph: &Graph,
    shapes: &Shapes,
    overrides: &[(String, OutputKind)],
) -> Result<Vec<Target>> {
    let names: Vec<&str> = graph
        .outputs()
        .iter()
        .map(|&o| graph.value(o).name.as_str())
        .collect();
    if let Some((unknown, _)) = overrides.iter().find(|(n, _)| !names.contains(&n.as_str())) {
        return Err(Error::Usage(format!(
            "an output kind is given for '{unknown}', which is not an output; the outputs are: {}",
            names.join(", ")
        )));
    }
    Ok(graph
        .outputs()
        .iter()
        .map(|&output| {
            let name = graph.value(output).name.clone();
            let softmax_input = graph
                .producer(output)
                .map(|p| graph.node(p))
                .filter(|n| matches!(n.op(), "Softmax" | "LogSoftmax"))
                .and_then(|n| n.input(0));
            let overridden = overrides.iter().find(|(n, _)| *n == name).map(|(_, k)| *k);
            let two_dim_classes = shapes
                .get(output)
                .dims
                .as_ref()
                .is_some_and(|d| d.len() == 2 && d[1].known().is_some_and(|c| c >= 2));
            let kind = overridden.unwrap_or(if softmax_input.is_some() || two_dim_classes {
                OutputKind::Class
            } else {
                OutputKind::Regression
            });
            let tensor = match (kind, softmax_input) {
                (OutputKind::Class, Some(logits)) => graph.value(logits).name.clone(),
                _ => name.clone(),
            };
            Target {
                output: name,
                tensor,
                kind,
            }
        })
        .collect())
}

/// The distillation loss of one batch and its gradient with respect to the student's
/// values, per target.
pub struct Distillation {
    pub loss: f64,
    pub gradients: Vec<ArrayD<f32>>,
}

/// `teacher` and `student` hold each target's values for the batch (batch first);
/// `variances` the teacher's variance of each regression target over the data.
pub fn distillation(
    targets: &[Target],
    teacher: &[ArrayD<f32>],
    student: &[ArrayD<f32>],
    variances: &[f64],
) -> Distillation {
    let mut loss = 0.0;
    let mut gradients = Vec::with_capacity(targets.len());
    for (((target, t), s), &variance) in targets.iter().zip(teacher).zip(student).zip(variances) {
        let (l, g) = match target.kind {
            OutputKind::Class => kl_on_logits(t, s),
            OutputKind::Regression => normalised_squared_error(t, s, variance),
        };
        loss += l;
        gradients.push(g);
    }
    Distillation { loss, gradients }
}

/// Mean over the batch of KL(softmax(t) ‖ softmax(s)), classes on axis 1; its gradient
/// with respect to s is (softmax(s) − softmax(t)) / N.
fn kl_on_logits(teacher: &ArrayD<f32>, student: &ArrayD<f32>) -> (f64, ArrayD<f32>) {
    let n = teacher.shape()[0].max(1) as f64;
    let (log_p, log_q) = (log_softmax(teacher), log_softmax(student));
    let mut gradient = ArrayD::zeros(student.raw_dim());
    let mut loss = 0.0;
    for ((lp, lq), g) in log_p.iter().zip(&log_q).zip(gradient.iter_mut()) {
        let (p, q) = (lp.exp(), lq.exp());
        loss += p * (lp - lq);
        *g = ((q - p) / n) as f32;
    }
    (loss / n, gradient)
}

/// log softmax along axis 1, in f64.
fn log_softmax(logits: &ArrayD<f32>) -> ArrayD<f64> {
    let mut out = logits.mapv(f64::from);
    for mut lane in out.lanes_mut(Axis(1)) {
        let max = lane.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let log_sum = lane.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
        lane.mapv_inplace(|v| v - log_sum);
    }
    out
}

/// mean (s − t)² / var(t): 1 means as far off as predicting the teacher's mean.
fn normalised_squared_error(
    teacher: &ArrayD<f32>,
    student: &ArrayD<f32>,
    variance: f64,
) -> (f64, ArrayD<f32>) {
    let scale = 1.0 / (teacher.len().max(1) as f64 * variance.max(1e-12));
    let mut gradient = ArrayD::zeros(student.raw_dim());
    let mut loss = 0.0;
    for ((&t, &s), g) in teacher.iter().zip(student).zip(gradient.iter_mut()) {
        let d = s as f64 - t as f64;
        loss += d * d * scale;
        *g = (2.0 * d * scale) as f32;
    }
    (loss, gradient)
}

/// Mean over the batch of the cross-entropy of softmax(`logits`) against `labels` (class
/// indices on axis 1), and its gradient with respect to the logits, (softmax − one-hot) / N.
pub fn cross_entropy(logits: &ArrayD<f32>, labels: &[i64]) -> Result<(f64, ArrayD<f32>)> {
    let classes = logits.shape().get(1).copied().unwrap_or(0);
    if let Some(&bad) = labels.iter().find(|&&l| !(0..classes as i64).contains(&l)) {
        return Err(Error::Usage(format!(
            "label {bad} is not a class of the model's {classes} (labels count from 0)"
        )));
    }
    let n = labels.len().max(1) as f64;
    let log_q = log_softmax(logits);
    let mut gradient = log_q.mapv(|lq| (lq.exp() / n) as f32);
    let mut loss = 0.0;
    for (row, &label) in labels.iter().enumerate() {
        loss -= log_q[[row, label as usize]];
        gradient[[row, label as usize]] -= (1.0 / n) as f32;
    }
    Ok((loss / n, gradient))
}

/// The variance of all values of `values` (population variance, in f64).
pub fn variance(values: &ArrayD<f32>) -> f64 {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn array(dims: &[usize], values: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(dims), values.to_vec()).unwrap()
    }

    /// Central differences of `loss` at `s`, element by element.
    fn numeric_gradient(s: &ArrayD<f32>, loss: impl Fn(&ArrayD<f32>) -> f64) -> Vec<f64> {
        let h = 1e-3;
        (0..s.len())
            .map(|i| {
                let mut plus = s.clone();
                let mut minus = s.clone();
                plus.as_slice_mut().unwrap()[i] += h;
                minus.as_slice_mut().unwrap()[i] -= h;
                (loss(&plus) - loss(&minus)) / (2.0 * h as f64)
            })
            .collect()
    }

    #[test]
    fn kl_is_zero_on_equal_logits_and_its_gradient_matches_differences() {
        let t = array(&[2, 3], &[1.0, -2.0, 0.5, 0.0, 3.0, -1.0]);
        assert!(kl_on_logits(&t, &t).0.abs() < 1e-12);
        let s = array(&[2, 3], &[0.3, -1.0, 2.0, 1.0, 0.0, 0.5]);
        let (loss, gradient) = kl_on_logits(&t, &s);
        assert!(loss > 0.0);
        let numeric = numeric_gradient(&s, |s| kl_on_logits(&t, s).0);
        for (a, n) in gradient.iter().zip(numeric) {
            assert!((*a as f64 - n).abs() < 1e-4, "{a} vs {n}");
        }
    }

    #[test]
    fn normalised_error_is_one_for_predicting_the_mean_and_its_gradient_matches() {
        let t = array(&[4, 1], &[1.0, 3.0, 5.0, 7.0]);
        let mean = array(&[4, 1], &[4.0; 4]);
        let (loss, _) = normalised_squared_error(&t, &mean, variance(&t));
        assert!((loss - 1.0).abs() < 1e-9, "{loss}");
        let s = array(&[4, 1], &[0.0, 2.0, 9.0, 7.5]);
        let (_, gradient) = normalised_squared_error(&t, &s, 5.0);
        let numeric = numeric_gradient(&s, |s| normalised_squared_error(&t, s, 5.0).0);
        for (a, n) in gradient.iter().zip(numeric) {
            // f32 inputs perturbed by 1e-3: differences carry ~1e-4 of rounding.
            assert!(
                (*a as f64 - n).abs() < 1e-3 * n.abs().max(1.0),
                "{a} vs {n}"
            );
        }
    }

    #[test]
    fn output_kinds_parse_and_reject_typos() {
        assert_eq!(
            parse_output_kind("bbox_reg:regression").unwrap(),
            ("bbox_reg".to_string(), OutputKind::Regression)
        );
        assert!(parse_output_kind("bbox_reg:regresion").is_err());
        assert!(parse_output_kind("bbox_reg").is_err());
    }
}
