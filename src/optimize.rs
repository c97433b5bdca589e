//! The optimisation pipeline behind `onnx-shallow optimize`, as a library call.

use serde::Serialize;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::calib::{self, Dataset};
use crate::error::{Error, Result};
use crate::gates::gated::{self, Manifest};
use crate::gates::{self, GateGroup, LearnData, LearnOptions, Learning, Step, Walk};
use crate::ir::shape::{self, PinnedShapes};
use crate::ir::stats::ModelStats;
use crate::ir::{Graph, Model};
use crate::passes::{
    self, Ctx, FoldOptions, FoldRecord, Linearize, Pass, PassStats, PipelineOutcome,
};
use crate::progress::{Progress, Silent, Stage};
use crate::runtime;
use crate::runtime::Engine;
use crate::runtime::bench;
use crate::runtime::compare::{self, Comparison, Tolerance};
use crate::runtime::cost::{Confirmation, Cost, CostCache, CostModel};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Input dims pinned for analysis (the output keeps the declared dims).
    pub pinned: PinnedShapes,
    /// Run only these passes (by name), in pipeline order.
    pub passes: Option<Vec<String>>,
    /// Leave these passes out.
    pub skip_passes: Vec<String>,
    /// Stop after this many rewrites (to bisect a bad one).
    pub max_patches: Option<usize>,
    pub folding: FoldOptions,
    pub cost: Cost,
    /// Keep [`Cost::Measured`]'s measurements in this file between runs (the same cache
    /// and options give the same output).
    pub cost_cache: Option<PathBuf>,
    /// Where measured costs (fold decisions, the selection walk's latency) are timed.
    pub engine: Engine,
    /// Globs of activation node names to replace by identity before folding.
    pub linearize: Vec<String>,
    /// Where long work (folding, learning, verification) tells its progress.
    pub progress: Arc<dyn Progress>,
    /// Standard-normal samples (seed [`VERIFY_SEED`]) the output is verified on.
    pub verify_samples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pinned: PinnedShapes::default(),
            passes: None,
            skip_passes: Vec::new(),
            max_patches: None,
            folding: FoldOptions::default(),
            cost: Cost::default(),
            cost_cache: None,
            engine: Engine::default(),
            linearize: Vec::new(),
            progress: Arc::new(Silent),
            verify_samples: 8,
        }
    }
}

/// Seed of the standard-normal samples outputs are verified on.
pub const VERIFY_SEED: u64 = 0;

/// What a run changed.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub passes: Vec<PassStats>,
    pub before: ModelStats,
    pub after: ModelStats,
    pub folds: Vec<FoldRecord>,
    /// The folds the cost model judged by measurement, timed on the whole model: kept
    /// or dropped. `None` when no fold was judged by measurement.
    pub confirmation: Option<Confirmation>,
    pub activations_removed: Vec<RemovedActivation>,
    /// What the folds left alone that the user would want to know about, and why.
    pub notes: Vec<String>,
    /// What learning found and chose, in a learned run.
    pub learning: Option<Learning>,
    /// How the output was verified before it was returned.
    #[serde(skip)]
    pub verified: Option<Verified>,
    /// The gates read from a model trained with gates (`optimize_from_gates`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<gated::Gate>,
    /// The model after linearisation and before folding, when activations were
    /// linearised: the folds must reproduce it (the original is no longer the reference).
    #[serde(skip)]
    pub fold_reference: Option<Model>,
}

/// An activation the run replaced by identity.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RemovedActivation {
    /// Its (root) node's name.
    pub name: String,
    /// The operator it went by: Relu, Clip, LeakyRelu, PRelu or HardSwish.
    pub op: String,
    /// The learned gate α (1: fully linear) that chose it; `None` when the user named it.
    pub gate: Option<f64>,
}

