//! Refitting folded layers: ridge least squares from a folded layer's input, as the folded
//! network computes it, to what the original network computes at the layer's output.
//! Closed form, no labels; it recovers much of what removing the activations lost.
//!
//! Conv layers are fitted per group on im2col rows (output positions, a seeded sample of
//! them when there are many), Gemm layers on one row per sample. A fold followed by a
//! constant bias map (an `Add` of a per-position map) is fitted to the target minus the map.

use ndarray::{Array2, ArrayD, Axis, s};
use serde::Serialize;

use crate::calib::ModelInputs;
use crate::calib::random::Rng;
use crate::error::{Error, Result};
use crate::fold::conv::Conv2d;
use crate::fold::gemm::Dense;
use crate::gates::candidates::origin_nodes;
use crate::ir::extract::probe;
use crate::ir::{Attributes, Model, NodeId, OpKind, Patch, Tensor};
use crate::passes::FoldRecord;
use crate::runtime;

/// Rows of one least-squares problem, at most (a seeded sample of the output positions).
const MAX_ROWS: usize = 32_768;
/// Ridge strength, relative to the mean diagonal of the Gram matrix.
const RIDGE: f64 = 1e-3;
/// Samples run through tract at once.
const BATCH: usize = 16;

/// One refitted layer: its error against the original before and after, on the rows fitted.
#[derive(Clone, Debug, Serialize)]
pub struct Refitted {
    pub node: String,
    /// Root-mean-square error over the rows fitted, relative to the target's RMS.
    pub before: f64,
    pub after: f64,
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

/// Refits every layer made by a fold in `folds` that spans linearised activations
/// (`forced`), in `folded`, towards `original` on `inputs`. `folds` are the records of
/// the folds that made `folded` from a copy of `original`'s graph.
pub fn refit(
    folded: &mut Model,
    original: &Model,
    folds: &[FoldRecord],
    inputs: &ModelInputs,
    seed: u64,
) -> Result<Vec<Refitted>> {
    let layers = refittable(folded, original, folds)?;
    if layers.is_empty() {
        return Ok(Vec::new());
    }
    let input_names: Vec<&str> = layers.iter().map(|l| l.input.as_str()).collect();
    let target_names: Vec<&str> = layers.iter().map(|l| l.target.as_str()).collect();
    let xs = runtime::run_all(&probe(folded, &input_names)?, inputs, BATCH)?;
    let ys = runtime::run_all(&probe(original, &target_names)?, inputs, BATCH)?;
    let mut rng = Rng::new(seed);
    let mut refitted = Vec::new();
    for ((layer, x), y) in layers.iter().zip(&xs).zip(ys) {
        let y = match &layer.bias_map {
            Some(map) => &y - map,
            None => y,
        };
        if let Some(result) = refit_layer(folded, layer, x, &y, &mut rng)? {
            refitted.push(result);
        }
    }
    Ok(refitted)
}

/// The layers of `folded` that forced folds made and that a refit can rewrite: a Conv or
/// a Gemm whose replaced region ends in a value the original still has.
fn refittable(folded: &Model, original: &Model, folds: &[FoldRecord]) -> Result<Vec<Layer>> {
    let order = original.graph.topological_order()?;
    let mut layers = Vec::new();
    for (i, fold) in folds.iter().enumerate() {
        let Some(node) = node_named(folded, &fold.result) else {
            continue; // folded again by a later fold
        };
        let n = folded.graph.node(node);
        if !spans_linearised(folds, i) || !matches!(n.kind, OpKind::Conv | OpKind::Gemm) {
            continue;
        }
        let origins = origin_nodes(folds, i);
        let last = order
            .iter()
            .rev()
            .find(|&&id| origins.contains(&original.graph.node(id).name));
        let (Some(&last), Some(input)) = (last, n.input(0)) else {
            continue;
        };
        let Some(target) = original.graph.node(last).output(0) else {
            continue;
        };
        layers.push(Layer {
            node,
            input: folded.graph.value(input).name.clone(),
            target: original.graph.value(target).name.clone(),
            bias_map: bias_map(folded, node),
        });
    }
    Ok(layers)
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

fn node_named(model: &Model, name: &str) -> Option<NodeId> {
    model
        .graph
        .nodes()
        .find(|(_, n)| n.name == name)
        .map(|(id, _)| id)
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
        OpKind::Gemm => refit_gemm(model, layer.node, x, y),
        OpKind::Conv => refit_conv(model, layer.node, x, y, rng),
        _ => Ok(None),
    }
    .map(|fit| {
        fit.map(|(before, after)| Refitted {
            node: name,
            before,
            after,
        })
    })
}

/// A Gemm layer: rows are samples.
fn refit_gemm(
    model: &mut Model,
    node: NodeId,
    x: &ArrayD<f32>,
    y: &ArrayD<f32>,
) -> Result<Option<(f64, f64)>> {
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
    let theta = ridge(&rows, &targets)?;
    let before = relative_rms(&rows, &current_theta(&current), &targets);
    let after = relative_rms(&rows, &theta, &targets);
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
    Ok(Some((before, after)))
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
) -> Result<Option<(f64, f64)>> {
    let Some(mut conv) = crate::passes::conv_layer(&model.graph, node)? else {
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
    let (mut sq_before, mut sq_after, mut sq_target) = (0.0, 0.0, 0.0);
    let per_group = conv.out_channels / conv.group;
    for g in 0..conv.group {
        let rows = with_intercept(im2col(&conv, x, g, &positions, [oh, ow]));
        let targets = Array2::from_shape_fn((positions.len(), per_group), |(r, c)| {
            let (s, p) = (positions[r] / (oh * ow), positions[r] % (oh * ow));
            y[[s, g * per_group + c, p / ow, p % ow]] as f64
        });
        let current = conv_theta(&conv, g);
        let theta = ridge(&rows, &targets)?;
        sq_target += targets.iter().map(|t| t * t).sum::<f64>();
        sq_before += squared_residual(&rows, &current, &targets);
        sq_after += squared_residual(&rows, &theta, &targets);
        set_conv_theta(&mut conv, g, &theta);
    }
    write_conv(model, node, &conv)?;
    let relative = |sq: f64| (sq / sq_target.max(f64::MIN_POSITIVE)).sqrt();
    Ok(Some((relative(sq_before), relative(sq_after))))
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

/// argmin_Θ ‖AΘ − Y‖² + λ‖Θ_w‖² (the intercept row unpenalised), by Cholesky on the
/// normal equations in f64.
fn ridge(a: &Array2<f64>, y: &Array2<f64>) -> Result<Array2<f64>> {
    let mut gram = a.t().dot(a);
    let d = gram.nrows();
    let mean_diagonal = (0..d - 1).map(|i| gram[[i, i]]).sum::<f64>() / (d - 1).max(1) as f64;
    let lambda = RIDGE * mean_diagonal.max(f64::MIN_POSITIVE);
    for i in 0..d {
        gram[[i, i]] += if i + 1 == d { 1e-9 * lambda } else { lambda };
    }
    let rhs = a.t().dot(y);
    cholesky_solve(gram, rhs)
}

/// Solves G·X = B for symmetric positive definite G.
fn cholesky_solve(mut g: Array2<f64>, mut b: Array2<f64>) -> Result<Array2<f64>> {
    let d = g.nrows();
    for j in 0..d {
        let diagonal = g[[j, j]] - (0..j).map(|k| g[[j, k]] * g[[j, k]]).sum::<f64>();
        if diagonal.is_nan() || diagonal <= 0.0 {
            return Err(Error::graph("refit: the least-squares system is singular"));
        }
        let l_jj = diagonal.sqrt();
        g[[j, j]] = l_jj;
        for i in j + 1..d {
            let dot = (0..j).map(|k| g[[i, k]] * g[[j, k]]).sum::<f64>();
            g[[i, j]] = (g[[i, j]] - dot) / l_jj;
        }
    }
    for mut column in b.columns_mut() {
        for i in 0..d {
            let dot = (0..i).map(|k| g[[i, k]] * column[k]).sum::<f64>();
            column[i] = (column[i] - dot) / g[[i, i]];
        }
        for i in (0..d).rev() {
            let dot = (i + 1..d).map(|k| g[[k, i]] * column[k]).sum::<f64>();
            column[i] = (column[i] - dot) / g[[i, i]];
        }
    }
    Ok(b)
}

fn squared_residual(a: &Array2<f64>, theta: &Array2<f64>, y: &Array2<f64>) -> f64 {
    (a.dot(theta) - y).iter().map(|r| r * r).sum()
}

fn relative_rms(a: &Array2<f64>, theta: &Array2<f64>, y: &Array2<f64>) -> f64 {
    let target = y.iter().map(|t| t * t).sum::<f64>().max(f64::MIN_POSITIVE);
    (squared_residual(a, theta, y) / target).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_an_exact_linear_map() {
        let mut rng = Rng::new(3);
        let a = with_intercept(Array2::from_shape_fn((200, 5), |_| rng.normal()));
        let truth = Array2::from_shape_fn((6, 3), |(i, j)| (i as f64 - 2.0) * 0.5 + j as f64);
        let y = a.dot(&truth);
        let theta = ridge(&a, &y).unwrap();
        let error = (&theta - &truth).iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(error < 1e-2, "{error}");
        assert!(relative_rms(&a, &theta, &y) < 1e-3);
    }
}
