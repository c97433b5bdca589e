//! Recognising activations: whether a node is (the root of) an activation, of which kind,
//! from which value to which. The forms exporters write:
//!
//! - `Relu(x)`, `LeakyRelu(x; α)`, and `PRelu(x, slope)` with a constant slope (one, or
//!   one per channel);
//! - `Clip(x, min, max)`, its bounds attributes (before opset 11) or constant inputs
//!   (from opset 11); ReLU6 is Clip(0, 6);
//! - HardSwish: the native node (opset 14+); `x · HardSigmoid(x; α = 1/6, β = 1/2)`
//!   (PyTorch before opset 14); and written out as `x · Clip(x + 3, 0, 6) / 6`
//!   (PaddlePaddle), the Mul and the Div in either order, the /6 possibly a Mul by 1/6;
//!   and as `x · Clip(x / 6 + 1/2, 0, 1)` (HardSigmoid written out, as PyTorch exports
//!   the modules onnx2torch makes).
//!
//! A multi-node form is recognised at its root, the node producing its output, and only
//! when nothing outside the form reads its other nodes — so replacing the form removes
//! them all. A HardSigmoid alone (a squeeze-excite gate) is no activation here, and the
//! Clip of a written-out HardSwish belongs to that HardSwish, not to a Clip of its own.
//! Constants are read from initializers: recognise after `constant_to_initializer`.

use std::fmt;

use crate::error::Result;
use crate::ir::{Graph, Node, NodeId, OpKind, Tensor, ValueId};
use crate::passes::matching::{
    constant_input, operand_orders, scalar_constant, single_use_producer, sole_reader,
};

/// What an activation computes.
#[derive(Clone, Debug, PartialEq)]
pub enum ActivationKind {
    /// max(x, 0).
    Relu,
    /// min(max(x, min), max); a missing bound is infinite. ReLU6 is Clip(0, 6).
    Clip { min: f32, max: f32 },
    /// x for x ≥ 0, α·x below.
    LeakyRelu { alpha: f32 },
    /// x for x ≥ 0, slope·x below; the slope broadcasts against x (one, or one per
    /// channel).
    PRelu { slope: Tensor },
    /// x · min(max(x + 3, 0), 6) / 6, in whichever form it is written.
    HardSwish,
}

impl ActivationKind {
    /// The operator name it goes by.
    pub fn name(&self) -> &'static str {
        match self {
            ActivationKind::Relu => "Relu",
            ActivationKind::Clip { .. } => "Clip",
            ActivationKind::LeakyRelu { .. } => "LeakyRelu",
            ActivationKind::PRelu { .. } => "PRelu",
            ActivationKind::HardSwish => "HardSwish",
        }
    }
}

impl fmt::Display for ActivationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationKind::Clip { min, max } => write!(f, "Clip({min}, {max})"),
            ActivationKind::LeakyRelu { alpha } => write!(f, "LeakyRelu({alpha})"),
            ActivationKind::PRelu { slope } => write!(f, "PRelu({} slopes)", slope.numel()),
            _ => f.write_str(self.name()),
        }
    }
}

/// An activation as users see it: named by its root node.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedActivation {
    pub name: String,
    pub kind: ActivationKind,
}

/// Every activation of `graph`, in execution order, named by its root node. Constants
/// are read from initializers: run the canonical passes first.
pub fn activations(graph: &Graph) -> Result<Vec<NamedActivation>> {
    Ok(recognise_all(graph)?
        .into_iter()
        .map(|a| NamedActivation {
            name: graph.node(a.root()).name.clone(),
            kind: a.kind,
        })
        .collect())
}

/// An activation found in a graph.
#[derive(Clone, Debug)]
pub(crate) struct Activation {
    pub kind: ActivationKind,
    /// x, the value it reads.
    pub input: ValueId,
    /// y, the value it produces.
    pub output: ValueId,
    /// Its nodes, the root (the producer of `output`) last.
    pub nodes: Vec<NodeId>,
}

