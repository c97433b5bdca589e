//! Small matching helpers the rules share: constant inputs, sole readers, attribute or
//! input forms, padding.

use crate::error::Result;
use crate::ir::window::Window;
use crate::ir::{Graph, Node, NodeId, Tensor, ValueId};

/// The constant (initializer) read at input `slot` of `node`.
pub(super) fn constant_input<'g>(graph: &'g Graph, node: &Node, slot: usize) -> Option<&'g Tensor> {
    graph.constant(node.input(slot)?)
}

/// The node that alone reads `value` (which is not a graph output either).
pub(super) fn sole_reader(graph: &Graph, value: ValueId) -> Option<NodeId> {
    graph.has_single_use(value).then(|| graph.users(value)[0])
}

/// An integer list given as an attribute (older opsets) or as a constant input (newer).
/// `None` when it is neither, or is an input that is not constant.
pub(super) fn ints_attribute_or_input(
    graph: &Graph,
    node: &Node,
    name: &str,
    slot: usize,
) -> Result<Option<Vec<i64>>> {
    if let Some(values) = node.ints(name)? {
        return Ok(Some(values));
    }
    Ok(constant_input(graph, node, slot).and_then(Tensor::to_i64))
}

/// The node reads no padding: it has no window, or one without pads beyond zeros and
/// without SAME padding.
pub(super) fn is_unpadded(graph: &Graph, node: &Node) -> Result<bool> {
    Ok(Window::in_graph(graph, node)?.is_none_or(|w| w.is_unpadded()))
}

/// A Gemm bias that is one row broadcast down the output ([], [1], [N] or [1, N]); a
/// bias that varies down the rows is no per-column bias.
pub(super) fn is_row_bias(bias: &Tensor) -> bool {
    bias.dims().len() <= 2 && bias.dims().iter().rev().skip(1).all(|&d| d == 1)
}

/// The producer of `value` when one node alone reads `value` (and it is no graph output):
/// a node a multi-node pattern can take over whole.
pub(super) fn single_use_producer(graph: &Graph, value: ValueId) -> Option<NodeId> {
    graph
        .producer(value)
        .filter(|_| graph.has_single_use(value))
}

/// The two inputs of a binary node, in both orders (for operators that commute).
pub(super) fn operand_orders(node: &Node) -> Option<[(ValueId, ValueId); 2]> {
    let (a, b) = (node.input(0)?, node.input(1)?);
    Some([(a, b), (b, a)])
}

/// The value of a one-element constant of rank 0 or 1, which broadcasts like a scalar
/// against anything of rank 1 or more.
pub(super) fn scalar_constant(graph: &Graph, value: ValueId) -> Option<f64> {
    let tensor = graph.constant(value)?;
    if tensor.numel() != 1 || tensor.dims().len() > 1 {
        return None;
    }
    tensor.to_f64()?.first().copied()
}
