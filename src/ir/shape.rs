//! Static shape inference for the typed operators. Known dims are numbers, symbolic dims
//! keep their names, and whatever cannot be inferred is `Unknown` (falling back to the
//! model's declared `value_info`). Input dims can be pinned for analysis; pinning never
//! changes the model itself.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, Node, ValueId};
use crate::ir::op::OpKind;
use crate::ir::symbolic::{self, Element};
use crate::ir::tensor::{DataType, checked_numel};
pub use crate::ir::value_type::{Dim, Shapes, ValueType};
use crate::ir::window::{AutoPad, Window};
use crate::onnx::pb;

/// Input dims pinned for analysis, by input name.
pub type PinnedShapes = HashMap<String, Vec<usize>>;

/// Declares the pinned dims of `graph`'s inputs, all but the first (the batch stays as
/// declared): for a graph whose folds were sized at the pinned dims and runs only there.
pub fn declare_pinned_dims(graph: &mut Graph, pinned: &PinnedShapes) {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value;
    let inputs: Vec<ValueId> = graph.runtime_inputs().collect();
    for input in inputs {
        let value = graph.value_mut(input);
        let Some(dims) = pinned.get(&value.name) else {
            continue;
        };
        let Some(Value::TensorType(tensor)) = value
            .info
            .as_mut()
            .and_then(|i| i.r#type.as_mut())
            .and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        let Some(shape) = tensor.shape.as_mut() else {
            continue;
        };
        for (declared, &pin) in shape.dim.iter_mut().zip(dims).skip(1) {
            declared.value = Some(D::DimValue(pin as i64));
        }
    }
}

/// Infers every value's type, in topological order. Pinning a name that is no graph
/// input is an error (a typo would otherwise go unnoticed).
pub fn infer(graph: &Graph, pinned: &PinnedShapes) -> Result<Shapes> {
    check_pinned_names(graph, pinned)?;
    let mut types: Vec<ValueType> = graph
        .values
        .iter()
        .map(|v| v.info.as_ref().map(ValueType::of_info).unwrap_or_default())
        .collect();
    for (i, value) in graph.values.iter().enumerate() {
        if let Some(t) = &value.constant {
            types[i] = ValueType::known(Some(t.dtype()), t.dims().to_vec());
        }
        if let Some(dims) = pinned
            .get(&value.name)
            .filter(|_| graph.inputs.contains(&ValueId(i)))
        {
            types[i] = ValueType::known(types[i].dtype, dims.clone());
        }
    }
    let mut shapes = Shapes { types };
    for id in graph.topological_order()? {
        let node = graph.node(id);
        let inferred = infer_node(graph, node, &shapes);
        for (slot, out) in node.outputs.iter().enumerate() {
            let (Some(out), Some(t)) = (out, inferred.get(slot)) else {
                continue;
            };
            shapes.types[out.0] = t.or(&shapes.types[out.0]);
        }
    }
    Ok(shapes)
}

/// The types of the outputs of `node`, which need not be in `graph` (a definition a patch
/// replaces), from what `shapes` knows of the values it reads; declared types where
/// inference knows nothing.
pub(super) fn outputs_of(graph: &Graph, node: &Node, shapes: &Shapes) -> Vec<(ValueId, ValueType)> {
    let inferred = infer_node(graph, node, shapes);
    node.outputs
        .iter()
        .enumerate()
        .filter_map(|(slot, out)| {
            let out = (*out)?;
            let declared = graph.value(out).info.as_ref().map(ValueType::of_info);
            let inferred = inferred.get(slot).cloned().unwrap_or_default();
            Some((out, inferred.or(&declared.unwrap_or_default())))
        })
        .collect()
}

fn check_pinned_names(graph: &Graph, pinned: &PinnedShapes) -> Result<()> {
    let is_input = |name: &String| {
        graph
            .value_by_name(name)
            .is_some_and(|v| graph.inputs.contains(&v))
    };
    let mut unknown: Vec<&String> = pinned.keys().filter(|n| !is_input(n)).collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(name) => {
            let inputs: Vec<&str> = graph
                .runtime_inputs()
                .map(|v| graph.value(v).name.as_str())
                .collect();
            Err(Error::Usage(format!(
                "dims were given for '{name}', which is not an input of the model (its inputs: {})",
                inputs.join(", ")
            )))
        }
    }
}

/// An integer input known before running: an initializer, or a Constant node's value
/// (shape inference runs before Constant nodes become initializers).
fn const_i64(graph: &Graph, node: &Node, slot: usize) -> Option<Vec<i64>> {
    let value = node.input(slot)?;
    if let Some(tensor) = graph.constant(value) {
        return tensor.to_i64();
    }
    let producer = graph.node(graph.producer(value)?);
    (producer.kind == OpKind::Constant)
        .then(|| producer.tensor("value").ok().flatten()?.to_i64())
        .flatten()
}

/// Integer list given as an attribute (older opsets) or as a constant input (newer).
fn attr_or_input(graph: &Graph, node: &Node, attr: &str, slot: usize) -> Option<Vec<i64>> {
    node.ints(attr)
        .ok()
        .flatten()
        .or_else(|| const_i64(graph, node, slot))
}

fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

