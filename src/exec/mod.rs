//! A small executor with reverse-mode gradients over the IR, for training activation gates
//! (and weights) by distillation.
//!
//! `Executor::new` compiles the part of a graph between the fed tensors and the wanted
//! outputs into a flat list of steps; `forward` runs it (recording on a tape only the
//! tensors the backward pass reads) and `backward` walks the tape in reverse. Kernels are
//! generic over f32 and f64 (`Float`), so tests can check gradients against central
//! differences in f64. Results are bit-identical whatever the thread scheduling: parallel
//! work is split by sample or by fixed chunks, and partial sums are added in a fixed order.
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use onnx_shallow::exec::{Executor, Gate, Params, Wanted};
//! use onnx_shallow::ir::{builder::ModelBuilder, Attributes, Tensor};
//! let proto = ModelBuilder::new(13)
//!     .input("x", &[-1, 2])
//!     .initializer("w", Tensor::from_f32(vec![2, 2], &[1.0, -1.0, 0.5, 2.0]))
//!     .node("MatMul", &["x", "w"], &["h"], Attributes::default())
//!     .node("Relu", &["h"], &["y"], Attributes::default())
//!     .output("y")
//!     .build();
//! let model = onnx_shallow::Model::from_proto(proto)?;
//! let gate = Gate { input: "h".into(), output: "y".into(), group: 0 };
//! let exec = Executor::new(&model.graph, &["x".into()], &["y".into()], vec![gate])?;
//! let mut params = Params::<f64>::new(&exec, &model.graph)?;
//! params.alpha[0] = 1.0; // the Relu is bypassed: y = x·w
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, 1.0]).unwrap();
//! let run = exec.forward(&[x], &params, true)?;
//! assert_eq!(run.outputs[0].as_slice().unwrap(), &[1.5, 1.0]);
//! let ones = ArrayD::ones(IxDyn(&[1, 2]));
//! let grads = exec.backward(&run, &[ones], &params, Wanted { weights: true, inputs: false })?;
//! assert_eq!(grads.weights["w"].as_slice().unwrap(), &[1.0, 1.0, 1.0, 1.0]);
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

mod buffers;
mod float;
mod gate;
mod ops;
mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

pub use float::Float;

use crate::error::{Error, Result};
use crate::ir::Graph;
use buffers::BufferPool;
use plan::{Plan, Source, StepKind};

/// An activation whose output is blended with its input: y' = (1 − α)·y + α·x, where x and
/// y are the activation's input and output tensor names (the activation may be several
/// nodes: only the boundary tensors matter). Consumers of y, and y as an output, see y'.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub input: String,
    pub output: String,
    /// The index of the α this gate uses (gates of one fold group share it).
    pub group: usize,
}

/// Trainable state: one α per gate group, and the weights (the float initializers the
/// compiled nodes read as data), by name.
#[derive(Clone, Debug)]
pub struct Params<T> {
    pub alpha: Vec<T>,
    pub weights: BTreeMap<String, ArrayD<T>>,
}

impl<T: Float> Params<T> {
    /// α = 0 for every group (every activation kept) and the graph's weights.
    pub fn new(executor: &Executor, graph: &Graph) -> Result<Params<T>> {
        let weights = executor
            .plan
            .weights
            .iter()
            .map(|(name, dims)| {
                let value = graph
                    .value_by_name(name)
                    .and_then(|v| plan::constant_of(graph, v))
                    .and_then(|t| t.to_f64())
                    .ok_or_else(|| {
                        Error::tensor(name, "is not a float initializer of this graph")
                    })?;
                let array = ArrayD::from_shape_vec(
                    IxDyn(dims),
                    value.into_iter().map(T::from_f64).collect(),
                )
                .map_err(|e| Error::tensor(name, e.to_string()))?;
                Ok((name.clone(), array))
            })
            .collect::<Result<_>>()?;
        Ok(Params {
            alpha: vec![T::zero(); executor.plan.groups],
            weights,
        })
    }
}