/// Runs the exact canonical rewrites, then the folds the cost model accepts.
///
/// The output is verified before it is returned (see [`Verified`]): an
/// [`Error::NotReproduced`] when its folds do not reproduce what they started from.
pub fn optimize(model: Model, options: &Options) -> Result<(Model, Report)> {
    let mut ctx = context(options)?;
    let linearize = Linearize::new(&options.linearize);
    let (optimized, mut report) = run_exact(model.clone(), options, &mut ctx, &linearize)?;
    persist(&ctx)?;
    report.verified = Some(verify(&model, &optimized, &report, options)?);
    Ok((optimized, report))
}

/// What the library checked of an output before returning it.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    /// What the folds must reproduce: `original`, or `linearised` (the input with the
    /// activations the run removed replaced by identity).
    pub against: &'static str,
    /// The output against that reference, in tract.
    pub folds: Comparison,
    /// The same in the run's engine, when it is not tract: engines differ in how they run
    /// the folded layers. For a learned run, whose folds are judged on held-out data in
    /// tract, the output in the run's engine against the same output in tract.
    pub in_engine: Option<Comparison>,
    /// The output against the original (not a check: what removing activations cost on
    /// these inputs), when the reference is not the original.
    pub fidelity: Option<Comparison>,
    pub tolerance: Tolerance,
    /// Some fold is exact only away from the border: the comparisons measure its error
    /// instead of checking it.
    pub approximate: bool,
}

impl Verified {
    /// The comparisons of the output with the model the folds started from hold.
    pub fn reproduces(&self) -> bool {
        let within = |c: &Comparison| c.within(&self.tolerance);
        self.approximate || (within(&self.folds) && self.in_engine.iter().all(within))
    }

    /// The output against the original: `fidelity`, or `folds` when that is the original.
    pub fn against_original(&self) -> &Comparison {
        self.fidelity.as_ref().unwrap_or(&self.folds)
    }
}

/// Runs `optimized` and the model its folds started from on standard-normal inputs, in
/// tract and in the run's engine; an error unless they match (or a fold is approximate).
fn verify(
    original: &Model,
    optimized: &Model,
    report: &Report,
    options: &Options,
) -> Result<Verified> {
    let dims = calib::sample_dims(original, &options.pinned)?;
    let inputs = calib::random_inputs(&dims, options.verify_samples, VERIFY_SEED)?;
    let reference = report.fold_reference.as_ref().unwrap_or(original);
    let progress = &*options.progress;
    let in_tract = Stage::begin(progress, "verifying the output in tract", None);
    let folds = compare::compare(reference, optimized, &inputs)?;
    let fidelity = match report.fold_reference {
        Some(_) => Some(compare::compare(original, optimized, &inputs)?),
        None => None,
    };
    drop(in_tract);
    let in_engine = match &options.engine {
        Engine::Tract => None,
        engine => {
            let label = format!("verifying the output in {}", engine.name());
            let _stage = Stage::begin(progress, &label, None);
            Some(compare::compare_in(engine, reference, optimized, &inputs)?)
        }
    };
    let verified = Verified {
        against: match report.fold_reference {
            Some(_) => "linearised",
            None => "original",
        },
        folds,
        in_engine,
        fidelity,
        tolerance: Tolerance::default(),
        approximate: report.folds.iter().any(|f| !f.exact),
    };
    match verified.reproduces() {
        true => Ok(verified),
        false => Err(Error::NotReproduced(Box::new(verified))),
    }
}

/// Learns which activations can go from calibration data, then folds them: the exact
/// rewrites and folds first, then candidates, gate training, and the selection walk
/// under the budget (see [`crate::gates`]). The result is the walk's chosen step: the
/// exact-only model when no step fits the budget.
pub fn optimize_learned(
    model: Model,
    options: &Options,
    data: &LearnData,
    learn: &LearnOptions,
) -> Result<(Model, Report)> {
    let mut ctx = context(options)?;
    let (base, mut report) = run_exact(model.clone(), options, &mut ctx, &Linearize::none())?;
    let learning = gates::learn(&model, &base, data, &mut ctx, learn, &*options.progress)?;
    persist(&ctx)?;
    let mut chosen = learning.walk.model.clone();
    let step = &learning.walk.steps[learning.walk.chosen];
    report.folds.extend(step.folds.iter().cloned());
    report.activations_removed = removed_by_gates(&base, &learning)?;
    report.after = ModelStats::of(&chosen.graph, &options.pinned)?;
    if !report.folds.is_empty() {
        chosen.set_metadata(
            "onnx_shallow.folds",
            serde_json::to_string(&report.folds).expect("folds serialise"),
        );
    }
    let mut verified = verified_on_held_out(&learning.walk, data.held_out);
    verified.in_engine = same_in_engine(&chosen, options)?;
    if !verified.reproduces() {
        return Err(Error::NotReproduced(Box::new(verified)));
    }
    report.verified = Some(verified);
    report.learning = Some(learning);
    Ok((chosen, report))
}

