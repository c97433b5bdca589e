//! The executor's operators: one `Op` per supported node, read from the node at compile
//! time, with a forward that computes the output from the data inputs and a backward that
//! turns the output's gradient into the inputs' gradients from what the forward saved.

mod activation;
mod batchnorm;
mod conv;
mod elementwise;
mod gemm;
mod pool;
mod shape;
mod window;

use ndarray::ArrayD;

pub(crate) use activation::{Kernel, Pointwise, Unary};
pub(crate) use elementwise::{add_assign, map, zip_map, zip_map_sum, zip_sum};

use crate::error::{Error, Result};
use crate::exec::buffers::BufferPool;
use crate::exec::float::Float;
use crate::ir::window::Window;
use crate::ir::{Node, OpKind, Tensor};
use activation::Softmax;
use elementwise::Binary;
use pool::{MeanAxes, Pool, PoolKind, ReduceMean};
use shape::{Pad, PadMode, Reshape};

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Conv(conv::Conv),
    Gemm(gemm::Gemm),
    MatMul,
    Binary(Binary),
    BatchNorm { epsilon: f64 },
    Unary(Unary),
    PRelu,
    Softmax(Softmax),
    Pool(Pool),
    Mean(ReduceMean),
    Reshape(Reshape),
    Transpose(Option<Vec<usize>>),
    Concat(i64),
    Pad(Pad),
}

/// What the backward pass of a step reads, besides the gradient.
pub(crate) struct Saved<'a, T> {
    /// The data inputs the op saves (see `Op::saved_inputs`), or weights; `None` otherwise.
    pub inputs: Vec<Option<&'a ArrayD<T>>>,
    pub shapes: Vec<&'a [usize]>,
    pub output: Option<&'a ArrayD<T>>,
    /// Which inputs need a gradient.
    pub need: Vec<bool>,
}

impl<T> Saved<'_, T> {
    fn input(&self, slot: usize) -> &ArrayD<T> {
        self.inputs[slot].expect("the forward pass saved this input")
    }
}

/// An axis in `0..rank`, negative ones counted from the end.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))
}

/// The value of a node's constant input slot (`None` when the slot is empty).
pub(crate) type ConstantInput<'a> = &'a dyn Fn(usize) -> Result<Option<Tensor>>;

/// Reads a node into an `Op`; `None` for operators the executor does not run.
struct Reader<'a> {
    node: &'a Node,
    opset: i64,
    constant: ConstantInput<'a>,
}

