//! Refitting folded layers: ridge least squares from a folded layer's input, as the folded
//! network computes it, to what the original network computes at the layer's output.
//! Closed form, no labels; it recovers much of what removing the activations lost.
//!
//! The fit shrinks towards the folded weights (a ridge around them, not around zero), so
//! a layer with more weights than rows moves only where the data says; the strength is
//! chosen on a fifth of the rows held out of the fit (on each fifth in turn when the rows
//! are few), and a layer no strength improves on those rows keeps its folded weights.
//!
//! Conv layers are fitted per group on im2col rows (output positions, a seeded sample of
//! them when there are many), Gemm layers on one row per sample. A fold followed by a
//! constant bias map (an `Add` of a per-position map) is fitted to the target minus the map.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use ndarray::{Array2, ArrayD, Axis, s};
use serde::Serialize;

use crate::calib::Dataset;
use crate::calib::random::{Rng, shuffle};
use crate::error::{Error, Result};
use crate::fold::conv::Conv2d;
use crate::fold::gemm::Dense;
use crate::fold::nodes::as_conv;
use crate::ir::extract::probe;
use crate::ir::shape;
use crate::ir::{Attributes, Graph, Model, NodeId, OpKind, Patch, Tensor, ValueId};
use crate::passes::FoldRecord;
use crate::runtime;

/// Rows of one least-squares problem, at most (a seeded sample of the output positions).
const MAX_ROWS: usize = 32_768;
/// Samples a refit reads, at most: a dense layer has one row per sample, and this many
/// fit its weights (shrunk towards the folded ones) while keeping memory independent of
/// the data set's size.
const MAX_SAMPLES: usize = 4096;
/// Samples read and run at once.
const PART: usize = 64;
/// Ridge strengths tried, relative to the mean diagonal of the Gram matrix.
const RIDGES: [f64; 7] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];
/// The rows are split in this many parts; the strength is chosen on the squared error of
/// each part checked, fitted on the others: the first part only, or every part when the
/// rows are few for the unknowns (`FEW_ROWS`), where one fifth is a handful of rows and a
/// strength chosen on them is chance.
const PARTS: usize = 5;
/// Rows per unknown of a row of Θ below which every part is checked.
const FEW_ROWS: usize = 4;

/// One refitted layer: its error against the original before and after, on the rows
/// held out of the fit.
#[derive(Clone, Debug, Serialize)]
pub struct Refitted {
    pub node: String,
    /// Root-mean-square error over the held-out rows, relative to the target's RMS.
    pub before: f64,
    pub after: f64,
    /// The ridge strength chosen (relative to the Gram matrix's mean diagonal); none when
    /// the folded weights did best.
    pub ridge: Option<f64>,
}

/// A folded layer and what it should compute.
struct Layer {
    node: NodeId,
    /// Its input in the folded network.
    input: String,
    /// The value of the original network it replaces.
    target: String,
    /// A constant map the folded network adds to the layer's output.
    bias_map: Option<ArrayD<f32>>,
}

/// What the original network computes on the data refits fit, computed once per value and
/// kept: a selection walk refits the same layers again and again (each group alone, then
/// on top of others), towards the same targets, often from inputs the folds upstream
/// left as they were.
pub struct OriginalValues<'a> {
    original: &'a Model,
    data: &'a Dataset,
    /// By value name and number of samples (see `fewer_samples`).
    computed: RefCell<HashMap<(String, usize), ArrayD<f32>>>,
}

impl<'a> OriginalValues<'a> {
    pub fn new(original: &'a Model, data: &'a Dataset) -> OriginalValues<'a> {
        OriginalValues {
            original,
            data,
            computed: RefCell::default(),
        }
    }

    /// The values named `names` in the original on `samples`.
    fn values(&self, names: &[&str], samples: &Dataset) -> Result<Vec<ArrayD<f32>>> {
        let key = |name: &str| (name.to_string(), samples.len());
        let missing: BTreeSet<&str> = {
            let computed = self.computed.borrow();
            names
                .iter()
                .copied()
                .filter(|&n| !computed.contains_key(&key(n)))
                .collect()
        };
        let missing: Vec<&str> = missing.into_iter().collect();
        if !missing.is_empty() {
            let values = run_on(&probe(self.original, &missing)?, samples)?;
            let mut computed = self.computed.borrow_mut();
            for (name, value) in missing.iter().zip(values) {
                computed.insert(key(name), value);
            }
        }
        let computed = self.computed.borrow();
        Ok(names.iter().map(|&n| computed[&key(n)].clone()).collect())
    }
}

