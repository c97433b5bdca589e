//! What a node's attributes claim, checked where nodes enter the graph: on load, and in
//! every rewrite the patch engine applies.

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, Node};
use crate::ir::op::OpKind;

/// The attributes shape inference and the folds read off a windowed operator agree with
/// each other and with its weight: one entry per spatial axis, kernel sizes, strides and
/// dilations at least 1, pads at least 0, a group dividing the weight's first dim. A
/// file can claim anything there, and the folds build kernels from it.
pub(crate) fn window_attributes(graph: &Graph, node: &Node) -> Result<()> {
    let error = |reason: String| Error::node(&node.name, node.op(), reason);
    let weight = match node.kind {
        OpKind::Conv | OpKind::ConvTranspose => node
            .input(1)
            .and_then(|w| graph.constant(w))
            .map(|w| w.dims().to_vec()),
        OpKind::AveragePool | OpKind::MaxPool => None,
        _ => return Ok(()),
    };
    let kernel = node.ints("kernel_shape")?;
    let spatial = match (&weight, &kernel) {
        (Some(w), _) => w.len().checked_sub(2).filter(|&s| s > 0).ok_or_else(|| {
            error(format!(
                "its weight has {} dims; a windowed layer's has at least 3",
                w.len()
            ))
        })?,
        (None, Some(k)) => k.len(),
        (None, None) if node.kind == OpKind::Conv || node.kind == OpKind::ConvTranspose => {
            return Ok(());
        }
        (None, None) => return Err(error("it has no kernel_shape".into())),
    };
    for (name, per_axis, least) in [
        ("kernel_shape", 1, 1),
        ("strides", 1, 1),
        ("dilations", 1, 1),
        ("pads", 2, 0),
        ("output_padding", 1, 0),
    ] {
        let Some(values) = node.ints(name)? else {
            continue;
        };
        if values.len() != per_axis * spatial {
            return Err(error(format!(
                "{name} has {} entries for {spatial} spatial axes",
                values.len()
            )));
        }
        if values.iter().any(|&v| v < least) {
            return Err(error(format!(
                "{name} {values:?}: each must be at least {least}"
            )));
        }
    }
    if let (Some(w), Some(k)) = (&weight, &kernel)
        && node.kind == OpKind::Conv
        && !w[2..].iter().zip(k).all(|(&d, &k)| d as i64 == k)
    {
        return Err(error(format!(
            "kernel_shape {k:?} differs from its weight's {:?}",
            &w[2..]
        )));
    }
    let group = node.int("group")?.unwrap_or(1);
    let channels = weight.as_ref().map(|w| w[0] as i64);
    if group < 1 || channels.is_some_and(|c| c % group != 0) {
        return Err(error(format!(
            "group {group} does not divide its weight's {} channels",
            channels.unwrap_or(0)
        )));
    }
    Ok(())
}