/// `model` run in the run's engine against itself in tract, on standard-normal inputs;
/// nothing when the engine is tract.
fn same_in_engine(model: &Model, options: &Options) -> Result<Option<Comparison>> {
    if let Engine::Tract = options.engine {
        return Ok(None);
    }
    let dims = calib::sample_dims(model, &options.pinned)?;
    let inputs = calib::random_inputs(&dims, options.verify_samples, VERIFY_SEED)?;
    let engine = &options.engine;
    let label = format!("verifying the output in {} against tract", engine.name());
    let _stage = Stage::begin(&*options.progress, &label, None);
    let in_tract = (&Engine::Tract, model);
    compare::compare_runs(in_tract, (engine, model), &inputs).map(Some)
}

/// A learned run's check, on the held-out data: the exact rewrites (the walk's first
/// step) against the original; the chosen step is the fidelity.
fn verified_on_held_out(walk: &Walk, held_out: &Dataset) -> Verified {
    let on_held_out = |step: &Step| Comparison {
        samples: walk.held_out.samples,
        inputs: match walk.held_out.splits {
            1 => format!("{} (held out)", held_out.source()),
            k => format!("{} (each of {k} folds held out once)", held_out.source()),
        },
        groups: walk.held_out.groups,
        confidence: Some(walk.held_out.confidence),
        outputs: step.fidelity.clone(),
    };
    Verified {
        against: "original",
        folds: on_held_out(&walk.steps[0]),
        in_engine: None,
        fidelity: Some(on_held_out(&walk.steps[walk.chosen])),
        tolerance: Tolerance::default(),
        approximate: false,
    }
}

/// A model gated for another engine to train (see [`gates::gated`]), verified.
#[derive(Clone, Debug)]
pub struct Gated {
    /// The gated model, every α at 0.
    pub model: Model,
    pub manifest: Manifest,
    /// What the gates were written into: the original after the exact rewrites and folds.
    pub base: Model,
    pub groups: Vec<GateGroup>,
    /// The gated model against the original in tract, on standard-normal inputs.
    pub verification: Comparison,
}

/// The largest relative error the gated model at α = 0 may show against the original.
pub const GATED_RTOL: f64 = 1e-5;

/// Standard-normal samples the gated model is verified on.
const GATED_SAMPLES: usize = 8;

/// Gates the activations whose removal lets a fold pay (the candidates of a learned
/// run), in standard operators, α = 0: an error unless the result reproduces `model`
/// within [`GATED_RTOL`] in tract. `threshold` goes into the manifest.
pub fn gate(model: Model, options: &Options, threshold: f64) -> Result<Gated> {
    let label = format!(
        "finding the activations worth a gate (timing folds in {})",
        options.engine.name()
    );
    let finding = Stage::begin(&*options.progress, &label, None);
    let mut ctx = context(options)?;
    let (base, _) = run_exact(model.clone(), options, &mut ctx, &Linearize::none())?;
    let groups = gates::candidates(&base.graph, &mut ctx)?;
    drop(finding);
    persist(&ctx)?;
    if groups.is_empty() {
        return Err(Error::graph(
            "no activation is worth a gate: removing none lets a fold pay",
        ));
    }
    let (gated_model, manifest) = gated::write_gates(&base, &groups, threshold)?;
    let dims = calib::sample_dims(&model, &options.pinned)?;
    let inputs = calib::random_inputs(&dims, GATED_SAMPLES, 0)?;
    let verification = compare::compare(&model, &gated_model, &inputs)?;
    let tolerance = Tolerance {
        rtol: GATED_RTOL,
        ..Tolerance::default()
    };
    if let Some(output) = verification.outputs.iter().find(|o| !o.within(&tolerance)) {
        return Err(Error::graph(format!(
            "the gated model at α = 0 differs from the original on output '{}' by {:.2e} \
             relative, more than {GATED_RTOL:e}",
            output.name, output.max_rel_error
        )));
    }
    Ok(Gated {
        model: gated_model,
        manifest,
        base,
        groups,
        verification,
    })
}