/// The types of `node`'s outputs, from what `shapes` knows of the values before it.
fn infer_node(graph: &Graph, node: &Node, shapes: &Shapes) -> Vec<ValueType> {
    let inputs: Vec<ValueType> = node
        .inputs
        .iter()
        .map(|v| v.map(|v| shapes.get(v).clone()).unwrap_or_default())
        .collect();
    let first = inputs.first().cloned().unwrap_or_default();
    let dtype = first.dtype;
    let dims = |t: &ValueType| t.dims.clone();
    let out_dims: Option<Vec<Dim>> = match &node.kind {
        OpKind::Relu
        | OpKind::Clip
        | OpKind::LeakyRelu
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::Sigmoid
        | OpKind::Tanh
        | OpKind::Softmax
        | OpKind::Identity
        | OpKind::Dropout
        | OpKind::BatchNormalization
        | OpKind::Cast => dims(&first),
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div | OpKind::PRelu => inputs
            .iter()
            .try_fold(Vec::new(), |acc, t| broadcast(&acc, t.dims.as_ref()?)),
        OpKind::Conv | OpKind::AveragePool | OpKind::MaxPool | OpKind::ConvTranspose => {
            window_output(node, &inputs)
        }
        OpKind::GlobalAveragePool => dims(&first).map(|d| {
            d.iter()
                .enumerate()
                .map(|(i, x)| if i < 2 { x.clone() } else { Dim::Known(1) })
                .collect()
        }),
        OpKind::Gemm => gemm_output(node, &inputs),
        OpKind::MatMul => matmul_output(&inputs),
        OpKind::Flatten => first.static_dims().and_then(|d| {
            // The axis may equal the rank; a negative one counts from the rank.
            let axis = match node.int("axis").ok().flatten().unwrap_or(1) {
                axis if axis == d.len() as i64 => d.len(),
                axis => normalize_axis(axis, d.len())?,
            };
            Some(vec![
                Dim::Known(checked_numel(&d[..axis])?),
                Dim::Known(checked_numel(&d[axis..])?),
            ])
        }),
        OpKind::Reshape => reshape_output(graph, node, &first, shapes),
        OpKind::Transpose => dims(&first).map(|d| {
            let perm = node
                .ints("perm")
                .ok()
                .flatten()
                .unwrap_or_else(|| (0..d.len() as i64).rev().collect());
            perm.iter()
                .map(|&p| d.get(p as usize).cloned().unwrap_or(Dim::Unknown))
                .collect()
        }),
        OpKind::Concat => concat_output(node, &inputs),
        OpKind::Squeeze => dims(&first).map(|d| {
            let axes: Option<Vec<usize>> = attr_or_input(graph, node, "axes", 1).map(|a| {
                a.iter()
                    .filter_map(|&x| normalize_axis(x, d.len()))
                    .collect()
            });
            d.iter()
                .enumerate()
                .filter(|(i, x)| match &axes {
                    Some(axes) => !axes.contains(i),
                    None => **x != Dim::Known(1),
                })
                .map(|(_, x)| x.clone())
                .collect()
        }),
        OpKind::Unsqueeze => dims(&first).and_then(|d| {
            let axes = attr_or_input(graph, node, "axes", 1)?;
            let rank = d.len() + axes.len();
            let axes: Vec<usize> = axes
                .iter()
                .filter_map(|&a| normalize_axis(a, rank))
                .collect();
            let mut rest = d.into_iter();
            Some(
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            Dim::Known(1)
                        } else {
                            rest.next().unwrap_or(Dim::Unknown)
                        }
                    })
                    .collect(),
            )
        }),
        OpKind::Pad => dims(&first).and_then(|d| {
            let pads = attr_or_input(graph, node, "pads", 1)?;
            let rank = d.len();
            (pads.len() == 2 * rank).then(|| {
                d.iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        Dim::Known(x) => {
                            known_dim(*x as i128 + pads[i] as i128 + pads[i + rank] as i128)
                        }
                        _ => Dim::Unknown,
                    })
                    .collect()
            })
        }),
        OpKind::Shape => first.rank().map(|r| {
            let start = node.int("start").ok().flatten().unwrap_or(0);
            let end = node.int("end").ok().flatten().unwrap_or(r as i64);
            let clamp = |x: i64| (if x < 0 { x + r as i64 } else { x }).clamp(0, r as i64) as usize;
            vec![Dim::Known(clamp(end).saturating_sub(clamp(start)))]
        }),
        OpKind::Gather => dims(&first).and_then(|d| {
            let axis = normalize_axis(node.int("axis").ok().flatten().unwrap_or(0), d.len())?;
            let indices = inputs.get(1)?.dims.clone()?;
            Some(
                d[..axis]
                    .iter()
                    .cloned()
                    .chain(indices)
                    .chain(d[axis + 1..].iter().cloned())
                    .collect(),
            )
        }),
        OpKind::Slice => slice_output(graph, node, &first),
        OpKind::ReduceMean => dims(&first).map(|d| {
            let keep = node.int("keepdims").ok().flatten().unwrap_or(1) != 0;
            let axes: Vec<usize> = match attr_or_input(graph, node, "axes", 1) {
                Some(a) => a
                    .iter()
                    .filter_map(|&x| normalize_axis(x, d.len()))
                    .collect(),
                None => (0..d.len()).collect(),
            };
            d.iter()
                .enumerate()
                .filter_map(|(i, x)| match (axes.contains(&i), keep) {
                    (false, _) => Some(x.clone()),
                    (true, true) => Some(Dim::Known(1)),
                    (true, false) => None,
                })
                .collect()
        }),
        OpKind::Constant => {
            let tensor = node.tensor("value").ok().flatten();
            return vec![match tensor {
                Some(t) => ValueType::known(Some(t.dtype()), t.dims().to_vec()),
                None => ValueType::default(),
            }];
        }
        OpKind::Other { .. } => claimed_output(graph, node, &first),
    };
    let out_dtype = match &node.kind {
        OpKind::Shape => Some(DataType::Int64),
        OpKind::Cast => node
            .int("to")
            .ok()
            .flatten()
            .map(|c| DataType::from_onnx(c as i32)),
        OpKind::Other { .. } => None,
        _ => dtype,
    };
    let mut outputs = vec![ValueType {
        dtype: out_dtype,
        dims: out_dims.clone(),
    }];
    if node.kind == OpKind::Dropout {
        outputs.push(ValueType {
            dtype: Some(DataType::Bool),
            dims: out_dims,
        });
    }
    outputs
}