/// `model`'s outputs on every sample of `samples`, read part by part.
fn run_on(model: &Model, samples: &Dataset) -> Result<Vec<ArrayD<f32>>> {
    runtime::Runner::new(model, runtime::RUN_BATCH).run_parts(samples.chunks(PART))
}

/// Refits every layer made by a fold in `folds` that spans linearised activations
/// (`forced`), in `folded`, towards the original of `values`. `earlier` and then `folds`
/// are the records of the folds that made `folded` from a copy of the original's graph;
/// only the layers of `folds` are refit.
pub fn refit(
    folded: &mut Model,
    values: &OriginalValues,
    earlier: &[FoldRecord],
    folds: &[FoldRecord],
    seed: u64,
) -> Result<Vec<Refitted>> {
    let layers = refittable(folded, values.original, earlier, folds)?;
    if layers.is_empty() {
        return Ok(Vec::new());
    }
    let target_names: Vec<&str> = layers.iter().map(|l| l.target.as_str()).collect();
    let samples =
        values
            .data
            .subset(&fewer_samples(values.original, &target_names, values.data)?)?;
    let mut rng = Rng::new(seed);
    let mut refitted = Vec::new();
    for (layer, (x, y)) in layers
        .iter()
        .zip(inputs_and_targets(folded, values, &layers, &samples)?)
    {
        let y = match &layer.bias_map {
            Some(map) => &y - map,
            None => y,
        };
        if let Some(result) = refit_layer(folded, layer, &x, &y, &mut rng)? {
            refitted.push(result);
        }
    }
    Ok(refitted)
}

/// What each layer reads in `folded` and what it should compute (the original's value), on
/// `samples`. What a layer reads is the original's value too where everything upstream is
/// as in the original; the original runs once for all it provides, and only for what it
/// has not computed before.
fn inputs_and_targets(
    folded: &Model,
    values: &OriginalValues,
    layers: &[Layer],
    samples: &Dataset,
) -> Result<Vec<(ArrayD<f32>, ArrayD<f32>)>> {
    let upstream = |model: &Model, name: &str| {
        let graph = &model.graph;
        graph.value_by_name(name).map(|v| upstream_nodes(graph, v))
    };
    let as_original: Vec<bool> = layers
        .iter()
        .map(|l| {
            upstream(folded, &l.input)
                .is_some_and(|u| Some(u) == upstream(values.original, &l.input))
        })
        .collect();
    let inputs_where = |original: bool| -> Vec<&str> {
        let chosen = layers
            .iter()
            .zip(&as_original)
            .filter(|(_, o)| **o == original);
        chosen.map(|(l, _)| l.input.as_str()).collect()
    };
    let wanted: Vec<&str> = layers
        .iter()
        .map(|l| l.target.as_str())
        .chain(inputs_where(true))
        .collect();
    let mut from_original = values.values(&wanted, samples)?.into_iter();
    let targets: Vec<ArrayD<f32>> = from_original.by_ref().take(layers.len()).collect();
    let mut run = match inputs_where(false) {
        names if names.is_empty() => Vec::new(),
        names => run_on(&probe(folded, &names)?, samples)?,
    }
    .into_iter();
    let layer_inputs = as_original
        .iter()
        .map(|&o| if o { from_original.next() } else { run.next() })
        .map(|x| x.expect("one value per layer"));
    Ok(layer_inputs.zip(targets).collect())
}

/// The names of the nodes `value` depends on. Folds and refits rename what they change
/// (`….folded`), and removed activations leave the set, so equal sets in two models of
/// one walk compute equal values.
fn upstream_nodes(graph: &Graph, value: ValueId) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        let Some(node) = graph.producer(value) else {
            continue;
        };
        let node = graph.node(node);
        if nodes.insert(node.name.clone()) {
            pending.extend(node.inputs.iter().flatten());
        }
    }
    nodes
}

/// Samples spread evenly over `data`, as many as give every target `MAX_ROWS` output
/// positions (a conv on a large map needs few samples; a dense layer, all of them), and
/// at most `MAX_SAMPLES`; their positions in `data`.
fn fewer_samples(original: &Model, targets: &[&str], data: &Dataset) -> Result<Vec<usize>> {
    let pins = data
        .input_names()
        .iter()
        .cloned()
        .zip(data.sample_dims())
        .map(|(name, dims)| (name, [&[1], &dims[..]].concat()))
        .collect();
    let shapes = shape::infer(&original.graph, &pins)?;
    let positions = |name: &&str| {
        let dims = shapes
            .get(original.graph.value_by_name(name)?)
            .dims
            .clone()?;
        dims.get(2..)?
            .iter()
            .map(|d| d.known())
            .product::<Option<usize>>()
    };
    let total = data.len();
    let needed = targets
        .iter()
        .map(|t| positions(t).map_or(total, |p| MAX_ROWS.div_ceil(p.max(1))))
        .max()
        .unwrap_or(total)
        .min(total)
        .min(MAX_SAMPLES);
    Ok((0..needed).map(|i| i * total / needed).collect())
}

