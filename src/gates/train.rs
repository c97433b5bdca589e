//! Training the gates by distillation from the original model.
//!
//! Every candidate activation becomes y' = (1 − α_g)·act(x) + α_g·x, one α per group. The
//! loss is the distillation loss against the original model plus λ(t)·Σ_g w_g·(1 − α_g),
//! w_g the group's measured gain (normalised), λ rising geometrically over the run: with
//! frozen weights and α = 0 the distillation gradient is exactly zero, so the push comes
//! from the regulariser, and a group crosses the threshold once its gain outweighs the
//! damage it does. The order of the crossings is the gate schedule.
//!
//! Only the region downstream of the first gate is executed with gradients; what it reads
//! from before (and the teacher's values) is computed with tract, once, or once per epoch
//! on that epoch's augmented images. A group that crosses the threshold is held at 1 from
//! then on, so later training (and fine-tuned weights) see the function that will be
//! written.

use ndarray::{ArrayD, Axis};
use serde::Serialize;

use crate::calib::ModelInputs;
use crate::calib::augment::augment;
use crate::calib::random::{Rng, shuffle};
use crate::error::{Error, Result};
use crate::exec::{Executor, Gate, Params, Wanted};
use crate::gates::GateGroup;
use crate::gates::loss::{self, OutputKind, Target};
use crate::ir::extract::probe;
use crate::ir::{Graph, Model};
use crate::runtime;

/// λ at the first and at the last step, relative to the normalised gains.
const LAMBDA_RANGE: (f64, f64) = (1e-3, 10.0);
/// Adam's moment decays.
const BETAS: (f64, f64) = (0.9, 0.999);
/// Steps a run takes at least when `epochs` is not given.
const DEFAULT_STEPS: usize = 240;

#[derive(Clone, Debug, Serialize)]
pub struct TrainOptions {
    /// Passes over the training data; `None` picks enough for a few hundred steps.
    pub epochs: Option<usize>,
    pub batch: usize,
    /// Step size of the gates (and of the weights with `finetune`, scaled down).
    pub lr: f64,
    pub threshold: f64,
    pub finetune: bool,
    /// Each epoch trains on a new random crop and flip of every (image) sample, the
    /// teacher's targets computed on it.
    pub augment: bool,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: None,
            batch: 16,
            lr: 0.05,
            threshold: 0.9,
            finetune: false,
            augment: false,
            seed: 0,
        }
    }
}

/// Where one group ended.
#[derive(Clone, Debug, Serialize)]
pub struct GateOutcome {
    pub group: usize,
    /// The step at which α crossed the threshold, if it did.
    pub crossed_at: Option<usize>,
    pub alpha: f64,
}

/// What training found: the groups in schedule order (safest first), and the loss curve.
#[derive(Clone, Debug, Serialize)]
pub struct Training {
    pub schedule: Vec<GateOutcome>,
    pub steps: usize,
    /// Mean distillation loss per epoch.
    pub losses: Vec<f64>,
    /// The fine-tuned weights, with `finetune`.
    #[serde(skip)]
    pub weights: Option<Params<f32>>,
}

/// Progress of a run, for a progress bar: (step, steps, loss, gates past the threshold).
pub type OnStep<'a> = dyn FnMut(usize, usize, f64, usize) + 'a;

/// Trains one gate per group of `groups` on `model` (canonical, exact folds applied) to
/// reproduce `model` itself on `inputs`.
pub fn train(
    model: &Model,
    groups: &[GateGroup],
    targets: &[Target],
    inputs: &ModelInputs,
    options: &TrainOptions,
    on_step: &mut OnStep,
) -> Result<Training> {
    let region = Region::of(&model.graph, groups, targets)?;
    let data = region.data(model, inputs)?;
    let executor = Executor::new(
        &model.graph,
        &region.feeds,
        &region.outputs,
        region.gates.clone(),
    )?;
    let mut params = Params::<f32>::new(&executor, &model.graph)?;
    for (g, group) in groups.iter().enumerate() {
        params.alpha[g] = initial_alpha(group) as f32;
    }
    let gains = normalised_gains(groups);
    let samples = inputs.samples();
    let batch = options.batch.clamp(1, samples.max(1));
    let per_epoch = samples.div_ceil(batch);
    let epochs = options
        .epochs
        .unwrap_or_else(|| DEFAULT_STEPS.div_ceil(per_epoch).clamp(1, 50));
    let steps = epochs * per_epoch;
    let mut state = State::new(groups.len(), &params, options);
    let mut rng = Rng::new(options.seed);
    let mut losses = Vec::with_capacity(epochs);
    for _ in 0..epochs {
        let augmented = if options.augment {
            Some(region.data(model, &augmented(inputs, &mut rng)?)?)
        } else {
            None
        };
        let epoch_data = augmented.as_ref().unwrap_or(&data);
        let mut epoch_loss = 0.0;
        for rows in shuffled_batches(samples, batch, &mut rng) {
            let (feeds, teacher) = epoch_data.rows(&rows);
            let forward = executor.forward(&feeds, &params, true)?;
            let distillation =
                loss::distillation(&region.targets, &teacher, &forward.outputs, &data.variances);
            let wanted = Wanted {
                weights: options.finetune,
                inputs: false,
            };
            let gradients =
                executor.backward(&forward, &distillation.gradients, &params, wanted)?;
            let lambda = lambda_at(state.step, steps);
            state.update(&mut params, &gradients, &gains, lambda, options);
            epoch_loss += distillation.loss * rows.len() as f64;
            on_step(state.step, steps, distillation.loss, state.crossed());
        }
        losses.push(epoch_loss / samples as f64);
    }
    Ok(Training {
        schedule: state.schedule(&params),
        steps,
        losses,
        weights: options.finetune.then_some(params),
    })
}

