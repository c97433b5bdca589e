//! Conversion between the stored model (`pb::ModelProto`) and the IR, both ways.
//! Loading checks what the IR relies on: every value has one producer, every read value
//! exists, there is no cycle, node names are unique, and every tensor's data (initializers
//! and tensor attributes) matches its dims.

use std::collections::{BTreeSet, HashSet};

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, Node, ValueId};
use crate::ir::op::{Attributes, OpKind};
use crate::ir::tensor::{Tensor, check_proto};
use crate::ir::{Model, check};
use crate::onnx::pb;

pub(crate) fn model_from_proto(mut proto: pb::ModelProto) -> Result<Model> {
    let graph_proto = proto
        .graph
        .take()
        .ok_or_else(|| Error::graph("the model has no graph"))?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .unwrap_or(1);
    let legacy_initializer_inputs = proto.ir_version() < 4;
    let graph = graph_from_proto(graph_proto, opset, legacy_initializer_inputs)?;
    Ok(Model { graph, proto })
}

pub(crate) fn model_to_proto(model: &Model) -> Result<pb::ModelProto> {
    let mut proto = model.proto.clone();
    proto.graph = Some(graph_to_proto(&model.graph)?);
    Ok(proto)
}

fn graph_from_proto(
    mut proto: pb::GraphProto,
    opset: i64,
    legacy_initializer_inputs: bool,
) -> Result<Graph> {
    let mut graph = Graph {
        opset,
        legacy_initializer_inputs,
        ..Graph::default()
    };
    for tensor in std::mem::take(&mut proto.initializer) {
        let name = tensor.name().to_string();
        ensure_new_name(&graph, &name)?;
        graph.add_constant(&name, Tensor::from_proto(&tensor)?);
    }
    for info in std::mem::take(&mut proto.input) {
        let id = match graph.value_by_name(info.name()) {
            Some(id) if graph.values[id.0].constant.is_some() && !graph.inputs.contains(&id) => id,
            Some(_) => {
                return Err(Error::graph(format!(
                    "graph input '{}' is declared twice",
                    info.name()
                )));
            }
            None => graph.add_value(info.name()),
        };
        graph.values[id.0].info = Some(info);
        graph.inputs.push(id);
    }
    let nodes = std::mem::take(&mut proto.node);
    let mut outputs_of = Vec::with_capacity(nodes.len());
    let mut node_names = HashSet::new();
    for node in &nodes {
        ensure_new_node_name(&mut node_names, node)?;
        outputs_of.push(declare_outputs(&mut graph, node)?);
    }
    for (node, outputs) in nodes.into_iter().zip(outputs_of) {
        let node = node_from_proto(&graph, node, outputs)?;
        check::window_attributes(&graph, &node)?;
        graph.add_node(node);
    }
    for info in std::mem::take(&mut proto.output) {
        let id = graph.value_by_name(info.name()).ok_or_else(|| {
            Error::graph(format!(
                "graph output '{}' is not produced by any node, input or initializer",
                info.name()
            ))
        })?;
        if graph.values[id.0].info.is_none() {
            graph.values[id.0].info = Some(info);
        }
        graph.outputs.push(id);
    }
    for info in std::mem::take(&mut proto.value_info) {
        if let Some(id) = graph.value_by_name(info.name())
            && graph.values[id.0].info.is_none()
        {
            graph.values[id.0].info = Some(info);
            graph.value_info.push(id);
        }
    }
    graph.rest = proto;
    graph.topological_order()?;
    Ok(graph)
}

fn ensure_new_name(graph: &Graph, name: &str) -> Result<()> {
    if graph.value_by_name(name).is_some() {
        return Err(Error::graph(format!(
            "value '{name}' is defined twice (SSA form requires one producer)"
        )));
    }
    Ok(())
}

/// Node names may be empty, but not shared: runtimes (tract, onnxruntime) refuse them.
fn ensure_new_node_name<'a>(names: &mut HashSet<&'a str>, node: &'a pb::NodeProto) -> Result<()> {
    if !node.name().is_empty() && !names.insert(node.name()) {
        return Err(Error::node(
            node.name(),
            node.op_type(),
            "another node has the same name (node names must be unique)",
        ));
    }
    Ok(())
}

