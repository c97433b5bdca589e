//! Constant tensors: element type, dims, and little-endian bytes. Weights keep the
//! element type they were stored with; the math reads them as f64 and writes them back
//! in that same type.

use bytes::Bytes;
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::onnx::pb;

/// ONNX element types (`TensorProto.DataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Float,
    Uint8,
    Int8,
    Uint16,
    Int16,
    Int32,
    Int64,
    String,
    Bool,
    Float16,
    Double,
    Uint32,
    Uint64,
    BFloat16,
    /// Any other code (complex, 8-bit and 4-bit floats and integers, …): carried, never computed on.
    Other(i32),
}

impl DataType {
    pub fn from_onnx(code: i32) -> DataType {
        use DataType::*;
        match code {
            1 => Float,
            2 => Uint8,
            3 => Int8,
            4 => Uint16,
            5 => Int16,
            6 => Int32,
            7 => Int64,
            8 => String,
            9 => Bool,
            10 => Float16,
            11 => Double,
            12 => Uint32,
            13 => Uint64,
            16 => BFloat16,
            other => Other(other),
        }
    }

    pub fn onnx_code(self) -> i32 {
        use DataType::*;
        match self {
            Float => 1,
            Uint8 => 2,
            Int8 => 3,
            Uint16 => 4,
            Int16 => 5,
            Int32 => 6,
            Int64 => 7,
            String => 8,
            Bool => 9,
            Float16 => 10,
            Double => 11,
            Uint32 => 12,
            Uint64 => 13,
            BFloat16 => 16,
            Other(code) => code,
        }
    }

