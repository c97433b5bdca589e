//! What a node's attributes claim, checked where nodes enter the graph: on load, and in
//! every rewrite the patch engine applies.

use crate::error::Result;
use crate::ir::graph::{Graph, Node};
use crate::ir::window::Window;

/// The window of a Conv, ConvTranspose or pool agrees with itself and with the layer's
/// constant weight (`Window::of` states the rules). A file can claim anything there, and
/// shape inference, the preflight and the folds build on it.
pub(crate) fn window_attributes(graph: &Graph, node: &Node) -> Result<()> {
    Window::in_graph(graph, node).map(drop)
}
