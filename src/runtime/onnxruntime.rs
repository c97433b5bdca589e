//! ONNX Runtime through the `ort` crate, its shared library loaded at run time (never
//! downloaded) from [`OrtOptions::library`] or `ORT_DYLIB_PATH`. A process loads one
//! library, once.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::ArrayD;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::runtime::engine::{OrtOptLevel, OrtOptions};

/// The library this process loaded, its version, and the environment sessions live in.
struct Loaded {
    library: PathBuf,
    version: String,
    environment: Environment,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

fn library_path(options: &OrtOptions) -> Result<PathBuf> {
    let from_env = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty());
    (options.library.clone())
        .or_else(|| from_env.map(PathBuf::from))
        .ok_or_else(|| Error::OrtLibrary {
            problem: "no ONNX Runtime library given".into(),
        })
}

/// The library `options` name, loaded on first use; asking for another one later is an
/// error, since `ort` keeps the first for the life of the process.
fn loaded(options: &OrtOptions) -> Result<&'static Loaded> {
    let path = library_path(options)?;
    let _guard = LOADING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let loaded = match LOADED.get() {
        Some(loaded) => loaded,
        None => {
            let loaded = load(&path)?;
            LOADED.get_or_init(|| loaded)
        }
    };
    if !crate::onnx::same_file(&loaded.library, &path) {
        return Err(Error::Usage(format!(
            "{}: ONNX Runtime is already loaded from {} in this process",
            path.display(),
            loaded.library.display()
        )));
    }
    Ok(loaded)
}

fn load(path: &Path) -> Result<Loaded> {
    let cannot = |reason: String| Error::OrtLibrary {
        problem: format!(
            "{}: cannot use it as ONNX Runtime: {reason}",
            path.display()
        ),
    };
    if !path.is_file() {
        return Err(cannot("no such file".into()));
    }
    let environment = ort::init_from(path)
        .map_err(|e| cannot(e.to_string()))?
        .with_name("onnx-shallow")
        .with_telemetry(false)
        .build()
        .map_err(|e| cannot(e.to_string()))?;
    Ok(Loaded {
        library: path.to_path_buf(),
        version: library_version(path).map_err(cannot)?,
        environment,
    })
}

/// The library's own version (`1.31.1`), which `ort` checks but does not tell.
fn library_version(path: &Path) -> std::result::Result<String, String> {
    // SAFETY: `ort` has just loaded this file and found ONNX Runtime's entry point in it;
    // opening it again only takes another reference. By ONNX Runtime's C API,
    // `OrtGetApiBase` returns a static table whose `GetVersionString` returns a static,
    // NUL-terminated string, copied here before the reference is dropped.
    unsafe {
        let library = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let api_base = library
            .get::<unsafe extern "system" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase")
            .map_err(|e| e.to_string())?;
        let base = api_base();
        if base.is_null() {
            return Err("OrtGetApiBase returned nothing".into());
        }
        let version = ((*base).GetVersionString)();
        Ok(std::ffi::CStr::from_ptr(version)
            .to_string_lossy()
            .into_owned())
    }
}

pub fn version(options: &OrtOptions) -> Result<String> {
    Ok(loaded(options)?.version.clone())
}

fn ort_error(err: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("onnxruntime: {err}"))
}

fn optimization_level(level: OrtOptLevel) -> GraphOptimizationLevel {
    match level {
        OrtOptLevel::Disable => GraphOptimizationLevel::Disable,
        OrtOptLevel::Basic => GraphOptimizationLevel::Level1,
        OrtOptLevel::Extended => GraphOptimizationLevel::Level2,
        OrtOptLevel::All => GraphOptimizationLevel::All,
    }
}

/// A model in an ONNX Runtime session: CPU, operators run one after another, each on
/// `threads` intra-op threads.
pub struct OrtSession {
    /// `ort` runs a session through `&mut`.
    session: Mutex<Session>,
    input_types: Vec<(String, TensorElementType)>,
}

/// Inputs converted to ONNX Runtime values of the session's input types.
pub struct OrtInputs(Vec<DynValue>);