/// Every sample of `inputs` (images), randomly cropped and flipped.
fn augmented(inputs: &ModelInputs, rng: &mut Rng) -> Result<ModelInputs> {
    let mut arrays = inputs.arrays().to_vec();
    augment(&mut arrays, rng);
    ModelInputs::new(arrays, format!("{} (augmented)", inputs.source()))
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

/// λ rises geometrically from the first step to the last.
fn lambda_at(step: usize, steps: usize) -> f64 {
    let t = step as f64 / steps.max(1) as f64;
    LAMBDA_RANGE.0 * (LAMBDA_RANGE.1 / LAMBDA_RANGE.0).powf(t)
}

fn shuffled_batches(samples: usize, batch: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..samples).collect();
    shuffle(&mut order, rng);
    order.chunks(batch).map(<[usize]>::to_vec).collect()
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

    /// The region's feeds and the teacher's targets on every sample, computed with tract.
    fn data(&self, model: &Model, inputs: &ModelInputs) -> Result<RegionData> {
        let names: Vec<&str> = self
            .feeds
            .iter()
            .chain(&self.outputs)
            .map(String::as_str)
            .collect();
        let mut values = runtime::run_all(&probe(model, &names)?, inputs, runtime::RUN_BATCH)?;
        let teacher = values.split_off(self.feeds.len());
        let variances = self
            .targets
            .iter()
            .zip(&teacher)
            .map(|(t, values)| match t.kind {
                OutputKind::Regression => loss::variance(values),
                OutputKind::Class => 1.0,
            })
            .collect();
        Ok(RegionData {
            feeds: values,
            teacher,
            variances,
        })
    }
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

/// What training reads, over all samples.
struct RegionData {
    feeds: Vec<ArrayD<f32>>,
    teacher: Vec<ArrayD<f32>>,
    variances: Vec<f64>,
}

impl RegionData {
    fn rows(&self, rows: &[usize]) -> (Vec<ArrayD<f32>>, Vec<ArrayD<f32>>) {
        let pick =
            |arrays: &[ArrayD<f32>]| arrays.iter().map(|a| a.select(Axis(0), rows)).collect();
        (pick(&self.feeds), pick(&self.teacher))
    }
}

/// The optimiser's state: Adam on the gates (held in [0, 1]) and on the weights.
struct State {
    step: usize,
    crossed_at: Vec<Option<usize>>,
    alpha_moments: Vec<(f64, f64)>,
    weight_moments: Vec<(ArrayD<f32>, ArrayD<f32>)>,
}

impl State {
    fn new(groups: usize, params: &Params<f32>, options: &TrainOptions) -> State {
        let zeros = |w: &ArrayD<f32>| ArrayD::zeros(w.raw_dim());
        State {
            step: 0,
            crossed_at: vec![None; groups],
            alpha_moments: vec![(0.0, 0.0); groups],
            weight_moments: if options.finetune {
                params
                    .weights
                    .values()
                    .map(|w| (zeros(w), zeros(w)))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn update(
        &mut self,
        params: &mut Params<f32>,
        gradients: &crate::exec::Gradients<f32>,
        gains: &[f64],
        lambda: f64,
        options: &TrainOptions,
    ) {
        self.step += 1;
        let t = self.step as i32;
        let correction = (1.0 - BETAS.0.powi(t), 1.0 - BETAS.1.powi(t));
        for (g, &gain) in gains.iter().enumerate() {
            if self.crossed_at[g].is_some() {
                params.alpha[g] = 1.0;
                continue;
            }
            // ∂/∂α of λ·w·(1 − α) is −λ·w.
            let grad = gradients.alpha[g] - lambda * gain;
            let (m, v) = &mut self.alpha_moments[g];
            *m = BETAS.0 * *m + (1.0 - BETAS.0) * grad;
            *v = BETAS.1 * *v + (1.0 - BETAS.1) * grad * grad;
            let step = options.lr * (*m / correction.0) / ((*v / correction.1).sqrt() + 1e-12);
            let alpha = (params.alpha[g] as f64 - step).clamp(0.0, 1.0);
            params.alpha[g] = alpha as f32;
            if alpha >= options.threshold {
                self.crossed_at[g] = Some(self.step);
                params.alpha[g] = 1.0;
            }
        }
        let lr = options.lr * 1e-3;
        for ((weight, gradient), (m, v)) in params
            .weights
            .values_mut()
            .zip(gradients.weights.values())
            .zip(&mut self.weight_moments)
        {
            adam_step(weight, gradient, m, v, lr, correction);
        }
    }

    fn crossed(&self) -> usize {
        self.crossed_at.iter().flatten().count()
    }

    /// Crossed groups by when they crossed, then the rest by how far they got.
    fn schedule(&self, params: &Params<f32>) -> Vec<GateOutcome> {
        let mut outcomes: Vec<GateOutcome> = (0..self.crossed_at.len())
            .map(|g| GateOutcome {
                group: g,
                crossed_at: self.crossed_at[g],
                alpha: params.alpha[g] as f64,
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
