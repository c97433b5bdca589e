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
        "training stopped after step {step}; its state is in {}: the same run started again resumes it",
        checkpoint.display()
    )]
    Stopped { step: usize, checkpoint: PathBuf },
    /// A value out of its range, or text that does not say what it should, named as the
    /// library names it: a field (`max_drop`, `crop.scale`) or what the text describes
    /// (`input_shape`, `output_kind`).
    #[error("{option} {value}: expected {expected}")]
    Invalid {
        option: &'static str,
        value: String,
        expected: String,
    },
    /// An input whose dims the work needs fixed and are not: pinning them
    /// ([`PinnedShapes`](crate::ir::shape::PinnedShapes)) gives their sizes.
    #[error("input '{input}' is {declared}: {needs}; pin its dims to give their sizes")]
    DynamicInput {
        input: String,
        declared: String,
        /// Which dims must be fixed, and what for.
        needs: &'static str,
    },
    /// An archive without an array named for the model's one input, and several to choose
    /// from: the caller names the one to read
    /// ([`ArraySelection::key`](crate::calib::ArraySelection::key)).
    #[error(
        "{}: no array for input {input} (the archive holds: {}); name the one to read",
        path.display(),
        held.join(", ")
    )]
    UnnamedArray {
        path: PathBuf,
        input: String,
        held: Vec<String>,
    },
    /// This build has no ONNX Runtime engine (the cargo feature `ort` is off).
    #[error(
        "this build of onnx-shallow has no ONNX Runtime engine: it needs the cargo feature `ort`"
    )]
    OrtNotBuilt,
    /// No ONNX Runtime library to load, or one that does not load.
    #[error(
        "{problem}; set OrtOptions::library or ORT_DYLIB_PATH to ONNX Runtime's shared library ({ORT_WHEEL})"
    )]
    OrtLibrary { problem: String },
}

/// Where to find an ONNX Runtime library.
pub const ORT_WHEEL: &str =
    "the onnxruntime Python wheel ships one: onnxruntime/capi/libonnxruntime.so.*";

impl Error {
    pub(crate) fn invalid(
        option: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            option,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

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
