//! Training the gates (and, with `finetune`, the weights) by distillation from the
//! original model.
//!
//! Every candidate activation becomes y' = (1 − α_g)·act(x) + α_g·x, one α per group. The
//! loss is the distillation loss against the original model (plus cross-entropy on the
//! labels, when the data has them and `label_weight` > 0) plus λ(t)·Σ_g w_g·(1 − α_g),
//! w_g the group's measured gain (normalised), λ rising geometrically over the run: with
//! frozen weights and α = 0 the distillation gradient is exactly zero, so the push comes
//! from the regulariser, and a group crosses the threshold once its gain outweighs the
//! damage it does. The order of the crossings is the gate schedule. Groups given as
//! `linear` are held at 1 from the start (the user named their activations).
//!
//! Data streams: each step reads its batch (randomly cropped when the data augments) and
//! runs the original on it in tract, for the teacher's targets and for what the trained
//! region reads from before the first gate; only the region downstream of the first gate
//! runs with gradients. Memory is the batch's, whatever the size of the data.
//!
//! With `finetune`, the weights follow AdamW with a warm-up then cosine learning rate;
//! the held-out data is measured every `eval_every` steps, and the weights folded are the
//! best measured since the gates last changed which groups are linear (weights fit one
//! configuration of the gates). A `checkpoint` keeps the whole state on disk, so a
//! stopped run resumes where it stopped and ends as an uninterrupted one would.

use std::path::PathBuf;

use ndarray::ArrayD;
use serde::Serialize;

use crate::calib::{Dataset, ModelInputs};
use crate::error::{Error, Result};
use crate::exec::{Executor, Gate, Params, Wanted};
use crate::gates::GateGroup;
use crate::gates::checkpoint;
use crate::gates::loss::{self, OutputKind, Target};
use crate::ir::extract::probe;
use crate::ir::{Graph, Model};
use crate::progress::{Progress, Stage};
use crate::runtime::{self, Runner};

/// λ at the first and at the last step, relative to the normalised gains.
const LAMBDA_RANGE: (f64, f64) = (1e-3, 10.0);
/// Adam's moment decays.
const BETAS: (f64, f64) = (0.9, 0.999);
/// Steps a run takes at least when neither `epochs` nor `steps` is given.
const DEFAULT_STEPS: usize = 240;
/// Held-out measurements over a fine-tuning run when `eval_every` is not given.
const DEFAULT_EVALUATIONS: usize = 10;
/// Samples the regression targets' variances are estimated on.
const VARIANCE_SAMPLES: usize = 256;

#[derive(Clone, Debug, Serialize)]
pub struct TrainOptions {
    /// Passes over the training data; `None` picks enough for a few hundred steps.
    pub epochs: Option<usize>,
    /// Steps to take, whatever an epoch's length (instead of `epochs`).
    pub steps: Option<usize>,
    pub batch: usize,
    /// Step size of the gates.
    pub lr: f64,
    /// Peak step size of the weights with `finetune`.
    pub weight_lr: f64,
    /// The fraction of the steps the weights' step size warms up over, linearly, before
    /// its cosine decay to zero.
    pub warmup: f64,
    /// Decoupled weight decay (AdamW), per unit of step size.
    pub weight_decay: f64,
    pub threshold: f64,
    pub finetune: bool,
    /// Weight of the cross-entropy on labels, when the data has labels.
    pub label_weight: f64,
    /// Measure the held-out data every this many steps (with `finetune`).
    pub eval_every: Option<usize>,
    pub seed: u64,
    /// Where the training state is kept, and how often.
    #[serde(skip)]
    pub checkpoint: Option<Checkpointing>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: None,
            steps: None,
            batch: 16,
            lr: 0.05,
            weight_lr: 5e-5,
            warmup: 0.05,
            weight_decay: 0.0,
            threshold: 0.9,
            finetune: false,
            label_weight: 1.0,
            eval_every: None,
            seed: 0,
            checkpoint: None,
        }
    }
}