/// The layers of `folded` that forced folds made and that a refit can rewrite: a Conv or
/// a Gemm whose region's output is a value the original still has. A fold made one such
/// layer per output of its region (several for a fan-out).
fn refittable(
    folded: &Model,
    original: &Model,
    earlier: &[FoldRecord],
    folds: &[FoldRecord],
) -> Result<Vec<Layer>> {
    let history: Vec<&FoldRecord> = earlier.iter().chain(folds).collect();
    let mut layers = Vec::new();
    for (i, fold) in folds.iter().enumerate() {
        if !spans_linearised(folds, i) {
            continue;
        }
        for layer in &fold.layers {
            let Some(node) = folded.graph.node_by_name(&layer.node) else {
                continue; // folded again by a later fold
            };
            let n = folded.graph.node(node);
            if !matches!(n.kind, OpKind::Conv | OpKind::Gemm) {
                continue;
            }
            let stands_for = original_node(&history[..earlier.len() + i], &layer.replaces);
            let Some(replaced) = original.graph.node_by_name(stands_for) else {
                continue;
            };
            let (Some(input), Some(target)) = (n.input(0), original.graph.node(replaced).output(0))
            else {
                continue;
            };
            layers.push(Layer {
                node,
                input: folded.graph.value(input).name.clone(),
                target: original.graph.value(target).name.clone(),
                bias_map: bias_map(folded, node),
            });
        }
    }
    Ok(layers)
}

/// The node of the graph the folds started from that `replaces` (a node when the fold
/// after `before` was applied) stands for: itself, or what an earlier fold's layer
/// stood for.
fn original_node<'a>(before: &[&'a FoldRecord], replaces: &'a str) -> &'a str {
    let found = before.iter().enumerate().rev().find_map(|(j, fold)| {
        let layer = fold.layers.iter().find(|l| l.node == replaces)?;
        Some((j, layer.replaces.as_str()))
    });
    match found {
        Some((j, replaced)) => original_node(&before[..j], replaced),
        None => replaces,
    }
}

/// Fold `i` spans a linearised value, itself or through an earlier fold it folded again.
fn spans_linearised(folds: &[FoldRecord], i: usize) -> bool {
    folds[i].forced
        || folds[i].sources.iter().any(|source| {
            folds[..i]
                .iter()
                .rposition(|f| &f.result == source)
                .is_some_and(|earlier| spans_linearised(folds, earlier))
        })
}

/// The constant a lone `Add` reading the layer's output adds to it.
fn bias_map(model: &Model, node: NodeId) -> Option<ArrayD<f32>> {
    let graph = &model.graph;
    let output = graph.node(node).output(0)?;
    let &[reader] = graph.users(output) else {
        return None;
    };
    let add = graph.node(reader);
    if add.kind != OpKind::Add || graph.is_output(output) {
        return None;
    }
    let other = add.inputs.iter().flatten().find(|&&v| v != output)?;
    let map = graph.constant(*other)?;
    ArrayD::from_shape_vec(map.dims().to_vec(), map.to_f32()?).ok()
}

fn refit_layer(
    model: &mut Model,
    layer: &Layer,
    x: &ArrayD<f32>,
    y: &ArrayD<f32>,
    rng: &mut Rng,
) -> Result<Option<Refitted>> {
    let node = model.graph.node(layer.node);
    let name = node.name.clone();
    match node.kind {
        OpKind::Gemm => refit_gemm(model, layer.node, x, y, rng),
        OpKind::Conv => refit_conv(model, layer.node, x, y, rng),
        _ => Ok(None),
    }
    .map(|fit| {
        fit.map(|fit| Refitted {
            node: name,
            before: fit.relative(fit.sq_before),
            after: fit.relative(fit.sq_after),
            ridge: fit.ridge,
        })
    })
}

