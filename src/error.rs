//! The library's typed errors. Each names the file, node or tensor it is about, so the
//! CLI can print it as one line.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid ONNX model: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    ExternalData { path: PathBuf, reason: String },
    #[error("tensor '{tensor}': {reason}")]
    Tensor { tensor: String, reason: String },
    #[error("node '{node}' ({op}): {reason}")]
    Node {
        node: String,
        op: String,
        reason: String,
    },
    #[error("graph: {0}")]
    Graph(String),
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("tract: {0}")]
    Runtime(String),
    #[error("{0}")]
    Usage(String),
    /// An output whose folds do not reproduce the model they started from: it must not be
    /// used. The comparisons say where it differs.
    #[error(
        "the rewritten model does not reproduce the {} model within {}",
        .0.against,
        .0.tolerance.rtol
    )]
    NotReproduced(Box<crate::optimize::Verified>),
    /// Training stopped where asked, its state saved: the same run again resumes it.
    #[error(
        "training stopped after step {step}; its state is in {}: run the same command again to resume",
        checkpoint.display()
    )]
    Stopped { step: usize, checkpoint: PathBuf },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn tensor(tensor: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Tensor {
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn node(node: &str, op: &str, reason: impl Into<String>) -> Self {
        Error::Node {
            node: node.to_string(),
            op: op.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn graph(reason: impl Into<String>) -> Self {
        Error::Graph(reason.into())
    }

    pub(crate) fn runtime(err: impl std::fmt::Display) -> Self {
        Error::Runtime(format!("{err:#}"))
    }
}
