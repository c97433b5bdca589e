//! ONNX protobuf I/O: decoding and encoding `ModelProto`, external tensor data, atomic saving.

mod external;
mod save;

pub use save::{SaveOptions, same_file, save, write_atomically};

use std::path::Path;

use bytes::{Buf, Bytes};
use prost::Message;

use crate::error::{Error, Result};

/// The ONNX schema (`proto/onnx.proto`), compiled at build time.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Reads a model file; tensors stored as external data are read in from beside it.
pub fn load_proto(path: &Path) -> Result<pb::ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let base_dir = if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base_dir
    };
    // Decoded from a shared buffer, tensors' bytes are slices of it rather than copies.
    decode(Bytes::from(bytes), path, Some(base_dir))
}

/// Decodes model bytes. `base_dir` is where external data files live; without one a
/// model that refers to external data is an error.
pub fn decode_model(
    bytes: &[u8],
    origin: &Path,
    base_dir: Option<&Path>,
) -> Result<pb::ModelProto> {
    decode(bytes, origin, base_dir)
}

fn decode(bytes: impl Buf, origin: &Path, base_dir: Option<&Path>) -> Result<pb::ModelProto> {
    let decode_error = |reason: String| Error::Decode {
        path: origin.to_path_buf(),
        reason,
    };
    if !bytes.has_remaining() {
        return Err(decode_error("the file is empty".into()));
    }
    let mut model = pb::ModelProto::decode(bytes).map_err(|e| decode_error(e.to_string()))?;
    if model.graph.is_none() {
        return Err(decode_error(
            "it has no graph (is it an ONNX model file?)".into(),
        ));
    }
    external::resolve(&mut model, origin, base_dir)?;
    Ok(model)
}

/// Encodes a model as bytes (no external data).
pub fn encode_model(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Every tensor stored in the model: initializers, Constant values and other tensor
/// attributes, sparse initializers, in subgraphs, functions and training info too.
pub(crate) fn for_each_tensor_mut(
    model: &mut pb::ModelProto,
    f: &mut dyn FnMut(&mut pb::TensorProto) -> Result<()>,
) -> Result<()> {
    if let Some(graph) = model.graph.as_mut() {
        graph_tensors_mut(graph, f)?;
    }
    for info in &mut model.training_info {
        for graph in [info.initialization.as_mut(), info.algorithm.as_mut()]
            .into_iter()
            .flatten()
        {
            graph_tensors_mut(graph, f)?;
        }
    }
    for function in &mut model.functions {
        for node in &mut function.node {
            node_tensors_mut(node, f)?;
        }
    }
    Ok(())
}

fn graph_tensors_mut(
    graph: &mut pb::GraphProto,
    f: &mut dyn FnMut(&mut pb::TensorProto) -> Result<()>,
) -> Result<()> {
    for tensor in &mut graph.initializer {
        f(tensor)?;
    }
    for sparse in &mut graph.sparse_initializer {
        for tensor in [sparse.values.as_mut(), sparse.indices.as_mut()]
            .into_iter()
            .flatten()
        {
            f(tensor)?;
        }
    }
    for node in &mut graph.node {
        node_tensors_mut(node, f)?;
    }
    Ok(())
}

fn node_tensors_mut(
    node: &mut pb::NodeProto,
    f: &mut dyn FnMut(&mut pb::TensorProto) -> Result<()>,
) -> Result<()> {
    for attr in &mut node.attribute {
        if let Some(t) = attr.t.as_mut() {
            f(t)?;
        }
        for t in &mut attr.tensors {
            f(t)?;
        }
        if let Some(sparse) = attr.sparse_tensor.as_mut() {
            for t in [sparse.values.as_mut(), sparse.indices.as_mut()]
                .into_iter()
                .flatten()
            {
                f(t)?;
            }
        }
        for sparse in &mut attr.sparse_tensors {
            for t in [sparse.values.as_mut(), sparse.indices.as_mut()]
                .into_iter()
                .flatten()
            {
                f(t)?;
            }
        }
        if let Some(g) = attr.g.as_mut() {
            graph_tensors_mut(g, f)?;
        }
        for g in &mut attr.graphs {
            graph_tensors_mut(g, f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bytes_are_an_error_naming_the_file() {
        let err = decode_model(&[], Path::new("m.onnx"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.onnx: not a valid ONNX model: the file is empty"
        );
    }

    #[test]
    fn random_bytes_are_a_decode_error() {
        let bytes: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let err = decode_model(&bytes, Path::new("r.onnx"), None).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }
}