/// A training state kept on disk.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    pub dir: PathBuf,
    /// Save every this many steps (and at the end).
    pub every: usize,
    /// Save and stop after this many steps of this call (to be resumed by calling again).
    pub stop_after: Option<usize>,
}

/// Where one group ended.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct GateOutcome {
    pub group: usize,
    /// The step at which α crossed the threshold, if it did.
    pub crossed_at: Option<usize>,
    pub alpha: f64,
}

/// One measurement of the student on the held-out data.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Evaluation {
    pub step: usize,
    /// Training samples read up to this step, repeats counted.
    pub samples_seen: usize,
    /// The lowest top-1 agreement with the original over class outputs.
    pub agreement: Option<f64>,
    /// The distillation loss.
    pub loss: f64,
    /// Top-1 accuracy against the labels, when the data has them.
    pub accuracy: Option<f64>,
    /// Groups linear at this step.
    pub linear: usize,
}

/// What training found: the groups in schedule order (safest first), and the loss curve.
#[derive(Clone, Debug, Serialize)]
pub struct Training {
    pub schedule: Vec<GateOutcome>,
    pub steps: usize,
    /// Mean distillation loss per epoch (the last one may be partial).
    pub losses: Vec<f64>,
    /// The held-out measurements, with `finetune`.
    pub evaluations: Vec<Evaluation>,
    /// The step whose weights are kept, with `finetune`.
    pub best_step: Option<usize>,
    /// Training samples read, with repeats.
    pub samples_seen: usize,
    pub throughput: Throughput,
    /// The fine-tuned weights, with `finetune`.
    #[serde(skip)]
    pub weights: Option<Params<f32>>,
}

/// How fast the training steps this process ran went (a resumed run counts from where it
/// resumed): their samples and wall time, held-out evaluations and checkpoints excluded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
}

impl Throughput {
    fn add(&mut self, samples: usize, took: std::time::Duration) {
        self.samples += samples;
        self.seconds += took.as_secs_f64();
        self.samples_per_second = self.samples as f64 / self.seconds.max(f64::MIN_POSITIVE);
    }
}

/// The data training reads.
pub struct TrainData<'a> {
    pub train: &'a Dataset,
    pub held_out: &'a Dataset,
}