impl Activation {
    pub fn root(&self) -> NodeId {
        *self.nodes.last().expect("an activation has a root")
    }
}

/// Every activation of `graph`, in execution order.
pub(crate) fn recognise_all(graph: &Graph) -> Result<Vec<Activation>> {
    graph
        .topological_order()?
        .into_iter()
        .filter_map(|id| recognise(graph, id).transpose())
        .collect()
}

/// The activation rooted at `root`, if it is the root of one.
pub(crate) fn recognise(graph: &Graph, root: NodeId) -> Result<Option<Activation>> {
    let node = graph.node(root);
    let kind = match node.kind {
        OpKind::Relu => Some(ActivationKind::Relu),
        OpKind::LeakyRelu => Some(ActivationKind::LeakyRelu {
            alpha: node.float("alpha")?.unwrap_or(0.01),
        }),
        OpKind::PRelu => prelu_slope(graph, node).map(|slope| ActivationKind::PRelu { slope }),
        OpKind::HardSwish => Some(ActivationKind::HardSwish),
        OpKind::Clip if !belongs_to_hardswish(graph, root)? => {
            clip_bounds(graph, node)?.map(|(min, max)| ActivationKind::Clip { min, max })
        }
        OpKind::Mul | OpKind::Div => return multi_node_hardswish(graph, root),
        _ => None,
    };
    Ok(kind.and_then(|kind| {
        Some(Activation {
            kind,
            input: node.input(0)?,
            output: node.output(0)?,
            nodes: vec![root],
        })
    }))
}

/// `x · Clip(x + 3, 0, 6) / 6` rooted at `root`: the Mul then the Div, or the Div (or a
/// Mul by 1/6) then the Mul.
pub(crate) fn written_out_hardswish(graph: &Graph, root: NodeId) -> Result<Option<Activation>> {
    let parts = match product_then_sixth(graph, root)? {
        Some(parts) => Some(parts),
        None => match sixth_then_product(graph, root)? {
            Some(parts) => Some(parts),
            None => x_times_clipped_line(graph, root)?,
        },
    };
    Ok(parts.and_then(|parts| hardswish(graph, root, parts)))
}

/// What a matcher of a multi-node HardSwish finds: the x it reads, and its nodes other
/// than the root.
type Parts = (ValueId, Vec<NodeId>);

fn multi_node_hardswish(graph: &Graph, root: NodeId) -> Result<Option<Activation>> {
    match hardsigmoid_times_x(graph, root)? {
        Some(parts) => Ok(hardswish(graph, root, parts)),
        None => written_out_hardswish(graph, root),
    }
}

fn hardswish(graph: &Graph, root: NodeId, (input, mut nodes): Parts) -> Option<Activation> {
    nodes.push(root);
    Some(Activation {
        kind: ActivationKind::HardSwish,
        input,
        output: graph.node(root).output(0)?,
        nodes,
    })
}

/// `x · HardSigmoid(x; 1/6, 1/2)`.
fn hardsigmoid_times_x(graph: &Graph, root: NodeId) -> Result<Option<Parts>> {
    let node = graph.node(root);
    if node.kind != OpKind::Mul {
        return Ok(None);
    }
    either_order(node, |x, gate| {
        let Some(id) = producer_of_kind(graph, gate, OpKind::HardSigmoid) else {
            return Ok(None);
        };
        let hardsigmoid = graph.node(id);
        let gates_x = hardsigmoid.input(0) == Some(x) && is_hardswish_gate(hardsigmoid)?;
        Ok(gates_x.then(|| vec![id]))
    })
}

/// `(x · Clip(x + 3, 0, 6)) / 6`.
fn product_then_sixth(graph: &Graph, root: NodeId) -> Result<Option<Parts>> {
    let Some(mul) = sixth_of(graph, graph.node(root))
        .and_then(|product| producer_of_kind(graph, product, OpKind::Mul))
    else {
        return Ok(None);
    };
    let relu6 = either_order(graph.node(mul), |x, clipped| {
        relu6_of_x_plus_3(graph, clipped, x)
    })?;
    Ok(relu6.map(|(x, [add, clip])| (x, vec![add, clip, mul])))
}

