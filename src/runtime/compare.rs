//! Running two models on the same inputs in tract and comparing their outputs.
//!
//! Relative error is the project's one definition: max|candidate − reference| /
//! max|reference| over the whole output; exact rewrites stay within 1e-4 of it.
//!
//! ```no_run
//! use onnx_shallow::{calib, runtime::compare::{compare, Tolerance}};
//! let reference = onnx_shallow::load("model.onnx".as_ref())?;
//! let candidate = onnx_shallow::load("model.shallow.onnx".as_ref())?;
//! let inputs = calib::random_inputs(&calib::sample_dims(&reference, &Default::default())?, 64, 0)?;
//! let comparison = compare(&reference, &candidate, &inputs)?;
//! assert!(comparison.within(&Tolerance::default()));
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

use ndarray::{ArrayD, ArrayViewD, Axis};
use serde::Serialize;

use crate::calib::{Dataset, ModelInputs};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::shape::{self, ValueType};
use crate::runtime::interval::{Clusters, Interval, Resampling, bootstrap, distinct_groups};
use crate::runtime::{self, Engine};

/// How one output of the candidate compares with the reference's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputComparison {
    pub name: String,
    /// Over all samples.
    pub shape: Vec<usize>,
    pub max_abs_error: f64,
    /// max|candidate − reference| / max|reference|.
    pub max_rel_error: f64,
    pub cosine: f64,
    /// Fraction of samples with the same argmax, for outputs of shape [N, C], C ≥ 2.
    pub agreement: Option<f64>,
    /// For the same outputs, the fraction of top-1 decisions that would flip if any
    /// sample's change of margin (its top-1 minus its runner-up, in the reference) could
    /// fall on any sample: every (change, margin) pair counts. Where one flip is many
    /// points (a few dozen samples), it tells changes close to flipping a decision from
    /// changes far from it.
    pub pairwise_flips: Option<f64>,
    /// Confidence intervals of the figures above, once estimated (see
    /// [`Comparison::estimate_intervals`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals: Option<FidelityIntervals>,
    /// What each sample showed, which the intervals are estimated from.
    #[serde(skip)]
    pub outcomes: SampleOutcomes,
}

/// The confidence intervals of an output's figures (`None` for a figure it does not
/// have, or cannot resample: errors of an output whose first dim is not the sample dim).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FidelityIntervals {
    pub agreement: Option<Interval>,
    pub pairwise_flips: Option<Interval>,
    pub max_rel_error: Option<Interval>,
}

/// Every output compared, in the models' output order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub samples: usize,
    /// Where the inputs came from (see [`ModelInputs::source`]).
    pub inputs: String,
    /// How many groups the samples came from, when the inputs say (see
    /// [`ModelInputs::groups`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// The confidence of the outputs' intervals, once estimated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    pub outputs: Vec<OutputComparison>,
}

/// When a candidate counts as equivalent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Largest relative error allowed.
    pub rtol: f64,
    /// Largest absolute error allowed, as an alternative to `rtol` (for outputs near zero).
    pub atol: Option<f64>,
    /// Smallest top-1 agreement allowed, on outputs that have one.
    pub min_agreement: Option<f64>,
}

impl Default for Tolerance {
    fn default() -> Tolerance {
        Tolerance {
            rtol: 1e-4,
            atol: None,
            min_agreement: None,
        }
    }
}

impl OutputComparison {
    /// Within `rtol` (or `atol`, when given) and, when given and the output has one,
    /// at least `min_agreement`. NaN errors never pass.
    pub fn within(&self, tolerance: &Tolerance) -> bool {
        let close = self.max_rel_error <= tolerance.rtol
            || tolerance
                .atol
                .is_some_and(|atol| self.max_abs_error <= atol);
        let agrees = match (tolerance.min_agreement, self.agreement) {
            (Some(min), Some(agreement)) => agreement >= min,
            _ => true,
        };
        close && agrees
    }
}

impl Comparison {
    /// Every output is within the tolerance.
    pub fn within(&self, tolerance: &Tolerance) -> bool {
        self.outputs.iter().all(|output| output.within(tolerance))
    }

    /// Comparisons on disjoint data sets (a k-fold split's held-out parts, each with its
    /// own candidate) as one over all their samples, in order; intervals not estimated.
    pub fn pooled(parts: &[Comparison]) -> Comparison {
        let outputs = (0..parts[0].outputs.len()).map(|i| {
            let mut stats = OutputStats::default();
            parts.iter().for_each(|p| stats.absorb(&p.outputs[i]));
            stats.finish(parts[0].outputs[i].name.clone())
        });
        let sources: Vec<&str> = parts.iter().map(|p| p.inputs.as_str()).collect();
        Comparison {
            samples: parts.iter().map(|p| p.samples).sum(),
            inputs: sources.join(" + "),
            groups: None,
            confidence: None,
            outputs: outputs.collect(),
        }
    }