impl OrtSession {
    pub fn new(model: &Model, options: &OrtOptions) -> Result<OrtSession> {
        let loaded = loaded(options)?;
        let bytes = crate::onnx::encode_model(&model.to_proto()?);
        let session = Session::builder(&loaded.environment)
            .map_err(ort_error)?
            .with_optimization_level(optimization_level(options.opt_level))
            .map_err(ort_error)?
            .with_intra_threads(options.threads)
            .map_err(ort_error)?
            .with_parallel_execution(false)
            .map_err(ort_error)?
            .commit_from_memory(&bytes)
            .map_err(ort_error)?;
        let input_types = session
            .inputs()
            .iter()
            .map(|input| match input.dtype() {
                ValueType::Tensor { ty, .. } => Ok((input.name().to_string(), *ty)),
                other => Err(Error::tensor(
                    input.name(),
                    format!("inputs of type {other} are not supported"),
                )),
            })
            .collect::<Result<_>>()?;
        Ok(OrtSession {
            session: Mutex::new(session),
            input_types,
        })
    }

    pub fn prepare(&self, inputs: &[ArrayD<f32>]) -> Result<OrtInputs> {
        if inputs.len() != self.input_types.len() {
            return Err(Error::Usage(format!(
                "the model has {} inputs, {} were given",
                self.input_types.len(),
                inputs.len()
            )));
        }
        (inputs.iter().zip(&self.input_types))
            .map(|(array, (name, ty))| value_of(array, name, *ty))
            .collect::<Result<_>>()
            .map(OrtInputs)
    }

    /// Runs the session, handing its outputs to `read`.
    fn with_outputs<T>(
        &self,
        inputs: &OrtInputs,
        read: impl FnOnce(&ort::session::SessionOutputs) -> Result<T>,
    ) -> Result<T> {
        let values: Vec<SessionInputValue> = inputs.0.iter().map(SessionInputValue::from).collect();
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session.run(values.as_slice()).map_err(ort_error)?;
        read(&outputs)
    }

    /// Runs one batch; every output comes back as f32.
    pub fn run(&self, inputs: &OrtInputs) -> Result<Vec<ArrayD<f32>>> {
        self.with_outputs(inputs, |outputs| {
            outputs
                .iter()
                .map(|(name, value)| as_f32(name, &value))
                .collect()
        })
    }

    /// Runs one batch and drops the outputs (a timed run).
    pub fn run_prepared(&self, inputs: &OrtInputs) -> Result<()> {
        self.with_outputs(inputs, |_| Ok(()))
    }
}

fn value_of(array: &ArrayD<f32>, name: &str, ty: TensorElementType) -> Result<DynValue> {
    let value = match ty {
        TensorElementType::Float32 => Tensor::from_array(array.clone()).map(Tensor::into_dyn),
        TensorElementType::Float64 => {
            Tensor::from_array(array.mapv(f64::from)).map(Tensor::into_dyn)
        }
        TensorElementType::Int64 => {
            Tensor::from_array(array.mapv(|x| x as i64)).map(Tensor::into_dyn)
        }
        TensorElementType::Int32 => {
            Tensor::from_array(array.mapv(|x| x as i32)).map(Tensor::into_dyn)
        }
        TensorElementType::Uint8 => {
            Tensor::from_array(array.mapv(|x| x as u8)).map(Tensor::into_dyn)
        }
        TensorElementType::Int8 => {
            Tensor::from_array(array.mapv(|x| x as i8)).map(Tensor::into_dyn)
        }
        other => {
            return Err(Error::tensor(
                name,
                format!("inputs of type {other} are not supported"),
            ));
        }
    };
    value.map_err(ort_error)
}

fn as_f32(name: &str, value: &DynValue) -> Result<ArrayD<f32>> {
    let unsupported = || {
        Error::tensor(
            name,
            format!("outputs of type {} are not supported", value.dtype()),
        )
    };
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(unsupported());
    };
    let array = match ty {
        TensorElementType::Float32 => value.try_extract_array::<f32>().map(|a| a.to_owned()),
        TensorElementType::Float64 => value
            .try_extract_array::<f64>()
            .map(|a| a.mapv(|x| x as f32)),
        TensorElementType::Int64 => value
            .try_extract_array::<i64>()
            .map(|a| a.mapv(|x| x as f32)),
        TensorElementType::Int32 => value
            .try_extract_array::<i32>()
            .map(|a| a.mapv(|x| x as f32)),
        _ => return Err(unsupported()),
    };
    array.map_err(ort_error)
}