/// Trains one gate per group of `groups` on `model` (canonical, exact folds applied) to
/// reproduce `model` itself on the data; the groups in `linear` are linear throughout.
pub fn train(
    model: &Model,
    groups: &[GateGroup],
    linear: &[usize],
    targets: &[Target],
    data: &TrainData,
    options: &TrainOptions,
    progress: &dyn Progress,
) -> Result<Training> {
    let region = Region::of(&model.graph, groups, targets)?;
    let teacher_model = region.teacher(model)?;
    let teacher = Runner::new(&teacher_model, runtime::RUN_BATCH);
    let executor = Executor::new(
        &model.graph,
        &region.feeds,
        &region.outputs,
        region.gates.clone(),
    )?;
    let samples = data.train.len();
    let batch = options.batch.clamp(1, samples.max(1));
    let per_epoch = samples.div_ceil(batch);
    let steps = options.steps.unwrap_or_else(|| {
        let epochs = options
            .epochs
            .unwrap_or_else(|| DEFAULT_STEPS.div_ceil(per_epoch).clamp(1, 50));
        epochs * per_epoch
    });
    let stage = Stage::begin(progress, "training gates", Some(steps as u64));
    let eval_every = options
        .eval_every
        .or(options
            .finetune
            .then(|| steps.div_ceil(DEFAULT_EVALUATIONS)))
        .map(|every| every.max(1));
    let labels = match options.label_weight > 0.0 {
        true => data.train.labels(),
        false => None,
    };
    let fingerprint = checkpoint::fingerprint(model, groups, linear, data, options, steps);
    let resumed = match &options.checkpoint {
        Some(c) => checkpoint::load(&c.dir, &fingerprint)?,
        None => None,
    };
    let mut run = match resumed {
        Some(state) => state,
        None => {
            let variances = region.variances(&teacher, data.train, batch)?;
            State::start(&executor, model, groups, linear, variances, options)?
        }
    };
    let trainer = Trainer {
        region: &region,
        teacher: &teacher,
        executor: &executor,
        data,
        options,
        labels: labels.as_deref(),
        steps,
        batch,
    };
    let mut order = (usize::MAX, Vec::new());
    let first_step = run.step;
    stage.advance(first_step as u64);
    if first_step == 0 && eval_every.is_some() {
        // Where training starts: the weights it should beat.
        let evaluation = trainer.evaluate(&run.params, 0, run.crossed())?;
        run.record(evaluation);
    }
    let mut throughput = Throughput::default();
    while run.step < steps {
        let epoch = run.step / per_epoch;
        if order.0 != epoch {
            order = (epoch, data.train.epoch_order(options.seed, epoch as u64));
        }
        let within = run.step % per_epoch;
        let positions = &order.1[within * batch..((within + 1) * batch).min(samples)];
        let started = std::time::Instant::now();
        let loss = trainer.step(&mut run, positions, epoch)?;
        throughput.add(positions.len(), started.elapsed());
        if eval_every.is_some_and(|every| run.step % every == 0 || run.step == steps) {
            let evaluation = trainer.evaluate(&run.params, run.step, run.crossed())?;
            run.record(evaluation);
        }
        stage.advance(1);
        let held_out = run.evaluations.last().and_then(|e| e.agreement);
        let held_out = held_out.map_or(String::new(), |a| {
            format!(", held-out agreement {:.1} %", 100.0 * a)
        });
        stage.message(&format!(
            "training: loss {loss:.4}, {} past threshold{held_out}, {:.1} samples/s",
            run.crossed(),
            throughput.samples_per_second
        ));
        if let Some(c) = &options.checkpoint {
            let taken = run.step - first_step;
            let stop = c.stop_after.is_some_and(|k| taken >= k) && run.step < steps;
            if stop || run.step % c.every.max(1) == 0 || run.step == steps {
                checkpoint::save(&c.dir, &fingerprint, &run)?;
            }
            if stop {
                return Err(Error::Stopped {
                    step: run.step,
                    checkpoint: c.dir.clone(),
                });
            }
        }
    }
    Ok(run.finish(options, samples, steps, throughput))
}

/// What every step reads, besides the state it changes.
struct Trainer<'a> {
    region: &'a Region,
    teacher: &'a Runner<'a>,
    executor: &'a Executor,
    data: &'a TrainData<'a>,
    options: &'a TrainOptions,
    labels: Option<&'a [i64]>,
    steps: usize,
    batch: usize,
}