/// `x · (Clip(x + 3, 0, 6) / 6)`.
fn sixth_then_product(graph: &Graph, root: NodeId) -> Result<Option<Parts>> {
    let node = graph.node(root);
    if node.kind != OpKind::Mul {
        return Ok(None);
    }
    either_order(node, |x, scaled| {
        let Some(scale) = single_use_producer(graph, scaled) else {
            return Ok(None);
        };
        let Some(clipped) = sixth_of(graph, graph.node(scale)) else {
            return Ok(None);
        };
        let relu6 = relu6_of_x_plus_3(graph, clipped, x)?;
        Ok(relu6.map(|[add, clip]| vec![add, clip, scale]))
    })
}

/// `x · Clip(x / 6 + 1/2, 0, 1)`, the /6 possibly a Mul by 1/6.
fn x_times_clipped_line(graph: &Graph, root: NodeId) -> Result<Option<Parts>> {
    let node = graph.node(root);
    if node.kind != OpKind::Mul {
        return Ok(None);
    }
    either_order(node, |x, gate| {
        let Some(clip) = producer_of_kind(graph, gate, OpKind::Clip) else {
            return Ok(None);
        };
        let sum = graph.node(clip).input(0);
        let Some(add) = sum.and_then(|sum| producer_of_kind(graph, sum, OpKind::Add)) else {
            return Ok(None);
        };
        let scaled = operand_orders(graph.node(add))
            .into_iter()
            .flatten()
            .find(|&(_, c)| scalar_constant(graph, c) == Some(0.5))
            .and_then(|(scaled, _)| single_use_producer(graph, scaled));
        let of_x = scaled.is_some_and(|scale| sixth_of(graph, graph.node(scale)) == Some(x));
        let clipped_to_one = clip_bounds(graph, graph.node(clip))? == Some((0.0, 1.0));
        Ok((of_x && clipped_to_one).then(|| vec![scaled.expect("checked"), add, clip]))
    })
}

/// The first order of the binary `node`'s operands `(x, other)` for which `find` finds
/// a form, with x.
fn either_order<T>(
    node: &Node,
    mut find: impl FnMut(ValueId, ValueId) -> Result<Option<T>>,
) -> Result<Option<(ValueId, T)>> {
    for (x, other) in operand_orders(node).into_iter().flatten() {
        if let Some(found) = find(x, other)? {
            return Ok(Some((x, found)));
        }
    }
    Ok(None)
}

/// The `kind` node producing `value`, if nothing else reads `value`.
fn producer_of_kind(graph: &Graph, value: ValueId, kind: OpKind) -> Option<NodeId> {
    single_use_producer(graph, value).filter(|&id| graph.node(id).kind == kind)
}

/// The v of `v / 6` or `v · (1/6)` when `node` computes one.
fn sixth_of(graph: &Graph, node: &Node) -> Option<ValueId> {
    match node.kind {
        OpKind::Div => {
            let divisor = scalar_constant(graph, node.input(1)?)?;
            node.input(0).filter(|_| divisor == 6.0)
        }
        OpKind::Mul => operand_orders(node)?
            .into_iter()
            .find(|&(_, c)| scalar_constant(graph, c).is_some_and(is_sixth))
            .map(|(v, _)| v),
        _ => None,
    }
}

/// The Add and the Clip computing `value = Clip(x + 3, 0, 6)`, when nothing else reads
/// what they compute.
fn relu6_of_x_plus_3(graph: &Graph, value: ValueId, x: ValueId) -> Result<Option<[NodeId; 2]>> {
    let Some(clip) = producer_of_kind(graph, value, OpKind::Clip) else {
        return Ok(None);
    };
    let sum = graph.node(clip).input(0);
    let Some(add) = sum.and_then(|sum| producer_of_kind(graph, sum, OpKind::Add)) else {
        return Ok(None);
    };
    let adds_3_to_x = operand_orders(graph.node(add))
        .into_iter()
        .flatten()
        .any(|(a, c)| a == x && scalar_constant(graph, c) == Some(3.0));
    let is_relu6 = clip_bounds(graph, graph.node(clip))? == Some((0.0, 6.0));
    Ok((adds_3_to_x && is_relu6).then_some([add, clip]))
}