/// A Gemm layer: rows are samples.
fn refit_gemm(
    model: &mut Model,
    node: NodeId,
    x: &ArrayD<f32>,
    y: &ArrayD<f32>,
    rng: &mut Rng,
) -> Result<Option<Fit>> {
    let (Ok(x), Ok(y)) = (
        x.view().into_dimensionality::<ndarray::Ix2>(),
        y.view().into_dimensionality::<ndarray::Ix2>(),
    ) else {
        return Ok(None);
    };
    let graph = &model.graph;
    let n = graph.node(node);
    if n.int("transA")?.unwrap_or(0) != 0 {
        return Ok(None);
    }
    let Some(current) = n.input(1).and_then(|b| graph.constant(b)).and_then(|b| {
        let c = n.input(2).and_then(|c| graph.constant(c));
        let trans_b = n.int("transB").ok().flatten().unwrap_or(0) != 0;
        let alpha = n.float("alpha").ok().flatten().unwrap_or(1.0) as f64;
        let beta = n.float("beta").ok().flatten().unwrap_or(1.0) as f64;
        Dense::from_gemm(b, c, trans_b, alpha, beta)
    }) else {
        return Ok(None);
    };
    if current.inputs != x.ncols() || current.outputs != y.ncols() {
        return Ok(None);
    }
    let rows = with_intercept(x.mapv(f64::from));
    let targets = y.mapv(f64::from);
    let fit = Fit::towards(&rows, &targets, &current_theta(&current), rng)?;
    let theta = &fit.theta;
    let refitted = Dense {
        weight: theta
            .slice(s![..current.inputs, ..])
            .t()
            .iter()
            .copied()
            .collect(),
        bias: theta.row(current.inputs).to_vec(),
        inputs: current.inputs,
        outputs: current.outputs,
    };
    let dtype = graph
        .constant(n.input(1).expect("checked"))
        .expect("checked")
        .dtype();
    let (b, c) = refitted.gemm_operands(dtype)?;
    let mut patch = Patch::new(format!("refit >> {}", n.name));
    let x_wire = n.input(0).expect("checked").into();
    let inputs = [
        Some(x_wire),
        Some(patch.constant("B", b)),
        c.map(|c| patch.constant("C", c)),
    ];
    let attributes = Attributes::default().with_int("transB", 1);
    patch.redefine(node, OpKind::Gemm, attributes, &inputs);
    model.graph.apply(patch)?;
    Ok(Some(fit))
}

/// Θ of a dense layer: [inputs + 1, outputs], the bias in the last row.
fn current_theta(dense: &Dense) -> Array2<f64> {
    let mut theta = Array2::zeros((dense.inputs + 1, dense.outputs));
    for o in 0..dense.outputs {
        for i in 0..dense.inputs {
            theta[[i, o]] = dense.weight[o * dense.inputs + i];
        }
        theta[[dense.inputs, o]] = dense.bias[o];
    }
    theta
}

/// A Conv layer: rows are output positions, one problem per group.
fn refit_conv(
    model: &mut Model,
    node: NodeId,
    x: &ArrayD<f32>,
    y: &ArrayD<f32>,
    rng: &mut Rng,
) -> Result<Option<Fit>> {
    let shapes = shape::infer(&model.graph, &Default::default())?;
    let Some(mut conv) = as_conv(&model.graph, node, &shapes) else {
        return Ok(None);
    };
    let (&[n, _, h, w], &[_, o, oh, ow]) = (x.shape(), y.shape()) else {
        return Ok(None);
    };
    if o != conv.out_channels
        || conv.output_size(0, h) != Some(oh)
        || conv.output_size(1, w) != Some(ow)
    {
        return Ok(None);
    }
    let positions = sample_positions(n * oh * ow, rng);
    let mut total: Option<Fit> = None;
    let per_group = conv.out_channels / conv.group;
    for g in 0..conv.group {
        let rows = with_intercept(im2col(&conv, x, g, &positions, [oh, ow]));
        let targets = Array2::from_shape_fn((positions.len(), per_group), |(r, c)| {
            let (s, p) = (positions[r] / (oh * ow), positions[r] % (oh * ow));
            y[[s, g * per_group + c, p / ow, p % ow]] as f64
        });
        let fit = Fit::towards(&rows, &targets, &conv_theta(&conv, g), rng)?;
        set_conv_theta(&mut conv, g, &fit.theta);
        total = Some(match total {
            Some(sum) => sum.and(fit),
            None => fit,
        });
    }
    write_conv(model, node, &conv)?;
    Ok(total)
}

/// Which of `total` rows (sample × output position) to fit on: all, or a seeded sample.
fn sample_positions(total: usize, rng: &mut Rng) -> Vec<usize> {
    if total <= MAX_ROWS {
        return (0..total).collect();
    }
    let mut picked: Vec<usize> = (0..MAX_ROWS)
        .map(|_| (rng.next_u64() % total as u64) as usize)
        .collect();
    picked.sort_unstable();
    picked.dedup();
    picked
}