    /// Estimates every output's intervals, resampling whole groups when the samples
    /// carry them (`groups`, one id per sample), the samples otherwise.
    pub fn estimate_intervals(&mut self, groups: Option<&[i64]>, resampling: &Resampling) {
        let clusters = Clusters::of(self.samples, groups);
        for output in &mut self.outputs {
            let intervals = output
                .outcomes
                .intervals(self.samples, &clusters, resampling);
            output.intervals = Some(intervals);
        }
        self.confidence = Some(resampling.confidence);
    }
}

/// Runs both models in tract (shapes pinned, optimised) on `inputs`, in batches of
/// [`runtime::RUN_BATCH`] samples (or the models' fixed batch size), and compares their
/// outputs, which must agree in number and names.
pub fn compare(reference: &Model, candidate: &Model, inputs: &ModelInputs) -> Result<Comparison> {
    compare_in(&Engine::Tract, reference, candidate, inputs)
}

/// [`compare`], both models run in `engine`.
pub fn compare_in(
    engine: &Engine,
    reference: &Model,
    candidate: &Model,
    inputs: &ModelInputs,
) -> Result<Comparison> {
    compare_runs((engine, reference), (engine, candidate), inputs)
}

/// [`compare`], each model run in its own engine: a model against itself in two engines
/// shows whether they compute the same.
pub fn compare_runs(
    (reference_engine, reference): (&Engine, &Model),
    (candidate_engine, candidate): (&Engine, &Model),
    inputs: &ModelInputs,
) -> Result<Comparison> {
    let names = output_names(reference);
    if output_names(candidate) != names {
        return Err(Error::Usage(format!(
            "the models' outputs differ: the reference has [{}], the candidate [{}]",
            names.join(", "),
            output_names(candidate).join(", ")
        )));
    }
    let batch = batch_size(reference, candidate, inputs)?;
    let mut stats: Vec<OutputStats> = names.iter().map(|_| OutputStats::default()).collect();
    let samples = inputs.samples();
    let whole = samples - samples % batch;
    // Tract pins the batch dim, so a last, partial batch needs sessions of its own.
    for (range, size) in [(0..whole, batch), (whole..samples, samples - whole)] {
        if range.is_empty() {
            continue;
        }
        let dims: Vec<Vec<usize>> = inputs
            .arrays()
            .iter()
            .map(|array| [&[size], &array.shape()[1..]].concat())
            .collect();
        let (reference, candidate) = (
            reference_engine.load(reference, &dims)?,
            candidate_engine.load(candidate, &dims)?,
        );
        for start in range.step_by(size) {
            let chunk = inputs.batch(start..start + size);
            let (expected, actual) = (reference.run(&chunk)?, candidate.run(&chunk)?);
            for (((stats, name), expected), actual) in
                stats.iter_mut().zip(&names).zip(&expected).zip(&actual)
            {
                stats.add(name, expected, actual, size)?;
            }
        }
    }
    let outputs = stats
        .into_iter()
        .zip(names)
        .map(|(stats, name)| stats.finish(name))
        .collect();
    Ok(Comparison {
        samples,
        inputs: inputs.source().to_string(),
        groups: inputs.groups().map(distinct_groups),
        confidence: None,
        outputs,
    })
}

/// Samples a held-out comparison reads and runs at once: the memory it takes is this many
/// samples', whatever the size of the data.
const PART: usize = 16;

/// A reference model's outputs on a data set, computed once to compare many candidates
/// with (the steps of a selection walk). The data is read part by part for each
/// candidate; only the reference's outputs are kept.
pub struct Expected<'a> {
    names: Vec<String>,
    outputs: Vec<ArrayD<f32>>,
    data: &'a Dataset,
    /// Each sample's group, when the data has groups.
    groups: Option<Vec<i64>>,
    /// Samples per run: the batch size the reference fixes, or one.
    batch: usize,
}

