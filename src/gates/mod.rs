//! Learned gates: which activations can go. Candidates (the activations whose removal
//! lets a fold pay), gated training by distillation from the original model, the gate
//! schedule, and the selection that walks it under the user's budget, refitting what it
//! folds.

pub mod candidates;
mod checkpoint;
pub mod gated;
pub mod loss;
pub mod refit;
pub mod select;
pub mod train;
pub mod trained;

use serde::Serialize;

use crate::calib::Dataset;
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::shape::{self, PinnedShapes};
use crate::passes::{self, Ctx};
use crate::progress::{Progress, Stage};
use crate::runtime::compare::{Comparison, Expected};
use crate::runtime::interval::{Resampling, check_confidence};

pub use candidates::{GateGroup, GatedActivation, candidates};
pub use loss::{OutputKind, Target, parse_output_kind, targets};
pub use select::{Budget, FoldedAlone, HeldOut, Step, Walk};
pub use train::{Checkpointing, Evaluation, GateOutcome, Throughput, TrainOptions, Training};

/// How to learn.
#[derive(Clone, Debug, Serialize)]
pub struct LearnOptions {
    pub train: TrainOptions,
    pub budget: Budget,
    /// Refit folded layers by least squares (on by default).
    pub refit: bool,
    /// Per-output overrides of the loss and the measure: class or regression.
    pub output_kinds: Vec<(String, OutputKind)>,
    /// Globs naming activations to remove, instead of learning which: they are linear
    /// from the start, and training (with `finetune`) recovers what removing them costs.
    pub linearize: Vec<String>,
}

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            train: TrainOptions::default(),
            budget: Budget::default(),
            refit: true,
            output_kinds: Vec::new(),
            linearize: Vec::new(),
        }
    }
}

impl LearnOptions {
    /// Refuses values no run can honour, naming the option.
    pub fn check(&self) -> Result<()> {
        let (train, budget) = (&self.train, &self.budget);
        let positive = |x: f64| x > 0.0 && x.is_finite();
        let at_least_one_step = |steps: Option<usize>| steps != Some(0);
        let problems = [
            (
                train.batch > 0,
                "batch",
                train.batch.to_string(),
                "at least 1 sample per step",
            ),
            (
                positive(train.lr),
                "lr",
                train.lr.to_string(),
                "a positive step size",
            ),
            (
                positive(train.weight_lr),
                "weight_lr",
                train.weight_lr.to_string(),
                "a positive step size",
            ),
            (
                train.warmup >= 0.0 && train.warmup < 1.0,
                "warmup",
                train.warmup.to_string(),
                "a fraction of the steps in [0, 1)",
            ),
            (
                train.weight_decay >= 0.0 && train.weight_decay.is_finite(),
                "weight_decay",
                train.weight_decay.to_string(),
                "0 or more",
            ),
            (
                train.label_weight >= 0.0 && train.label_weight.is_finite(),
                "label_weight",
                train.label_weight.to_string(),
                "0 or more",
            ),
            (
                at_least_one_step(train.steps),
                "steps",
                "0".to_string(),
                "at least 1 step",
            ),
            (
                at_least_one_step(train.eval_every),
                "eval_every",
                "0".to_string(),
                "at least 1 step",
            ),
            (
                at_least_one_step(train.checkpoint.as_ref().map(|c| c.every)),
                "checkpoint.every",
                "0".to_string(),
                "at least 1 step",
            ),
            (
                train.threshold > 0.0 && train.threshold <= 1.0,
                "threshold",
                train.threshold.to_string(),
                "a gate value in (0, 1]",
            ),
            (
                budget.max_drop >= 0.0 && budget.max_drop.is_finite(),
                "max_drop",
                budget.max_drop.to_string(),
                "points, 0 or more",
            ),
            (
                budget.max_error >= 0.0 && budget.max_error.is_finite(),
                "max_error",
                budget.max_error.to_string(),
                "a relative error, 0 or more",
            ),
            (
                budget.target_speedup.is_none_or(|s| positive(s) && s > 1.0),
                "target_speedup",
                budget.target_speedup.unwrap_or_default().to_string(),
                "a speedup above 1 (1.2 is 1.2× faster)",
            ),
        ];
        match problems.into_iter().find(|(valid, ..)| !valid) {
            Some((_, option, value, expected)) => Err(Error::invalid(option, value, expected)),
            None => check_confidence(budget.confidence),
        }
    }
}

