//! The graph IR: typed standard operators, everything else carried through untouched.

pub mod builder;
mod check;
mod convert;
pub mod extract;
pub mod graph;
pub mod op;
pub mod patch;
pub mod shape;
pub mod stats;
pub(crate) mod symbolic;
pub mod tensor;
mod value_type;
pub mod window;

pub use graph::{Graph, Node, NodeId, Value, ValueId};
pub use op::{Attributes, OpKind};
pub use patch::{Patch, Wire};
pub use tensor::{DataType, Tensor};

use crate::error::Result;
use crate::onnx::pb;

/// A model: its graph, and everything else the stored model had (ir_version, opsets,
/// producer, metadata, functions, training info), kept as stored.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    pub(crate) proto: pb::ModelProto,
}

impl Model {
    pub fn from_proto(proto: pb::ModelProto) -> Result<Model> {
        convert::model_from_proto(proto)
    }

    pub fn to_proto(&self) -> Result<pb::ModelProto> {
        convert::model_to_proto(self)
    }

    pub fn ir_version(&self) -> i64 {
        self.proto.ir_version()
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.proto
            .metadata_props
            .iter()
            .find(|p| p.key() == key)
            .map(|p| p.value())
    }

    /// Sets a `metadata_props` entry (replacing one with the same key).
    pub fn set_metadata(&mut self, key: &str, value: String) {
        match self
            .proto
            .metadata_props
            .iter_mut()
            .find(|p| p.key() == key)
        {
            Some(entry) => entry.value = Some(value),
            None => self.proto.metadata_props.push(pb::StringStringEntryProto {
                key: Some(key.into()),
                value: Some(value),
            }),
        }
    }

    /// Removes the `metadata_props` entry with this key, if any.
    pub fn remove_metadata(&mut self, key: &str) {
        self.proto.metadata_props.retain(|p| p.key() != key);
    }
}