impl<'a> Expected<'a> {
    pub fn of(reference: &Model, data: &'a Dataset) -> Result<Expected<'a>> {
        let first = data.chunks(PART).next().expect("a data set has samples")?;
        let batch = batch_size(reference, reference, &first)?;
        let runner = runtime::Runner::new(reference, batch);
        Ok(Expected {
            names: output_names(reference),
            outputs: runner.run_parts(data.chunks(PART))?,
            data,
            groups: data.groups(),
            batch,
        })
    }

    pub fn samples(&self) -> usize {
        self.data.len()
    }

    /// Which group each sample came from, when the data says.
    pub fn groups(&self) -> Option<&[i64]> {
        self.groups.as_deref()
    }

    /// `compare(reference, candidate, data)`, the reference's outputs reused.
    pub fn compare(&self, candidate: &Model) -> Result<Comparison> {
        if output_names(candidate) != self.names {
            return Err(Error::Usage(format!(
                "the candidate's outputs [{}] are not the reference's [{}]",
                output_names(candidate).join(", "),
                self.names.join(", ")
            )));
        }
        let batch = self.batch;
        let runner = runtime::Runner::new(candidate, batch);
        let mut stats: Vec<OutputStats> =
            self.names.iter().map(|_| OutputStats::default()).collect();
        for (i, part) in self.data.chunks(PART).enumerate() {
            let part = part?;
            let size = part.samples();
            if i == 0 {
                batch_size(candidate, candidate, &part)?;
            }
            let actual = runner.run(&part)?;
            let rows = ndarray::Slice::from(i * PART..i * PART + size);
            for (((stats, name), expected), actual) in stats
                .iter_mut()
                .zip(&self.names)
                .zip(&self.outputs)
                .zip(&actual)
            {
                let expected = expected.slice_axis(Axis(0), rows).to_owned();
                for start in (0..size).step_by(batch) {
                    let within = ndarray::Slice::from(start..(start + batch).min(size));
                    stats.add(
                        name,
                        &expected.slice_axis(Axis(0), within).to_owned(),
                        &actual.slice_axis(Axis(0), within).to_owned(),
                        batch.min(size - start),
                    )?;
                }
            }
        }
        Ok(Comparison {
            samples: self.data.len(),
            inputs: self.data.source().to_string(),
            groups: self.groups().map(distinct_groups),
            confidence: None,
            outputs: stats
                .into_iter()
                .zip(&self.names)
                .map(|(stats, name)| stats.finish(name.clone()))
                .collect(),
        })
    }
}

/// The largest relative error over the outputs of `candidate` against `reference` on
/// `samples` signed random samples (seed 0) of the inputs' per-sample dims: how far a
/// rewrite that is not exact strays.
pub fn max_relative_error_on_random(
    reference: &Model,
    candidate: &Model,
    sample_dims: &[Vec<usize>],
    samples: usize,
) -> Result<f64> {
    let inputs = crate::calib::random_inputs(sample_dims, samples, 0)?;
    let comparison = compare(reference, candidate, &inputs)?;
    Ok(comparison
        .outputs
        .iter()
        .map(|o| o.max_rel_error)
        .fold(0.0, nan_max))
}

fn output_names(model: &Model) -> Vec<String> {
    model
        .graph
        .outputs()
        .iter()
        .map(|&output| model.graph.value(output).name.clone())
        .collect()
}

/// [`runtime::RUN_BATCH`], or the batch size the models fix in their first input's
/// declared dims, once the inputs are checked against both models.
fn batch_size(reference: &Model, candidate: &Model, inputs: &ModelInputs) -> Result<usize> {
    let samples = inputs.samples();
    let mut fixed = [None, None];
    for ((role, model), fixed) in [("reference", reference), ("candidate", candidate)]
        .into_iter()
        .zip(&mut fixed)
    {
        let declared = declared_inputs(model)?;
        check_inputs(role, &declared, inputs)?;
        *fixed = declared
            .first()
            .and_then(|(_, input)| input.dim(0))
            .filter(|&size| size > 0);
    }
    match fixed {
        [Some(a), Some(b)] if a != b => Err(Error::Usage(format!(
            "the reference model fixes batch size {a}, the candidate {b}"
        ))),
        [Some(size), _] | [_, Some(size)] if !samples.is_multiple_of(size) => {
            Err(Error::Usage(format!(
                "the models fix batch size {size}, which does not divide the {samples} samples"
            )))
        }
        [Some(size), _] | [_, Some(size)] => Ok(size),
        [None, None] => Ok(runtime::RUN_BATCH),
    }
}

/// The name and declared type of each runtime input.
fn declared_inputs(model: &Model) -> Result<Vec<(String, ValueType)>> {
    let shapes = shape::infer(&model.graph, &Default::default())?;
    let graph = &model.graph;
    Ok(graph
        .runtime_inputs()
        .map(|input| (graph.value(input).name.clone(), shapes.get(input).clone()))
        .collect())
}

/// The inputs fit what a model declares: one array per runtime input, of the declared
/// rank, agreeing on every fixed dim after the sample dim.
fn check_inputs(role: &str, declared: &[(String, ValueType)], inputs: &ModelInputs) -> Result<()> {
    if declared.len() != inputs.arrays().len() {
        return Err(Error::Usage(format!(
            "the {role} model has {} inputs, the data has {} arrays",
            declared.len(),
            inputs.arrays().len()
        )));
    }
    for ((name, declared), array) in declared.iter().zip(inputs.arrays()) {
        let Some(dims) = &declared.dims else { continue };
        let fits = dims.len() == array.ndim()
            && dims
                .iter()
                .zip(array.shape())
                .skip(1)
                .all(|(dim, &len)| dim.known().is_none_or(|d| d == len));
        if !fits {
            return Err(Error::Usage(format!(
                "the {role} model's input '{name}' is {declared}, the data is {:?}",
                array.shape()
            )));
        }
    }
    Ok(())
}

/// Running statistics of one output over the batches seen so far.
#[derive(Default)]
struct OutputStats {
    shape: Vec<usize>,
    max_abs_error: f64,
    max_abs_reference: f64,
    dot: f64,
    reference_sq: f64,
    candidate_sq: f64,
    /// Each sample's top-1 decision, for [N, C] outputs.
    decisions: Option<Vec<Decision>>,
    /// Each sample's errors, while the output's first dim is the sample dim.
    errors: Vec<SampleError>,
}

impl OutputStats {
    fn add(
        &mut self,
        name: &str,
        reference: &ArrayD<f32>,
        candidate: &ArrayD<f32>,
        batch: usize,
    ) -> Result<()> {
        if reference.shape() != candidate.shape() {
            return Err(Error::Usage(format!(
                "output '{name}': the reference gives {:?}, the candidate {:?}",
                reference.shape(),
                candidate.shape()
            )));
        }
        self.extend_shape(reference.shape(), batch);
        for (&r, &c) in reference.iter().zip(candidate) {
            let (r, c) = (r as f64, c as f64);
            self.max_abs_error = nan_max(self.max_abs_error, (c - r).abs());
            self.max_abs_reference = nan_max(self.max_abs_reference, r.abs());
            self.dot += r * c;
            self.reference_sq += r * r;
            self.candidate_sq += c * c;
        }
        let rows = || reference.outer_iter().zip(candidate.outer_iter());
        if reference.shape().first() == Some(&batch) {
            self.errors
                .extend(rows().map(|(r, c)| SampleError::of(r, c)));
        }
        if let [rows_in_batch, classes] = reference.shape()
            && *rows_in_batch == batch
            && *classes >= 2
        {
            let decisions = self.decisions.get_or_insert_with(Vec::new);
            decisions.extend(rows().filter_map(|(r, c)| Decision::of(r, c)));
        }
        Ok(())
    }

