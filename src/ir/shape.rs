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
            let declared = &shapes.types[out.0];
            shapes.types[out.0] = ValueType {
                dtype: t.dtype.or(declared.dtype),
                dims: if t.dims.is_some() {
                    t.dims.clone()
                } else {
                    declared.dims.clone()
                },
            };
        }
    }
    Ok(shapes)
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

    /// The model of one node `op` reading `x` (of `x_dims`) and then the constants, in
    /// order, and writing `y`.
    fn one_node(
        op: &str,
        x_dims: &[i64],
        constants: Vec<Tensor>,
        attrs: Attributes,
    ) -> ModelBuilder {
        let names: Vec<String> = (0..constants.len()).map(|i| format!("c{i}")).collect();
        let mut builder = ModelBuilder::new(13).input("x", x_dims);
        for (name, tensor) in names.iter().zip(constants) {
            builder = builder.initializer(name, tensor);
        }
        let inputs: Vec<&str> = ["x"]
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
}