/// Output dims of the standard operators whose output size is given by constant inputs
/// rather than by their data: what a file claims, checked before anything is allocated
/// for it (`runtime::check_runnable`).
fn claimed_output(graph: &Graph, node: &Node, first: &ValueType) -> Option<Vec<Dim>> {
    if !matches!(node.kind.domain(), "" | "ai.onnx") {
        return None;
    }
    let claimed = |slot: usize| -> Option<Vec<Dim>> {
        Some(
            const_i64(graph, node, slot)?
                .into_iter()
                .map(|d| known_dim(d as i128))
                .collect(),
        )
    };
    match node.op() {
        "ConstantOfShape" => claimed(0),
        "Expand" => broadcast(first.dims.as_ref()?, &claimed(1)?),
        "Tile" => {
            let repeats = const_i64(graph, node, 1)?;
            let dims = first.dims.as_ref()?;
            (repeats.len() == dims.len()).then(|| {
                dims.iter()
                    .zip(repeats)
                    .map(|(d, r)| match d {
                        Dim::Known(d) => known_dim(*d as i128 * r as i128),
                        _ => Dim::Unknown,
                    })
                    .collect()
            })
        }
        "Range" => {
            let scalar = |slot: usize| -> Option<f64> {
                match graph.constant(node.input(slot)?)?.to_f64()?.as_slice() {
                    [v] => Some(*v),
                    _ => None,
                }
            };
            let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
            let count = ((limit - start) / delta).ceil().max(0.0);
            // `as` saturates: an infinite count (delta 0) is the largest dim, NaN is zero.
            Some(vec![Dim::Known(count as usize)])
        }
        _ => None,
    }
}

/// Numpy-style broadcasting of two shapes.
fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank].clone()
        } else {
            Dim::Known(1)
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (Dim::Known(1), y) => Some(y),
            (x, Dim::Known(1)) => Some(x),
            (Dim::Known(x), Dim::Known(y)) if x != y => None,
            (Dim::Known(x), _) | (_, Dim::Known(x)) => Some(Dim::Known(x)),
            (x, y) if x == y => Some(x),
            _ => Some(Dim::Unknown),
        })
        .collect()
}

/// Output dims of Conv, ConvTranspose and the windowed pools.
fn window_output(node: &Node, inputs: &[ValueType]) -> Option<Vec<Dim>> {
    let x = inputs.first()?.dims.clone()?;
    let spatial = x.len().checked_sub(2)?;
    let weight = inputs.get(1).and_then(|w| w.static_dims());
    let window = Window::of(node, weight.as_deref()).ok()?;
    let axes = window.axes(None).ok()?;
    if axes.len() != spatial {
        return None;
    }
    let channels = match node.kind {
        OpKind::Conv => Dim::Known(*weight.as_ref()?.first()?),
        OpKind::ConvTranspose => Dim::Known(weight.as_ref()?.get(1)?.checked_mul(window.group)?),
        _ => x[1].clone(),
    };
    let transpose = node.kind == OpKind::ConvTranspose;
    let output_shape = node.ints("output_shape").ok().flatten();
    let mut out = vec![x[0].clone(), channels];
    for (i, axis) in axes.iter().enumerate() {
        let Dim::Known(size) = x[i + 2] else {
            out.push(Dim::Unknown);
            continue;
        };
        if !transpose {
            let placed = axis.place(size, window.auto_pad, window.ceil_mode);
            out.push(placed.map_or(Dim::Unknown, |p| Dim::Known(p.output)));
            continue;
        }
        // i128 holds every sum of products of the attributes: hostile values give a dim
        // out of range (unknown), not an overflow.
        let (s, d, k) = (
            axis.stride as i128,
            axis.dilation as i128,
            axis.kernel as i128,
        );
        let size = size as i128;
        let dim = match (&output_shape, window.auto_pad) {
            (Some(shape), _) => *shape.get(i)? as i128,
            (None, AutoPad::SameUpper | AutoPad::SameLower) => size * s,
            _ => {
                s * (size - 1) + window.output_padding(i) as i128 + d * (k - 1) + 1
                    - axis.pad_begin as i128
                    - axis.pad_end as i128
            }
        };
        out.push(known_dim(dim));
    }
    Some(out)
}

fn gemm_output(node: &Node, inputs: &[ValueType]) -> Option<Vec<Dim>> {
    let a = inputs.first()?.dims.clone()?;
    let b = inputs.get(1)?.dims.clone()?;
    if a.len() != 2 || b.len() != 2 {
        return None;
    }
    let m = if node.int("transA").ok().flatten().unwrap_or(0) != 0 {
        a[1].clone()
    } else {
        a[0].clone()
    };
    let n = if node.int("transB").ok().flatten().unwrap_or(0) != 0 {
        b[0].clone()
    } else {
        b[1].clone()
    };
    Some(vec![m, n])
}

fn matmul_output(inputs: &[ValueType]) -> Option<Vec<Dim>> {
    let a = inputs.first()?.dims.clone()?;
    let b = inputs.get(1)?.dims.clone()?;
    match (a.len(), b.len()) {
        (0, _) | (_, 0) => None,
        (1, 1) => Some(vec![]),
        (1, _) => Some([&b[..b.len() - 2], &b[b.len() - 1..]].concat()),
        (_, 1) => Some(a[..a.len() - 1].to_vec()),
        _ => {
            let batch = broadcast(&a[..a.len() - 2], &b[..b.len() - 2])?;
            Some([batch, vec![a[a.len() - 2].clone(), b[b.len() - 1].clone()]].concat())
        }
    }
}