    /// Bytes per element for the types this crate computes on.
    pub fn size(self) -> Option<usize> {
        use DataType::*;
        match self {
            Uint8 | Int8 | Bool => Some(1),
            Uint16 | Int16 | Float16 | BFloat16 => Some(2),
            Float | Int32 | Uint32 => Some(4),
            Int64 | Uint64 | Double => Some(8),
            String | Other(_) => None,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float | DataType::Double | DataType::Float16 | DataType::BFloat16
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Data {
    /// Little-endian element bytes, `numel * dtype.size()` of them (shared with the
    /// loaded file's buffer until a rewrite makes new ones).
    Numeric(Bytes),
    Strings(Vec<Vec<u8>>),
    /// A type this crate does not compute on, kept exactly as stored.
    Opaque(Box<pb::TensorProto>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DataType,
    dims: Vec<usize>,
    data: Data,
}

/// The element count of `dims`, or an error when the product does not fit.
pub(crate) fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn from_f32(dims: Vec<usize>, values: &[f32]) -> Tensor {
        assert_eq!(
            checked_numel(&dims),
            Some(values.len()),
            "dims and values disagree"
        );
        Tensor {
            dtype: DataType::Float,
            dims,
            data: Data::Numeric(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }

    pub fn from_i64(dims: Vec<usize>, values: &[i64]) -> Tensor {
        assert_eq!(
            checked_numel(&dims),
            Some(values.len()),
            "dims and values disagree"
        );
        Tensor {
            dtype: DataType::Int64,
            dims,
            data: Data::Numeric(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }

    /// Stores f64 values as `dtype` (a float or integer type), rounding as that type does.
    pub fn from_f64(dtype: DataType, dims: Vec<usize>, values: &[f64]) -> Result<Tensor> {
        assert_eq!(
            checked_numel(&dims),
            Some(values.len()),
            "dims and values disagree"
        );
        let mut bytes = Vec::with_capacity(values.len() * dtype.size().unwrap_or(0));
        for &v in values {
            match dtype {
                DataType::Float => bytes.extend((v as f32).to_le_bytes()),
                DataType::Double => bytes.extend(v.to_le_bytes()),
                DataType::Float16 => bytes.extend(f16::from_f64(v).to_le_bytes()),
                DataType::BFloat16 => bytes.extend(bf16::from_f64(v).to_le_bytes()),
                DataType::Int64 => bytes.extend((v as i64).to_le_bytes()),
                DataType::Int32 => bytes.extend((v as i32).to_le_bytes()),
                DataType::Uint64 => bytes.extend((v as u64).to_le_bytes()),
                DataType::Uint32 => bytes.extend((v as u32).to_le_bytes()),
                DataType::Int16 => bytes.extend((v as i16).to_le_bytes()),
                DataType::Uint16 => bytes.extend((v as u16).to_le_bytes()),
                DataType::Int8 => bytes.extend((v as i8).to_le_bytes()),
                DataType::Uint8 => bytes.extend((v as u8).to_le_bytes()),
                DataType::Bool => bytes.push((v != 0.0) as u8),
                DataType::String | DataType::Other(_) => {
                    return Err(Error::tensor(
                        "",
                        format!("cannot store numbers as {dtype:?}"),
                    ));
                }
            }
        }
        Ok(Tensor {
            dtype,
            dims,
            data: Data::Numeric(bytes.into()),
        })
    }

    /// The same values in another shape of equal element count.
    pub fn reshaped(&self, dims: Vec<usize>) -> Tensor {
        assert_eq!(
            checked_numel(&dims),
            Some(self.numel()),
            "reshape changes the element count"
        );
        Tensor {
            dims,
            ..self.clone()
        }
    }

    /// The values as f64, for numeric types; `None` for strings and opaque types.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        let Data::Numeric(bytes) = &self.data else {
            return None;
        };
        let size = self.dtype.size()?;
        let chunks = bytes.chunks_exact(size);
        let values = match self.dtype {
            DataType::Float => chunks
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DataType::Double => chunks
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DataType::Float16 => chunks
                .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
            DataType::BFloat16 => chunks
                .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
            _ => self.to_i64()?.into_iter().map(|v| v as f64).collect(),
        };
        Some(values)
    }

    pub fn to_f32(&self) -> Option<Vec<f32>> {
        Some(self.to_f64()?.into_iter().map(|v| v as f32).collect())
    }

    /// The values as i64, for integer and bool types.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let Data::Numeric(bytes) = &self.data else {
            return None;
        };
        let size = self.dtype.size()?;
        let chunks = bytes.chunks_exact(size);
        let values = match self.dtype {
            DataType::Int64 => chunks
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DataType::Uint64 => chunks
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::Int32 => chunks
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::Uint32 => chunks
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::Int16 => chunks
                .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::Uint16 => chunks
                .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::Int8 => chunks.map(|c| c[0] as i8 as i64).collect(),
            DataType::Uint8 | DataType::Bool => chunks.map(|c| c[0] as i64).collect(),
            _ => return None,
        };
        Some(values)
    }

    /// Decodes a stored tensor, checking that its data matches its dims and type.
    pub fn from_proto(proto: &pb::TensorProto) -> Result<Tensor> {
        let dims = check_proto(proto).map_err(|reason| Error::tensor(proto.name(), reason))?;
        let dtype = DataType::from_onnx(proto.data_type());
        let data = match dtype {
            DataType::Other(_) => Data::Opaque(Box::new(proto.clone())),
            DataType::String => Data::Strings(proto.string_data.clone()),
            _ => Data::Numeric(numeric_bytes(proto, dtype)),
        };
        Ok(Tensor { dtype, dims, data })
    }

    /// Encodes as a `TensorProto` named `name` (numbers as `raw_data`).
    pub fn to_proto(&self, name: &str) -> pb::TensorProto {
        let mut proto = match &self.data {
            Data::Opaque(proto) => (**proto).clone(),
            Data::Strings(strings) => pb::TensorProto {
                string_data: strings.clone(),
                ..Default::default()
            },
            Data::Numeric(bytes) => pb::TensorProto {
                raw_data: Some(bytes.clone()),
                ..Default::default()
            },
        };
        proto.name = Some(name.to_string());
        proto.dims = self.dims.iter().map(|&d| d as i64).collect();
        proto.data_type = Some(self.dtype.onnx_code());
        proto
    }
}

/// Checks that a stored tensor's data matches its dims and type without copying it (the
/// dims are the file's claim, the data is what it holds); returns the dims.
pub(crate) fn check_proto(proto: &pb::TensorProto) -> Result<Vec<usize>, String> {
    let dims = proto
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("negative dimension {d} in {:?}", proto.dims))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let numel = checked_numel(&dims).ok_or_else(|| format!("dims {:?} overflow", proto.dims))?;
    let dtype = DataType::from_onnx(proto.data_type());
    let held = match dtype {
        DataType::Other(_) => return Ok(dims),
        DataType::String => Some(proto.string_data.len()),
        _ => numeric_values(proto, dtype),
    };
    if held != Some(numel) {
        let unit = match dtype {
            DataType::String => "strings".to_string(),
            _ => format!("{dtype:?} values"),
        };
        let held = match (held, &proto.raw_data) {
            (Some(held), _) => held.to_string(),
            (None, raw) => format!("{} bytes", raw.as_ref().map_or(0, Bytes::len)),
        };
        return Err(format!(
            "dims {:?} need {numel} {unit}, the data holds {held}",
            proto.dims
        ));
    }
    Ok(dims)
}

/// How many values a numeric tensor holds (in `raw_data` or its typed field); `None` when
/// `raw_data` is not a whole number of values.
fn numeric_values(proto: &pb::TensorProto, dtype: DataType) -> Option<usize> {
    let size = dtype.size()?;
    match &proto.raw_data {
        Some(raw) => raw.len().is_multiple_of(size).then(|| raw.len() / size),
        None => Some(typed_values(proto, dtype)),
    }
}

/// How many values a numeric tensor holds in its typed field.
fn typed_values(proto: &pb::TensorProto, dtype: DataType) -> usize {
    match dtype {
        DataType::Float => proto.float_data.len(),
        DataType::Double => proto.double_data.len(),
        DataType::Int64 => proto.int64_data.len(),
        DataType::Uint32 | DataType::Uint64 => proto.uint64_data.len(),
        _ => proto.int32_data.len(),
    }
}

/// The element bytes of a numeric tensor (checked by `check_proto`), from `raw_data` or
/// from its typed field.
fn numeric_bytes(proto: &pb::TensorProto, dtype: DataType) -> Bytes {
    let size = dtype.size().expect("numeric type");
    if let Some(raw) = &proto.raw_data {
        return raw.clone();
    }
    let mut bytes = Vec::with_capacity(typed_values(proto, dtype) * size);
    match dtype {
        DataType::Float => proto
            .float_data
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes())),
        DataType::Double => proto
            .double_data
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes())),
        DataType::Int64 => proto
            .int64_data
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes())),
        DataType::Uint64 => proto
            .uint64_data
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes())),
        DataType::Uint32 => proto
            .uint64_data
            .iter()
            .for_each(|&v| bytes.extend((v as u32).to_le_bytes())),
        DataType::Int32 => proto
            .int32_data
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes())),
        // 8- and 16-bit types (and bool, and fp16/bf16 bit patterns) sit in int32_data.
        _ => proto
            .int32_data
            .iter()
            .for_each(|&v| bytes.extend(&v.to_le_bytes()[..size])),
    }
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_shorter_than_dims_is_an_error() {
        let proto = pb::TensorProto {
            name: Some("w".into()),
            dims: vec![1000, 1000],
            data_type: Some(1),
            raw_data: Some(vec![0; 16].into()),
            ..Default::default()
        };
        let err = Tensor::from_proto(&proto).unwrap_err().to_string();
        assert!(
            err.contains("tensor 'w'") && err.contains("1000000"),
            "{err}"
        );
    }

    #[test]
    fn overflowing_dims_are_an_error() {
        let proto = pb::TensorProto {
            dims: vec![1 << 40, 1 << 40],
            data_type: Some(1),
            ..Default::default()
        };
        assert!(
            Tensor::from_proto(&proto)
                .unwrap_err()
                .to_string()
                .contains("overflow")
        );
    }

    #[test]
    fn fp16_keeps_its_type_through_f64() {
        let t = Tensor::from_f64(DataType::Float16, vec![3], &[0.5, -1.25, 3.0]).unwrap();
        let back = Tensor::from_proto(&t.to_proto("h")).unwrap();
        assert_eq!(back.dtype(), DataType::Float16);
        assert_eq!(back.to_f64().unwrap(), vec![0.5, -1.25, 3.0]);
    }

    #[test]
    fn typed_fields_decode_like_raw_data() {
        let proto = pb::TensorProto {
            dims: vec![2],
            data_type: Some(1),
            float_data: vec![1.5, -2.0],
            ..Default::default()
        };
        assert_eq!(
            Tensor::from_proto(&proto).unwrap().to_f32().unwrap(),
            vec![1.5, -2.0]
        );
    }
}
