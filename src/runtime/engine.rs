//! The engines a model is run and timed in. tract is the reference and always built;
//! ONNX Runtime (cargo feature `ort`) is loaded at run time from a shared library the
//! user points at, because a fold that pays in one engine can cost in the other: what
//! decides is the engine the model is deployed on.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ndarray::ArrayD;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::runtime::Session;

/// The tract release this crate is built against (Cargo.toml's requirement); tract
/// does not report its own version.
const TRACT_VERSION: &str = "0.23";

/// Where a model runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Engine {
    /// tract, on one thread.
    #[default]
    Tract,
    /// ONNX Runtime's CPU execution provider.
    OnnxRuntime(OrtOptions),
}

/// How ONNX Runtime sessions are set up: as the user deploys them.
#[derive(Clone, Debug, PartialEq)]
pub struct OrtOptions {
    /// The shared library; `None` reads `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// Intra-op threads (operators run one after another).
    pub threads: usize,
    pub opt_level: OrtOptLevel,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            library: None,
            threads: 1,
            opt_level: OrtOptLevel::All,
        }
    }
}

/// ONNX Runtime's graph optimisation levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrtOptLevel {
    Disable,
    Basic,
    Extended,
    All,
}

impl FromStr for OrtOptLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "disable" => OrtOptLevel::Disable,
            "basic" => OrtOptLevel::Basic,
            "extended" => OrtOptLevel::Extended,
            "all" => OrtOptLevel::All,
            _ => return Err(format!("{s}: expected disable, basic, extended or all")),
        })
    }
}

impl fmt::Display for OrtOptLevel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let name = match self {
            OrtOptLevel::Disable => "disable",
            OrtOptLevel::Basic => "basic",
            OrtOptLevel::Extended => "extended",
            OrtOptLevel::All => "all",
        };
        f.write_str(name)
    }
}

/// What a latency figure was measured in: reports carry it, cost caches are keyed by it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EngineInfo {
    /// `tract` or `onnxruntime`.
    pub name: &'static str,
    pub version: String,
    pub threads: usize,
    /// ONNX Runtime's graph optimisation level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_level: Option<OrtOptLevel>,
}

impl fmt::Display for EngineInfo {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let threads = match self.threads {
            1 => "1 thread".to_string(),
            n => format!("{n} threads"),
        };
        write!(f, "{} {}, {threads}", self.name, self.version)?;
        match self.opt_level {
            Some(level) => write!(f, ", graph optimisation {level}"),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// `tract` or `onnxruntime`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Tract => "tract",
            Engine::OnnxRuntime(_) => "onnxruntime",
        }
    }

    /// The engine's name, version and settings (loads ONNX Runtime's library).
    pub fn info(&self) -> Result<EngineInfo> {
        match self {
            Engine::Tract => Ok(EngineInfo {
                name: self.name(),
                version: TRACT_VERSION.into(),
                threads: 1,
                opt_level: None,
            }),
            Engine::OnnxRuntime(options) => Ok(EngineInfo {
                name: self.name(),
                version: ort_engine::version(options)?,
                threads: options.threads,
                opt_level: Some(options.opt_level),
            }),
        }
    }

    /// `model` ready to run on inputs of `input_dims` (one per runtime input, in order).
    pub fn load(&self, model: &Model, input_dims: &[Vec<usize>]) -> Result<EngineSession> {
        Ok(match self {
            Engine::Tract => EngineSession::Tract(Session::new(model, input_dims)?),
            Engine::OnnxRuntime(options) => {
                crate::runtime::check_runnable_at(model, input_dims)?;
                EngineSession::OnnxRuntime(ort_engine::OrtSession::new(model, options)?)
            }
        })
    }
}

/// A model loaded in an [`Engine`].
pub enum EngineSession {
    Tract(Session),
    OnnxRuntime(ort_engine::OrtSession),
}

/// Inputs already converted to an engine's types, to run many times (benchmarks).
pub enum EngineInputs {
    Tract(crate::runtime::Prepared),
    OnnxRuntime(ort_engine::OrtInputs),
}

impl EngineSession {
    /// Runs one batch; every output comes back as f32.
    pub fn run(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        match self {
            EngineSession::Tract(session) => session.run(inputs),
            EngineSession::OnnxRuntime(session) => session.run(&session.prepare(inputs)?),
        }
    }

    pub fn prepare(&self, inputs: &[ArrayD<f32>]) -> Result<EngineInputs> {
        Ok(match self {
            EngineSession::Tract(session) => EngineInputs::Tract(session.prepare(inputs)?),
            EngineSession::OnnxRuntime(session) => {
                EngineInputs::OnnxRuntime(session.prepare(inputs)?)
            }
        })
    }

    /// Runs on inputs prepared by this session, dropping the outputs (a timed run).
    pub fn run_prepared(&self, inputs: &EngineInputs) -> Result<()> {
        match (self, inputs) {
            (EngineSession::Tract(session), EngineInputs::Tract(inputs)) => {
                session.run_prepared(inputs).map(drop)
            }
            (EngineSession::OnnxRuntime(session), EngineInputs::OnnxRuntime(inputs)) => {
                session.run_prepared(inputs)
            }
            _ => Err(Error::Usage(
                "inputs prepared for one engine were run in another".into(),
            )),
        }
    }
}

#[cfg(feature = "ort")]
use crate::runtime::onnxruntime as ort_engine;

/// Stands in for ONNX Runtime in a build without the `ort` feature: loading it is an
/// error that says how to get it.
#[cfg(not(feature = "ort"))]
mod ort_engine {
    use ndarray::ArrayD;

    use super::OrtOptions;
    use crate::error::{Error, Result};
    use crate::ir::Model;

    pub enum OrtSession {}
    pub enum OrtInputs {}

    pub fn version(_: &OrtOptions) -> Result<String> {
        Err(Error::OrtNotBuilt)
    }

    impl OrtSession {
        pub fn new(_: &Model, _: &OrtOptions) -> Result<OrtSession> {
            Err(Error::OrtNotBuilt)
        }

        pub fn prepare(&self, _: &[ArrayD<f32>]) -> Result<OrtInputs> {
            match *self {}
        }

        pub fn run(&self, _: &OrtInputs) -> Result<Vec<ArrayD<f32>>> {
            match *self {}
        }

        pub fn run_prepared(&self, _: &OrtInputs) -> Result<()> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_is_told_apart_by_name_version_threads_and_optimisation() {
        // The cost cache keys its measurements by this text.
        let tract = Engine::Tract.info().unwrap();
        assert_eq!(tract.to_string(), "tract 0.23, 1 thread");
        let onnxruntime = EngineInfo {
            name: "onnxruntime",
            version: "1.31.1".into(),
            threads: 2,
            opt_level: Some(OrtOptLevel::Basic),
        };
        assert_eq!(
            onnxruntime.to_string(),
            "onnxruntime 1.31.1, 2 threads, graph optimisation basic"
        );
    }

    #[test]
    fn optimisation_levels_parse_by_name_and_refuse_others() {
        for level in [
            OrtOptLevel::Disable,
            OrtOptLevel::Basic,
            OrtOptLevel::Extended,
            OrtOptLevel::All,
        ] {
            assert_eq!(level.to_string().parse::<OrtOptLevel>(), Ok(level));
        }
        let refused = "99".parse::<OrtOptLevel>().unwrap_err();
        assert!(
            refused.contains("disable, basic, extended or all"),
            "{refused}"
        );
    }
}