/// Folds a model trained with gates (see [`gates::gated`]; the gates are found by their
/// structure): the activations whose α is at or past `threshold` go and the layers
/// around them fold; the others stay as trained, y = (1 − α)·act(x) + α·x. The report's
/// `fold_reference` is what the folds must reproduce; `trained` is what the result
/// approximates where a removed gate's α was below 1.
pub fn optimize_from_gates(
    trained: Model,
    options: &Options,
    threshold: f64,
) -> Result<(Model, Report)> {
    let ungated = gated::ungate(&trained, threshold)?;
    let mut ctx = context(options)?;
    let linearize = Linearize::nodes(&ungated.crossed);
    let (mut model, mut report) = run_exact(ungated.model, options, &mut ctx, &linearize)?;
    persist(&ctx)?;
    model.remove_metadata(gated::MANIFEST_KEY);
    report.before = ModelStats::of(&trained.graph, &options.pinned)?;
    report.activations_removed = ungated
        .gates
        .iter()
        .filter(|g| g.alpha >= threshold)
        .map(|g| RemovedActivation {
            name: g.node.clone(),
            op: g.op.clone(),
            gate: Some(g.alpha),
        })
        .collect();
    report.notes.extend(ungated.notes);
    let trained_below = |g: &&gated::Gate| g.alpha > 0.0 && g.alpha < threshold;
    report
        .notes
        .extend(ungated.gates.iter().filter(trained_below).map(|g| {
            format!(
                "'{}' ({}) kept as trained: its gate α = {:.3} is below the threshold {threshold}",
                g.node, g.op, g.alpha
            )
        }));
    report.gates = ungated.gates;
    report.verified = Some(verify(&trained, &model, &report, options)?);
    Ok((model, report))
}

/// The activations the chosen step removed, with the gate value training left them at.
fn removed_by_gates(base: &Model, learning: &Learning) -> Result<Vec<RemovedActivation>> {
    let step = &learning.walk.steps[learning.walk.chosen];
    let gate_of = |name: &str| {
        let group = learning
            .groups
            .iter()
            .position(|g| g.nodes().any(|n| n == name))?;
        let training = learning.training.as_ref()?;
        training
            .schedule
            .iter()
            .find(|o| o.group == group)
            .map(|o| o.alpha)
    };
    Ok(passes::activations(&base.graph)?
        .into_iter()
        .filter(|a| step.removed.contains(&a.name))
        .map(|a| RemovedActivation {
            op: a.kind.name().to_string(),
            gate: gate_of(&a.name),
            name: a.name,
        })
        .collect())
}

/// The pass context `options` describe: pins, patch budget, folding options, cost model.
fn context(options: &Options) -> Result<Ctx> {
    let mut ctx = Ctx::new(options.pinned.clone(), options.max_patches);
    ctx.folding = options.folding.clone();
    let cache = match (&options.cost, &options.cost_cache) {
        (Cost::Measured, Some(path)) => CostCache::open(path)?,
        _ => CostCache::default(),
    };
    let cost = CostModel::new(options.cost.clone(), options.engine.clone(), cache);
    ctx.cost = cost.into();
    Ok(ctx)
}

/// Keeps the cost model's measurements when it has a cache file.
fn persist(ctx: &Ctx) -> Result<()> {
    ctx.cost.borrow().cache.persist()
}