    /// Adds what `output` measured on other samples.
    fn absorb(&mut self, output: &OutputComparison) {
        let outcomes = &output.outcomes;
        match (self.shape.first_mut(), output.shape.first()) {
            (Some(total), Some(&rows)) => *total += rows,
            _ => self.shape = output.shape.clone(),
        }
        self.max_abs_error = nan_max(self.max_abs_error, output.max_abs_error);
        self.max_abs_reference = nan_max(self.max_abs_reference, outcomes.sums.max_abs_reference);
        self.dot += outcomes.sums.dot;
        self.reference_sq += outcomes.sums.reference_sq;
        self.candidate_sq += outcomes.sums.candidate_sq;
        if let Some(decisions) = &outcomes.decisions {
            self.decisions
                .get_or_insert_with(Vec::new)
                .extend(decisions);
        }
        self.errors.extend(&outcomes.errors);
    }

    /// The shape over all samples: batches concatenate along a leading batch dim.
    fn extend_shape(&mut self, shape: &[usize], batch: usize) {
        match (self.shape.first_mut(), shape.first()) {
            (None, _) => self.shape = shape.to_vec(),
            (Some(total), Some(&rows)) if rows == batch => *total += rows,
            _ => {}
        }
    }

    fn finish(self, name: String) -> OutputComparison {
        let max_rel_error = error_ratio(self.max_abs_error, self.max_abs_reference);
        let cosine = match (self.reference_sq == 0.0, self.candidate_sq == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            (false, false) => self.dot / (self.reference_sq.sqrt() * self.candidate_sq.sqrt()),
        };
        let samples = self.shape.first().copied().unwrap_or(0);
        let outcomes = SampleOutcomes {
            sums: Sums {
                max_abs_reference: self.max_abs_reference,
                dot: self.dot,
                reference_sq: self.reference_sq,
                candidate_sq: self.candidate_sq,
            },
            errors: match self.errors.len() == samples {
                true => self.errors,
                false => Vec::new(),
            },
            decisions: self.decisions,
        };
        let every: Vec<usize> = (0..samples).collect();
        OutputComparison {
            name,
            shape: self.shape,
            max_abs_error: self.max_abs_error,
            max_rel_error,
            cosine,
            agreement: outcomes
                .decisions
                .as_ref()
                .map(|_| outcomes.agreement(&every)),
            pairwise_flips: outcomes
                .decisions
                .as_ref()
                .map(|_| outcomes.pairwise_flips(&every)),
            intervals: None,
            outcomes,
        }
    }
}

/// What each sample of an output showed: its top-1 decision (for `[N, C]` outputs) and
/// its errors (when the output's first dim is the sample dim).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleOutcomes {
    decisions: Option<Vec<Decision>>,
    errors: Vec<SampleError>,
    sums: Sums,
}

