//! Evaluating one node on constant inputs with tract, so constant folding computes
//! exactly what the runtime would have computed.

use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::ir::{DataType, Node};
use crate::onnx::pb;

/// Runs `node` alone on `inputs` (the tensors of its present inputs, in order) at the
/// given default-domain opset. Returns the tensors of its present outputs, in order, each
/// in the element type tract computed (shape values come back as int64).
pub(crate) fn evaluate_node(
    node: &Node,
    inputs: &[&crate::ir::Tensor],
    opset: i64,
) -> Result<Vec<crate::ir::Tensor>> {
    let model = one_node_model(node, inputs, opset)?;
    let bytes = crate::onnx::encode_model(&model);
    // What tract must not be given (a huge result, a layer short of dims) is, like its
    // errors, "cannot evaluate".
    crate::ir::Model::from_proto(model)
        .and_then(|model| super::check_runnable(&model, &Default::default()))
        .map_err(|e| Error::Runtime(e.to_string()))?;
    // tract panics on some malformed nodes; like its errors, that means "cannot evaluate".
    let run = std::panic::catch_unwind(|| -> TractResult<TVec<TValue>> {
        let model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
        model.into_optimized()?.into_runnable()?.run(tvec![])
    });
    let outputs = match run {
        Ok(outputs) => outputs.map_err(Error::runtime)?,
        Err(_) => {
            return Err(Error::Runtime(format!(
                "tract panicked on node '{}'",
                node.name
            )));
        }
    };
    outputs.iter().map(|t| from_tract(t)).collect()
}

/// A model holding `node` with its inputs as initializers and its outputs as graph outputs.
fn one_node_model(
    node: &Node,
    inputs: &[&crate::ir::Tensor],
    opset: i64,
) -> Result<pb::ModelProto> {
    let mut tensors = inputs.iter();
    let mut initializer = Vec::with_capacity(inputs.len());
    let mut input_names = Vec::with_capacity(node.inputs.len());
    for (slot, input) in node.inputs.iter().enumerate() {
        if input.is_none() {
            input_names.push(String::new());
            continue;
        }
        let name = format!("input_{slot}");
        let tensor = tensors
            .next()
            .ok_or_else(|| Error::node(&node.name, node.op(), "fewer input tensors than inputs"))?;
        initializer.push(tensor.to_proto(&name));
        input_names.push(name);
    }
    let output_names: Vec<String> = node
        .outputs
        .iter()
        .enumerate()
        .map(|(slot, o)| o.map(|_| format!("output_{slot}")).unwrap_or_default())
        .collect();
    let graph = pb::GraphProto {
        name: Some("evaluate".into()),
        node: vec![pb::NodeProto {
            name: Some(node.name.clone()),
            op_type: Some(node.op().to_string()),
            domain: Some(node.kind.domain().to_string()),
            input: input_names,
            output: output_names.clone(),
            attribute: node.attributes.0.clone(),
            ..Default::default()
        }],
        initializer,
        output: output_names
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(|name| pb::ValueInfoProto {
                name: Some(name),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    })
}

/// A tract tensor as an IR tensor of the same element type and dims.
fn from_tract(tensor: &Tensor) -> Result<crate::ir::Tensor> {
    let tensor = match tensor.datum_type() {
        DatumType::TDim => tensor.cast_to::<i64>().map_err(Error::runtime)?,
        _ => std::borrow::Cow::Borrowed(tensor),
    };
    let dtype = onnx_type(tensor.datum_type()).ok_or_else(|| {
        Error::Runtime(format!(
            "a {:?} result has no ONNX tensor type",
            tensor.datum_type()
        ))
    })?;
    // tract stores elements in native order, which is little-endian on every target it
    // supports, as ONNX raw data is.
    let proto = pb::TensorProto {
        dims: tensor.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype.onnx_code()),
        raw_data: Some(bytes::Bytes::copy_from_slice(tensor.as_bytes())),
        ..Default::default()
    };
    crate::ir::Tensor::from_proto(&proto)
}

fn onnx_type(datum: DatumType) -> Option<DataType> {
    Some(match datum {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Float16,
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model, Tensor as IrTensor};

    fn single_node(op: &str, inputs: &[&str], attributes: Attributes) -> Model {
        let b = inputs.iter().fold(ModelBuilder::new(13), |b, name| {
            b.initializer(name, IrTensor::from_i64(vec![1], &[0]))
        });
        Model::from_proto(b.node(op, inputs, &["y"], attributes).output("y").build()).unwrap()
    }

    fn node_of(model: &Model) -> &Node {
        model.graph.nodes().next().unwrap().1
    }

    #[test]
    fn evaluates_arithmetic_in_the_input_type() {
        let model = single_node("Add", &["a", "b"], Attributes::default());
        let a = IrTensor::from_f64(DataType::Float16, vec![2], &[1.5, -2.0]).unwrap();
        let b = IrTensor::from_f64(DataType::Float16, vec![2], &[0.25, 4.0]).unwrap();
        let out = evaluate_node(node_of(&model), &[&a, &b], 13).unwrap();
        assert_eq!(out[0].dtype(), DataType::Float16);
        assert_eq!(out[0].to_f64(), Some(vec![1.75, 2.0]));
    }

    #[test]
    fn shape_results_come_back_as_int64() {
        let model = single_node("Shape", &["a"], Attributes::default());
        let a = IrTensor::from_f32(vec![2, 3], &[0.0; 6]);
        let out = evaluate_node(node_of(&model), &[&a], 13).unwrap();
        assert_eq!(
            (out[0].dtype(), out[0].to_i64()),
            (DataType::Int64, Some(vec![2, 3]))
        );
    }

    #[test]
    fn an_operator_tract_lacks_is_a_runtime_error() {
        let model = single_node("NoSuchOp", &["a"], Attributes::default());
        let a = IrTensor::from_f32(vec![1], &[0.0]);
        assert!(matches!(
            evaluate_node(node_of(&model), &[&a], 13),
            Err(Error::Runtime(_))
        ));
    }
}