/// The Clip `clip` is the one of a written-out HardSwish, whose root reads it directly
/// or through one node.
fn belongs_to_hardswish(graph: &Graph, clip: NodeId) -> Result<bool> {
    let reader = |id: NodeId| {
        let output = graph.node(id).output(0)?;
        sole_reader(graph, output)
    };
    let next = reader(clip);
    for root in [next, next.and_then(reader)].into_iter().flatten() {
        let hardswish = written_out_hardswish(graph, root)?;
        if hardswish.is_some_and(|hardswish| hardswish.nodes.contains(&clip)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// HardSigmoid(x; α = 1/6, β = 1/2) = Clip(x + 3, 0, 6) / 6: the gate of a HardSwish.
fn is_hardswish_gate(hardsigmoid: &Node) -> Result<bool> {
    let alpha = hardsigmoid.float("alpha")?.unwrap_or(0.2);
    let beta = hardsigmoid.float("beta")?.unwrap_or(0.5);
    Ok(is_sixth(alpha.into()) && beta == 0.5)
}

/// 1/6 as exporters store it: rounded to f32, or written as a decimal of 7 digits.
fn is_sixth(value: f64) -> bool {
    (value - 1.0 / 6.0).abs() <= 1e-7
}

/// The (min, max) of a Clip with constant bounds.
fn clip_bounds(graph: &Graph, clip: &Node) -> Result<Option<(f32, f32)>> {
    let min = clip_bound(graph, clip, "min", 1, f32::NEG_INFINITY)?;
    let max = clip_bound(graph, clip, "max", 2, f32::INFINITY)?;
    Ok(min.zip(max))
}

/// A bound given as an attribute (before opset 11) or as a constant input (from opset
/// 11); `unbounded` when absent, `None` when an input that is not constant.
fn clip_bound(
    graph: &Graph,
    clip: &Node,
    attribute: &str,
    slot: usize,
    unbounded: f32,
) -> Result<Option<f32>> {
    if let Some(bound) = clip.float(attribute)? {
        return Ok(Some(bound));
    }
    Ok(match clip.input(slot) {
        None => Some(unbounded),
        Some(bound) => scalar_constant(graph, bound).map(|b| b as f32),
    })
}

/// The constant slope of a PRelu that is one value or one per channel (it varies along
/// one axis at most).
fn prelu_slope(graph: &Graph, prelu: &Node) -> Option<Tensor> {
    let slope = constant_input(graph, prelu, 1)?;
    let varying_axes = slope.dims().iter().filter(|&&d| d != 1).count();
    (varying_axes <= 1).then(|| slope.clone())
}

#[cfg(test)]
pub(crate) mod forms {
    //! The ways activations are written, as small models for the passes' tests.

    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model, Tensor};
    use crate::passes::test_models::{conv_attrs, model, positive, weights};

    /// An activation as exporters write it, reading `h` and writing `a`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Form {
        Relu,
        /// Clip(0, 6), its bounds as inputs (opset 11+).
        Relu6,
        /// Clip(0, 6), its bounds as attributes (before opset 11).
        Relu6Attributes,
        LeakyRelu,
        /// One slope per channel.
        PRelu,
        HardSwish,
        /// `HardSigmoid(h; 1/6, 1/2) · h`.
        HardSigmoidTimesX,
        /// `(h · Clip(h + 3, 0, 6)) / 6`.
        WrittenOutMulThenDiv,
        /// `(Clip(3 + h, 0, 6) / 6) · h`.
        WrittenOutDivThenMul,
        /// `(1/6) · (Clip(h + 3, 0, 6) · h)`.
        WrittenOutTimesSixth,
        /// `h · Clip(h · (1/6) + 1/2, 0, 1)`.
        WrittenOutHardSigmoid,
        /// `a = h`: what linearising any of the others leaves.
        Identity,
    }

    pub(crate) const ACTIVATIONS: [Form; 11] = [
        Form::Relu,
        Form::Relu6,
        Form::Relu6Attributes,
        Form::LeakyRelu,
        Form::PRelu,
        Form::HardSwish,
        Form::HardSigmoidTimesX,
        Form::WrittenOutMulThenDiv,
        Form::WrittenOutDivThenMul,
        Form::WrittenOutTimesSixth,
        Form::WrittenOutHardSigmoid,
    ];

    pub(crate) const WRITTEN_OUT: [Form; 4] = [
        Form::WrittenOutMulThenDiv,
        Form::WrittenOutDivThenMul,
        Form::WrittenOutTimesSixth,
        Form::WrittenOutHardSigmoid,
    ];

    /// Channels of `h`.
    pub(crate) const CHANNELS: usize = 4;

    /// The dims of the input `x` of [`between_convs`].
    pub(crate) fn input_dims() -> Vec<Vec<usize>> {
        vec![vec![2, 3, 5, 5]]
    }

    impl Form {
        /// An opset the form is exported at.
        pub(crate) fn opset(self) -> i64 {
            match self {
                Form::Relu6Attributes => 10,
                Form::HardSwish => 14,
                _ => 13,
            }
        }

        /// Adds the form's constants and nodes.
        pub(crate) fn write(self, b: ModelBuilder) -> ModelBuilder {
            let none = Attributes::default;
            match self {
                Form::Relu => b.node("Relu", &["h"], &["a"], none()),
                Form::Relu6 => {
                    with_constants(b).node("Clip", &["h", "zero", "six"], &["a"], none())
                }
                Form::Relu6Attributes => {
                    let bounds = none().with_float("min", 0.0).with_float("max", 6.0);
                    b.node("Clip", &["h"], &["a"], bounds)
                }
                Form::LeakyRelu => {
                    b.node("LeakyRelu", &["h"], &["a"], none().with_float("alpha", 0.1))
                }
                Form::PRelu => b.initializer("slope", positive(&[CHANNELS, 1, 1], 9)).node(
                    "PRelu",
                    &["h", "slope"],
                    &["a"],
                    none(),
                ),
                Form::HardSwish => b.node("HardSwish", &["h"], &["a"], none()),
                Form::HardSigmoidTimesX => b
                    .node(
                        "HardSigmoid",
                        &["h"],
                        &["g"],
                        none().with_float("alpha", 1.0 / 6.0),
                    )
                    .node("Mul", &["g", "h"], &["a"], none()),
                Form::WrittenOutMulThenDiv => relu6_of_h_plus_3(b, &["h", "three"])
                    .node("Mul", &["h", "c"], &["m"], none())
                    .node("Div", &["m", "six"], &["a"], none()),
                Form::WrittenOutDivThenMul => relu6_of_h_plus_3(b, &["three", "h"])
                    .node("Div", &["c", "six"], &["d"], none())
                    .node("Mul", &["d", "h"], &["a"], none()),
                Form::WrittenOutTimesSixth => relu6_of_h_plus_3(b, &["h", "three"])
                    .node("Mul", &["c", "h"], &["m"], none())
                    .node("Mul", &["sixth", "m"], &["a"], none()),
                Form::WrittenOutHardSigmoid => with_constants(b)
                    .node("Mul", &["h", "sixth"], &["m"], none())
                    .node("Add", &["m", "half"], &["s"], none())
                    .node("Clip", &["s", "zero", "one"], &["c"], none())
                    .node("Mul", &["h", "c"], &["a"], none()),
                Form::Identity => b.node("Identity", &["h"], &["a"], none()),
            }
        }
    }

    /// The written-out forms' constants: `zero`, `three` (of dims [1]), `six`, `sixth`,
    /// `half`, `one`.
    pub(crate) fn with_constants(b: ModelBuilder) -> ModelBuilder {
        let scalar = |v: f32| Tensor::from_f32(vec![], &[v]);
        b.initializer("zero", scalar(0.0))
            .initializer("half", scalar(0.5))
            .initializer("one", scalar(1.0))
            .initializer("three", Tensor::from_f32(vec![1], &[3.0]))
            .initializer("six", scalar(6.0))
            .initializer("sixth", scalar(1.0 / 6.0))
    }

    /// `c = Clip(Add(add_inputs), 0, 6)`.
    fn relu6_of_h_plus_3(b: ModelBuilder, add_inputs: &[&str]) -> ModelBuilder {
        with_constants(b)
            .node("Add", add_inputs, &["s"], Attributes::default())
            .node("Clip", &["s", "zero", "six"], &["c"], Attributes::default())
    }

    /// x → Conv → the form (h → a) → Conv → y, at `opset`.
    pub(crate) fn between_convs(opset: i64, form: Form) -> Model {
        let b = ModelBuilder::new(opset)
            .input("x", &[2, 3, 5, 5])
            .initializer("w1", weights(&[CHANNELS, 3, 3, 3], 1))
            .initializer("w2", weights(&[2, CHANNELS, 1, 1], 2))
            .node(
                "Conv",
                &["x", "w1"],
                &["h"],
                conv_attrs(&[1; 4], &[1, 1], 1),
            );
        let unpadded = conv_attrs(&[0; 4], &[1, 1], 1);
        model(
            form.write(b)
                .node("Conv", &["a", "w2"], &["y"], unpadded)
                .output("y"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::forms::{ACTIVATIONS, CHANNELS, Form, between_convs, with_constants};
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::test_models::{model, positive};

    const RELU6: ActivationKind = ActivationKind::Clip { min: 0.0, max: 6.0 };

    fn kinds(model: &Model) -> Vec<ActivationKind> {
        let found = activations(&model.graph).expect("activations are recognised");
        found.into_iter().map(|a| a.kind).collect()
    }

    /// A model reading `h` and a scalar `bound`, with the written-out forms' constants.
    fn reading_h() -> ModelBuilder {
        let b = ModelBuilder::new(13)
            .input("h", &[2, CHANNELS as i64, 3, 3])
            .input("bound", &[]);
        with_constants(b)
    }

    fn expected(form: Form) -> (ActivationKind, usize) {
        match form {
            Form::Relu => (ActivationKind::Relu, 1),
            Form::Relu6 | Form::Relu6Attributes => (RELU6, 1),
            Form::LeakyRelu => (ActivationKind::LeakyRelu { alpha: 0.1 }, 1),
            Form::PRelu => {
                let slope = positive(&[CHANNELS, 1, 1], 9);
                (ActivationKind::PRelu { slope }, 1)
            }
            Form::HardSwish => (ActivationKind::HardSwish, 1),
            Form::HardSigmoidTimesX => (ActivationKind::HardSwish, 2),
            _ => (ActivationKind::HardSwish, 4),
        }
    }

    #[test]
    fn fires_on_every_form_once_from_h_to_a() {
        for form in ACTIVATIONS {
            let m = between_convs(form.opset(), form);
            let graph = &m.graph;
            let found = recognise_all(graph).unwrap();
            assert_eq!(found.len(), 1, "{form:?}: {found:?}");
            let activation = &found[0];
            let (kind, nodes) = expected(form);
            assert_eq!(activation.kind, kind, "{form:?}");
            assert_eq!(activation.nodes.len(), nodes, "{form:?}");
            assert_eq!(graph.value(activation.input).name, "h", "{form:?}");
            assert_eq!(graph.value(activation.output).name, "a", "{form:?}");
            assert_eq!(graph.producer(activation.output), Some(activation.root()));
        }
    }

    #[test]
    fn fires_on_relu6_at_opset_10_and_11() {
        let attributes = between_convs(10, Form::Relu6Attributes);
        let inputs = between_convs(11, Form::Relu6);
        assert_eq!(
            (kinds(&attributes), kinds(&inputs)),
            (vec![RELU6], vec![RELU6])
        );
    }

    #[test]
    fn skips_on_a_hardsigmoid_of_other_alpha_because_it_is_no_hardswish() {
        let gate = Attributes::default().with_float("alpha", 0.2);
        let b = reading_h().node("HardSigmoid", &["h"], &["g"], gate).node(
            "Mul",
            &["h", "g"],
            &["a"],
            Attributes::default(),
        );
        assert_eq!(kinds(&model(b.output("a"))), []);
    }

    #[test]
    fn skips_on_a_hardsigmoid_of_other_beta_because_it_is_no_hardswish() {
        let gate = Attributes::default()
            .with_float("alpha", 1.0 / 6.0)
            .with_float("beta", 0.4);
        let b = reading_h().node("HardSigmoid", &["h"], &["g"], gate).node(
            "Mul",
            &["h", "g"],
            &["a"],
            Attributes::default(),
        );
        assert_eq!(kinds(&model(b.output("a"))), []);
    }

    #[test]
    fn skips_on_a_squeeze_excite_gate_because_it_gates_another_value() {
        let gate = Attributes::default().with_float("alpha", 1.0 / 6.0);
        let b = reading_h()
            .node("GlobalAveragePool", &["h"], &["p"], Attributes::default())
            .node("HardSigmoid", &["p"], &["g"], gate)
            .node("Mul", &["h", "g"], &["a"], Attributes::default());
        assert_eq!(kinds(&model(b.output("a"))), []);
    }

    #[test]
    fn skips_on_a_mul_by_a_hardsigmoid_of_another_value_because_it_is_no_hardswish() {
        let gate = Attributes::default().with_float("alpha", 1.0 / 6.0);
        let b = reading_h()
            .node("HardSigmoid", &["h"], &["g"], gate)
            .node("Relu", &["h"], &["r"], Attributes::default())
            .node("Mul", &["r", "g"], &["a"], Attributes::default());
        assert_eq!(kinds(&model(b.output("a"))), [ActivationKind::Relu]);
    }

    #[test]
    fn skips_on_a_clip_with_a_computed_bound_because_its_kind_is_unknown() {
        let b = reading_h().node(
            "Clip",
            &["h", "zero", "bound"],
            &["a"],
            Attributes::default(),
        );
        assert_eq!(kinds(&model(b.output("a"))), []);
    }

    #[test]
    fn skips_on_a_prelu_with_a_computed_slope_because_its_kind_is_unknown() {
        let b = reading_h().node("PRelu", &["h", "bound"], &["a"], Attributes::default());
        assert_eq!(kinds(&model(b.output("a"))), []);
    }

    #[test]
    fn skips_on_a_written_out_form_adding_2_because_only_its_clip_is_an_activation() {
        let b = reading_h()
            .initializer("two", Tensor::from_f32(vec![], &[2.0]))
            .node("Add", &["h", "two"], &["s"], Attributes::default())
            .node("Clip", &["s", "zero", "six"], &["c"], Attributes::default())
            .node("Mul", &["h", "c"], &["m"], Attributes::default())
            .node("Div", &["m", "six"], &["a"], Attributes::default());
        assert_eq!(kinds(&model(b.output("a"))), [RELU6]);
    }

    #[test]
    fn skips_on_a_written_out_form_whose_clip_is_read_elsewhere_because_it_is_not_closed() {
        let b = reading_h()
            .node("Add", &["h", "three"], &["s"], Attributes::default())
            .node("Clip", &["s", "zero", "six"], &["c"], Attributes::default())
            .node("Mul", &["h", "c"], &["m"], Attributes::default())
            .node("Div", &["m", "six"], &["a"], Attributes::default());
        assert_eq!(kinds(&model(b.output("a").output("c"))), [RELU6]);
    }
}