/// What the cosine and the relative error over all samples are made of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sums {
    max_abs_reference: f64,
    dot: f64,
    reference_sq: f64,
    candidate_sq: f64,
}

impl SampleOutcomes {
    /// The share of `rows` (sample indices, repeats counted) that keep their decision.
    fn agreement(&self, rows: &[usize]) -> f64 {
        let decisions = self.decisions.as_deref().unwrap_or_default();
        let same = rows.iter().filter(|&&i| decisions[i].same).count();
        same as f64 / rows.len() as f64
    }

    fn pairwise_flips(&self, rows: &[usize]) -> f64 {
        let decisions = self.decisions.as_deref().unwrap_or_default();
        let margins: Vec<MarginChange> = rows.iter().map(|&i| decisions[i].margin).collect();
        pairwise_flips(&margins)
    }

    fn max_rel_error(&self, rows: &[usize]) -> f64 {
        let (error, reference) = rows.iter().fold((0.0, 0.0), |(e, r), &i| {
            let sample = &self.errors[i];
            (
                nan_max(e, sample.max_abs_error),
                nan_max(r, sample.max_abs_reference),
            )
        });
        error_ratio(error, reference)
    }

    /// The intervals of the figures the outcomes of all `samples` samples hold.
    fn intervals(
        &self,
        samples: usize,
        clusters: &Clusters,
        resampling: &Resampling,
    ) -> FidelityIntervals {
        let decided = self.decisions.as_ref().is_some_and(|d| d.len() == samples);
        let of = |figure: fn(&SampleOutcomes, &[usize]) -> f64, range, known: bool| {
            known.then(|| bootstrap(clusters, resampling, range, |rows| figure(self, rows)))
        };
        let share = 0.0..=1.0;
        FidelityIntervals {
            agreement: of(SampleOutcomes::agreement, share.clone(), decided),
            pairwise_flips: of(SampleOutcomes::pairwise_flips, share, decided),
            max_rel_error: of(
                SampleOutcomes::max_rel_error,
                0.0..=f64::INFINITY,
                samples > 0 && self.errors.len() == samples,
            ),
        }
    }
}

/// A sample's largest |candidate − reference| and largest |reference|.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SampleError {
    max_abs_error: f64,
    max_abs_reference: f64,
}

impl SampleError {
    fn of(reference: ArrayViewD<f32>, candidate: ArrayViewD<f32>) -> SampleError {
        let mut error = SampleError {
            max_abs_error: 0.0,
            max_abs_reference: 0.0,
        };
        for (&r, &c) in reference.iter().zip(&candidate) {
            error.max_abs_error = nan_max(error.max_abs_error, (c as f64 - r as f64).abs());
            error.max_abs_reference = nan_max(error.max_abs_reference, (r as f64).abs());
        }
        error
    }
}

/// A sample's top-1 decision: kept by the candidate or not, and how its margin moved.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Decision {
    same: bool,
    margin: MarginChange,
}

impl Decision {
    fn of(reference: ArrayViewD<f32>, candidate: ArrayViewD<f32>) -> Option<Decision> {
        let (reference, candidate): (Vec<f32>, Vec<f32>) = (
            reference.iter().copied().collect(),
            candidate.iter().copied().collect(),
        );
        Some(Decision {
            same: argmax(reference.iter()) == argmax(candidate.iter()),
            margin: MarginChange::of(&reference, &candidate)?,
        })
    }
}

