//! What tract must not be given: models it would crash on or allocate without bound.
//! tract trusts a model's claims (a ConstantOfShape's shape, a pool's window) and indexes
//! some layouts unchecked, so these are checked first, at the dims the model will run at.

use crate::error::{Error, Result};
use crate::ir::shape::{self, Dim, PinnedShapes, Shapes};
use crate::ir::window::{AutoPad, Window};
use crate::ir::{Graph, Model, OpKind};

/// Most elements one value may hold when a model runs: far above any activation a real
/// model computes, far below what a hostile file can claim.
pub const MAX_VALUE_ELEMENTS: u64 = 1 << 30;

/// Refuses a model tract must not be given at these input dims: one whose inputs or
/// computed values would hold more than `MAX_VALUE_ELEMENTS` (tract would allocate them,
/// or panic trying, so memory would follow what the file claims, not what it holds), one
/// with a layer reading fewer dims than its layout has (tract indexes the channel and
/// spatial dims unchecked), or a window wider than its padded input (tract lays out
/// offsets for every tap).
pub fn check_runnable(model: &Model, pinned: &PinnedShapes) -> Result<()> {
    let shapes = shape::infer(&model.graph, pinned)?;
    check_value_sizes(&model.graph, &shapes)?;
    check_layout_ranks(&model.graph, &shapes)?;
    check_windows(&model.graph, &shapes)
}

fn check_value_sizes(graph: &Graph, shapes: &Shapes) -> Result<()> {
    let too_large = |value| {
        let elements = shapes
            .get(value)
            .dims
            .iter()
            .flatten()
            .filter_map(Dim::known)
            .fold(1u64, |n, d| n.saturating_mul(d as u64));
        (elements > MAX_VALUE_ELEMENTS).then(|| {
            format!(
                "'{}' would hold {elements} elements ({}), more than the {MAX_VALUE_ELEMENTS} allowed",
                graph.value(value).name,
                shapes.get(value)
            )
        })
    };
    if let Some(reason) = graph.runtime_inputs().find_map(too_large) {
        return Err(Error::graph(format!("input {reason}")));
    }
    for (_, node) in graph.nodes() {
        if let Some(reason) = node.outputs.iter().flatten().find_map(|&v| too_large(v)) {
            return Err(Error::node(
                &node.name,
                node.op(),
                format!("its output {reason}"),
            ));
        }
    }
    Ok(())
}

/// Layers whose first input has a batch, channel (and spatial) layout, and the fewest
/// dims it has.
const LAYOUT_RANKS: &[(&str, usize)] = &[
    ("BatchNormalization", 2),
    ("InstanceNormalization", 3),
    ("LRN", 3),
    ("Conv", 3),
    ("ConvInteger", 3),
    ("ConvTranspose", 3),
    ("AveragePool", 3),
    ("MaxPool", 3),
    ("LpPool", 3),
    ("GlobalAveragePool", 3),
    ("GlobalMaxPool", 3),
    ("GlobalLpPool", 3),
    ("DepthToSpace", 4),
    ("SpaceToDepth", 4),
];

fn check_layout_ranks(graph: &Graph, shapes: &Shapes) -> Result<()> {
    for (_, node) in graph.nodes() {
        let Some(&(_, least)) = LAYOUT_RANKS.iter().find(|(op, _)| *op == node.op()) else {
            continue;
        };
        let rank = node.input(0).and_then(|x| shapes.get(x).rank());
        if let Some(rank) = rank.filter(|&r| r < least) {
            return Err(Error::node(
                &node.name,
                node.op(),
                format!("its input has {rank} dims; it needs at least {least}"),
            ));
        }
    }
    Ok(())
}

/// A window spans at most its padded input along each spatial axis whose size is known.
/// With automatic padding a Conv's window (its weight: real data) is not checked, and a
/// pool's (a bare claim) may overhang its input by at most its size on each side.
fn check_windows(graph: &Graph, shapes: &Shapes) -> Result<()> {
    for (_, node) in graph.nodes() {
        if !matches!(
            node.kind,
            OpKind::Conv | OpKind::AveragePool | OpKind::MaxPool
        ) {
            continue;
        }
        let Some(input) = node.input(0).and_then(|x| shapes.get(x).dims.as_ref()) else {
            continue;
        };
        let weight = node.input(1).and_then(|w| shapes.get(w).static_dims());
        let window = Window::of(node, weight.as_deref())?;
        let explicit = window.auto_pad == AutoPad::NotSet;
        if !explicit && node.kind == OpKind::Conv {
            continue;
        }
        let Ok(axes) = window.axes(None) else {
            continue;
        };
        for (axis, a) in axes.iter().enumerate() {
            let Some(size) = input.get(axis + 2).and_then(Dim::known) else {
                continue;
            };
            let size = size as u128;
            let extent = a.dilation as u128 * (a.kernel as u128 - 1) + 1;
            let padded = if explicit {
                size + a.pad_begin as u128 + a.pad_end as u128
            } else {
                2 * size + 1
            };
            if extent > padded {
                return Err(Error::node(
                    &node.name,
                    node.op(),
                    format!(
                        "its window spans {extent} along spatial axis {axis}, its padded input only {padded}"
                    ),
                ));
            }
        }
    }
    Ok(())
}