/// The receptive fields of group `g` at `positions` (flat sample × oh × ow indices): one
/// row per position, features ordered as the group's weights (channel, ky, kx).
fn im2col(
    conv: &Conv2d,
    x: &ArrayD<f32>,
    g: usize,
    positions: &[usize],
    [oh, ow]: [usize; 2],
) -> Array2<f64> {
    let channels = conv.in_channels / conv.group;
    let [kh, kw] = conv.kernel;
    let (h, w) = (x.shape()[2] as isize, x.shape()[3] as isize);
    let mut rows = Array2::zeros((positions.len(), channels * kh * kw));
    for (r, &position) in positions.iter().enumerate() {
        let (s, p) = (position / (oh * ow), position % (oh * ow));
        let (oy, ox) = ((p / ow) as isize, (p % ow) as isize);
        let mut row = rows.row_mut(r);
        for c in 0..channels {
            for ky in 0..kh {
                let iy = oy * conv.stride[0] as isize - conv.pads[0] as isize
                    + (ky * conv.dilation[0]) as isize;
                for kx in 0..kw {
                    let ix = ox * conv.stride[1] as isize - conv.pads[1] as isize
                        + (kx * conv.dilation[1]) as isize;
                    if (0..h).contains(&iy) && (0..w).contains(&ix) {
                        row[(c * kh + ky) * kw + kx] =
                            x[[s, g * channels + c, iy as usize, ix as usize]] as f64;
                    }
                }
            }
        }
    }
    rows
}

/// Θ of group `g`: [features + 1, outputs of the group], the bias in the last row.
fn conv_theta(conv: &Conv2d, g: usize) -> Array2<f64> {
    let per_group = conv.out_channels / conv.group;
    let features = conv.weight.len() / conv.out_channels;
    Array2::from_shape_fn((features + 1, per_group), |(f, c)| {
        let o = g * per_group + c;
        if f == features {
            conv.bias[o]
        } else {
            conv.weight[o * features + f]
        }
    })
}

fn set_conv_theta(conv: &mut Conv2d, g: usize, theta: &Array2<f64>) {
    let per_group = conv.out_channels / conv.group;
    let features = conv.weight.len() / conv.out_channels;
    for c in 0..per_group {
        let o = g * per_group + c;
        for f in 0..features {
            conv.weight[o * features + f] = theta[[f, c]];
        }
        conv.bias[o] = theta[[features, c]];
    }
}

/// Rewrites the Conv node's weight and bias with `conv`'s, in the weight's own type.
fn write_conv(model: &mut Model, node: NodeId, conv: &Conv2d) -> Result<()> {
    let graph = &model.graph;
    let n = graph.node(node);
    let weight = graph
        .constant(n.input(1).expect("a read conv has weights"))
        .expect("a read conv has constant weights");
    let dtype = weight.dtype();
    let weight = Tensor::from_f64(dtype, weight.dims().to_vec(), &conv.weight)?;
    let bias = Tensor::from_f64(dtype, vec![conv.out_channels], &conv.bias)?;
    let mut patch = Patch::new(format!("refit >> {}", n.name));
    let inputs = [
        n.input(0).map(Into::into),
        Some(patch.constant("W", weight)),
        Some(patch.constant("B", bias)),
    ];
    patch.redefine(node, OpKind::Conv, n.attributes.clone(), &inputs);
    model.graph.apply(patch)?;
    Ok(())
}

/// Appends a column of ones (the intercept).
fn with_intercept(rows: Array2<f64>) -> Array2<f64> {
    let ones = Array2::ones((rows.nrows(), 1));
    ndarray::concatenate(Axis(1), &[rows.view(), ones.view()]).expect("same row count")
}

/// A fitted Θ ([features + 1, outputs], the bias in the last row) and its squared errors
/// on the validation rows: of the folded weights, of the fit, and of the targets.
struct Fit {
    theta: Array2<f64>,
    sq_before: f64,
    sq_after: f64,
    sq_target: f64,
    ridge: Option<f64>,
}