/// The relative error of one output, as every comparison reports it:
/// max|candidate − reference| / max|reference|, 0 when the two are equal; NaN when a
/// value is NaN or the shapes differ.
pub fn relative_error(reference: ArrayViewD<f32>, candidate: ArrayViewD<f32>) -> f64 {
    if reference.shape() != candidate.shape() {
        return f64::NAN;
    }
    let error = SampleError::of(reference, candidate);
    error_ratio(error.max_abs_error, error.max_abs_reference)
}

/// max|candidate − reference| / max|reference|, 0 when the two are equal.
fn error_ratio(max_abs_error: f64, max_abs_reference: f64) -> f64 {
    match max_abs_error {
        0.0 => 0.0,
        error => error / max_abs_reference,
    }
}

/// A sample's top-1 decision in the reference, and what the candidate did to it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MarginChange {
    /// The reference's top-1 value minus its runner-up's.
    margin: f64,
    /// The candidate's difference of the same two classes, minus `margin`.
    change: f64,
}

impl MarginChange {
    fn of(reference: &[f32], candidate: &[f32]) -> Option<MarginChange> {
        let top = argmax(reference.iter())?;
        let runner_up = (0..reference.len())
            .filter(|&k| k != top)
            .max_by(|&a, &b| reference[a].total_cmp(&reference[b]))?;
        let gap = |values: &[f32]| values[top] as f64 - values[runner_up] as f64;
        let margin = gap(reference);
        Some(MarginChange {
            margin,
            change: gap(candidate) - margin,
        })
    }
}

/// The fraction of (change, margin) pairs where the change takes the margin below zero
/// (see [`OutputComparison::pairwise_flips`]); NaN changes flip.
fn pairwise_flips(samples: &[MarginChange]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut margins: Vec<f64> = samples.iter().map(|s| s.margin).collect();
    margins.sort_by(f64::total_cmp);
    let flipped: usize = samples
        .iter()
        .map(|s| match s.change.is_nan() {
            true => margins.len(),
            false => margins.partition_point(|&m| m + s.change < 0.0),
        })
        .sum();
    flipped as f64 / (margins.len() * margins.len()) as f64
}

