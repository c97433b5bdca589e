//! Operator kinds and attributes. Nodes of the standard operators this crate reasons
//! about get a typed `OpKind`; every other operator, domain, or a known operator with an
//! attribute we do not model (an older or newer form) is `OpKind::Other` and passes
//! through untouched. Attributes are kept as stored, in their order, and read through
//! typed accessors that name the node on error.

use crate::ir::tensor::Tensor;
use crate::onnx::pb;
use crate::onnx::pb::attribute_proto::AttributeType;

macro_rules! op_kinds {
    ($($kind:ident: [$($attr:literal),*]),* $(,)?) => {
        /// The standard operators this crate understands.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum OpKind {
            $($kind,)*
            /// Anything else: its `op_type` and `domain`, carried through unchanged.
            Other { op_type: String, domain: String },
        }

        impl OpKind {
            pub fn name(&self) -> &str {
                match self {
                    $(OpKind::$kind => stringify!($kind),)*
                    OpKind::Other { op_type, .. } => op_type,
                }
            }

            fn known(op_type: &str) -> Option<(OpKind, &'static [&'static str])> {
                match op_type {
                    $(stringify!($kind) => Some((OpKind::$kind, &[$($attr),*])),)*
                    _ => None,
                }
            }
        }
    };
}

op_kinds! {
    Conv: ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"],
    ConvTranspose: ["auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads", "strides"],
    Gemm: ["alpha", "beta", "transA", "transB"],
    MatMul: [],
    BatchNormalization: ["epsilon", "momentum", "training_mode", "spatial"],
    Add: [],
    Sub: [],
    Mul: [],
    Div: [],
    Relu: [],
    Clip: ["min", "max"],
    LeakyRelu: ["alpha"],
    PRelu: [],
    HardSigmoid: ["alpha", "beta"],
    HardSwish: [],
    Sigmoid: [],
    Tanh: [],
    Softmax: ["axis"],
    GlobalAveragePool: [],
    AveragePool: ["auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides"],
    MaxPool: ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"],
    Flatten: ["axis"],
    Reshape: ["allowzero"],
    Squeeze: ["axes"],
    Unsqueeze: ["axes"],
    Transpose: ["perm"],
    Concat: ["axis"],
    Pad: ["mode", "pads", "value"],
    Identity: [],
    Dropout: ["ratio", "seed", "is_test"],
    Constant: ["value", "value_float", "value_floats", "value_int", "value_ints"],
    Shape: ["start", "end"],
    Gather: ["axis"],
    Slice: ["starts", "ends", "axes"],
    Cast: ["to", "saturate"],
    ReduceMean: ["axes", "keepdims", "noop_with_empty_axes"],
}

impl OpKind {
    /// The kind of a stored node: typed when the operator is standard and every
    /// attribute it carries is one we model; `Other` otherwise.
    pub fn classify(op_type: &str, domain: &str, attributes: &[pb::AttributeProto]) -> OpKind {
        let other = || OpKind::Other {
            op_type: op_type.to_string(),
            domain: domain.to_string(),
        };
        if !matches!(domain, "" | "ai.onnx") {
            return other();
        }
        match OpKind::known(op_type) {
            Some((kind, names))
                if attributes
                    .iter()
                    .all(|a| names.contains(&a.name()) && a.ref_attr_name.is_none()) =>
            {
                kind
            }
            _ => other(),
        }
    }

    pub fn domain(&self) -> &str {
        match self {
            OpKind::Other { domain, .. } => domain,
            _ => "",
        }
    }

    /// Element-wise activations whose removal (linearisation) this crate considers.
    pub fn is_activation(&self) -> bool {
        use OpKind::*;
        matches!(
            self,
            Relu | Clip | LeakyRelu | PRelu | HardSigmoid | HardSwish | Sigmoid | Tanh
        )
    }
}

/// Typed reading and writing of a node's stored attributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub Vec<pb::AttributeProto>);

impl Attributes {
    pub fn get(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.0.iter().find(|a| a.name() == name)
    }

    fn typed(
        &self,
        name: &str,
        expected: AttributeType,
    ) -> Result<Option<&pb::AttributeProto>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type() == expected || a.r#type.is_none() => Ok(Some(a)),
            Some(a) => Err(format!(
                "attribute '{name}' is {:?}, expected {expected:?}",
                a.r#type()
            )),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i()))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self
            .typed(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, String> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        Ok(self
            .typed(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .typed(name, AttributeType::String)?
            .map(|a| String::from_utf8_lossy(a.s()).into_owned()))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>, String> {
        self.typed(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref())
            .map(|t| Tensor::from_proto(t).map_err(|e| e.to_string()))
            .transpose()
    }

    /// Sets (replacing) an attribute.
    pub fn set(&mut self, attribute: pb::AttributeProto) {
        match self.0.iter_mut().find(|a| a.name == attribute.name) {
            Some(slot) => *slot = attribute,
            None => self.0.push(attribute),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|a| a.name() != name);
    }

    pub fn with_int(mut self, name: &str, value: i64) -> Self {
        self.set(pb::AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(value),
            ..Default::default()
        });
        self
    }

    pub fn with_ints(mut self, name: &str, values: &[i64]) -> Self {
        self.set(pb::AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: values.to_vec(),
            ..Default::default()
        });
        self
    }

    pub fn with_float(mut self, name: &str, value: f32) -> Self {
        self.set(pb::AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(value),
            ..Default::default()
        });
        self
    }

    pub fn with_floats(mut self, name: &str, values: &[f32]) -> Self {
        self.set(pb::AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Floats as i32),
            floats: values.to_vec(),
            ..Default::default()
        });
        self
    }

    pub fn with_string(mut self, name: &str, value: &str) -> Self {
        self.set(pb::AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::String as i32),
            s: Some(value.as_bytes().to_vec()),
            ..Default::default()
        });
        self
    }

    pub fn with_tensor(mut self, name: &str, value: pb::TensorProto) -> Self {
        self.set(pb::AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(value),
            ..Default::default()
        });
        self
    }

    /// The graphs in subgraph attributes (If, Loop, Scan bodies).
    pub fn subgraphs(&self) -> impl Iterator<Item = &pb::GraphProto> {
        self.0
            .iter()
            .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
        Attributes::default().with_int(name, i).0.remove(0)
    }

    #[test]
    fn known_op_with_known_attributes_is_typed() {
        assert_eq!(
            OpKind::classify("Conv", "", &[attr_int("group", 2)]),
            OpKind::Conv
        );
    }

    #[test]
    fn unmodelled_attribute_or_domain_keeps_the_op_opaque() {
        assert!(matches!(
            OpKind::classify("Add", "", &[attr_int("broadcast", 1)]),
            OpKind::Other { .. }
        ));
        assert!(matches!(
            OpKind::classify("Conv", "com.microsoft", &[]),
            OpKind::Other { .. }
        ));
    }

    #[test]
    fn wrong_attribute_type_is_refused() {
        let attrs = Attributes::default().with_float("group", 2.0);
        let err = attrs.int("group").unwrap_err();
        assert!(err.contains("group") && err.contains("Float"), "{err}");
    }
}