impl Trainer<'_> {
    /// One step on the samples at `positions` of the training data; the batch's
    /// distillation loss.
    fn step(&self, run: &mut State, positions: &[usize], epoch: usize) -> Result<f64> {
        let inputs = self.data.train.training_batch(positions, epoch as u64)?;
        let Taught {
            feeds,
            targets: teacher,
        } = self.region.teach(self.teacher, inputs, self.data.train)?;
        let forward = self.executor.forward(&feeds, &run.params, true)?;
        let mut distillation = loss::distillation(
            &self.region.targets,
            &teacher,
            &forward.outputs,
            &run.variances,
        );
        if let Some(labels) = self.labels {
            let rows: Vec<i64> = positions.iter().map(|&p| labels[p]).collect();
            self.add_cross_entropy(&mut distillation.gradients, &forward.outputs, &rows)?;
        }
        let wanted = Wanted {
            weights: self.options.finetune,
            inputs: false,
        };
        let gradients =
            self.executor
                .backward(&forward, &distillation.gradients, &run.params, wanted)?;
        let schedule = Schedule {
            lambda: lambda_at(run.step, self.steps),
            weight_lr: weight_lr_at(self.options, run.step, self.steps),
        };
        run.update(&gradients, &schedule, self.options);
        run.epoch_loss(epoch, distillation.loss, positions.len());
        Ok(distillation.loss)
    }

    /// Adds `label_weight` × the cross-entropy's gradient to the first class target's.
    fn add_cross_entropy(
        &self,
        gradients: &mut [ArrayD<f32>],
        student: &[ArrayD<f32>],
        labels: &[i64],
    ) -> Result<()> {
        let Some(t) = self
            .region
            .targets
            .iter()
            .position(|t| t.kind == OutputKind::Class)
        else {
            return Err(Error::Usage(
                "labels need a class output (an [N, C] output or a Softmax's input) to train on"
                    .into(),
            ));
        };
        let (_, gradient) = loss::cross_entropy(&student[t], labels)?;
        gradients[t].scaled_add(self.options.label_weight as f32, &gradient);
        Ok(())
    }

    /// The student as `params` stand, against the original on the held-out data, read
    /// part by part.
    fn evaluate(&self, params: &Params<f32>, step: usize, linear: usize) -> Result<Evaluation> {
        let held_out = self.data.held_out;
        let labels = held_out.labels();
        let mut tally = Tally::new(self.region.targets.len());
        let mut start = 0;
        for part in held_out.chunks(self.batch) {
            let part = part?;
            let size = part.samples();
            let Taught {
                feeds,
                targets: teacher,
            } = self
                .region
                .teach(self.teacher, part.arrays().to_vec(), held_out)?;
            let student = self.executor.forward(&feeds, params, false)?.outputs;
            let loss = loss::distillation(
                &self.region.targets,
                &teacher,
                &student,
                &vec![1.0; teacher.len()],
            )
            .loss;
            let rows = labels.as_ref().map(|l| &l[start..start + size]);
            tally.add(&self.region.targets, &teacher, &student, rows, loss, size);
            start += size;
        }
        let samples_seen = samples_read(step, self.data.train.len(), self.batch);
        Ok(tally.evaluation(step, samples_seen, linear))
    }
}

/// Sums of a held-out measurement over its parts.
struct Tally {
    agreeing: Vec<usize>,
    /// Samples whose label the student's top-1 matches, when there are labels.
    correct: Option<usize>,
    loss: f64,
    samples: usize,
}

impl Tally {
    fn new(targets: usize) -> Tally {
        Tally {
            agreeing: vec![0; targets],
            correct: None,
            loss: 0.0,
            samples: 0,
        }
    }

    fn add(
        &mut self,
        targets: &[Target],
        teacher: &[ArrayD<f32>],
        student: &[ArrayD<f32>],
        labels: Option<&[i64]>,
        loss: f64,
        size: usize,
    ) {
        let first_class = targets.iter().position(|t| t.kind == OutputKind::Class);
        for (t, target) in targets.iter().enumerate() {
            if target.kind == OutputKind::Class {
                let same = top1(&teacher[t])
                    .zip(top1(&student[t]))
                    .filter(|(a, b)| a == b);
                self.agreeing[t] += same.count();
            }
        }
        if let (Some(labels), Some(t)) = (labels, first_class) {
            let right = top1(&student[t])
                .zip(labels)
                .filter(|(p, l)| *p as i64 == **l);
            *self.correct.get_or_insert(0) += right.count();
        }
        self.loss += loss * size as f64;
        self.samples += size;
    }

    fn evaluation(&self, step: usize, samples_seen: usize, linear: usize) -> Evaluation {
        let n = self.samples.max(1) as f64;
        Evaluation {
            step,
            samples_seen,
            agreement: self.agreeing.iter().map(|&a| a as f64 / n).reduce(f64::min),
            loss: self.loss / n,
            accuracy: self.correct.map(|c| c as f64 / n),
            linear,
        }
    }
}

/// Each row's argmax, classes on axis 1.
fn top1(values: &ArrayD<f32>) -> impl Iterator<Item = usize> + '_ {
    values
        .outer_iter()
        .map(|row| crate::runtime::compare::argmax(row.iter()).unwrap_or(0))
}