/// The canonical rewrites, the linearisations and the folds, judged in `ctx`.
fn run_exact(
    mut model: Model,
    options: &Options,
    ctx: &mut Ctx,
    linearize: &Linearize,
) -> Result<(Model, Report)> {
    let before = ModelStats::of(&model.graph, &options.pinned)?;
    // Before any pass builds something the size the file claims.
    let declared = shape::infer(&model.graph, &Default::default())?;
    let analysed = ModelStats::analysis_pins(&model.graph, &declared, &options.pinned);
    runtime::check_runnable(&model, &analysed)?;
    let mut outcome = passes::run_pipeline(
        &select_passes(passes::canonical(), options)?,
        &mut model.graph,
        ctx,
    )?;
    let mut activations_removed = Vec::new();
    let fold_reference = if linearize.is_empty() {
        None
    } else {
        let present = passes::activations(&model.graph)?;
        outcome.add(linearize.run(&mut model.graph, ctx)?);
        activations_removed = gone(present, &model.graph)?;
        Some(model.clone())
    };
    let (folded, confirmation) = run_folds(&mut model, options, ctx)?;
    outcome.extend(folded);
    let after = ModelStats::of(&model.graph, &options.pinned)?;
    let PipelineOutcome {
        passes: stats,
        folds,
        notes,
    } = outcome;
    let cache_note = ctx.cost.borrow().cache.note().map(str::to_string);
    if !folds.is_empty() {
        model.set_metadata(
            "onnx_shallow.folds",
            serde_json::to_string(&folds).expect("folds serialise"),
        );
    }
    let applied: Vec<String> = stats
        .iter()
        .filter(|s| s.patches > 0)
        .map(|s| format!("{}:{}", s.pass, s.patches))
        .collect();
    model.set_metadata("onnx_shallow.passes", applied.join(","));
    model.set_metadata(
        "onnx_shallow.version",
        env!("CARGO_PKG_VERSION").to_string(),
    );
    Ok((
        model,
        Report {
            passes: stats,
            before,
            after,
            folds,
            confirmation,
            activations_removed,
            notes: cache_note.into_iter().chain(notes).collect(),
            fold_reference,
            learning: None,
            verified: None,
            gates: Vec::new(),
        },
    ))
}

/// The fold passes on `model`. When the cost model judged some folds by measurement (not
/// forced by linearised activations, not estimated), the whole model with them is timed
/// against the model without them, and they stay only if it is faster at the ratio's
/// upper bound; otherwise the model is folded again with the forced folds alone.
fn run_folds(
    model: &mut Model,
    options: &Options,
    ctx: &mut Ctx,
) -> Result<(PipelineOutcome, Option<Confirmation>)> {
    let passes = select_passes(passes::folding(), options)?;
    let unfolded = model.clone();
    let start = ctx.patches_applied();
    let label = match options.cost {
        Cost::Macs => "folding".to_string(),
        _ => format!("folding (timing candidates in {})", options.engine.name()),
    };
    let folding = Stage::begin(&*options.progress, &label, None);
    let outcome = passes::run_pipeline(&passes, &mut model.graph, ctx)?;
    drop(folding);
    let judged = judged_by_measurement(&outcome.folds);
    if judged.is_empty() {
        return Ok((outcome, None));
    }
    let judged_applied = ctx.patches_applied();
    let mut forced_only = unfolded;
    ctx.rewind_to(start);
    let mut forced = run_forced_folds(&passes, &mut forced_only, ctx)?;
    let confirmation = confirm_on_whole_model(judged.clone(), &forced_only, model, options, ctx)?;
    if confirmation.as_ref().is_some_and(|c| c.kept) {
        ctx.rewind_to(judged_applied);
        return Ok((outcome, confirmation));
    }
    if confirmation.is_none() {
        forced.notes.push(format!(
            "judged folds dropped, as the whole model could not be timed to confirm them \
             (dims other than the batch are free: pin them with --input-shape): {}",
            judged.join(", ")
        ));
    }
    *model = forced_only;
    Ok((forced, confirmation))
}