/// Which gradients besides the gates' a backward pass computes. Gate gradients always are;
/// without `weights` no weight-gradient products run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wanted {
    pub weights: bool,
    pub inputs: bool,
}

#[derive(Clone, Debug)]
pub struct Gradients<T> {
    /// ∂L/∂α per gate group.
    pub alpha: Vec<f64>,
    /// Every weight's gradient when `Wanted::weights` (zeros where none flows), else empty.
    pub weights: BTreeMap<String, ArrayD<T>>,
    /// Every fed tensor's gradient when `Wanted::inputs`, in feed order, else empty.
    pub inputs: Vec<ArrayD<T>>,
}

/// The result of a forward pass, and its tape when one was recorded.
pub struct Forward<T: Float> {
    pub outputs: Vec<ArrayD<T>>,
    tape: Option<Tape<T>>,
}

/// The tensors the backward pass reads, by slot, and every slot's dims. Dropping the
/// tape returns its buffers to the executor's pool, for the next pass.
struct Tape<T: Float> {
    values: Vec<Option<ArrayD<T>>>,
    shapes: Vec<Vec<usize>>,
    pool: Arc<BufferPool>,
}

impl<T: Float> Drop for Tape<T> {
    fn drop(&mut self) {
        for v in self.values.iter_mut() {
            release(&self.pool, v);
        }
    }
}

/// A compiled region of a graph; see the module documentation.
#[derive(Debug)]
pub struct Executor {
    plan: Plan,
    pool: Arc<BufferPool>,
}

impl Executor {
    /// Compiles the part of `graph` needed to compute `outputs` from `inputs` (graph inputs
    /// or intermediate tensors). Initializers read as data are the weights; initializers
    /// read as shapes, pads, axes or bounds are constants. An operator the executor does
    /// not support inside the region is an error naming the node.
    pub fn new(
        graph: &Graph,
        inputs: &[String],
        outputs: &[String],
        gates: Vec<Gate>,
    ) -> Result<Executor> {
        Ok(Executor {
            plan: plan::compile(graph, inputs, outputs, &gates)?,
            pool: Arc::default(),
        })
    }

    /// The number of gate groups (the length of `Params::alpha`).
    pub fn groups(&self) -> usize {
        self.plan.groups
    }

    /// The names of the weights, in a fixed order.
    pub fn weight_names(&self) -> impl Iterator<Item = &str> {
        self.plan.weights.iter().map(|(name, _)| name.as_str())
    }