/// A LeakyRelu or PRelu whose slopes are all ≥ 0.9 (a network trained for folding
/// elsewhere) starts near linear; everything else starts as it is.
fn initial_alpha(group: &GateGroup) -> f64 {
    use crate::passes::ActivationKind::{LeakyRelu, PRelu};
    let slopes: Vec<f64> = group
        .activations
        .iter()
        .flat_map(|a| match &a.kind {
            LeakyRelu { alpha } => vec![*alpha as f64],
            PRelu { slope } => slope.to_f64().unwrap_or_default(),
            _ => vec![0.0],
        })
        .collect();
    let least = slopes.iter().copied().fold(f64::INFINITY, f64::min);
    if least >= 0.9 { least.min(1.0) } else { 0.0 }
}

/// Gains scaled so that the largest is 1 (all equal when none was measured).
fn normalised_gains(groups: &[GateGroup]) -> Vec<f64> {
    let largest = groups.iter().map(|g| g.gain).fold(0.0, f64::max);
    groups
        .iter()
        .map(|g| {
            if largest > 0.0 {
                g.gain.max(0.0) / largest
            } else {
                1.0
            }
        })
        .collect()
}

/// The training samples `steps` steps read: every epoch reads all `samples`, the last of
/// its batches holding what is left.
fn samples_read(steps: usize, samples: usize, batch: usize) -> usize {
    let per_epoch = samples.div_ceil(batch).max(1);
    (steps / per_epoch) * samples + ((steps % per_epoch) * batch).min(samples)
}

/// The weights' step size at `step` of `steps`: a linear warm-up over the first `warmup`
/// of the steps, then a cosine decay to zero.
fn weight_lr_at(options: &TrainOptions, step: usize, steps: usize) -> f64 {
    let warmup = (options.warmup * steps as f64).round() as usize;
    let peak = options.weight_lr;
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// λ rises geometrically from the first step to the last.
fn lambda_at(step: usize, steps: usize) -> f64 {
    let t = step as f64 / steps.max(1) as f64;
    LAMBDA_RANGE.0 * (LAMBDA_RANGE.1 / LAMBDA_RANGE.0).powf(t)
}

/// The part of the graph training executes: from the values it reads (computed before
/// the first gate) to the targets the gates can change.
struct Region {
    feeds: Vec<String>,
    outputs: Vec<String>,
    targets: Vec<Target>,
    gates: Vec<Gate>,
}

impl Region {
    fn of(graph: &Graph, groups: &[GateGroup], targets: &[Target]) -> Result<Region> {
        let gates: Vec<Gate> = groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| {
                group.activations.iter().map(move |a| Gate {
                    input: a.input.clone(),
                    output: a.output.clone(),
                    group: g,
                })
            })
            .collect();
        let inside = downstream_nodes(graph, &gates);
        let produced_inside = |name: &str| {
            graph
                .value_by_name(name)
                .and_then(|v| graph.producer(v))
                .is_some_and(|p| inside[p.0])
        };
        let mut feeds = Vec::new();
        for (_, node) in graph.nodes().filter(|(id, _)| inside[id.0]) {
            for &v in node.inputs.iter().flatten() {
                let name = &graph.value(v).name;
                if graph.constant(v).is_none() && !produced_inside(name) && !feeds.contains(name) {
                    feeds.push(name.clone());
                }
            }
        }
        let targets: Vec<Target> = targets
            .iter()
            .filter(|t| produced_inside(&t.tensor))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Err(Error::Usage(
                "no output depends on the candidate activations: there is nothing to train".into(),
            ));
        }
        Ok(Region {
            feeds,
            outputs: targets.iter().map(|t| t.tensor.clone()).collect(),
            targets,
            gates,
        })
    }

    /// The original with the region's feeds and targets as outputs.
    fn teacher(&self, model: &Model) -> Result<Model> {
        let names: Vec<&str> = self
            .feeds
            .iter()
            .chain(&self.outputs)
            .map(String::as_str)
            .collect();
        probe(model, &names)
    }

    /// The region's feeds and the teacher's targets on `inputs`, computed in tract.
    fn teach(&self, teacher: &Runner, inputs: Vec<ArrayD<f32>>, data: &Dataset) -> Result<Taught> {
        let mut feeds = teacher.run(&ModelInputs::new(inputs, data.source())?)?;
        let targets = feeds.split_off(self.feeds.len());
        Ok(Taught { feeds, targets })
    }

    /// The teacher's variance of each regression target over the first samples of the
    /// training data (unaugmented, read `batch` at a time); 1 for class targets.
    fn variances(&self, teacher: &Runner, data: &Dataset, batch: usize) -> Result<Vec<f64>> {
        let regression = |t: &Target| t.kind == OutputKind::Regression;
        let mut moments = vec![(0.0, 0.0, 0usize); self.targets.len()];
        if self.targets.iter().any(regression) {
            let first = data.subset(&(0..data.len().min(VARIANCE_SAMPLES)).collect::<Vec<_>>())?;
            for part in first.chunks(batch) {
                let values = self.teach(teacher, part?.arrays().to_vec(), data)?.targets;
                for (moment, values) in moments.iter_mut().zip(&values) {
                    for &v in values {
                        let v = v as f64;
                        *moment = (moment.0 + v, moment.1 + v * v, moment.2 + 1);
                    }
                }
            }
        }
        Ok(self
            .targets
            .iter()
            .zip(moments)
            .map(|(t, (sum, squares, n))| match regression(t) {
                true => {
                    let n = n.max(1) as f64;
                    (squares / n - (sum / n).powi(2)).max(0.0)
                }
                false => 1.0,
            })
            .collect())
    }
}