/// The data learning runs on: one part to train (and refit) on, one held out to measure.
/// Both are read part by part, never whole.
pub struct LearnData<'a> {
    pub train: &'a Dataset,
    pub held_out: &'a Dataset,
    /// Further (training, held-out) splits, for k-fold cross-validation (see
    /// [`Dataset::folds`]): each is fine-tuned and refit on like the first, the walk's
    /// figures are pooled over all splits' held-out parts, and the model written is the
    /// first split's. Empty for one held-out part.
    pub more_splits: &'a [(Dataset, Dataset)],
}

impl LearnData<'_> {
    /// Every (training, held-out) split, the first first.
    fn splits(&self) -> impl Iterator<Item = (&Dataset, &Dataset)> {
        let more = self
            .more_splits
            .iter()
            .map(|(train, held_out)| (train, held_out));
        std::iter::once((self.train, self.held_out)).chain(more)
    }
}

/// What learning found and chose.
#[derive(Clone, Debug, Serialize)]
pub struct Learning {
    pub groups: Vec<GateGroup>,
    pub targets: Vec<Target>,
    /// None when no activation is a candidate.
    pub training: Option<Training>,
    pub walk: Walk,
}

/// Learns which activations of `original` can go: `base` is `original` after the exact
/// rewrites and folds, `ctx` judges folds (its cost model, folding options and pins).
pub fn learn(
    original: &Model,
    base: &Model,
    data: &LearnData,
    ctx: &mut Ctx,
    options: &LearnOptions,
    progress: &dyn Progress,
) -> Result<Learning> {
    options.check()?;
    if !data.more_splits.is_empty() && options.train.checkpoint.is_some() {
        return Err(Error::Usage(
            "a checkpoint keeps one training, and k-fold trains one per fold: checkpoint a run with one held-out part".into(),
        ));
    }
    let named = !options.linearize.is_empty();
    let engine = ctx.cost.borrow().engine.name();
    let groups = {
        let label = format!("finding gate candidates (timing folds in {engine})");
        let _stage = Stage::begin(progress, &label, None);
        match named {
            true => candidates::named(&base.graph, &passes::Linearize::new(&options.linearize))?,
            false => candidates(&base.graph, ctx)?,
        }
    };
    let shapes = shape::infer(&base.graph, &PinnedShapes::default())?;
    let targets = targets(&base.graph, &shapes, &options.output_kinds)?;
    let linear: Vec<usize> = match named {
        true => (0..groups.len()).collect(),
        false => Vec::new(),
    };
    // Named activations are linear from the start: without fine-tuning there is nothing
    // to train.
    let train_on = |train, held_out| {
        let data = train::TrainData { train, held_out };
        let training = train::train(
            base,
            &groups,
            &linear,
            &targets,
            &data,
            &options.train,
            progress,
        )?;
        let fine_tuned = match &training.weights {
            Some(weights) => Some(trained::write_trained(
                base,
                &groups,
                &training.schedule,
                weights,
            )?),
            None => None,
        };
        Ok::<_, Error>((training, fine_tuned))
    };
    let trains = !groups.is_empty() && (options.train.finetune || !named);
    let (training, fine_tuned) = match trains {
        true => {
            let (training, fine_tuned) = train_on(data.train, data.held_out)?;
            (Some(training), fine_tuned)
        }
        false => (None, None),
    };
    // The gates' schedule is the first split's; only fine-tuned weights differ by split.
    let mut fine_tuned: Vec<Option<Model>> = vec![fine_tuned];
    for (train, held_out) in data.more_splits {
        let weights_trained = fine_tuned[0].is_some();
        fine_tuned.push(match weights_trained {
            true => train_on(train, held_out)?.1,
            false => None,
        });
    }
    let dims = latency_dims(original, &ctx.pinned)?;
    let held_out: Vec<Expected> = data
        .splits()
        .map(|(_, held_out)| Expected::of(original, held_out))
        .collect::<Result<_>>()?;
    let splits = (data.splits().zip(&fine_tuned).zip(&held_out))
        .map(|(((train, _), fine_tuned), held_out)| select::Split {
            start: fine_tuned.as_ref().unwrap_or(base),
            // Fine-tuned layers are linear where gates crossed: their folds need no refit.
            refit_to: (options.refit && fine_tuned.is_none())
                .then(|| refit::OriginalValues::new(base, train)),
            held_out,
        })
        .collect();
    let walker = select::Walker {
        original,
        base,
        groups: &groups,
        targets: &targets,
        splits,
        dims: &dims,
        budget: &options.budget,
        seed: options.train.seed,
    };
    let (crossed, uncrossed): (Vec<&GateOutcome>, Vec<&GateOutcome>) = training
        .iter()
        .flat_map(|t| &t.schedule)
        .partition(|o| o.crossed_at.is_some());
    let crossed: Vec<usize> = match (named, &training) {
        (true, None) => linear.clone(),
        _ => crossed.iter().map(|o| o.group).collect(),
    };
    let uncrossed: Vec<usize> = uncrossed.iter().map(|o| o.group).collect();
    let (schedule, alone): (Vec<Vec<usize>>, FoldedAlone) = if fine_tuned[0].is_some() || named {
        // The weights fit one configuration, the gates as training left them: the
        // crossed groups fold together, the others stay as trained.
        let all_crossed = (!crossed.is_empty()).then_some(crossed);
        (all_crossed.into_iter().collect(), FoldedAlone::default())
    } else {
        let (ordered, alone) = if uncrossed.len() > 1 {
            walker.by_fidelity_alone(&uncrossed, ctx, progress)?
        } else {
            (uncrossed, FoldedAlone::default())
        };
        let one_by_one = crossed.into_iter().chain(ordered).map(|g| vec![g]);
        (one_by_one.collect(), alone)
    };
    let walk = walker.walk(&schedule, alone, ctx, progress)?;
    Ok(Learning {
        groups,
        targets,
        training,
        walk,
    })
}

/// `candidate` against `reference` on `data` (intervals at the budget's confidence, the
/// data's groups resampled whole), and whether that fits `budget` over the outputs'
/// kinds: how a model that approximates another is judged.
pub fn judge(
    reference: &Model,
    candidate: &Model,
    data: &Dataset,
    budget: &Budget,
    output_kinds: &[(String, OutputKind)],
    seed: u64,
) -> Result<(Comparison, bool)> {
    let expected = Expected::of(reference, data)?;
    let mut comparison = expected.compare(candidate)?;
    let resampling = Resampling {
        confidence: budget.confidence,
        seed,
    };
    comparison.estimate_intervals(expected.groups(), &resampling);
    let shapes = shape::infer(&reference.graph, &PinnedShapes::default())?;
    let targets = targets(&reference.graph, &shapes, output_kinds)?;
    let fits = budget.admits(&targets, &comparison.outputs);
    Ok((comparison, fits))
}

/// Every input's dims at batch 1.
fn latency_dims(model: &Model, pinned: &PinnedShapes) -> Result<Vec<Vec<usize>>> {
    Ok(crate::calib::sample_dims(model, pinned)?
        .into_iter()
        .map(|d| [vec![1], d].concat())
        .collect())
}