impl Reader<'_> {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::node(&self.node.name, self.node.op(), reason)
    }

    fn ints(&self, slot: usize) -> Result<Option<Vec<i64>>> {
        (self.constant)(slot)?
            .map(|t| {
                t.to_i64()
                    .ok_or_else(|| self.error(format!("input {slot} is not integer")))
            })
            .transpose()
    }

    fn scalar(&self, slot: usize) -> Result<Option<f64>> {
        match (self.constant)(slot)?.and_then(|t| t.to_f64()) {
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(self.error(format!(
                "input {slot} must be a scalar, has {} values",
                v.len()
            ))),
            None => Ok(None),
        }
    }

    fn float_attr(&self, name: &str, default: f64) -> Result<f64> {
        Ok(self.node.float(name)?.map_or(default, f64::from))
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool> {
        Ok(self.node.int(name)?.map_or(default, |v| v != 0))
    }

    /// Axes from the attribute (before `input_from_opset`) or from input slot 1.
    fn axes(&self, input_from_opset: i64) -> Result<Option<Vec<i64>>> {
        if self.opset < input_from_opset {
            self.node.ints("axes")
        } else {
            self.ints(1)
        }
    }

    fn clip(&self) -> Result<Unary> {
        let (min, max) = if self.opset < 11 {
            (
                self.node.float("min")?.map(f64::from),
                self.node.float("max")?.map(f64::from),
            )
        } else {
            (self.scalar(1)?, self.scalar(2)?)
        };
        Ok(Unary::Clip {
            min: min.unwrap_or(f64::NEG_INFINITY),
            max: max.unwrap_or(f64::INFINITY),
        })
    }

    fn pool(&self) -> Result<Op> {
        if self.node.int("storage_order")?.unwrap_or(0) != 0 {
            return Err(self.error("only storage_order 0 is supported"));
        }
        let window = Window::of(self.node, None)?;
        let kind = match self.node.kind {
            OpKind::MaxPool => PoolKind::Max,
            _ => PoolKind::Average {
                count_pad: window.count_include_pad,
            },
        };
        Ok(Op::Pool(Pool { kind, window }))
    }

    fn pad(&self) -> Result<Op> {
        let (pads, value, axes) = if self.opset < 11 {
            (
                self.node.ints("pads")?,
                self.float_attr("value", 0.0)?,
                None,
            )
        } else {
            (self.ints(1)?, self.scalar(2)?.unwrap_or(0.0), self.ints(3)?)
        };
        let pads = pads.ok_or_else(|| self.error("no pads"))?;
        let count = pads.len() / 2;
        let axes = axes.unwrap_or_else(|| (0..count as i64).collect());
        if pads.len() != 2 * axes.len() {
            return Err(self.error(format!("{} pads for {} axes", pads.len(), axes.len())));
        }
        let mode = match self.node.string("mode")?.as_deref().unwrap_or("constant") {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => return Err(self.error(format!("unknown pad mode '{other}'"))),
        };
        let pads = axes
            .iter()
            .enumerate()
            .map(|(i, &a)| (a, pads[i], pads[i + count]))
            .collect();
        Ok(Op::Pad(Pad { mode, pads, value }))
    }

    fn read(&self) -> Result<Option<Op>> {
        use OpKind as K;
        let node = self.node;
        let op = match &node.kind {
            K::Conv => Op::Conv(conv::Conv {
                window: Window::of(node, None)?,
            }),
            K::Gemm => Op::Gemm(gemm::Gemm {
                alpha: self.float_attr("alpha", 1.0)?,
                beta: self.float_attr("beta", 1.0)?,
                trans_a: self.flag("transA", false)?,
                trans_b: self.flag("transB", false)?,
            }),
            K::MatMul => Op::MatMul,
            K::Add => Op::Binary(Binary::Add),
            K::Sub => Op::Binary(Binary::Sub),
            K::Mul => Op::Binary(Binary::Mul),
            K::Div => Op::Binary(Binary::Div),
            K::BatchNormalization => {
                if self.flag("training_mode", false)? {
                    return Err(self.error("only inference mode (training_mode = 0) is supported"));
                }
                Op::BatchNorm {
                    epsilon: self.float_attr("epsilon", 1e-5)?,
                }
            }
            K::Relu => Op::Unary(Unary::Relu),
            K::Clip => Op::Unary(self.clip()?),
            K::LeakyRelu => Op::Unary(Unary::LeakyRelu {
                alpha: self.float_attr("alpha", 0.01)?,
            }),
            K::HardSigmoid => Op::Unary(Unary::HardSigmoid {
                alpha: self.float_attr("alpha", 0.2)?,
                beta: self.float_attr("beta", 0.5)?,
            }),
            K::HardSwish => Op::Unary(Unary::HardSwish),
            K::Sigmoid => Op::Unary(Unary::Sigmoid),
            K::Tanh => Op::Unary(Unary::Tanh),
            K::PRelu => Op::PRelu,
            K::Softmax => Op::Softmax(Softmax {
                axis: node
                    .int("axis")?
                    .unwrap_or(if self.opset < 13 { 1 } else { -1 }),
                flatten: self.opset < 13,
            }),
            K::MaxPool | K::AveragePool => self.pool()?,
            K::GlobalAveragePool => Op::Mean(ReduceMean {
                axes: MeanAxes::Spatial,
                keepdims: true,
            }),
            K::ReduceMean => {
                let axes = match self.axes(18)? {
                    Some(a) if !a.is_empty() => MeanAxes::Listed(a),
                    _ if self.flag("noop_with_empty_axes", false)? => MeanAxes::Nothing,
                    _ => MeanAxes::All,
                };
                Op::Mean(ReduceMean {
                    axes,
                    keepdims: self.flag("keepdims", true)?,
                })
            }
            K::Flatten => Op::Reshape(Reshape::Flatten {
                axis: node.int("axis")?.unwrap_or(1),
            }),
            K::Reshape => Op::Reshape(Reshape::Target {
                dims: self.ints(1)?.ok_or_else(|| self.error("no target shape"))?,
                allowzero: self.flag("allowzero", false)?,
            }),
            K::Squeeze => Op::Reshape(Reshape::Squeeze {
                axes: self.axes(13)?,
            }),
            K::Unsqueeze => Op::Reshape(Reshape::Unsqueeze {
                axes: self.axes(13)?.ok_or_else(|| self.error("no axes"))?,
            }),
            K::Transpose => Op::Transpose(
                node.ints("perm")?
                    .map(|p| {
                        p.into_iter()
                            .map(usize::try_from)
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()
                    .map_err(|_| self.error("negative perm entry"))?,
            ),
            K::Concat => Op::Concat(node.int("axis")?.ok_or_else(|| self.error("no axis"))?),
            K::Pad => self.pad()?,
            _ => return Ok(None),
        };
        Ok(Some(op))
    }
}

impl Op {
    /// Reads a supported node (`None` for any other operator). Inputs past
    /// `data_inputs` are compile-time constants, read with `constant`.
    pub(crate) fn from_node(
        node: &Node,
        opset: i64,
        constant: ConstantInput,
    ) -> Result<Option<Op>> {
        Reader {
            node,
            opset,
            constant,
        }
        .read()
    }

    /// How many leading inputs of `node` are tensors computed on, and how many must be present.
    pub(crate) fn data_inputs(&self, node: &Node) -> (usize, usize) {
        match self {
            Op::Conv(_) | Op::Gemm(_) => (3, 2),
            Op::MatMul | Op::Binary(_) | Op::PRelu => (2, 2),
            Op::BatchNorm { .. } => (5, 5),
            Op::Concat(_) => (node.inputs.len(), 1),
            _ => (1, 1),
        }
    }

    /// Data inputs the backward pass reads (weights are read from the parameters instead).
    pub(crate) fn saved_inputs(&self) -> &'static [usize] {
        match self {
            Op::Conv(_) | Op::Gemm(_) | Op::MatMul | Op::PRelu => &[0, 1],
            Op::Binary(Binary::Mul | Binary::Div) => &[0, 1],
            Op::BatchNorm { .. } => &[0, 1, 2, 3, 4],
            Op::Unary(_)
            | Op::Pool(Pool {
                kind: PoolKind::Max,
                ..
            }) => &[0],
            _ => &[],
        }
    }

    pub(crate) fn saves_output(&self) -> bool {
        matches!(self, Op::Softmax(_))
    }

    pub(crate) fn forward<T: Float>(
        &self,
        pool: &BufferPool,
        x: &[&ArrayD<T>],
    ) -> Result<ArrayD<T>, String> {
        match self {
            Op::Conv(c) => c.forward(pool, x[0], x[1], x.get(2).copied()),
            Op::Gemm(g) => g.forward(x[0], x[1], x.get(2).copied()),
            Op::MatMul => gemm::matmul_forward(x[0], x[1]),
            Op::Binary(b) => b.forward(pool, x[0], x[1]),
            Op::BatchNorm { epsilon } => {
                batchnorm::forward(x[0], [x[1], x[2], x[3], x[4]], *epsilon)
            }
            Op::Unary(u) => Ok(u.forward(pool, x[0])),
            Op::PRelu => activation::prelu_forward(x[0], x[1]),
            Op::Softmax(s) => s.forward(x[0]),
            Op::Pool(p) => p.forward(x[0]),
            Op::Mean(r) => r.forward(x[0]),
            Op::Reshape(r) => r.forward(x[0]),
            Op::Transpose(perm) => shape::transpose(x[0], perm.as_deref()),
            Op::Concat(axis) => shape::concat(x, *axis),
            Op::Pad(p) => p.forward(x[0]),
        }
    }

    /// The gradients of the inputs that `s.need`s, in input order.
    pub(crate) fn backward<T: Float>(
        &self,
        pool: &BufferPool,
        g: &ArrayD<T>,
        s: &Saved<T>,
    ) -> Vec<Option<ArrayD<T>>> {
        let need = |i: usize| s.need.get(i).copied().unwrap_or(false);
        let only_input = |f: &dyn Fn() -> ArrayD<T>| vec![need(0).then(f)];
        match self {
            Op::Conv(c) => c
                .backward(pool, g, s.input(0), s.input(1), [need(0), need(1), need(2)])
                .into(),
            Op::Gemm(gm) => gm
                .backward(
                    g,
                    s.input(0),
                    s.input(1),
                    s.shapes.get(2).copied(),
                    [need(0), need(1), need(2)],
                )
                .into(),
            Op::MatMul => {
                gemm::matmul_backward(g, s.input(0), s.input(1), [need(0), need(1)]).into()
            }
            Op::Binary(b) => b
                .backward(
                    pool,
                    g,
                    s.inputs[0],
                    s.inputs[1],
                    [s.shapes[0], s.shapes[1]],
                    [need(0), need(1)],
                )
                .into(),
            Op::BatchNorm { epsilon } => {
                let stats = [s.input(1), s.input(2), s.input(3), s.input(4)];
                batchnorm::backward(g, s.input(0), stats, *epsilon, [0, 1, 2, 3, 4].map(need))
            }
            Op::Unary(u) => only_input(&|| u.backward(pool, g, s.input(0))),
            Op::PRelu => {
                activation::prelu_backward(pool, g, s.input(0), s.input(1), [need(0), need(1)])
                    .into()
            }
            Op::Softmax(sm) => {
                only_input(&|| sm.backward(pool, g, s.output.expect("Softmax saves its output")))
            }
            Op::Pool(p) => only_input(&|| p.backward(g, s.inputs[0], s.shapes[0])),
            Op::Mean(r) => only_input(&|| r.backward(g, s.shapes[0])),
            Op::Reshape(_) => only_input(&|| shape::reshape_back(g, s.shapes[0])),
            Op::Transpose(perm) => only_input(&|| shape::transpose_back(g, perm.as_deref())),
            Op::Concat(axis) => shape::concat_back(g, *axis, &s.shapes, &s.need),
            Op::Pad(p) => only_input(&|| p.backward(g, s.shapes[0])),
        }
    }
}
