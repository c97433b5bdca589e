//! onnx-shallow makes pre-trained ONNX networks shallower: it removes activations that
//! can go and folds the linear layers around them into single layers, and verifies the
//! result with tract.
//!
//! The library is the tool without its command line: load a model, run the passes you
//! choose, save it.
//!
//! ```
//! use onnx_shallow::passes::{self, Ctx};
//! # let input = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/ppocr_textline_cls.onnx");
//! # let dir = tempfile::tempdir().unwrap();
//! # let output = dir.path().join("ppocr.shallow.onnx");
//! let mut model = onnx_shallow::load(input.as_ref())?;
//! let stats = passes::run_pipeline(&passes::canonical(), &mut model.graph, &Ctx::default())?;
//! for s in stats.iter().filter(|s| s.patches > 0) {
//!     println!("{}: {} rewrites, {} nodes fewer", s.pass, s.patches, s.nodes_removed);
//! }
//! assert!(model.graph.nodes().all(|(_, node)| node.op() != "BatchNormalization"));
//! onnx_shallow::save(&model, &output, &Default::default())?;
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

pub mod calib;
pub mod error;
pub mod exec;
pub mod fold;
#[doc(hidden)]
pub mod fuzzing;
pub mod gates;
pub mod ir;
pub mod memory;
pub mod onnx;
mod optimize;
pub mod passes;
pub mod progress;
pub mod report;
pub mod runtime;
#[cfg(test)]
mod testing;

use std::path::Path;

pub use error::{Error, Result};
pub use ir::Model;
pub use onnx::SaveOptions;
pub use optimize::{
    Cost, GATED_RTOL, Gated, Options, RemovedActivation, Report, gate, optimize,
    optimize_from_gates, optimize_learned, parse_input_shape,
};

/// Loads a model file (with its external data) into the IR.
pub fn load(path: &Path) -> Result<Model> {
    Model::from_proto(onnx::load_proto(path)?).map_err(|e| in_file(path, e))
}

/// Saves a model atomically (see [`SaveOptions`] for external data).
pub fn save(model: &Model, path: &Path, options: &SaveOptions) -> Result<()> {
    onnx::save(&model.to_proto()?, path, options)
}

/// Prefixes graph-level errors with the file they come from.
fn in_file(path: &Path, err: Error) -> Error {
    match err {
        Error::Io { .. }
        | Error::Decode { .. }
        | Error::ExternalData { .. }
        | Error::Data { .. } => err,
        other => Error::Decode {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