/// What the teacher computes on a batch: what the region reads, and the targets.
struct Taught {
    feeds: Vec<ArrayD<f32>>,
    targets: Vec<ArrayD<f32>>,
}

/// Which nodes are downstream of a gate (read a gated activation's input, or what such
/// nodes compute), indexed by node id.
fn downstream_nodes(graph: &Graph, gates: &[Gate]) -> Vec<bool> {
    let mut inside = vec![false; graph.nodes.len()];
    let mut stack: Vec<_> = gates
        .iter()
        .filter_map(|g| graph.value_by_name(&g.input))
        .collect();
    while let Some(v) = stack.pop() {
        for &user in graph.users(v) {
            if !inside[user.0] {
                inside[user.0] = true;
                stack.extend(graph.node(user).outputs.iter().flatten());
            }
        }
    }
    inside
}

/// What a step changes: the parameters and the optimiser's state, and what the run has
/// measured so far. All of it is saved in a checkpoint.
pub(crate) struct State {
    pub(crate) step: usize,
    pub(crate) params: Params<f32>,
    pub(crate) crossed_at: Vec<Option<usize>>,
    pub(crate) alpha_moments: Vec<(f64, f64)>,
    /// Per weight, in `params.weights` order: Adam's first and second moments.
    pub(crate) weight_moments: Vec<(ArrayD<f32>, ArrayD<f32>)>,
    pub(crate) gains: Vec<f64>,
    pub(crate) variances: Vec<f64>,
    /// Per epoch: the summed loss and the samples it is over.
    pub(crate) epoch_losses: Vec<(f64, usize)>,
    pub(crate) evaluations: Vec<Evaluation>,
    /// The best weights since the linear groups last changed, and the evaluation.
    pub(crate) best: Option<(Evaluation, Params<f32>)>,
}

/// A step's step sizes and penalty.
struct Schedule {
    lambda: f64,
    weight_lr: f64,
}

impl State {
    fn start(
        executor: &Executor,
        model: &Model,
        groups: &[GateGroup],
        linear: &[usize],
        variances: Vec<f64>,
        options: &TrainOptions,
    ) -> Result<State> {
        let mut params = Params::<f32>::new(executor, &model.graph)?;
        let mut crossed_at = vec![None; groups.len()];
        for (g, group) in groups.iter().enumerate() {
            params.alpha[g] = initial_alpha(group) as f32;
        }
        for &g in linear {
            params.alpha[g] = 1.0;
            crossed_at[g] = Some(0);
        }
        let zeros = |w: &ArrayD<f32>| ArrayD::zeros(w.raw_dim());
        let weight_moments = match options.finetune {
            true => params
                .weights
                .values()
                .map(|w| (zeros(w), zeros(w)))
                .collect(),
            false => Vec::new(),
        };
        Ok(State {
            step: 0,
            crossed_at,
            alpha_moments: vec![(0.0, 0.0); groups.len()],
            weight_moments,
            gains: normalised_gains(groups),
            variances,
            epoch_losses: Vec::new(),
            evaluations: Vec::new(),
            best: None,
            params,
        })
    }

