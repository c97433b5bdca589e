//! Ops that move elements without arithmetic: the reshape family (Reshape, Flatten,
//! Squeeze, Unsqueeze), Transpose, Concat and Pad. Their backward moves the gradient back.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::normalize_axis;
use crate::exec::float::Float;

/// How a reshape-like op computes its output dims from its input dims.
#[derive(Clone, Debug)]
pub(crate) enum Reshape {
    /// The Reshape target: 0 copies the input dim (unless `allowzero`), −1 is inferred.
    Target {
        dims: Vec<i64>,
        allowzero: bool,
    },
    Flatten {
        axis: i64,
    },
    /// Squeeze: the listed unit axes, or every unit axis.
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
}

impl Reshape {
    pub(crate) fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let count: usize = input.iter().product();
        let shape = match self {
            Reshape::Target { dims, allowzero } => {
                let mut shape = Vec::with_capacity(dims.len());
                let mut inferred = None;
                for (i, &d) in dims.iter().enumerate() {
                    shape.push(match d {
                        -1 if inferred.is_none() => {
                            inferred = Some(i);
                            1
                        }
                        0 if !allowzero => *input.get(i).ok_or("0 past the input rank")?,
                        d => usize::try_from(d).map_err(|_| format!("bad target dim {d}"))?,
                    });
                }
                if let Some(i) = inferred {
                    let known: usize = shape.iter().product();
                    if known == 0 || !count.is_multiple_of(known) {
                        return Err(format!("cannot infer -1 of {dims:?} from {input:?}"));
                    }
                    shape[i] = count / known;
                }
                shape
            }
            Reshape::Flatten { axis } => {
                let axis = normalize_axis_inclusive(*axis, input.len())?;
                vec![
                    input[..axis].iter().product(),
                    input[axis..].iter().product(),
                ]
            }
            Reshape::Squeeze { axes } => {
                let axes = match axes {
                    Some(a) => a
                        .iter()
                        .map(|&a| normalize_axis(a, input.len()))
                        .collect::<Result<Vec<_>, _>>()?,
                    None => (0..input.len()).filter(|&a| input[a] == 1).collect(),
                };
                if let Some(&a) = axes.iter().find(|&&a| input[a] != 1) {
                    return Err(format!("cannot squeeze axis {a} of {input:?}"));
                }
                input
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, &d)| d)
                    .collect()
            }
            Reshape::Unsqueeze { axes } => {
                let rank = input.len() + axes.len();
                let axes = axes
                    .iter()
                    .map(|&a| normalize_axis(a, rank))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut rest = input.iter();
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            1
                        } else {
                            *rest.next().unwrap_or(&1)
                        }
                    })
                    .collect()
            }
        };
        if shape.iter().product::<usize>() != count {
            return Err(format!("cannot reshape {input:?} to {shape:?}"));
        }
        Ok(shape)
    }

    pub(crate) fn forward<T: Float>(&self, x: &ArrayD<T>) -> Result<ArrayD<T>, String> {
        let shape = self.output_shape(x.shape())?;
        Ok(x.to_shape(IxDyn(&shape)).expect("same count").into_owned())
    }
}

/// Moves a gradient to the input's dims (the backward of every reshape-like op).
pub(crate) fn reshape_back<T: Float>(g: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    g.to_shape(IxDyn(shape)).expect("same count").into_owned()
}

/// An axis in `0..=rank` (Flatten's axis may equal the rank).
fn normalize_axis_inclusive(axis: i64, rank: usize) -> Result<usize, String> {
    if axis == rank as i64 {
        Ok(rank)
    } else {
        normalize_axis(axis, rank)
    }
}

/// Transpose by `perm` (reversed axes when absent).
pub(crate) fn transpose<T: Float>(
    x: &ArrayD<T>,
    perm: Option<&[usize]>,
) -> Result<ArrayD<T>, String> {
    let perm: Vec<usize> = perm.map_or_else(|| (0..x.ndim()).rev().collect(), <[usize]>::to_vec);
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..x.ndim()).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} does not fit rank {}", x.ndim()));
    }
    Ok(x.view()
        .permuted_axes(IxDyn(&perm))
        .as_standard_layout()
        .into_owned())
}