impl Fit {
    /// argmin_Θ ‖AΘ − Y‖² + λ‖Θ − Θ₀‖², λ chosen among `RIDGES` on held-out rows (see
    /// `PARTS`; Θ₀ itself when it does better on them), then solved on all rows.
    fn towards(
        a: &Array2<f64>,
        y: &Array2<f64>,
        current: &Array2<f64>,
        rng: &mut Rng,
    ) -> Result<Fit> {
        let parts: Vec<Normal> = split_rows(a.nrows(), rng)
            .iter()
            .map(|rows| Normal::of(&a.select(Axis(0), rows), &y.select(Axis(0), rows)))
            .collect();
        let all = parts[1..]
            .iter()
            .fold(parts[0].clone(), |sum, p| sum.plus(p));
        let checked = match a.nrows() < FEW_ROWS * a.ncols() {
            true => &parts[..],
            false => &parts[..1],
        };
        // Each checked part's squared error under the fit of strength `ridge` on the other
        // parts (on all rows when there is one part); Θ₀ without a strength.
        let held_out_error = |ridge: Option<f64>| -> Result<f64> {
            let error = |part: &Normal| match ridge {
                None => Ok(part.squared_residual(current)),
                Some(ridge) => {
                    let others = if parts.len() > 1 {
                        all.minus(part)
                    } else {
                        all.clone()
                    };
                    Ok(part.squared_residual(&others.solve(ridge, current)?))
                }
            };
            checked.iter().map(error).sum()
        };
        let sq_before = held_out_error(None)?;
        let mut best = (sq_before, None);
        for ridge in RIDGES {
            let sq = held_out_error(Some(ridge))?;
            if sq < best.0 {
                best = (sq, Some(ridge));
            }
        }
        let (sq_after, ridge) = best;
        let theta = match ridge {
            Some(ridge) => all.solve(ridge, current)?,
            None => current.clone(),
        };
        Ok(Fit {
            theta,
            sq_before,
            sq_after,
            sq_target: checked.iter().map(|p| p.sq_target).sum(),
            ridge,
        })
    }

    /// The errors of two problems fitted side by side (a conv's groups); the strength of
    /// the first.
    fn and(self, other: Fit) -> Fit {
        Fit {
            sq_before: self.sq_before + other.sq_before,
            sq_after: self.sq_after + other.sq_after,
            sq_target: self.sq_target + other.sq_target,
            ..self
        }
    }