fn declare_outputs(graph: &mut Graph, node: &pb::NodeProto) -> Result<Vec<Option<ValueId>>> {
    node.output
        .iter()
        .map(|name| {
            if name.is_empty() {
                return Ok(None);
            }
            ensure_new_name(graph, name).map_err(|_| {
                Error::node(
                    node.name(),
                    node.op_type(),
                    format!("its output '{name}' is also produced elsewhere"),
                )
            })?;
            Ok(Some(graph.add_value(name)))
        })
        .collect()
}

fn node_from_proto(
    graph: &Graph,
    mut proto: pb::NodeProto,
    outputs: Vec<Option<ValueId>>,
) -> Result<Node> {
    let (node_name, op_type) = (proto.name().to_string(), proto.op_type().to_string());
    let resolve = |name: &str| {
        graph.value_by_name(name).ok_or_else(|| {
            Error::node(
                &node_name,
                &op_type,
                format!("it reads '{name}', which no node, graph input or initializer produces"),
            )
        })
    };
    let inputs = proto
        .input
        .iter()
        .map(|name| {
            if name.is_empty() {
                Ok(None)
            } else {
                resolve(name).map(Some)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let attributes = Attributes(std::mem::take(&mut proto.attribute));
    check_attribute_tensors(&attributes)
        .map_err(|reason| Error::node(&node_name, &op_type, reason))?;
    let mut captured = BTreeSet::new();
    for subgraph in attributes.subgraphs() {
        free_names(subgraph, &mut captured);
    }
    let captures = captured
        .iter()
        .map(|name| resolve(name))
        .collect::<Result<Vec<_>>>()?;
    let kind = OpKind::classify(proto.op_type(), proto.domain(), &attributes.0);
    let name = proto.name.take().unwrap_or_default();
    proto.input.clear();
    proto.output.clear();
    proto.op_type = None;
    Ok(Node {
        name,
        kind,
        attributes,
        inputs,
        outputs,
        captures,
        rest: proto,
    })
}

/// Tensor attributes (a Constant's value, …) hold data that matches their dims, like
/// initializers.
fn check_attribute_tensors(attributes: &Attributes) -> Result<(), String> {
    for attribute in &attributes.0 {
        for tensor in attribute.t.iter().chain(&attribute.tensors) {
            check_proto(tensor)
                .map_err(|reason| format!("attribute '{}': {reason}", attribute.name()))?;
        }
    }
    Ok(())
}

/// Names a subgraph reads from its enclosing scopes.
fn free_names(graph: &pb::GraphProto, free: &mut BTreeSet<String>) {
    let mut defined: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    defined.extend(graph.initializer.iter().map(|t| t.name()));
    defined.extend(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    );
    let mut inner = BTreeSet::new();
    for node in &graph.node {
        inner.extend(node.input.iter().filter(|n| !n.is_empty()).cloned());
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                free_names(g, &mut inner);
            }
        }
    }
    inner.extend(graph.output.iter().map(|o| o.name().to_string()));
    free.extend(inner.into_iter().filter(|n| !defined.contains(n.as_str())));
}

fn graph_to_proto(graph: &Graph) -> Result<pb::GraphProto> {
    let mut proto = graph.rest.clone();
    let name_of = |v: &Option<ValueId>| v.map(|v| graph.value(v).name.clone()).unwrap_or_default();
    for id in graph.topological_order()? {
        let node = graph.node(id);
        let mut n = node.rest.clone();
        n.name =
            Some(node.name.clone()).filter(|name| !name.is_empty() || node.rest.name.is_some());
        n.op_type = Some(node.op().to_string());
        n.input = node.inputs.iter().map(name_of).collect();
        n.output = node.outputs.iter().map(name_of).collect();
        n.attribute = node.attributes.0.clone();
        proto.node.push(n);
    }
    proto.initializer = graph
        .initializers
        .iter()
        .map(|&v| {
            graph
                .value(v)
                .constant
                .as_ref()
                .expect("initializer")
                .to_proto(&graph.value(v).name)
        })
        .collect();
    let info = |v: ValueId| {
        let value = graph.value(v);
        let mut info = value.info.clone().unwrap_or_default();
        info.name = Some(value.name.clone());
        info
    };
    proto.input = graph.inputs.iter().map(|&v| info(v)).collect();
    proto.output = graph.outputs.iter().map(|&v| info(v)).collect();
    proto.value_info = graph.value_info.iter().map(|&v| info(v)).collect();
    Ok(proto)
}