/// The layers made by the folds the cost model judged by measurement: not forced, not
/// estimated.
fn judged_by_measurement(folds: &[FoldRecord]) -> Vec<String> {
    folds
        .iter()
        .filter(|f| !f.forced && !f.verdict.estimate)
        .map(|f| f.result.clone())
        .collect()
}

/// The fold passes on `model` folding only what linearised activations force.
fn run_forced_folds(
    passes: &[Box<dyn Pass>],
    model: &mut Model,
    ctx: &mut Ctx,
) -> Result<PipelineOutcome> {
    let asked = std::mem::replace(&mut ctx.folding.forced_only, true);
    let outcome = passes::run_pipeline(passes, &mut model.graph, ctx);
    ctx.folding.forced_only = asked;
    outcome
}

/// The whole model `with` the `judged` folds timed against the model `without` them in
/// the run's engine; `None` when its dims are not all fixed (or the cost is estimated).
fn confirm_on_whole_model(
    judged: Vec<String>,
    without: &Model,
    with: &Model,
    options: &Options,
    ctx: &Ctx,
) -> Result<Option<Confirmation>> {
    let dims = match bench::runtime_input_dims(without, &options.pinned) {
        Ok(dims) => dims,
        Err(Error::DynamicInput { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let label = format!(
        "confirming the judged folds on the whole model (timing in {})",
        options.engine.name()
    );
    let _confirming = Stage::begin(&*options.progress, &label, None);
    let judgement = ctx.cost.borrow_mut().judge_whole(without, with, &dims)?;
    Ok(judgement.map(|j| Confirmation::of(judged, &j)))
}

/// The activations of `before` that `graph` no longer has.
fn gone(before: Vec<passes::NamedActivation>, graph: &Graph) -> Result<Vec<RemovedActivation>> {
    let remaining: HashSet<String> = passes::activations(graph)?
        .into_iter()
        .map(|a| a.name)
        .collect();
    Ok(before
        .into_iter()
        .filter(|a| !remaining.contains(&a.name))
        .map(|a| RemovedActivation {
            op: a.kind.name().to_string(),
            name: a.name,
            gate: None,
        })
        .collect())
}

/// An unknown name in [`Options::passes`] or `skip_passes` is an error listing the known
/// ones.
fn check_pass_names(options: &Options) -> Result<()> {
    let all: Vec<Box<dyn Pass>> = passes::canonical()
        .into_iter()
        .chain(passes::folding())
        .collect();
    let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
    let requested = options.passes.iter().flatten().chain(&options.skip_passes);
    match requested
        .into_iter()
        .find(|name| !known.contains(&name.as_str()))
    {
        Some(unknown) => Err(Error::Usage(format!(
            "unknown pass '{unknown}'; the passes are: {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The pipeline filtered by [`Options::passes`] and `skip_passes`.
fn select_passes(pipeline: Vec<Box<dyn Pass>>, options: &Options) -> Result<Vec<Box<dyn Pass>>> {
    check_pass_names(options)?;
    let only = |p: &dyn Pass| {
        options
            .passes
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == p.name()))
    };
    let skipped = |p: &dyn Pass| options.skip_passes.iter().any(|n| n == p.name());
    Ok(pipeline
        .into_iter()
        .filter(|p| only(p.as_ref()) && !skipped(p.as_ref()))
        .collect())
}

/// Parses `name:1,3,224,224`.
pub fn parse_input_shape(spec: &str) -> Result<(String, Vec<usize>)> {
    let bad = || {
        Error::invalid(
            "input_shape",
            format!("'{spec}'"),
            "NAME:D1,D2,… with positive numbers",
        )
    };
    let (name, dims) = spec.rsplit_once(':').ok_or_else(bad)?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
        .collect::<Option<Vec<_>>>();
    match dims {
        Some(dims) if !name.is_empty() && !dims.is_empty() => Ok((name.to_string(), dims)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, OpKind};
    use crate::passes::test_models::{conv_attrs, count, model, weights};
    use crate::runtime::cost::Verdict;

    /// x → Conv_0 → Relu_1 → Conv_2 → Relu_3 → Conv_4 → Conv_5 → y, 1×1 convs on
    /// [1, 4, 6, 6]: Conv_4 and Conv_5 fold when the cost model says so; Conv_0 and Conv_2
    /// fold when Relu_1 is linearised.
    fn two_chains() -> Model {
        let layer = |i: u64| weights(&[4, 4, 1, 1], i);
        let conv = || conv_attrs(&[0; 4], &[1, 1], 1);
        model(
            ModelBuilder::new(13)
                .input("x", &[1, 4, 6, 6])
                .initializer("w0", layer(0))
                .initializer("w2", layer(2))
                .initializer("w4", layer(4))
                .initializer("w5", layer(5))
                .node("Conv", &["x", "w0"], &["a"], conv())
                .node("Relu", &["a"], &["r"], Attributes::default())
                .node("Conv", &["r", "w2"], &["b"], conv())
                .node("Relu", &["b"], &["s"], Attributes::default())
                .node("Conv", &["s", "w4"], &["c"], conv())
                .node("Conv", &["c", "w5"], &["y"], conv())
                .output("y"),
        )
    }

    /// A cost under which every region cut out of the graph folds at half its time, and
    /// the whole model (which still has Relu_3) with the judged folds runs at
    /// `whole_ratio` of the model without them.
    fn whole_model_at(whole_ratio: f64) -> Cost {
        let decide = move |original: &Model, _: &Model| {
            let whole = original.graph.nodes().any(|(_, n)| n.kind == OpKind::Relu);
            Verdict::exact(1.0, if whole { whole_ratio } else { 0.5 })
        };
        Cost::Custom(Arc::new(decide))
    }

    fn optimized(cost: Cost, linearize: &[&str]) -> (Model, Report) {
        let options = Options {
            cost,
            linearize: linearize.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        };
        optimize(two_chains(), &options).expect("the run is verified")
    }

    #[test]
    fn judged_folds_stay_when_the_whole_model_is_faster_with_them() {
        let (model, report) = optimized(whole_model_at(0.9), &[]);
        assert_eq!(count(&model, "Conv"), 3);
        assert_eq!(report.folds.len(), 1);
        let confirmation = report.confirmation.expect("the judged fold was confirmed");
        assert!(confirmation.kept);
        assert_eq!(confirmation.folds, [report.folds[0].result.clone()]);
        assert_eq!(
            (confirmation.ratio, confirmation.standard_error),
            (0.9, 0.0)
        );
    }

    #[test]
    fn judged_folds_go_when_the_whole_model_is_not_faster_with_them() {
        let (model, report) = optimized(whole_model_at(1.02), &[]);
        assert_eq!(count(&model, "Conv"), 4);
        assert!(report.folds.is_empty(), "{:?}", report.folds);
        let confirmation = report.confirmation.expect("the judged fold was timed");
        assert!(!confirmation.kept);
        assert_eq!(confirmation.folds, ["Conv_5.folded"]);
        let metadata = model.metadata("onnx_shallow.passes").unwrap_or_default();
        assert!(!metadata.contains("fold_conv_chains"), "{metadata}");
    }

    #[test]
    fn forced_folds_stay_when_the_judged_ones_go() {
        let (model, report) = optimized(whole_model_at(1.02), &["Relu_1"]);
        assert_eq!(
            count(&model, "Conv"),
            3,
            "Conv_0 ∘ Conv_2 folded, Conv_4 and Conv_5 not"
        );
        assert_eq!(report.folds.len(), 1);
        assert!(report.folds[0].forced);
        let confirmation = report.confirmation.expect("the judged fold was timed");
        assert_eq!((confirmation.folds.len(), confirmation.kept), (1, false));
    }

    #[test]
    fn folds_estimated_in_macs_are_not_timed_on_the_whole_model() {
        let (model, report) = optimized(Cost::Macs, &[]);
        assert_eq!(count(&model, "Conv"), 3);
        assert!(report.confirmation.is_none());
    }
}