    /// A squared error as an RMS relative to the targets'.
    fn relative(&self, sq: f64) -> f64 {
        (sq / self.sq_target.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// The rows in `PARTS` seeded parts, or in one part when there are too few to split.
fn split_rows(rows: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..rows).collect();
    if rows < 2 * PARTS {
        return vec![order];
    }
    shuffle(&mut order, rng);
    let bounds: Vec<usize> = (0..=PARTS).map(|k| k * rows / PARTS).collect();
    bounds
        .windows(2)
        .map(|b| order[b[0]..b[1]].to_vec())
        .collect()
}

/// The normal equations AᵀA Θ = AᵀY, and ‖Y‖²: all a least-squares problem needs,
/// residuals included.
#[derive(Clone)]
struct Normal {
    gram: Array2<f64>,
    rhs: Array2<f64>,
    sq_target: f64,
}

impl Normal {
    fn of(a: &Array2<f64>, y: &Array2<f64>) -> Normal {
        Normal {
            gram: a.t().dot(a),
            rhs: a.t().dot(y),
            sq_target: y.iter().map(|t| t * t).sum(),
        }
    }

    /// The equations of both problems' rows together.
    fn plus(&self, other: &Normal) -> Normal {
        Normal {
            gram: &self.gram + &other.gram,
            rhs: &self.rhs + &other.rhs,
            sq_target: self.sq_target + other.sq_target,
        }
    }

    /// The equations of this problem's rows without `part`'s (rows of it).
    fn minus(&self, part: &Normal) -> Normal {
        Normal {
            gram: &self.gram - &part.gram,
            rhs: &self.rhs - &part.rhs,
            sq_target: self.sq_target - part.sq_target,
        }
    }

    /// ‖AΘ − Y‖² = tr(ΘᵀAᵀAΘ) − 2·tr(ΘᵀAᵀY) + ‖Y‖², without the rows.
    fn squared_residual(&self, theta: &Array2<f64>) -> f64 {
        let quadratic = (&self.gram.dot(theta) * theta).sum();
        let cross = (&self.rhs * theta).sum();
        (quadratic - 2.0 * cross + self.sq_target).max(0.0)
    }

    /// (AᵀA + λI) Θ = AᵀY + λΘ₀, λ = `ridge` × the mean diagonal of AᵀA (the intercept
    /// row barely penalised), by Cholesky in f64.
    fn solve(&self, ridge: f64, current: &Array2<f64>) -> Result<Array2<f64>> {
        let d = self.gram.nrows();
        let mean_diagonal =
            (0..d - 1).map(|i| self.gram[[i, i]]).sum::<f64>() / (d - 1).max(1) as f64;
        let lambda = ridge * mean_diagonal.max(f64::MIN_POSITIVE);
        let mut gram = self.gram.clone();
        let mut rhs = self.rhs.clone();
        for i in 0..d {
            let penalty = if i + 1 == d { 1e-9 * lambda } else { lambda };
            gram[[i, i]] += penalty;
            rhs.row_mut(i).scaled_add(penalty, &current.row(i));
        }
        cholesky_solve(gram, rhs)
    }
}

/// Solves G·X = B for symmetric positive definite G (Cholesky, G = LLᵀ, L kept in G's
/// lower triangle; rows are contiguous, so every inner product runs over two slices).
fn cholesky_solve(mut g: Array2<f64>, b: Array2<f64>) -> Result<Array2<f64>> {
    let d = g.nrows();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let l = g.as_slice_mut().expect("a fresh matrix is contiguous");
    for j in 0..d {
        let (above, rest) = l.split_at_mut(j * d);
        let row_j = &mut rest[..d];
        for i in 0..j {
            let row_i = &above[i * d..i * d + i];
            row_j[i] = (row_j[i] - dot(row_i, &row_j[..i])) / above[i * d + i];
        }
        let diagonal = row_j[j] - dot(&row_j[..j], &row_j[..j]);
        if diagonal.is_nan() || diagonal <= 0.0 {
            return Err(Error::graph("refit: the least-squares system is singular"));
        }
        row_j[j] = diagonal.sqrt();
    }
    // Forward (L z = b) then backward (Lᵀ x = z) substitution, a column of B at a time.
    let mut x = b.t().as_standard_layout().into_owned();
    for mut column in x.rows_mut() {
        let column = column.as_slice_mut().expect("standard layout");
        for i in 0..d {
            column[i] = (column[i] - dot(&l[i * d..i * d + i], &column[..i])) / l[i * d + i];
        }
        for i in (0..d).rev() {
            let tail: f64 = (i + 1..d).map(|k| l[k * d + i] * column[k]).sum();
            column[i] = (column[i] - tail) / l[i * d + i];
        }
    }
    Ok(x.reversed_axes().as_standard_layout().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_an_exact_linear_map() {
        let mut rng = Rng::new(3);
        let a = with_intercept(Array2::from_shape_fn((200, 5), |_| rng.normal()));
        let truth = Array2::from_shape_fn((6, 3), |(i, j)| (i as f64 - 2.0) * 0.5 + j as f64);
        let y = a.dot(&truth);
        let fit = Fit::towards(&a, &y, &Array2::zeros((6, 3)), &mut rng).unwrap();
        let error = (&fit.theta - &truth)
            .iter()
            .fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(error < 1e-2, "{error}");
        assert!(fit.relative(fit.sq_after) < 1e-3);
        assert!(fit.relative(fit.sq_before) > 0.5);
    }

    /// The strength is judged on one fifth of the rows when they are many for the
    /// unknowns, on every fifth in turn when they are few: the errors reported are over
    /// those rows.
    #[test]
    fn few_rows_are_all_held_out_in_turn() {
        let mut rng = Rng::new(4);
        for (rows, features, checked) in [(200, 5, 40.0), (30, 20, 30.0)] {
            let a = with_intercept(Array2::from_shape_fn((rows, features), |_| rng.normal()));
            let y = Array2::ones((rows, 1));
            let fit = Fit::towards(&a, &y, &Array2::zeros((features + 1, 1)), &mut rng).unwrap();
            assert_eq!(fit.sq_target, checked, "{rows} rows, {features} features");
            assert_eq!(fit.relative(fit.sq_before), 1.0);
        }
    }

    /// Fewer rows than weights: the fit moves the folded weights only as far as rows it
    /// did not see confirm, where a plain least-squares fit would interpolate the noise.
    #[test]
    fn with_fewer_rows_than_weights_it_stays_near_the_folded_weights() {
        let mut rng = Rng::new(5);
        let features = 120;
        let a = with_intercept(Array2::from_shape_fn((40, features), |_| rng.normal()));
        let truth = Array2::from_shape_fn((features + 1, 2), |_| rng.normal());
        let noise = Array2::from_shape_fn((40, 2), |_| 0.5 * rng.normal());
        let y = a.dot(&truth) + noise;
        let near = &truth + &Array2::from_shape_fn((features + 1, 2), |_| 0.05 * rng.normal());
        let fit = Fit::towards(&a, &y, &near, &mut rng).unwrap();
        let distance = |t: &Array2<f64>| (t - &truth).iter().map(|e| e * e).sum::<f64>().sqrt();
        assert!(
            distance(&fit.theta) < 2.0 * distance(&near),
            "{}",
            distance(&fit.theta)
        );
        assert!(fit.sq_after <= fit.sq_before);
    }

    #[test]
    fn a_fit_no_strength_improves_keeps_the_folded_weights() {
        let mut rng = Rng::new(7);
        let a = with_intercept(Array2::from_shape_fn((100, 4), |_| rng.normal()));
        let truth = Array2::from_shape_fn((5, 2), |(i, j)| (i + j) as f64);
        let fit = Fit::towards(&a, &a.dot(&truth), &truth, &mut rng).unwrap();
        assert_eq!(fit.ridge, None);
        assert_eq!(fit.theta, truth);
    }

    /// x → Conv a → Relu → Conv b → Relu → Conv c → Relu → Conv d, 1×1 convs of 3
    /// channels on 4×4.
    fn conv_relu_chain() -> Model {
        use crate::ir::builder::ModelBuilder;
        use crate::passes::test_models::{conv_attrs, model, weights};
        let conv = |b: ModelBuilder, x, w: &str, y, seed| {
            b.initializer(w, weights(&[3, 3, 1, 1], seed)).node(
                "Conv",
                &[x, w],
                &[y],
                conv_attrs(&[0; 4], &[1, 1], 1),
            )
        };
        let relu = |b: ModelBuilder, x, y| b.node("Relu", &[x], &[y], Attributes::default());
        let b = ModelBuilder::new(13).input("x", &[-1, 3, 4, 4]);
        let b = relu(conv(b, "x", "wa", "a", 1), "a", "ra");
        let b = relu(conv(b, "ra", "wb", "b", 2), "b", "rb");
        let b = relu(conv(b, "rb", "wc", "c", 3), "c", "rc");
        model(conv(b, "rc", "wd", "d", 4).output("d"))
    }

    /// `base` with the Relus producing `removed` linearised and the convs around folded.
    fn folded(base: &Model, removed: &[&str]) -> (Model, Vec<FoldRecord>) {
        use crate::passes::{self, Ctx, Linearize, Pass};
        let mut model = base.clone();
        let mut ctx = Ctx::default();
        let nodes: Vec<String> = removed
            .iter()
            .map(|v| {
                let value = base.graph.value_by_name(v).unwrap();
                base.graph
                    .node(base.graph.producer(value).unwrap())
                    .name
                    .clone()
            })
            .collect();
        Linearize::nodes(&nodes)
            .run(&mut model.graph, &mut ctx)
            .unwrap();
        let folded = passes::run_pipeline(&passes::folding(), &mut model.graph, &mut ctx).unwrap();
        (model, folded.folds)
    }

    #[test]
    fn layer_inputs_are_the_original_values_only_where_nothing_upstream_changed() {
        let base = conv_relu_chain();
        let spec = crate::calib::CalibSpec {
            synthetic: Some(6),
            ..Default::default()
        };
        let data = Dataset::load(&spec, &base, &Default::default()).unwrap();
        // Folding c and d: what the folded layer reads (rb) is the original's.
        let (late, late_folds) = folded(&base, &["rc"]);
        // Folding a and b first: what comes after them is computed anew.
        let (early, early_folds) = folded(&base, &["ra"]);
        let (both, both_folds) = folded(&early, &["rc"]);
        let runs = [
            (&late, &[][..], &late_folds, true),
            (&both, &early_folds[..], &both_folds, false),
        ];
        for (model, earlier, folds, kept) in runs {
            let values = OriginalValues::new(&base, &data);
            let layers = refittable(model, &base, earlier, folds).unwrap();
            assert_eq!(layers.len(), 1);
            let input = layers[0].input.as_str();
            let direct = run_on(&probe(model, &[input]).unwrap(), &data).unwrap();
            let pairs = inputs_and_targets(model, &values, &layers, &data).unwrap();
            assert_eq!(pairs[0].0, direct[0], "{input}");
            let cached = values
                .computed
                .borrow()
                .contains_key(&(input.to_string(), 6));
            assert_eq!(cached, kept, "{input}");
        }
        assert!(early_folds.len() == 1 && both_folds.len() == 1);
    }

    #[test]
    fn a_layer_folded_again_stands_for_the_original_node_of_the_first_fold() {
        let base = conv_relu_chain();
        // c and d fold into `d.folded`; then b folds into that layer.
        let (first, first_folds) = folded(&base, &["rc"]);
        let (again, again_folds) = folded(&first, &["rb"]);
        let layer = &again_folds[0].layers[0];
        assert_eq!(layer.replaces, first_folds[0].layers[0].node);
        let layers = refittable(&again, &base, &first_folds, &again_folds).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].target, "d");
        // Without the first fold's record the layer's origin is unknown: not refit.
        assert!(
            refittable(&again, &base, &[], &again_folds)
                .unwrap()
                .is_empty()
        );
    }
}