    fn update(
        &mut self,
        gradients: &crate::exec::Gradients<f32>,
        schedule: &Schedule,
        options: &TrainOptions,
    ) {
        self.step += 1;
        let t = self.step as i32;
        let correction = (1.0 - BETAS.0.powi(t), 1.0 - BETAS.1.powi(t));
        for (g, &gain) in self.gains.iter().enumerate() {
            if self.crossed_at[g].is_some() {
                self.params.alpha[g] = 1.0;
                continue;
            }
            // ∂/∂α of λ·w·(1 − α) is −λ·w.
            let grad = gradients.alpha[g] - schedule.lambda * gain;
            let (m, v) = &mut self.alpha_moments[g];
            *m = BETAS.0 * *m + (1.0 - BETAS.0) * grad;
            *v = BETAS.1 * *v + (1.0 - BETAS.1) * grad * grad;
            let step = options.lr * (*m / correction.0) / ((*v / correction.1).sqrt() + 1e-12);
            let alpha = (self.params.alpha[g] as f64 - step).clamp(0.0, 1.0);
            self.params.alpha[g] = alpha as f32;
            if alpha >= options.threshold {
                self.crossed_at[g] = Some(self.step);
                self.params.alpha[g] = 1.0;
            }
        }
        let decay = 1.0 - schedule.weight_lr * options.weight_decay;
        for ((weight, gradient), (m, v)) in self
            .params
            .weights
            .values_mut()
            .zip(gradients.weights.values())
            .zip(&mut self.weight_moments)
        {
            if decay != 1.0 {
                weight.mapv_inplace(|w| w * decay as f32);
            }
            adam_step(weight, gradient, m, v, schedule.weight_lr, correction);
        }
    }

    fn epoch_loss(&mut self, epoch: usize, loss: f64, samples: usize) {
        if self.epoch_losses.len() <= epoch {
            self.epoch_losses.resize(epoch + 1, (0.0, 0));
        }
        let (sum, count) = &mut self.epoch_losses[epoch];
        *sum += loss * samples as f64;
        *count += samples;
    }

    fn crossed(&self) -> usize {
        self.crossed_at.iter().flatten().count()
    }

    /// Keeps `evaluation`, and the weights when they are the best since the linear
    /// groups last changed: the most agreement, then the least loss.
    fn record(&mut self, evaluation: Evaluation) {
        let better = match &self.best {
            None => true,
            Some((best, _)) if best.linear != evaluation.linear => true,
            Some((best, _)) => {
                let key = |e: &Evaluation| (e.agreement.unwrap_or(0.0), -e.loss);
                key(&evaluation) > key(best)
            }
        };
        if better {
            self.best = Some((evaluation.clone(), self.params.clone()));
        }
        self.evaluations.push(evaluation);
    }

    fn finish(
        self,
        options: &TrainOptions,
        samples: usize,
        steps: usize,
        throughput: Throughput,
    ) -> Training {
        let schedule = self.schedule();
        let (best_step, weights) = match (options.finetune, self.best) {
            (false, _) => (None, None),
            (true, Some((evaluation, params))) => (Some(evaluation.step), Some(params)),
            (true, None) => (Some(steps), Some(self.params)),
        };
        Training {
            schedule,
            steps,
            losses: self
                .epoch_losses
                .iter()
                .map(|&(sum, count)| sum / count.max(1) as f64)
                .collect(),
            evaluations: self.evaluations,
            best_step,
            samples_seen: samples_read(steps, samples, options.batch.clamp(1, samples.max(1))),
            throughput,
            weights,
        }
    }