    /// The weights in slot order, checked against the compiled dims.
    fn weights<'p, T: Float>(&self, params: &'p Params<T>) -> Result<Vec<&'p ArrayD<T>>> {
        if params.alpha.len() != self.plan.groups {
            return Err(Error::Usage(format!(
                "{} gate values for {} gate groups",
                params.alpha.len(),
                self.plan.groups
            )));
        }
        self.plan
            .weights
            .iter()
            .map(|(name, dims)| match params.weights.get(name) {
                Some(w) if w.shape() == dims.as_slice() && w.is_standard_layout() => Ok(w),
                Some(w) => Err(Error::tensor(
                    name,
                    format!("weight has dims {:?}, expected {dims:?}", w.shape()),
                )),
                None => Err(Error::tensor(name, "weight is missing from the parameters")),
            })
            .collect()
    }

    /// Runs the region on `feeds` (in `inputs` order, batch first). With `tape`, keeps
    /// what `backward` needs.
    pub fn forward<T: Float>(
        &self,
        feeds: &[ArrayD<T>],
        params: &Params<T>,
        tape: bool,
    ) -> Result<Forward<T>> {
        let (plan, pool) = (&self.plan, &*self.pool);
        if feeds.len() != plan.feed_count {
            return Err(Error::Usage(format!(
                "{} tensors fed, {} expected",
                feeds.len(),
                plan.feed_count
            )));
        }
        let weights = self.weights(params)?;
        let mut values: Vec<Option<ArrayD<T>>> = vec![None; plan.sources.len()];
        let mut shapes = vec![Vec::new(); plan.sources.len()];
        for (slot, source) in plan.sources.iter().enumerate() {
            match *source {
                Source::Feed(i) => {
                    let mut copy = pool.array(feeds[i].shape());
                    copy.assign(&feeds[i]);
                    values[slot] = Some(copy);
                }
                Source::Weight(i) => shapes[slot] = weights[i].shape().to_vec(),
                Source::Computed => {}
            }
            if let Some(v) = &values[slot] {
                shapes[slot] = v.shape().to_vec();
            }
        }
        for (i, step) in plan.steps.iter().enumerate() {
            let out = {
                let inputs: Vec<&ArrayD<T>> = step
                    .inputs
                    .iter()
                    .map(|&v| value(plan, &values, &weights, v))
                    .collect();
                match &step.kind {
                    StepKind::Node(op) => op.forward(pool, &inputs),
                    StepKind::Gate { group } => {
                        gate::forward(pool, inputs[0], inputs[1], params.alpha[*group])
                    }
                    StepKind::GatedActivation { unary, group } => Ok(gate::activation_forward(
                        pool,
                        *unary,
                        inputs[0],
                        params.alpha[*group],
                    )),
                }
                .map_err(|reason| Error::node(&step.name, &step.op_type, reason))?
            };
            shapes[step.output] = out.shape().to_vec();
            values[step.output] = Some(out);
            for &v in &step.inputs {
                if plan.last_use[v] == Some(i) && !(tape && plan.saved[v]) && !plan.is_output[v] {
                    release(pool, &mut values[v]);
                }
            }
        }
        let outputs = plan
            .outputs
            .iter()
            .map(|&o| value(plan, &values, &weights, o).clone())
            .collect();
        for (slot, v) in values.iter_mut().enumerate() {
            if !(tape && plan.saved[slot]) {
                release(pool, v);
            }
        }
        let tape = tape.then(|| Tape {
            values,
            shapes,
            pool: Arc::clone(&self.pool),
        });
        Ok(Forward { outputs, tape })
    }

    /// Back-propagates `output_grads` (∂L/∂output, in `outputs` order) through a recorded
    /// forward pass run with the same `params`.
    pub fn backward<T: Float>(
        &self,
        forward: &Forward<T>,
        output_grads: &[ArrayD<T>],
        params: &Params<T>,
        wanted: Wanted,
    ) -> Result<Gradients<T>> {
        let (plan, pool) = (&self.plan, &*self.pool);
        let tape = forward
            .tape
            .as_ref()
            .ok_or_else(|| Error::Usage("backward needs a forward pass run with a tape".into()))?;
        let weights = self.weights(params)?;
        if output_grads.len() != plan.outputs.len() {
            return Err(Error::Usage(format!(
                "{} output gradients for {} outputs",
                output_grads.len(),
                plan.outputs.len()
            )));
        }
        let mut grads: Vec<Option<ArrayD<T>>> = vec![None; plan.sources.len()];
        for (&o, g) in plan.outputs.iter().zip(output_grads) {
            if g.shape() != tape.shapes[o].as_slice() {
                return Err(Error::Usage(format!(
                    "an output gradient has dims {:?}, its output {:?}",
                    g.shape(),
                    tape.shapes[o]
                )));
            }
            accumulate(pool, &mut grads[o], g.as_standard_layout().into_owned());
        }
        let need = self.need(wanted);
        let mut alpha = vec![0.0; plan.groups];
        let get = |v: usize| match plan.sources[v] {
            Source::Weight(i) => Some(weights[i]),
            _ => tape.values[v].as_ref(),
        };
        for step in plan.steps.iter().rev() {
            if !need[step.output] {
                continue;
            }
            let Some(g) = grads[step.output].take() else {
                continue;
            };
            let input_need: Vec<bool> = step.inputs.iter().map(|&v| need[v]).collect();
            let input_grads = match &step.kind {
                StepKind::Gate { group } => {
                    let (x, y) = (get(step.inputs[0]), get(step.inputs[1]));
                    let a = params.alpha[*group];
                    let (d, da) = gate::backward(
                        pool,
                        &g,
                        x.expect("saved"),
                        y.expect("saved"),
                        a,
                        [input_need[0], input_need[1]],
                    );
                    alpha[*group] += da;
                    d.into()
                }
                StepKind::GatedActivation { unary, group } => {
                    let x = get(step.inputs[0]).expect("saved");
                    let a = params.alpha[*group];
                    let (dx, da) = gate::activation_backward(pool, *unary, &g, x, a, input_need[0]);
                    alpha[*group] += da;
                    vec![dx]
                }
                StepKind::Node(op) => {
                    let saved = ops::Saved {
                        inputs: step.inputs.iter().map(|&v| get(v)).collect(),
                        shapes: step
                            .inputs
                            .iter()
                            .map(|&v| tape.shapes[v].as_slice())
                            .collect(),
                        output: get(step.output),
                        need: input_need,
                    };
                    op.backward(pool, &g, &saved)
                }
            };
            pool.give_array(g);
            for (&v, d) in step.inputs.iter().zip(input_grads) {
                if let Some(d) = d {
                    accumulate(pool, &mut grads[v], d);
                }
            }
        }
        let mut leaf_grads = |want: bool, of: fn(Source) -> Option<usize>| -> Vec<ArrayD<T>> {
            let mut leaves: Vec<(usize, ArrayD<T>)> = Vec::new();
            for (slot, &source) in plan.sources.iter().enumerate() {
                if let Some(i) = of(source).filter(|_| want) {
                    let g = grads[slot].take();
                    leaves.push((
                        i,
                        g.unwrap_or_else(|| ArrayD::zeros(IxDyn(&tape.shapes[slot]))),
                    ));
                }
            }
            leaves.sort_by_key(|(i, _)| *i);
            leaves.into_iter().map(|(_, g)| g).collect()
        };
        let weight_grads = leaf_grads(wanted.weights, |s| match s {
            Source::Weight(i) => Some(i),
            _ => None,
        });
        let input_grads = leaf_grads(wanted.inputs, |s| match s {
            Source::Feed(i) => Some(i),
            _ => None,
        });
        Ok(Gradients {
            alpha,
            weights: plan
                .weights
                .iter()
                .map(|(n, _)| n.clone())
                .zip(weight_grads)
                .collect(),
            inputs: input_grads,
        })
    }

    /// Which slots' gradients lead to a wanted gradient (a gate's α is always wanted).
    fn need(&self, wanted: Wanted) -> Vec<bool> {
        let plan = &self.plan;
        let mut need: Vec<bool> = plan
            .sources
            .iter()
            .map(|s| match s {
                Source::Feed(_) => wanted.inputs,
                Source::Weight(_) => wanted.weights,
                Source::Computed => false,
            })
            .collect();
        for step in &plan.steps {
            need[step.output] = matches!(
                step.kind,
                StepKind::Gate { .. } | StepKind::GatedActivation { .. }
            ) || step.inputs.iter().any(|&v| need[v]);
        }
        need
    }
}

fn value<'a, T>(
    plan: &Plan,
    values: &'a [Option<ArrayD<T>>],
    weights: &[&'a ArrayD<T>],
    slot: usize,
) -> &'a ArrayD<T> {
    match plan.sources[slot] {
        Source::Weight(i) => weights[i],
        _ => values[slot].as_ref().expect("computed before it is read"),
    }
}

fn accumulate<T: Float>(pool: &BufferPool, slot: &mut Option<ArrayD<T>>, g: ArrayD<T>) {
    match slot {
        Some(acc) => {
            ops::add_assign(acc, &g);
            pool.give_array(g);
        }
        None => *slot = Some(g),
    }
}

/// Empties a slot, returning its buffer to the pool.
fn release<T: Float>(pool: &BufferPool, slot: &mut Option<ArrayD<T>>) {
    if let Some(array) = slot.take() {
        pool.give_array(array);
    }
}
