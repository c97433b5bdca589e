//! onnx-shallow makes pre-trained ONNX networks shallower: it removes activations that
//! can go and folds the linear layers around them into single layers, and verifies the
//! result with tract.
//!
//! The library is the tool without its command line, under the same rules: what
//! [`optimize`] (exact rewrites and folds), [`optimize_learned`] (learning which
//! activations can go) and [`optimize_from_gates`] return has been verified in tract (and
//! in the run's engine): a result whose folds do not reproduce what they started from is
//! an [`Error::NotReproduced`], never a model. The check is in the report.
//!
//! ```
//! use onnx_shallow::calib::{CalibSpec, Dataset};
//! use onnx_shallow::gates::{LearnData, LearnOptions};
//! use onnx_shallow::{Cost, Options};
//! # let dir = tempfile::tempdir().unwrap();
//! # let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
//! # let input = format!("{testdata}/ppocr_textline_cls.onnx");
//! # let output = dir.path().join("ppocr.shallow.onnx");
//! let options = Options { cost: Cost::Macs, ..Options::default() };
//!
//! // The exact rewrites and folds (the text-line classifier's dims pinned to verify it).
//! let model = onnx_shallow::load(input.as_ref())?;
//! let pinned = [onnx_shallow::parse_input_shape("x:1,3,48,192")?].into_iter().collect();
//! let exact = Options { pinned, ..options.clone() };
//! let (shallow, report) = onnx_shallow::optimize(model, &exact)?;
//! let verified = report.verified.as_ref().expect("verified before it is returned");
//! assert!(verified.reproduces());
//! assert!(shallow.graph.nodes().all(|(_, node)| node.op() != "BatchNormalization"));
//! onnx_shallow::save(&shallow, &output, &Default::default())?;
//!
//! // Learned: which activations can go, judged on held-out data.
//! # let input = format!("{testdata}/digits_mobilenetish.onnx");
//! # let samples = format!("{testdata}/digits_test64.npz").into();
//! let model = onnx_shallow::load(input.as_ref())?;
//! let spec = CalibSpec { paths: vec![samples], ..CalibSpec::default() };
//! let (train, held_out) = Dataset::load(&spec, &model, &options.pinned)?.split(0.25, 0)?;
//! let data = LearnData { train: &train, held_out: &held_out, more_splits: &[] };
//! let (shallow, report) =
//!     onnx_shallow::optimize_learned(model, &options, &data, &LearnOptions::default())?;
//! let verified = report.verified.as_ref().unwrap();
//! println!("held-out agreement: {:?}", verified.against_original().outputs[0].agreement);
//! onnx_shallow::save(&shallow, &output, &Default::default())?;
//! # Ok::<(), onnx_shallow::Error>(())
//! ```
//!
//! Passes can also be run one by one (see [`passes`]).
//!
//! The `cli` feature, on by default, is the `onnx-shallow` binary (clap and the terminal's
//! progress bars); a program using the library leaves it out with
//! `default-features = false`.

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
    GATED_RTOL, Gated, Options, RemovedActivation, Report, VERIFY_SEED, Verified, gate, optimize,
    optimize_from_gates, optimize_learned, parse_input_shape,
};
pub use runtime::cost::Cost;

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