    /// Crossed groups by when they crossed, then the rest by how far they got.
    fn schedule(&self) -> Vec<GateOutcome> {
        let mut outcomes: Vec<GateOutcome> = (0..self.crossed_at.len())
            .map(|g| GateOutcome {
                group: g,
                crossed_at: self.crossed_at[g],
                alpha: self.params.alpha[g] as f64,
            })
            .collect();
        outcomes.sort_by(|a, b| match (a.crossed_at, b.crossed_at) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.group.cmp(&b.group)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => b.alpha.total_cmp(&a.alpha).then(a.group.cmp(&b.group)),
        });
        outcomes
    }
}

fn adam_step(
    weight: &mut ArrayD<f32>,
    gradient: &ArrayD<f32>,
    m: &mut ArrayD<f32>,
    v: &mut ArrayD<f32>,
    lr: f64,
    (c1, c2): (f64, f64),
) {
    let (b1, b2) = (BETAS.0 as f32, BETAS.1 as f32);
    ndarray::Zip::from(weight)
        .and(gradient)
        .and(m)
        .and(v)
        .for_each(|w, &g, m, v| {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let m_hat = *m as f64 / c1;
            let v_hat = *v as f64 / c2;
            *w -= (lr * m_hat / (v_hat.sqrt() + 1e-8)) as f32;
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_step_size_warms_up_linearly_then_decays_on_a_cosine() {
        let options = TrainOptions {
            weight_lr: 1.0,
            warmup: 0.1,
            ..TrainOptions::default()
        };
        let lr = |step| weight_lr_at(&options, step, 100);
        assert_eq!((lr(0), lr(4), lr(9)), (0.1, 0.5, 1.0));
        assert_eq!(lr(10), 1.0);
        assert!(
            (lr(55) - 0.5).abs() < 1e-12,
            "halfway down at the middle of the decay"
        );
        assert!(lr(99) < 1e-3 && lr(99) > 0.0);
        let falling: Vec<f64> = (10..100).map(lr).collect();
        assert!(falling.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn an_epochs_last_batch_reads_only_what_is_left() {
        // 1 554 samples in batches of 16: 97 full batches and one of 2.
        assert_eq!(samples_read(97, 1554, 16), 1552);
        assert_eq!(samples_read(98, 1554, 16), 1554);
        assert_eq!(samples_read(99, 1554, 16), 1570);
        assert_eq!(samples_read(2000, 1554, 16), 20 * 1554 + 40 * 16);
        assert_eq!(samples_read(3, 32, 16), 48);
    }

    fn evaluation(step: usize, agreement: f64, loss: f64, linear: usize) -> Evaluation {
        Evaluation {
            step,
            samples_seen: step,
            agreement: Some(agreement),
            loss,
            accuracy: None,
            linear,
        }
    }

    /// The best weights are the most agreeing (then least lossy) since the linear groups
    /// last changed: weights from before a gate crossed fit another network.
    #[test]
    fn the_best_weights_are_kept_per_configuration_of_the_gates() {
        let mut state = State {
            step: 0,
            params: Params {
                alpha: vec![0.0],
                weights: Default::default(),
            },
            crossed_at: vec![None],
            alpha_moments: vec![(0.0, 0.0)],
            weight_moments: Vec::new(),
            gains: vec![1.0],
            variances: vec![1.0],
            epoch_losses: Vec::new(),
            evaluations: Vec::new(),
            best: None,
        };
        let best = |state: &State| state.best.as_ref().unwrap().0.step;
        state.record(evaluation(1, 0.90, 0.3, 0));
        state.record(evaluation(2, 0.95, 0.2, 0));
        state.record(evaluation(3, 0.95, 0.25, 0));
        assert_eq!(best(&state), 2, "equal agreement: the lower loss");
        state.record(evaluation(4, 0.80, 0.5, 1));
        assert_eq!(
            best(&state),
            4,
            "a gate crossed: earlier weights do not count"
        );
        state.record(evaluation(5, 0.85, 0.4, 1));
        assert_eq!(best(&state), 5);
        assert_eq!(state.evaluations.len(), 5);
    }
}
