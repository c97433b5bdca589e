//! What a model is made of: operator counts, parameters, MACs, depth in linear layers,
//! activations, inputs and outputs. `inspect` shows it; the cost model counts MACs with it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::error::Result;
use crate::ir::shape::{self, Dim, PinnedShapes, Shapes};
use crate::ir::{Graph, Node, OpKind};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ModelStats {
    /// Operator → node count.
    pub ops: BTreeMap<String, usize>,
    /// Elements in all constants (initializers and Constant nodes).
    pub params: u64,
    /// Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul at batch 1.
    pub macs: u64,
    pub macs_by_op: BTreeMap<String, u64>,
    /// False when some layer's dims are unknown (pinning the inputs' dims fixes them).
    pub macs_complete: bool,
    /// Longest path counted in linear layers (Conv, ConvTranspose, Gemm, MatMul).
    pub depth: usize,
    /// Activation operator → count.
    pub activations: BTreeMap<String, usize>,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    /// Numbers for known dims, names for symbolic ones, "?" for unknown.
    pub shape: Vec<serde_json::Value>,
}

impl ModelStats {
    /// Computes the statistics; symbolic batch dims count as 1 unless pinned.
    pub fn of(graph: &Graph, pinned: &PinnedShapes) -> Result<ModelStats> {
        let declared = shape::infer(graph, &PinnedShapes::default())?;
        let analysed = shape::infer(graph, &Self::analysis_pins(graph, &declared, pinned))?;
        let mut stats = ModelStats {
            ops: BTreeMap::new(),
            params: graph
                .initializers
                .iter()
                .filter(|&&v| !graph.users(v).is_empty())
                .map(|&v| numel(graph, v))
                .sum(),
            macs: 0,
            macs_by_op: BTreeMap::new(),
            macs_complete: true,
            depth: linear_depth(graph)?,
            activations: BTreeMap::new(),
            inputs: graph
                .runtime_inputs()
                .map(|v| tensor_info(graph, &declared, v))
                .collect(),
            outputs: graph
                .outputs()
                .iter()
                .map(|&v| tensor_info(graph, &declared, v))
                .collect(),
        };
        for (_, node) in graph.nodes() {
            *stats.ops.entry(node.op().to_string()).or_default() += 1;
            if node.kind.is_activation() {
                *stats.activations.entry(node.op().to_string()).or_default() += 1;
            }
            if node.kind == OpKind::Constant {
                stats.params += node
                    .tensor("value")
                    .ok()
                    .flatten()
                    .map_or(0, |t| t.numel() as u64);
            }
            if is_linear_layer(node) {
                match layer_macs(node, &analysed) {
                    Some(macs) => {
                        stats.macs = stats.macs.saturating_add(macs);
                        let by_op = stats.macs_by_op.entry(node.op().to_string()).or_default();
                        *by_op = by_op.saturating_add(macs);
                    }
                    None => stats.macs_complete = false,
                }
            }
        }
        Ok(stats)
    }
}

fn numel(graph: &Graph, v: crate::ir::ValueId) -> u64 {
    graph
        .value(v)
        .constant
        .as_ref()
        .map_or(0, |t| t.numel() as u64)
}

impl ModelStats {
    /// The dims analysis runs at: the user's pins, and batch 1 for every other input
    /// whose only unknown dim is its first.
    pub fn analysis_pins(graph: &Graph, declared: &Shapes, pinned: &PinnedShapes) -> PinnedShapes {
        let mut pins = pinned.clone();
        for input in graph.runtime_inputs() {
            let name = &graph.value(input).name;
            let Some(dims) = declared.get(input).dims.as_ref() else {
                continue;
            };
            if pins.contains_key(name) || dims.first().is_none_or(|d| d.known().is_some()) {
                continue;
            }
            if let Some(rest) = dims[1..].iter().map(Dim::known).collect::<Option<Vec<_>>>() {
                pins.insert(name.clone(), [vec![1], rest].concat());
            }
        }
        pins
    }
}

fn tensor_info(graph: &Graph, shapes: &Shapes, v: crate::ir::ValueId) -> TensorInfo {
    let t = shapes.get(v);
    TensorInfo {
        name: graph.value(v).name.clone(),
        dtype: t
            .dtype
            .map_or("?".to_string(), |d| format!("{d:?}").to_lowercase()),
        shape: t
            .dims
            .iter()
            .flatten()
            .map(|d| match d {
                Dim::Known(n) => serde_json::Value::from(*n),
                other => serde_json::Value::from(other.to_string()),
            })
            .collect(),
    }
}

fn is_linear_layer(node: &Node) -> bool {
    matches!(
        node.kind,
        OpKind::Conv | OpKind::ConvTranspose | OpKind::Gemm | OpKind::MatMul
    )
}

/// MACs of one layer from its inferred dims, `None` when a needed dim is unknown.
/// Saturates: declared dims are the file's claims, and may be absurd.
fn layer_macs(node: &Node, shapes: &Shapes) -> Option<u64> {
    let dims = |slot: usize| shapes.get(node.input(slot)?).static_dims();
    let out = shapes.get(node.output(0)?).static_dims()?;
    let product = |d: &[usize]| d.iter().fold(1u64, |acc, &x| acc.saturating_mul(x as u64));
    let kernel = || Some(product(dims(1)?.get(1..)?));
    match node.kind {
        // Each output element takes (C_in / group) · k… products.
        OpKind::Conv => Some(product(&out).saturating_mul(kernel()?)),
        // Each input element is scattered into (C_out / group) · k… outputs.
        OpKind::ConvTranspose => Some(product(&dims(0)?).saturating_mul(kernel()?)),
        OpKind::Gemm => {
            let a = dims(0)?;
            let transposed = node.int("transA").ok().flatten().unwrap_or(0) != 0;
            let k = a.get(usize::from(!transposed))?;
            Some(product(&out).saturating_mul(*k as u64))
        }
        OpKind::MatMul => {
            let a = dims(0)?;
            Some(product(&out).saturating_mul(*a.last()? as u64))
        }
        _ => None,
    }
}

/// The longest producer → user path, counted in linear layers.
fn linear_depth(graph: &Graph) -> Result<usize> {
    let mut depth_of_value: HashMap<crate::ir::ValueId, usize> = HashMap::new();
    let mut deepest = 0;
    for id in graph.topological_order()? {
        let node = graph.node(id);
        let reached = node
            .inputs
            .iter()
            .flatten()
            .filter_map(|v| depth_of_value.get(v))
            .max()
            .copied()
            .unwrap_or(0);
        let depth = reached + usize::from(is_linear_layer(node));
        deepest = deepest.max(depth);
        for out in node.outputs.iter().flatten() {
            depth_of_value.insert(*out, depth);
        }
    }
    Ok(deepest)
}
