//! The runtimes that will run the models (tract, and ONNX Runtime with the `ort`
//! feature): running a model, comparing two, and timing them.

pub mod bench;
pub mod compare;
pub mod cost;
pub mod engine;
pub(crate) mod eval;
pub mod interval;
pub mod memory;
#[cfg(feature = "ort")]
mod onnxruntime;
mod preflight;

use std::ops::Range;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use ndarray::ArrayD;
use tract_onnx::prelude::*;

use crate::calib::ModelInputs;
use crate::error::{Error, Result};
use crate::ir::shape::{self, PinnedShapes};
use crate::ir::{DataType, Model};

pub use engine::{Engine, EngineInfo, EngineSession, OrtOptLevel, OrtOptions};
pub use preflight::{MAX_VALUE_ELEMENTS, check_runnable};

/// A model loaded in tract with every input's dims pinned, optimised and ready to run.
pub struct Session {
    plan: Arc<TypedRunnableModel>,
    input_types: Vec<DatumType>,
}

impl Session {
    /// Loads `model` with the given dims for each runtime input, in order.
    pub fn new(model: &Model, input_dims: &[Vec<usize>]) -> Result<Session> {
        let bytes = crate::onnx::encode_model(&model.to_proto()?);
        let mut inference = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(Error::runtime)?;
        check_runnable_at(model, input_dims)?;
        let inputs: Vec<_> = model.graph.runtime_inputs().collect();
        let shapes = shape::infer(&model.graph, &PinnedShapes::default())?;
        let mut input_types = Vec::with_capacity(inputs.len());
        for (i, (&input, dims)) in inputs.iter().zip(input_dims).enumerate() {
            let dtype = datum_type(shapes.get(input).dtype.unwrap_or(DataType::Float))?;
            inference = inference
                .with_input_fact(i, InferenceFact::dt_shape(dtype, dims))
                .map_err(Error::runtime)?;
            input_types.push(dtype);
        }
        let plan = inference
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(Error::runtime)?;
        Ok(Session { plan, input_types })
    }

    /// Runs one batch; every output comes back as f32.
    pub fn run(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        let outputs = self.run_prepared(&self.prepare(inputs)?)?;
        outputs
            .into_iter()
            .map(|t| Ok(t.cast_to::<f32>()?.to_plain_array_view::<f32>()?.to_owned()))
            .collect::<TractResult<Vec<_>>>()
            .map_err(Error::runtime)
    }

    pub fn prepare(&self, inputs: &[ArrayD<f32>]) -> Result<Prepared> {
        inputs
            .iter()
            .zip(&self.input_types)
            .map(|(array, &dtype)| {
                Ok(Tensor::from(array.clone())
                    .cast_to_dt(dtype)?
                    .into_owned()
                    .into_tvalue())
            })
            .collect::<TractResult<TVec<TValue>>>()
            .map(Prepared)
            .map_err(Error::runtime)
    }

    pub(crate) fn run_prepared(&self, inputs: &Prepared) -> Result<TVec<TValue>> {
        self.plan.run(inputs.0.clone()).map_err(Error::runtime)
    }
}

/// Samples a session runs at once when the model does not fix its batch: tract runs one
/// sample of a conv net fastest (MobileNetV2: 14 ms an image at batch 1, 46 ms at 16;
/// PP-OCR's classifier 1.2 ms and 5.3 ms); batching only helps dense nets, whose runs take
/// microseconds.
pub const RUN_BATCH: usize = 1;

/// Runs `model` on every sample of `inputs`, `batch` samples at a time (the last batch
/// may be smaller), and returns each output over all samples.
pub fn run_all(model: &Model, inputs: &ModelInputs, batch: usize) -> Result<Vec<ArrayD<f32>>> {
    Runner::new(model, batch).run(inputs)
}

/// A model run on batch after batch: its sessions (one per batch size, built when first
/// needed) are kept and shared by the threads that run batches. tract runs a model on one
/// thread, so batches run in parallel, one per core.
pub struct Runner<'m> {
    model: &'m Model,
    batch: usize,
    sessions: Mutex<Vec<SessionAt>>,
}

