//! What is known of the values of a graph: each one's element type and dims. Shape
//! inference (`shape`) finds it; the symbolic evaluation of shape computations
//! (`symbolic`) reads it.

use std::fmt;

use crate::ir::graph::ValueId;
use crate::ir::tensor::DataType;
use crate::onnx::pb;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Known(usize),
    Symbol(String),
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(d) => Some(*d),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Dim::Known(d) => write!(f, "{d}"),
            Dim::Symbol(s) => write!(f, "{s}"),
            Dim::Unknown => write!(f, "?"),
        }
    }
}

/// What is known of a value's element type and dims.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValueType {
    pub dtype: Option<DataType>,
    pub dims: Option<Vec<Dim>>,
}

impl ValueType {
    pub fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }

    /// All dims as numbers, when every one is known.
    pub fn static_dims(&self) -> Option<Vec<usize>> {
        self.dims.as_ref()?.iter().map(Dim::known).collect()
    }

    pub fn dim(&self, axis: usize) -> Option<usize> {
        self.dims.as_ref()?.get(axis)?.known()
    }

    /// False only when both sides know something and it differs.
    pub fn compatible(&self, other: &ValueType) -> bool {
        let dtype_ok = match (self.dtype, other.dtype) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let dims_ok = match (&self.dims, &other.dims) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| match (x, y) {
                        (Dim::Known(x), Dim::Known(y)) => x == y,
                        _ => true,
                    })
            }
            _ => true,
        };
        dtype_ok && dims_ok
    }

    pub(super) fn of_info(info: &pb::ValueInfoProto) -> ValueType {
        use pb::type_proto::Value;
        let Some(Value::TensorType(tensor)) = info.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return ValueType::default();
        };
        let dtype = tensor
            .elem_type
            .map(DataType::from_onnx)
            .filter(|d| *d != DataType::Other(0));
        let dims = tensor.shape.as_ref().map(|shape| {
            shape
                .dim
                .iter()
                .map(|d| {
                    use pb::tensor_shape_proto::dimension::Value as D;
                    match &d.value {
                        Some(D::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                        Some(D::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
                        _ => Dim::Unknown,
                    }
                })
                .collect()
        });
        ValueType { dtype, dims }
    }

    /// What `self` knows, and what `fallback` knows where `self` knows nothing.
    pub(super) fn or(&self, fallback: &ValueType) -> ValueType {
        ValueType {
            dtype: self.dtype.or(fallback.dtype),
            dims: self.dims.clone().or_else(|| fallback.dims.clone()),
        }
    }

    pub(super) fn known(dtype: Option<DataType>, dims: Vec<usize>) -> ValueType {
        ValueType {
            dtype,
            dims: Some(dims.into_iter().map(Dim::Known).collect()),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.dtype {
            Some(d) => write!(f, "{d:?}")?,
            None => write!(f, "?")?,
        }
        match &self.dims {
            Some(dims) => write!(
                f,
                "[{}]",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => write!(f, "[?]"),
        }
    }
}

/// The inferred type of every value of a graph.
#[derive(Clone, Debug)]
pub struct Shapes {
    pub(super) types: Vec<ValueType>,
}

impl Shapes {
    pub fn get(&self, id: ValueId) -> &ValueType {
        &self.types[id.0]
    }
}