pub(crate) fn transpose_back<T: Float>(g: &ArrayD<T>, perm: Option<&[usize]>) -> ArrayD<T> {
    let inverse = perm.map(|p| {
        let mut inv = vec![0; p.len()];
        p.iter().enumerate().for_each(|(i, &a)| inv[a] = i);
        inv
    });
    transpose(g, inverse.as_deref()).expect("a valid perm")
}

pub(crate) fn concat<T: Float>(inputs: &[&ArrayD<T>], axis: i64) -> Result<ArrayD<T>, String> {
    let axis = normalize_axis(axis, inputs.first().ok_or("no inputs")?.ndim())?;
    let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
    ndarray::concatenate(Axis(axis), &views).map_err(|e| format!("cannot concatenate: {e}"))
}

/// The slices of the gradient that went to each input.
pub(crate) fn concat_back<T: Float>(
    g: &ArrayD<T>,
    axis: i64,
    shapes: &[&[usize]],
    need: &[bool],
) -> Vec<Option<ArrayD<T>>> {
    let axis = normalize_axis(axis, g.ndim()).expect("checked in forward");
    let mut start = 0;
    shapes
        .iter()
        .zip(need)
        .map(|(shape, &need)| {
            let end = start + shape[axis];
            let part = need.then(|| g.slice_axis(Axis(axis), Slice::from(start..end)).to_owned());
            start = end;
            part
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Pad: begin and end pads per axis (negative ones crop).
#[derive(Clone, Debug)]
pub(crate) struct Pad {
    pub mode: PadMode,
    /// (axis, begin, end), axes possibly negative.
    pub pads: Vec<(i64, i64, i64)>,
    pub value: f64,
}

/// A padded axis and the source index of each of its output indices (`None`: the
/// constant).
type AxisSources = (usize, Vec<Option<usize>>);

impl Pad {
    fn sources(&self, shape: &[usize]) -> Result<Vec<AxisSources>, String> {
        self.pads
            .iter()
            .map(|&(axis, begin, end)| {
                let axis = normalize_axis(axis, shape.len())?;
                let n = shape[axis] as i64;
                let len = n + begin + end;
                if len < 0 || (n == 0 && len > 0 && self.mode != PadMode::Constant) {
                    return Err(format!("pads ({begin}, {end}) do not fit dim {n}"));
                }
                let source = |i: i64| -> Option<usize> {
                    let j = i - begin;
                    let k = match self.mode {
                        _ if (0..n).contains(&j) => j,
                        PadMode::Constant => return None,
                        PadMode::Edge => j.clamp(0, n - 1),
                        PadMode::Wrap => j.rem_euclid(n),
                        PadMode::Reflect if n == 1 => 0,
                        PadMode::Reflect => {
                            let period = 2 * (n - 1);
                            let m = j.rem_euclid(period);
                            if m < n { m } else { period - m }
                        }
                    };
                    Some(k as usize)
                };
                Ok((axis, (0..len).map(source).collect()))
            })
            .collect()
    }

    pub(crate) fn forward<T: Float>(&self, x: &ArrayD<T>) -> Result<ArrayD<T>, String> {
        let mut y = x.clone();
        for (axis, sources) in self.sources(x.shape())? {
            let mut shape = y.shape().to_vec();
            shape[axis] = sources.len();
            let mut next = ArrayD::from_elem(shape, T::from_f64(self.value));
            for (o, src) in sources.iter().enumerate() {
                if let Some(i) = *src {
                    next.index_axis_mut(Axis(axis), o)
                        .assign(&y.index_axis(Axis(axis), i));
                }
            }
            y = next;
        }
        Ok(y)
    }

    /// The input gradient: every output's gradient added to the input element it copies.
    pub(crate) fn backward<T: Float>(&self, g: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
        let per_axis = self.sources(shape).expect("checked in forward");
        // Undo the axes in reverse order, each from the dims it was padded from.
        let mut dims = vec![shape.to_vec()];
        for (axis, sources) in &per_axis {
            let mut next = dims.last().expect("non-empty").clone();
            next[*axis] = sources.len();
            dims.push(next);
        }
        let mut grad = g.clone();
        for ((axis, sources), before) in per_axis.iter().zip(&dims).rev() {
            let mut back = ArrayD::zeros(IxDyn(before));
            for (o, src) in sources.iter().enumerate() {
                if let Some(i) = *src {
                    let mut dst = back.index_axis_mut(Axis(*axis), i);
                    dst += &grad.index_axis(Axis(*axis), o);
                }
            }
            grad = back;
        }
        grad
    }
}