/// A session and the dims of the inputs it runs at.
type SessionAt = (Vec<Vec<usize>>, Arc<Session>);

impl<'m> Runner<'m> {
    pub fn new(model: &'m Model, batch: usize) -> Runner<'m> {
        Runner {
            model,
            batch: batch.max(1),
            sessions: Mutex::default(),
        }
    }

    /// Every output over all samples of `inputs`, `batch` samples at a time.
    pub fn run(&self, inputs: &ModelInputs) -> Result<Vec<ArrayD<f32>>> {
        let samples = inputs.samples();
        let ranges: Vec<Range<usize>> = (0..samples)
            .step_by(self.batch)
            .map(|start| start..(start + self.batch).min(samples))
            .collect();
        let batches: Vec<Vec<ArrayD<f32>>> = ranges
            .into_par_iter()
            .map(|range| {
                let batch = inputs.batch(range);
                self.session(&batch)?.run(&batch)
            })
            .collect::<Result<_>>()?;
        concatenate_batches(&batches)
    }

    /// [`Runner::run`] over inputs that come in parts (a data set read part by part), the
    /// outputs concatenated.
    pub fn run_parts(
        &self,
        parts: impl Iterator<Item = Result<ModelInputs>>,
    ) -> Result<Vec<ArrayD<f32>>> {
        let outputs = parts
            .map(|part| self.run(&part?))
            .collect::<Result<Vec<_>>>()?;
        concatenate_batches(&outputs)
    }

    /// The session for batches of the dims of `batch`; the first thread to need it
    /// builds it while the others wait for it.
    fn session(&self, batch: &[ArrayD<f32>]) -> Result<Arc<Session>> {
        let dims: Vec<Vec<usize>> = batch.iter().map(|a| a.shape().to_vec()).collect();
        let mut sessions = self.sessions.lock().expect("no thread panics holding it");
        if let Some((_, session)) = sessions.iter().find(|(d, _)| *d == dims) {
            return Ok(session.clone());
        }
        let session = Arc::new(Session::new(self.model, &dims)?);
        sessions.push((dims, session.clone()));
        Ok(session)
    }
}

/// Each output over all batches.
fn concatenate_batches(batches: &[Vec<ArrayD<f32>>]) -> Result<Vec<ArrayD<f32>>> {
    let outputs = batches.first().map_or(0, Vec::len);
    (0..outputs)
        .map(|i| {
            let views: Vec<_> = batches.iter().map(|b| b[i].view()).collect();
            ndarray::concatenate(ndarray::Axis(0), &views)
                .map_err(|e| Error::graph(format!("outputs do not stack over batches: {e}")))
        })
        .collect()
}

/// [`check_runnable`] with `input_dims` pinned, one per runtime input, in order: before
/// any engine builds what the file claims.
pub(crate) fn check_runnable_at(model: &Model, input_dims: &[Vec<usize>]) -> Result<()> {
    let inputs: Vec<_> = model.graph.runtime_inputs().collect();
    if inputs.len() != input_dims.len() {
        return Err(Error::Usage(format!(
            "the model has {} inputs, {} shapes were given",
            inputs.len(),
            input_dims.len()
        )));
    }
    let pinned: PinnedShapes = inputs
        .iter()
        .map(|&v| model.graph.value(v).name.clone())
        .zip(input_dims.iter().cloned())
        .collect();
    check_runnable(model, &pinned)
}

/// Inputs already converted to the runtime's types, to run many times (benchmarks).
pub struct Prepared(TVec<TValue>);

fn datum_type(dtype: DataType) -> Result<DatumType> {
    Ok(match dtype {
        DataType::Float => f32::datum_type(),
        DataType::Double => f64::datum_type(),
        DataType::Float16 => f16::datum_type(),
        DataType::Int64 => i64::datum_type(),
        DataType::Int32 => i32::datum_type(),
        DataType::Uint8 => u8::datum_type(),
        DataType::Int8 => i8::datum_type(),
        other => {
            return Err(Error::Usage(format!(
                "inputs of type {other:?} are not supported"
            )));
        }
    })
}
