//! Building models in code: for tests, and for programs that generate graphs.
//!
//! ```
//! use onnx_shallow::ir::{builder::ModelBuilder, Attributes, Tensor};
//! let proto = ModelBuilder::new(13)
//!     .input("x", &[-1, 4])
//!     .initializer("w", Tensor::from_f32(vec![4, 2], &[0.5; 8]))
//!     .node("Gemm", &["x", "w"], &["y"], Attributes::default())
//!     .output("y")
//!     .build();
//! let model = onnx_shallow::Model::from_proto(proto)?;
//! assert_eq!(model.graph.node_count(), 1);
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

use crate::ir::op::Attributes;
use crate::ir::tensor::Tensor;
use crate::onnx::pb;

pub struct ModelBuilder {
    graph: pb::GraphProto,
    opset: i64,
}

impl ModelBuilder {
    pub fn new(opset: i64) -> ModelBuilder {
        let graph = pb::GraphProto {
            name: Some("built".into()),
            ..Default::default()
        };
        ModelBuilder { graph, opset }
    }

    /// A float input; a negative dim is symbolic (`N`).
    pub fn input(mut self, name: &str, dims: &[i64]) -> Self {
        self.graph.input.push(float_info(name, Some(dims)));
        self
    }

    pub fn initializer(mut self, name: &str, tensor: Tensor) -> Self {
        self.graph.initializer.push(tensor.to_proto(name));
        self
    }

    pub fn node(
        mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Attributes,
    ) -> Self {
        let index = self.graph.node.len();
        self.graph.node.push(pb::NodeProto {
            name: Some(format!("{op_type}_{index}")),
            op_type: Some(op_type.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attributes.0,
            ..Default::default()
        });
        self
    }

    /// A float output of unknown dims.
    pub fn output(mut self, name: &str) -> Self {
        self.graph.output.push(float_info(name, None));
        self
    }

    pub fn build(self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: Some(8),
            producer_name: Some("onnx-shallow-builder".into()),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

fn float_info(name: &str, dims: Option<&[i64]>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::dimension::Value;
    let shape = dims.map(|dims| pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| pb::tensor_shape_proto::Dimension {
                value: Some(if d < 0 {
                    Value::DimParam("N".into())
                } else {
                    Value::DimValue(d)
                }),
                ..Default::default()
            })
            .collect(),
    });
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(1),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