fn reshape_output(
    graph: &Graph,
    node: &Node,
    input: &ValueType,
    shapes: &Shapes,
) -> Option<Vec<Dim>> {
    let target = reshape_target(graph, node, shapes)?;
    let allow_zero = node.int("allowzero").ok().flatten().unwrap_or(0) != 0;
    let in_dims = input.dims.clone();
    let mut out: Vec<Dim> = target
        .iter()
        .enumerate()
        .map(|(i, t)| match *t {
            Element::Known(0) if !allow_zero => in_dims
                .as_ref()
                .and_then(|d| d.get(i).cloned())
                .unwrap_or(Dim::Unknown),
            Element::Known(t) => usize::try_from(t).map_or(Dim::Unknown, Dim::Known),
            Element::Dim(value, axis) => shapes
                .get(value)
                .dims
                .as_ref()
                .and_then(|d| d.get(axis).cloned())
                .unwrap_or(Dim::Unknown),
        })
        .collect();
    if let Some(pos) = target.iter().position(|&t| t == Element::Known(-1)) {
        let size = in_dims.and_then(|input| inferred_size(&input, &out, pos));
        out[pos] = size.map_or(Dim::Unknown, Dim::Known);
    }
    Some(out)
}

/// The target of a Reshape element by element: a constant, or computed from dims.
fn reshape_target(graph: &Graph, node: &Node, shapes: &Shapes) -> Option<Vec<Element>> {
    if let Some(target) = const_i64(graph, node, 1) {
        return Some(target.into_iter().map(Element::Known).collect());
    }
    symbolic::evaluate(graph, shapes, node.input(1)?)
        .ok()
        .flatten()
        .filter(|s| !s.scalar)
        .map(|s| s.elements)
}

/// The size a Reshape's −1 at `pos` stands for: the input's elements over the other
/// output dims, where symbolic dims found on both sides cancel.
fn inferred_size(input: &[Dim], out: &[Dim], pos: usize) -> Option<usize> {
    let mut unmatched: Vec<&Dim> = input.iter().collect();
    let mut others = 1usize;
    for (_, dim) in out.iter().enumerate().filter(|&(i, _)| i != pos) {
        match dim {
            Dim::Known(d) => others = others.checked_mul(*d)?,
            Dim::Symbol(_) => {
                let found = unmatched.iter().position(|&d| d == dim)?;
                unmatched.swap_remove(found);
            }
            Dim::Unknown => return None,
        }
    }
    let total = unmatched
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(d.known()?))?;
    (others > 0 && total.is_multiple_of(others)).then(|| total / others)
}

fn concat_output(node: &Node, inputs: &[ValueType]) -> Option<Vec<Dim>> {
    let first = inputs.first()?.dims.clone()?;
    let axis = normalize_axis(node.int("axis").ok().flatten()?, first.len())?;
    let mut total = 0usize;
    for t in inputs {
        match t.dims.as_ref()?.get(axis)? {
            Dim::Known(d) => total = total.checked_add(*d)?,
            _ => {
                return Some(
                    first
                        .iter()
                        .enumerate()
                        .map(|(i, d)| if i == axis { Dim::Unknown } else { d.clone() })
                        .collect(),
                );
            }
        }
    }
    let mut out = first;
    out[axis] = Dim::Known(total);
    Some(out)
}

fn slice_output(graph: &Graph, node: &Node, input: &ValueType) -> Option<Vec<Dim>> {
    let mut dims = input.dims.clone()?;
    let rank = dims.len();
    let starts = attr_or_input(graph, node, "starts", 1)?;
    let ends = attr_or_input(graph, node, "ends", 2)?;
    let axes =
        attr_or_input(graph, node, "axes", 3).unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = const_i64(graph, node, 4).unwrap_or_else(|| vec![1; starts.len()]);
    for (((&start, &end), &axis), &step) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
        let axis = normalize_axis(axis, rank)?;
        let Dim::Known(size) = dims[axis] else {
            dims[axis] = Dim::Unknown;
            continue;
        };
        let (size, start, end, step) = (size as i128, start as i128, end as i128, step as i128);
        if step == 0 {
            return None;
        }
        let clamp = |x: i128, lo: i128, hi: i128| (if x < 0 { x + size } else { x }).clamp(lo, hi);
        let len = if step > 0 {
            let (s, e) = (clamp(start, 0, size), clamp(end, 0, size));
            (e - s + step - 1).div_euclid(step).max(0)
        } else {
            let (s, e) = (clamp(start, -1, size - 1), clamp(end, -1, size - 1));
            (s - e - step - 1).div_euclid(-step).max(0)
        };
        dims[axis] = known_dim(len);
    }
    Some(dims)
}

