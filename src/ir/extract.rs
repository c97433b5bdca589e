//! Cutting a region out of a graph as a standalone model: the nodes between one input
//! value and some output values, with the constants they read. The cost model times such
//! pieces at their real shapes.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::graph::{Graph, Node, NodeId, ValueId};
use crate::ir::tensor::DataType;
use crate::onnx::pb;

/// The model computing `outputs` from `input` (fed with `dims` of `dtype`) using the
/// nodes of `graph` between them. An error when the region reads any other
/// non-constant value.
pub fn extract(
    graph: &Graph,
    input: ValueId,
    dtype: DataType,
    dims: &[usize],
    outputs: &[ValueId],
) -> Result<Model> {
    let nodes = region_nodes(graph, input, outputs)?;
    let mut sub = Graph {
        opset: graph.opset,
        ..Graph::default()
    };
    let mut ids: HashMap<ValueId, ValueId> = HashMap::new();
    let x = sub.add_value(&graph.value(input).name);
    sub.values[x.0].info = Some(tensor_info(&graph.value(input).name, dtype, dims));
    sub.inputs.push(x);
    ids.insert(input, x);
    for id in nodes {
        let node = graph.node(id);
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for value in &node.inputs {
            inputs.push(
                value
                    .map(|v| copy_value(graph, &mut sub, &mut ids, v))
                    .transpose()?,
            );
        }
        let outputs = node
            .outputs
            .iter()
            .map(|v| {
                v.map(|v| {
                    *ids.entry(v)
                        .or_insert_with(|| sub.add_value(&graph.value(v).name))
                })
            })
            .collect();
        sub.add_node(Node {
            inputs,
            outputs,
            captures: Vec::new(),
            ..node.clone()
        });
    }
    sub.outputs = outputs.iter().map(|v| ids[v]).collect();
    let proto = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(graph.opset),
        }],
        ..Default::default()
    };
    Ok(Model { graph: sub, proto })
}

/// The model with its outputs replaced by the named values (graph outputs or intermediate
/// values), to read what a network computes inside. Nodes nothing needs any more go.
pub fn probe(model: &Model, values: &[&str]) -> Result<Model> {
    let mut probed = model.clone();
    let graph = &mut probed.graph;
    graph.outputs = values
        .iter()
        .map(|&name| {
            graph
                .value_by_name(name)
                .ok_or_else(|| Error::graph(format!("the model has no value named '{name}'")))
        })
        .collect::<Result<_>>()?;
    graph.eliminate_dead_code()?;
    Ok(probed)
}

/// A value the region reads: already copied, or a constant copied now.
fn copy_value(
    graph: &Graph,
    sub: &mut Graph,
    ids: &mut HashMap<ValueId, ValueId>,
    v: ValueId,
) -> Result<ValueId> {
    if let Some(&copied) = ids.get(&v) {
        return Ok(copied);
    }
    let tensor = graph.constant(v).ok_or_else(|| {
        Error::graph(format!(
            "the region reads '{}', which is neither its input nor a constant",
            graph.value(v).name
        ))
    })?;
    let copied = sub.add_constant(&graph.value(v).name, tensor.clone());
    ids.insert(v, copied);
    Ok(copied)
}

/// The nodes `outputs` depend on, back to `input` and constants, in execution order.
fn region_nodes(graph: &Graph, input: ValueId, outputs: &[ValueId]) -> Result<Vec<NodeId>> {
    let mut needed: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<ValueId> = outputs.to_vec();
    while let Some(v) = stack.pop() {
        if v == input || graph.constant(v).is_some() {
            continue;
        }
        let producer = graph.producer(v).ok_or_else(|| {
            Error::graph(format!(
                "the region reads '{}', which is neither its input nor a constant",
                graph.value(v).name
            ))
        })?;
        if needed.insert(producer) {
            let node = graph.node(producer);
            if !node.captures.is_empty() {
                return Err(Error::node(
                    &node.name,
                    node.op(),
                    "a node with subgraphs cannot be cut out",
                ));
            }
            stack.extend(node.inputs.iter().flatten());
        }
    }
    Ok(graph
        .topological_order()?
        .into_iter()
        .filter(|n| needed.contains(n))
        .collect())
}

fn tensor_info(name: &str, dtype: DataType, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(Value::DimValue(d as i64)),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(dtype.onnx_code()),
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Tensor};

    fn chain() -> Model {
        let proto = ModelBuilder::new(13)
            .input("x", &[-1, 4])
            .initializer("w", Tensor::from_f32(vec![4, 4], &[0.5; 16]))
            .node("MatMul", &["x", "w"], &["a"], Attributes::default())
            .node("Relu", &["a"], &["b"], Attributes::default())
            .node("MatMul", &["b", "w"], &["c"], Attributes::default())
            .node("Add", &["c", "x"], &["y"], Attributes::default())
            .output("y")
            .build();
        Model::from_proto(proto).unwrap()
    }

    #[test]
    fn a_closed_region_becomes_a_model_that_runs() {
        let model = chain();
        let g = &model.graph;
        let (a, c) = (g.value_by_name("a").unwrap(), g.value_by_name("c").unwrap());
        let piece = extract(&model.graph, a, DataType::Float, &[1, 4], &[c]).unwrap();
        assert_eq!(piece.graph.node_count(), 2);
        let x = ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![-1.0, 1.0, 2.0, -3.0]).unwrap();
        let out = crate::runtime::Session::new(&piece, &[vec![1, 4]])
            .unwrap()
            .run(&[x])
            .unwrap();
        // relu → [0, 1, 2, 0] → every column sums to 3 · 0.5.
        assert_eq!(out[0].as_slice().unwrap(), &[1.5; 4]);
    }

    #[test]
    fn a_probe_reads_intermediate_values() {
        let probed = probe(&chain(), &["b", "y"]).unwrap();
        let x = ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![1.0, 1.0, 2.0, -3.0]).unwrap();
        let out = crate::runtime::Session::new(&probed, &[vec![1, 4]])
            .unwrap()
            .run(&[x])
            .unwrap();
        // x·w = 0.5 per column → relu keeps it → b·w = 1 per column, + x.
        assert_eq!(out[0].as_slice().unwrap(), &[0.5; 4]);
        assert_eq!(out[1].as_slice().unwrap(), &[2.0, 2.0, 3.0, -2.0]);
        assert!(probe(&chain(), &["nope"]).is_err());
    }

    #[test]
    fn a_region_reading_another_value_is_refused() {
        let model = chain();
        let g = &model.graph;
        let (b, y) = (g.value_by_name("b").unwrap(), g.value_by_name("y").unwrap());
        let err = extract(&model.graph, b, DataType::Float, &[1, 4], &[y])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'x'"), "{err}");
    }
}
