//! What a node's attributes claim, checked where nodes enter the graph: on load, and in
//! every rewrite the patch engine applies.

use crate::error::Result;
use crate::ir::graph::{Graph, Node};
use crate::ir::op::OpKind;
use crate::ir::window::Window;

/// The window of a Conv, ConvTranspose or pool agrees with itself and with the layer's
/// constant weight (`Window::of` states the rules). A file can claim anything there, and
/// shape inference, the preflight and the folds build on it.
pub(crate) fn window_attributes(graph: &Graph, node: &Node) -> Result<()> {
    if !Window::applies_to(&node.kind) {
        return Ok(());
    }
    let weight = match node.kind {
        OpKind::Conv | OpKind::ConvTranspose => node
            .input(1)
            .and_then(|w| graph.constant(w))
            .map(|w| w.dims().to_vec()),
        _ => None,
    };
    Window::of(node, weight.as_deref()).map(drop)
}