/// A computed dim: known when it is a valid size, unknown when hostile attributes put
/// it out of range.
fn known_dim(dim: i128) -> Dim {
    usize::try_from(dim).map_or(Dim::Unknown, Dim::Known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::op::Attributes;
    use crate::ir::tensor::Tensor;

    /// Dims written as numbers, a negative one standing for the symbol `N` (as
    /// `ModelBuilder::input` declares it).
    fn dims(spec: &[i64]) -> Vec<Dim> {
        spec.iter()
            .map(|&d| match usize::try_from(d) {
                Ok(d) => Dim::Known(d),
                Err(_) => Dim::Symbol("N".into()),
            })
            .collect()
    }

    fn ints(values: &[i64]) -> Tensor {
        Tensor::from_i64(vec![values.len()], values)
    }

    fn scalar(value: f32) -> Tensor {
        Tensor::from_f32(vec![], &[value])
    }

    /// The model of one node `op` reading `x` (of `x_dims`) and then the constants, in
    /// order, and writing `y`.
    fn one_node(
        op: &str,
        x_dims: &[i64],
        constants: Vec<Tensor>,
        attrs: Attributes,
    ) -> ModelBuilder {
        let x = ModelBuilder::new(13).input("x", x_dims);
        node_reading(x, "x", op, constants, attrs)
    }

    /// `builder` and a node `op` reading its value `data` and then the constants, in order,
    /// and writing `y`.
    fn node_reading(
        mut builder: ModelBuilder,
        data: &str,
        op: &str,
        constants: Vec<Tensor>,
        attrs: Attributes,
    ) -> ModelBuilder {
        let names: Vec<String> = (0..constants.len()).map(|i| format!("c{i}")).collect();
        for (name, tensor) in names.iter().zip(constants) {
            builder = builder.initializer(name, tensor);
        }
        let inputs: Vec<&str> = [data]
            .into_iter()
            .chain(names.iter().map(String::as_str))
            .collect();
        builder.node(op, &inputs, &["y"], attrs)
    }

    /// The inferred type of the value `name` of the model, `y` declared as its output.
    fn type_of(builder: ModelBuilder, name: &str) -> ValueType {
        let model = Model::from_proto(builder.output("y").build()).expect("a valid model");
        let shapes = infer(&model.graph, &PinnedShapes::default()).expect("inference runs");
        let value = model
            .graph
            .value_by_name(name)
            .expect("a value of the model");
        shapes.get(value).clone()
    }

    fn y(builder: ModelBuilder) -> Option<Vec<Dim>> {
        type_of(builder, "y").dims
    }

    fn y_of(
        op: &str,
        x_dims: &[i64],
        constants: Vec<Tensor>,
        attrs: Attributes,
    ) -> Option<Vec<Dim>> {
        y(one_node(op, x_dims, constants, attrs))
    }

    /// `op` (with `constants`) reading the output of an operator nothing is known of.
    fn y_after_unknown(op: &str, constants: Vec<Tensor>, attrs: Attributes) -> ValueType {
        let unknown = ModelBuilder::new(13).input("x", &[2, 3]).node(
            "Mystery",
            &["x"],
            &["h"],
            Attributes::default(),
        );
        type_of(node_reading(unknown, "h", op, constants, attrs), "y")
    }

    #[test]
    fn elementwise_ops_keep_their_input_dims_symbols_included() {
        let x = [-1, 3, 4, 4];
        for op in [
            "Relu",
            "Clip",
            "LeakyRelu",
            "HardSigmoid",
            "HardSwish",
            "Sigmoid",
            "Tanh",
            "Softmax",
            "Identity",
            "Dropout",
        ] {
            let t = type_of(one_node(op, &x, vec![], Attributes::default()), "y");
            assert_eq!(t.dims, Some(dims(&x)), "{op}");
            assert_eq!(t.dtype, Some(DataType::Float), "{op}");
        }
        let stats: Vec<Tensor> = (0..4)
            .map(|_| Tensor::from_f32(vec![3], &[1.0; 3]))
            .collect();
        assert_eq!(
            y_of("BatchNormalization", &x, stats, Attributes::default()),
            Some(dims(&x))
        );
        let unknown = y_after_unknown("Relu", vec![], Attributes::default());
        assert_eq!(unknown.dims, None);
    }

    #[test]
    fn cast_keeps_the_dims_and_takes_the_element_type_it_names() {
        let to_int64 = Attributes::default().with_int("to", 7);
        let t = type_of(one_node("Cast", &[-1, 5], vec![], to_int64), "y");
        assert_eq!(t.dims, Some(dims(&[-1, 5])));
        assert_eq!(t.dtype, Some(DataType::Int64));
    }

    #[test]
    fn dropout_masks_the_same_dims_in_bool() {
        let builder = ModelBuilder::new(13).input("x", &[-1, 8]).node(
            "Dropout",
            &["x"],
            &["y", "mask"],
            Attributes::default(),
        );
        let mask = type_of(builder, "mask");
        assert_eq!(mask.dims, Some(dims(&[-1, 8])));
        assert_eq!(mask.dtype, Some(DataType::Bool));
    }

    #[test]
    fn binary_ops_broadcast_numpy_style() {
        let two_inputs = |op: &str, a: &[i64], b: &[i64]| {
            y(ModelBuilder::new(13).input("a", a).input("b", b).node(
                op,
                &["a", "b"],
                &["y"],
                Attributes::default(),
            ))
        };
        for op in ["Add", "Sub", "Mul", "Div", "PRelu"] {
            assert_eq!(
                two_inputs(op, &[-1, 3, 1, 5], &[4, 1]),
                Some(dims(&[-1, 3, 4, 5])),
                "{op}"
            );
        }
        // A symbol meets a number other than 1: the number is what the model can run at.
        assert_eq!(two_inputs("Add", &[-1, 2], &[3, 2]), Some(dims(&[3, 2])));
        assert_eq!(
            two_inputs("Add", &[2, 3], &[4]),
            None,
            "3 and 4 do not broadcast"
        );
    }

    #[test]
    fn windowed_layers_place_their_window_on_each_spatial_axis() {
        let conv = Attributes::default()
            .with_ints("pads", &[1, 1, 1, 1])
            .with_ints("strides", &[2, 2]);
        let weight = Tensor::from_f32(vec![4, 3, 3, 3], &[0.0; 108]);
        assert_eq!(
            y_of("Conv", &[-1, 3, 8, 9], vec![weight.clone()], conv.clone()),
            Some(dims(&[-1, 4, 4, 5]))
        );
        // A symbolic spatial dim gives an unknown output dim on its axis only.
        assert_eq!(
            y_of("Conv", &[1, 3, -1, 8], vec![weight.clone()], conv),
            Some(vec![
                Dim::Known(1),
                Dim::Known(4),
                Dim::Unknown,
                Dim::Known(4)
            ])
        );
        let pool = |ceil: i64| {
            Attributes::default()
                .with_ints("kernel_shape", &[3, 3])
                .with_ints("strides", &[2, 2])
                .with_int("ceil_mode", ceil)
        };
        assert_eq!(
            y_of("AveragePool", &[-1, 3, 8, 8], vec![], pool(0)),
            Some(dims(&[-1, 3, 3, 3]))
        );
        assert_eq!(
            y_of("MaxPool", &[-1, 3, 8, 8], vec![], pool(1)),
            Some(dims(&[-1, 3, 4, 4]))
        );
        let transpose = Attributes::default()
            .with_ints("pads", &[1, 1, 1, 1])
            .with_ints("strides", &[2, 2])
            .with_ints("output_padding", &[1, 0])
            .with_int("group", 2);
        let weight = Tensor::from_f32(vec![4, 3, 3, 3], &[0.0; 108]);
        // 2·(8 − 1) + output padding + (3 − 1) + 1 − 2 pads; channels 3 per group × 2.
        assert_eq!(
            y_of(
                "ConvTranspose",
                &[-1, 4, 8, 8],
                vec![weight.clone()],
                transpose
            ),
            Some(dims(&[-1, 6, 16, 15]))
        );
        // A 2-D kernel on a map with one spatial axis.
        assert_eq!(
            y_of("Conv", &[-1, 3, 8], vec![weight], Attributes::default()),
            None
        );
    }

    #[test]
    fn global_average_pool_keeps_batch_and_channels() {
        assert_eq!(
            y_of(
                "GlobalAveragePool",
                &[-1, 3, 7, 5],
                vec![],
                Attributes::default()
            ),
            Some(dims(&[-1, 3, 1, 1]))
        );
        let unknown = y_after_unknown("GlobalAveragePool", vec![], Attributes::default());
        assert_eq!(unknown.dims, None);
    }

    #[test]
    fn gemm_reads_its_transposes() {
        let b = |dims: Vec<usize>| Tensor::from_f32(dims, &[0.0; 20]);
        assert_eq!(
            y_of("Gemm", &[-1, 4], vec![b(vec![4, 5])], Attributes::default()),
            Some(dims(&[-1, 5]))
        );
        let trans_b = Attributes::default().with_int("transB", 1);
        assert_eq!(
            y_of("Gemm", &[-1, 4], vec![b(vec![5, 4])], trans_b),
            Some(dims(&[-1, 5]))
        );
        let trans_a = Attributes::default().with_int("transA", 1);
        assert_eq!(
            y_of("Gemm", &[4, -1], vec![b(vec![4, 5])], trans_a),
            Some(dims(&[-1, 5]))
        );
        assert_eq!(
            y_of(
                "Gemm",
                &[2, -1, 4],
                vec![b(vec![4, 5])],
                Attributes::default()
            ),
            None,
            "Gemm is 2-D"
        );
    }

    #[test]
    fn matmul_broadcasts_the_batch_and_drops_the_axes_of_vectors() {
        let matmul = |a: &[i64], b: &[i64]| {
            y(ModelBuilder::new(13).input("a", a).input("b", b).node(
                "MatMul",
                &["a", "b"],
                &["y"],
                Attributes::default(),
            ))
        };
        assert_eq!(
            matmul(&[-1, 1, 3, 4], &[5, 4, 6]),
            Some(dims(&[-1, 5, 3, 6]))
        );
        assert_eq!(matmul(&[4], &[2, 4, 6]), Some(dims(&[2, 6])));
        assert_eq!(matmul(&[-1, 4], &[4]), Some(dims(&[-1])));
        assert_eq!(matmul(&[4], &[4]), Some(vec![]));
        assert_eq!(matmul(&[2, 3, 4], &[3, 4, 5]), None, "batch 2 against 3");
        assert_eq!(matmul(&[], &[4, 5]), None, "a scalar does not multiply");
    }

    #[test]
    fn flatten_splits_at_its_axis_counted_from_the_rank_and_needs_static_dims() {
        let axis = |a: i64| Attributes::default().with_int("axis", a);
        assert_eq!(
            y_of("Flatten", &[2, 3, 4, 5], vec![], Attributes::default()),
            Some(dims(&[2, 60]))
        );
        assert_eq!(
            y_of("Flatten", &[2, 3, 4, 5], vec![], axis(-2)),
            Some(dims(&[6, 20]))
        );
        assert_eq!(
            y_of("Flatten", &[2, 3, 4, 5], vec![], axis(0)),
            Some(dims(&[1, 120]))
        );
        assert_eq!(
            y_of("Flatten", &[2, 3, 4, 5], vec![], axis(4)),
            Some(dims(&[120, 1]))
        );
        assert_eq!(y_of("Flatten", &[-1, 3, 4], vec![], axis(1)), None);
        assert_eq!(
            y_of("Flatten", &[2, 3], vec![], axis(3)),
            None,
            "axis past the rank"
        );
    }

    #[test]
    fn reshape_copies_zeros_and_infers_the_minus_one() {
        let reshape = |x: &[i64], target: &[i64]| {
            y_of("Reshape", x, vec![ints(target)], Attributes::default())
        };
        assert_eq!(reshape(&[-1, 3, 4], &[0, -1]), Some(dims(&[-1, 12])));
        assert_eq!(reshape(&[2, 3, 4], &[-1, 2, 2]), Some(dims(&[6, 2, 2])));
        assert_eq!(
            reshape(&[2, 3, 4], &[5, -1]),
            Some(vec![Dim::Known(5), Dim::Unknown]),
            "24 elements are no multiple of 5"
        );
        assert_eq!(
            reshape(&[-1, 3, 4], &[6, -1]),
            Some(vec![Dim::Known(6), Dim::Unknown]),
            "N elements of 12 each, split by 6"
        );
        let allow_zero = Attributes::default().with_int("allowzero", 1);
        assert_eq!(
            y_of("Reshape", &[0, 3], vec![ints(&[3, 0])], allow_zero),
            Some(dims(&[3, 0]))
        );
    }

    #[test]
    fn reshape_to_a_computed_target_keeps_the_symbols_it_reads() {
        // y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): [N, 12].
        let builder = ModelBuilder::new(13)
            .input("x", &[-1, 3, 4])
            .initializer("zero", Tensor::from_i64(vec![], &[0]))
            .initializer("axes", ints(&[0]))
            .initializer("rest", ints(&[-1]))
            .node("Shape", &["x"], &["shape"], Attributes::default())
            .node("Gather", &["shape", "zero"], &["n"], Attributes::default())
            .node("Unsqueeze", &["n", "axes"], &["n1"], Attributes::default())
            .node(
                "Concat",
                &["n1", "rest"],
                &["target"],
                Attributes::default().with_int("axis", 0),
            )
            .node("Reshape", &["x", "target"], &["y"], Attributes::default());
        assert_eq!(y(builder), Some(dims(&[-1, 12])));
        let fed_target = ModelBuilder::new(13)
            .input("x", &[-1, 3, 4])
            .input("target", &[2])
            .node("Reshape", &["x", "target"], &["y"], Attributes::default());
        assert_eq!(y(fed_target), None, "a target known only when run");
    }

    #[test]
    fn transpose_permutes_and_reverses_by_default() {
        let perm = Attributes::default().with_ints("perm", &[0, 2, 3, 1]);
        assert_eq!(
            y_of("Transpose", &[-1, 3, 4, 5], vec![], perm),
            Some(dims(&[-1, 4, 5, 3]))
        );
        assert_eq!(
            y_of("Transpose", &[-1, 3, 4], vec![], Attributes::default()),
            Some(dims(&[4, 3, -1]))
        );
        let out_of_range = Attributes::default().with_ints("perm", &[1, 5]);
        assert_eq!(
            y_of("Transpose", &[2, 3], vec![], out_of_range),
            Some(vec![Dim::Known(3), Dim::Unknown])
        );
    }

    #[test]
    fn concat_sums_its_axis() {
        let concat = |a: &[i64], b: &[i64], attrs: Attributes| {
            y(ModelBuilder::new(13).input("a", a).input("b", b).node(
                "Concat",
                &["a", "b"],
                &["y"],
                attrs,
            ))
        };
        let axis = |a: i64| Attributes::default().with_int("axis", a);
        assert_eq!(
            concat(&[-1, 3, 4], &[-1, 5, 4], axis(1)),
            Some(dims(&[-1, 8, 4]))
        );
        assert_eq!(
            concat(&[-1, 3], &[2, 3], axis(0)),
            Some(vec![Dim::Unknown, Dim::Known(3)]),
            "a symbol on the axis leaves its sum unknown"
        );
        assert_eq!(
            concat(&[2, 3], &[2, 3], Attributes::default()),
            None,
            "no axis"
        );
        assert_eq!(
            concat(&[2, 3], &[2, 3], axis(2)),
            None,
            "axis past the rank"
        );
    }

    #[test]
    fn squeeze_drops_the_axes_given_or_every_one() {
        assert_eq!(
            y_of(
                "Squeeze",
                &[-1, 1, 4, 1],
                vec![ints(&[1])],
                Attributes::default()
            ),
            Some(dims(&[-1, 4, 1]))
        );
        assert_eq!(
            y_of("Squeeze", &[-1, 1, 4, 1], vec![], Attributes::default()),
            Some(dims(&[-1, 4]))
        );
        assert_eq!(
            y_after_unknown("Squeeze", vec![ints(&[0])], Attributes::default()).dims,
            None
        );
    }

    #[test]
    fn unsqueeze_inserts_ones_at_the_axes_of_the_output() {
        assert_eq!(
            y_of(
                "Unsqueeze",
                &[-1, 3, 4],
                vec![ints(&[0, -1])],
                Attributes::default()
            ),
            Some(dims(&[1, -1, 3, 4, 1]))
        );
        let unknown_axes = ModelBuilder::new(13)
            .input("x", &[-1, 3])
            .input("axes", &[1])
            .node("Unsqueeze", &["x", "axes"], &["y"], Attributes::default());
        assert_eq!(y(unknown_axes), None);
    }

    #[test]
    fn pad_adds_its_begin_and_end_pads_to_known_dims() {
        let pads = ints(&[0, 0, 1, 2, 0, 0, 3, 4]);
        assert_eq!(
            y_of("Pad", &[-1, 3, 4, 4], vec![pads], Attributes::default()),
            Some(vec![
                Dim::Unknown,
                Dim::Known(3),
                Dim::Known(8),
                Dim::Known(10)
            ])
        );
        let shrinking = ints(&[0, -5, 0, 0]);
        assert_eq!(
            y_of("Pad", &[2, 4], vec![shrinking], Attributes::default()),
            Some(vec![Dim::Known(2), Dim::Unknown]),
            "a negative size"
        );
        assert_eq!(
            y_of("Pad", &[2, 4], vec![ints(&[1, 1])], Attributes::default()),
            None,
            "two pads for two axes"
        );
    }

    #[test]
    fn shape_counts_the_axes_it_reads_in_int64() {
        let t = type_of(
            one_node("Shape", &[-1, 3, 4, 5], vec![], Attributes::default()),
            "y",
        );
        assert_eq!((t.dims, t.dtype), (Some(dims(&[4])), Some(DataType::Int64)));
        let middle = Attributes::default()
            .with_int("start", 1)
            .with_int("end", -1);
        assert_eq!(
            y_of("Shape", &[-1, 3, 4, 5], vec![], middle),
            Some(dims(&[2]))
        );
        let unknown = y_after_unknown("Shape", vec![], Attributes::default());
        assert_eq!(unknown.dims, None);
    }

    #[test]
    fn gather_puts_the_indices_dims_in_place_of_its_axis() {
        let indices = Tensor::from_i64(vec![2, 5], &[0; 10]);
        let axis = |a: i64| Attributes::default().with_int("axis", a);
        assert_eq!(
            y_of("Gather", &[-1, 3, 4], vec![indices.clone()], axis(1)),
            Some(dims(&[-1, 2, 5, 4]))
        );
        let scalar_index = Tensor::from_i64(vec![], &[0]);
        assert_eq!(
            y_of("Gather", &[-1, 3, 4], vec![scalar_index], axis(-1)),
            Some(dims(&[-1, 3]))
        );
        assert_eq!(y_of("Gather", &[-1, 3], vec![indices], axis(2)), None);
    }

    #[test]
    fn slice_counts_the_elements_each_step_reaches() {
        let slice = |x: &[i64], starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]| {
            let constants = vec![ints(starts), ints(ends), ints(axes), ints(steps)];
            y_of("Slice", x, constants, Attributes::default())
        };
        // 1, 3, 5, 7 on axis 1; 7, 4, 1 on axis 2.
        assert_eq!(
            slice(&[-1, 10, 8], &[1, -1], &[-1, -100], &[1, 2], &[2, -3]),
            Some(dims(&[-1, 4, 3]))
        );
        assert_eq!(
            slice(&[2, -1], &[0], &[1], &[1], &[1]),
            Some(vec![Dim::Known(2), Dim::Unknown]),
            "a symbolic axis sliced"
        );
        assert_eq!(slice(&[4, 4], &[0], &[4], &[0], &[0]), None, "step 0");
    }

    #[test]
    fn reduce_mean_keeps_or_drops_the_reduced_axes() {
        let axes = |keep: i64| {
            Attributes::default()
                .with_ints("axes", &[2, -1])
                .with_int("keepdims", keep)
        };
        assert_eq!(
            y_of("ReduceMean", &[-1, 3, 4, 5], vec![], axes(1)),
            Some(dims(&[-1, 3, 1, 1]))
        );
        assert_eq!(
            y_of("ReduceMean", &[-1, 3, 4, 5], vec![], axes(0)),
            Some(dims(&[-1, 3]))
        );
        assert_eq!(
            y_of("ReduceMean", &[-1, 3], vec![], Attributes::default()),
            Some(dims(&[1, 1])),
            "every axis without axes"
        );
    }

    #[test]
    fn a_constant_has_its_tensors_type() {
        let value = Tensor::from_i64(vec![2, 3], &[0; 6]).to_proto("value");
        let builder = ModelBuilder::new(13).input("x", &[1]).node(
            "Constant",
            &[],
            &["y"],
            Attributes::default().with_tensor("value", value),
        );
        let t = type_of(builder, "y");
        assert_eq!(
            (t.dims, t.dtype),
            (Some(dims(&[2, 3])), Some(DataType::Int64))
        );
    }

    #[test]
    fn operators_sized_by_constant_inputs_claim_what_those_say() {
        let shape = ints(&[2, 3]);
        let of_shape = ModelBuilder::new(13)
            .input("x", &[1])
            .initializer("shape", shape.clone())
            .node("ConstantOfShape", &["shape"], &["y"], Attributes::default());
        assert_eq!(y(of_shape), Some(dims(&[2, 3])));
        assert_eq!(
            y_of(
                "Expand",
                &[-1, 1, 4],
                vec![ints(&[3, 1])],
                Attributes::default()
            ),
            Some(dims(&[-1, 3, 4]))
        );
        assert_eq!(
            y_of("Tile", &[-1, 2], vec![ints(&[2, 3])], Attributes::default()),
            Some(vec![Dim::Unknown, Dim::Known(6)])
        );
        let range = |delta: f32| {
            y(ModelBuilder::new(13)
                .initializer("start", scalar(0.0))
                .initializer("limit", scalar(10.0))
                .initializer("delta", scalar(delta))
                .node(
                    "Range",
                    &["start", "limit", "delta"],
                    &["y"],
                    Attributes::default(),
                ))
        };
        assert_eq!(range(3.0), Some(dims(&[4])));
        assert_eq!(
            range(0.0),
            Some(vec![Dim::Known(usize::MAX)]),
            "a claim no model can hold, for the preflight to refuse"
        );
        let no_repeats = ModelBuilder::new(13).input("x", &[2]).node(
            "Tile",
            &["x"],
            &["y"],
            Attributes::default(),
        );
        assert_eq!(y(no_repeats), None, "repeats that are not constant");
    }

    #[test]
    fn what_cannot_be_inferred_falls_back_to_the_declared_type() {
        let mut proto = ModelBuilder::new(13)
            .input("x", &[2, 3])
            .node("Mystery", &["x"], &["h"], Attributes::default())
            .node("Relu", &["h"], &["y"], Attributes::default())
            .output("y")
            .build();
        let mut declared = ModelBuilder::new(13).input("h", &[-1, 7]).build();
        let graph = proto.graph.as_mut().expect("a graph");
        graph
            .value_info
            .push(declared.graph.as_mut().expect("a graph").input.remove(0));
        let model = Model::from_proto(proto).expect("a valid model");
        let shapes = infer(&model.graph, &PinnedShapes::default()).expect("inference runs");
        let y = model.graph.value_by_name("y").expect("y");
        assert_eq!(shapes.get(y).dims, Some(dims(&[-1, 7])));
    }

    #[test]
    fn pinned_dims_replace_the_declared_ones_and_must_name_an_input() {
        let builder = one_node("Relu", &[-1, 3, -1, -1], vec![], Attributes::default());
        let model = Model::from_proto(builder.output("y").build()).expect("a valid model");
        let pinned: PinnedShapes = [("x".to_string(), vec![1, 3, 8, 8])].into();
        let shapes = infer(&model.graph, &pinned).expect("inference runs");
        let y = model.graph.value_by_name("y").expect("y");
        assert_eq!(shapes.get(y).static_dims(), Some(vec![1, 3, 8, 8]));
        let typo: PinnedShapes = [("X".to_string(), vec![1])].into();
        let error = infer(&model.graph, &typo).unwrap_err().to_string();
        assert!(
            error.contains("'X'") && error.contains("inputs: x"),
            "{error}"
        );
    }

    #[test]
    fn declaring_pinned_dims_keeps_the_batch_symbolic() {
        let builder = one_node("Relu", &[-1, 3, -1, -1], vec![], Attributes::default());
        let mut model = Model::from_proto(builder.output("y").build()).expect("a valid model");
        let pinned: PinnedShapes = [("x".to_string(), vec![1, 3, 8, 8])].into();
        declare_pinned_dims(&mut model.graph, &pinned);
        let shapes = infer(&model.graph, &PinnedShapes::default()).expect("inference runs");
        let x = model.graph.value_by_name("x").expect("x");
        assert_eq!(shapes.get(x).dims, Some(dims(&[-1, 3, 8, 8])));
    }
}