/// Like `f64::max`, but NaN wins: a NaN output must not pass as close.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The index of the largest value (the first one on ties).
/// The position of the largest value (the first of equals).
pub(crate) fn argmax<'a>(values: impl Iterator<Item = &'a f32>) -> Option<usize> {
    values
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::random::{Rng, normal_array};
    use crate::calib::{ModelInputs, random_inputs};
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Tensor};
    use crate::runtime::Session;

    /// x [batch, 6] → Gemm → (Relu) → Gemm → `output` [batch, 5], with fixed random weights.
    fn mlp(batch: i64, relu: bool, output: &str) -> Model {
        let mut rng = Rng::new(3);
        let mut weights = |dims: [usize; 2]| {
            Tensor::from_f32(
                dims.to_vec(),
                normal_array(&dims, &mut rng).as_slice().unwrap(),
            )
        };
        let hidden = if relu { "r" } else { "h" };
        let mut builder = ModelBuilder::new(13)
            .input("x", &[batch, 6])
            .initializer("w1", weights([6, 16]))
            .initializer("w2", weights([16, 5]))
            .node("Gemm", &["x", "w1"], &["h"], Attributes::default());
        if relu {
            builder = builder.node("Relu", &["h"], &["r"], Attributes::default());
        }
        let proto = builder
            .node("Gemm", &[hidden, "w2"], &[output], Attributes::default())
            .output(output)
            .build();
        Model::from_proto(proto).unwrap()
    }

    #[test]
    fn a_model_matches_itself_exactly() {
        let model = mlp(-1, true, "y");
        let comparison =
            compare(&model, &model, &random_inputs(&[vec![6]], 37, 1).unwrap()).unwrap();
        let output = &comparison.outputs[0];
        assert_eq!(
            (
                comparison.samples,
                output.name.as_str(),
                output.shape.as_slice()
            ),
            (37, "y", &[37, 5][..])
        );
        assert_eq!(
            (output.max_abs_error, output.max_rel_error, output.agreement),
            (0.0, 0.0, Some(1.0))
        );
        assert!((output.cosine - 1.0).abs() < 1e-12);
        assert!(comparison.within(&Tolerance::default()));
    }

    #[test]
    fn comparisons_pooled_over_parts_equal_the_comparison_over_all_samples() {
        let (reference, candidate) = (mlp(-1, true, "y"), mlp(-1, false, "y"));
        let (a, b) = (
            random_inputs(&[vec![6]], 21, 1).unwrap(),
            random_inputs(&[vec![6]], 16, 2).unwrap(),
        );
        let joined = ndarray::concatenate(Axis(0), &[a.arrays()[0].view(), b.arrays()[0].view()]);
        let all = ModelInputs::new(vec![joined.unwrap()], "all").unwrap();
        let parts = [a, b].map(|inputs| compare(&reference, &candidate, &inputs).unwrap());
        let pooled = Comparison::pooled(&parts);
        let whole = compare(&reference, &candidate, &all).unwrap();
        let (p, w) = (&pooled.outputs[0], &whole.outputs[0]);
        assert_eq!((pooled.samples, &p.shape), (37, &w.shape));
        assert_eq!(p.outcomes.decisions, w.outcomes.decisions);
        assert_eq!(p.outcomes.errors, w.outcomes.errors);
        assert_eq!(
            (p.agreement, p.pairwise_flips),
            (w.agreement, w.pairwise_flips)
        );
        for (pooled, whole) in [(p.max_rel_error, w.max_rel_error), (p.cosine, w.cosine)] {
            assert!((pooled - whole).abs() <= 1e-9, "{pooled} vs {whole}");
        }
        assert!(p.agreement.unwrap() < 1.0, "the parts disagree somewhere");
    }

    #[test]
    fn a_removed_relu_shows_on_signed_inputs_and_batching_does_not_change_the_errors() {
        let (reference, candidate) = (mlp(-1, true, "y"), mlp(-1, false, "y"));
        let inputs = random_inputs(&[vec![6]], 37, 1).unwrap();
        let comparison = compare(&reference, &candidate, &inputs).unwrap();
        let output = &comparison.outputs[0];
        assert!(
            output.agreement.unwrap() < 1.0 && output.cosine < 0.99,
            "{output:?}"
        );
        assert!(!comparison.within(&Tolerance::default()));
        // One run over all 37 samples gives the same errors as batches of 16, 16 and 5.
        let dims = [vec![37, 6]];
        let expected = Session::new(&reference, &dims)
            .unwrap()
            .run(inputs.arrays())
            .unwrap();
        let actual = Session::new(&candidate, &dims)
            .unwrap()
            .run(inputs.arrays())
            .unwrap();
        let whole = relative_error(expected[0].view(), actual[0].view());
        assert!(
            (output.max_rel_error - whole).abs() <= 1e-6 * whole,
            "{} vs {whole}",
            output.max_rel_error
        );
    }

    #[test]
    fn a_fixed_batch_size_is_respected() {
        let model = mlp(4, true, "y");
        let comparison =
            compare(&model, &model, &random_inputs(&[vec![6]], 8, 1).unwrap()).unwrap();
        assert_eq!(comparison.outputs[0].shape, [8, 5]);
        let err = compare(&model, &model, &random_inputs(&[vec![6]], 6, 1).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fix batch size 4, which does not divide the 6 samples"),
            "{err}"
        );
    }

    #[test]
    fn refuses_models_or_inputs_that_do_not_correspond() {
        let model = mlp(-1, true, "y");
        let renamed = compare(
            &model,
            &mlp(-1, true, "z"),
            &random_inputs(&[vec![6]], 2, 1).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            renamed.contains("the reference has [y], the candidate [z]"),
            "{renamed}"
        );
        let wrong_dims = compare(&model, &model, &random_inputs(&[vec![7]], 2, 1).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            wrong_dims.contains("input 'x' is Float[N,6], the data is [2, 7]"),
            "{wrong_dims}"
        );
        let two_arrays = ModelInputs::new(
            vec![ArrayD::zeros(vec![2, 6]), ArrayD::zeros(vec![2, 6])],
            "test",
        )
        .unwrap();
        let extra = compare(&model, &model, &two_arrays)
            .unwrap_err()
            .to_string();
        assert!(
            extra.contains("the reference model has 1 inputs, the data has 2 arrays"),
            "{extra}"
        );
    }

    #[test]
    fn tolerance_accepts_rtol_or_atol_and_requires_agreement_when_given() {
        let output = OutputComparison {
            name: "y".into(),
            shape: vec![4, 3],
            max_abs_error: 1e-3,
            max_rel_error: 1e-2,
            cosine: 1.0,
            agreement: Some(0.75),
            pairwise_flips: Some(0.0),
            intervals: None,
            outcomes: SampleOutcomes::default(),
        };
        let tolerance = |rtol, atol, min_agreement| Tolerance {
            rtol,
            atol,
            min_agreement,
        };
        assert!(!output.within(&Tolerance::default()));
        assert!(output.within(&tolerance(1e-2, None, None)));
        assert!(output.within(&tolerance(1e-4, Some(1e-3), None)));
        assert!(output.within(&tolerance(1e-2, None, Some(0.75))));
        assert!(!output.within(&tolerance(1e-2, None, Some(0.8))));
        let nan = OutputComparison {
            max_abs_error: f64::NAN,
            max_rel_error: f64::NAN,
            ..output
        };
        assert!(!nan.within(&tolerance(f64::INFINITY, Some(f64::INFINITY), None)));
    }

    #[test]
    fn nan_outputs_are_not_hidden_by_the_maximum() {
        let mut stats = OutputStats::default();
        let reference = ArrayD::from_shape_vec(vec![1, 2], vec![1.0, 2.0]).unwrap();
        let candidate = ArrayD::from_shape_vec(vec![1, 2], vec![f32::NAN, 2.0]).unwrap();
        stats.add("y", &reference, &candidate, 1).unwrap();
        assert!(stats.finish("y".into()).max_rel_error.is_nan());
    }

    #[test]
    fn pairwise_flips_count_every_margin_change_on_every_margin() {
        // Margins (top-1 minus runner-up) 4, 2 and 0.5; the candidate keeps every
        // decision but narrows the first margin by 1: that change would flip the third
        // sample (0.5 − 1 < 0), 1 pair of 9.
        let reference = [[5.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 1.5]];
        let candidate = [[4.5, 1.5, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 1.5]];
        let array =
            |rows: [[f32; 3]; 3]| ArrayD::from_shape_vec(vec![3, 3], rows.concat()).unwrap();
        let mut stats = OutputStats::default();
        stats
            .add("y", &array(reference), &array(candidate), 3)
            .unwrap();
        let output = stats.finish("y".into());
        assert_eq!(output.agreement, Some(1.0));
        assert!((output.pairwise_flips.unwrap() - 1.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn pairwise_flips_include_the_flips_seen() {
        let reference = ArrayD::from_shape_vec(vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let mut stats = OutputStats::default();
        stats
            .add("y", &reference, &reference.map(|v| 1.0 - v), 2)
            .unwrap();
        let output = stats.finish("y".into());
        assert_eq!(output.agreement, Some(0.0));
        assert_eq!(output.pairwise_flips, Some(1.0));
    }

    #[test]
    fn intervals_hold_each_figure_and_follow_the_groups_samples_flip_in() {
        // 8 samples of 2 classes: the candidate flips the last 4, which form one group.
        let reference = ArrayD::from_shape_vec(vec![8, 2], [1.0, 0.0].repeat(8)).unwrap();
        let flipped = [[1.0, 0.0].repeat(4), [0.0, 1.0].repeat(4)].concat();
        let candidate = ArrayD::from_shape_vec(vec![8, 2], flipped).unwrap();
        let mut stats = OutputStats::default();
        stats.add("y", &reference, &candidate, 8).unwrap();
        let mut comparison = Comparison {
            samples: 8,
            inputs: "test".into(),
            groups: None,
            confidence: None,
            outputs: vec![stats.finish("y".into())],
        };
        let resampling = Resampling::default();
        comparison.estimate_intervals(None, &resampling);
        let output = &comparison.outputs[0];
        let by_sample = output.intervals.clone().unwrap();
        let agreement = by_sample.agreement.unwrap();
        assert_eq!((output.agreement, output.max_rel_error), (Some(0.5), 1.0));
        assert!(
            0.0 < agreement.low
                && agreement.low < 0.5
                && 0.5 < agreement.high
                && agreement.high < 1.0
        );
        assert!(by_sample.pairwise_flips.unwrap().high > 0.5);
        assert_eq!(by_sample.max_rel_error.unwrap().high, 1.0);
        // Two groups, one kept and one flipped whole: a resample may hold either alone.
        comparison.estimate_intervals(Some(&[0, 0, 0, 0, 1, 1, 1, 1]), &resampling);
        let by_group = comparison.outputs[0].intervals.clone().unwrap();
        assert_eq!(
            by_group.agreement,
            Some(Interval {
                low: 0.0,
                high: 1.0
            })
        );
        assert_eq!(
            by_group.max_rel_error,
            Some(Interval {
                low: 0.0,
                high: 1.0
            })
        );
        assert_eq!(comparison.confidence, Some(0.95));
    }
}
