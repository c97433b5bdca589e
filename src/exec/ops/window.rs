//! Sliding-window geometry shared by Conv and the pools: kernel, stride, dilation and
//! padding per spatial axis (explicit or `auto_pad`), and the output length.

use crate::error::Result;
use crate::ir::Node;

#[derive(Clone, Debug)]
enum Padding {
    /// Begin pads of every axis, then end pads (the ONNX `pads` layout).
    Explicit(Vec<usize>),
    SameUpper,
    SameLower,
}

/// The window attributes of a node; the kernel comes from `kernel_shape` or the weights.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    kernel: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    padding: Padding,
    ceil_mode: bool,
}

/// One spatial axis of a window, resolved against an input length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Span {
    pub input: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
    pub output: usize,
}

impl Span {
    /// A trivial axis (length 1, kernel 1), to run lower-rank windows as higher-rank ones.
    pub(crate) const UNIT: Span = Span {
        input: 1,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad_begin: 0,
        pad_end: 0,
        output: 1,
    };

    /// Outputs `o` in `lo..hi` read input `o·stride + tap·dilation − pad_begin` inside the input.
    pub(crate) fn valid_outputs(&self, tap: usize) -> (usize, usize) {
        let offset = (tap * self.dilation) as isize - self.pad_begin as isize;
        let s = self.stride as isize;
        let lo = if offset >= 0 {
            0
        } else {
            (-offset + s - 1) / s
        };
        let room = self.input as isize - offset;
        let hi = if room <= 0 { 0 } else { (room - 1) / s + 1 };
        (
            lo.min(self.output as isize) as usize,
            hi.min(self.output as isize) as usize,
        )
    }

    /// The input index read by output `o` at `tap` (valid when `o` is in `valid_outputs(tap)`).
    pub(crate) fn input_index(&self, o: usize, tap: usize) -> usize {
        o * self.stride + tap * self.dilation - self.pad_begin
    }

    /// Input indices of output `o`'s window inside the input, and how many taps lie inside
    /// the padded input (the divisor of an average that counts the padding).
    pub(crate) fn taps(&self, o: usize) -> (Vec<usize>, usize) {
        let start = (o * self.stride) as isize - self.pad_begin as isize;
        let mut inside = Vec::with_capacity(self.kernel);
        let mut padded = 0;
        for t in 0..self.kernel {
            let i = start + (t * self.dilation) as isize;
            if i >= -(self.pad_begin as isize) && i < (self.input + self.pad_end) as isize {
                padded += 1;
            }
            if i >= 0 && (i as usize) < self.input {
                inside.push(i as usize);
            }
        }
        (inside, padded)
    }
}

impl Window {
    pub(crate) fn from_node(node: &Node, ceil_mode: bool) -> Result<Window> {
        let to_usize = |v: Option<Vec<i64>>, what: &str| -> Result<Option<Vec<usize>>> {
            v.map(|v| {
                v.into_iter()
                    .map(|x| {
                        usize::try_from(x).map_err(|_| {
                            crate::Error::node(
                                &node.name,
                                node.op(),
                                format!("negative {what} {x}"),
                            )
                        })
                    })
                    .collect()
            })
            .transpose()
        };
        let padding = match node.string("auto_pad")?.as_deref().unwrap_or("NOTSET") {
            "SAME_UPPER" => Padding::SameUpper,
            "SAME_LOWER" => Padding::SameLower,
            "VALID" => Padding::Explicit(Vec::new()),
            "NOTSET" => Padding::Explicit(to_usize(node.ints("pads")?, "pad")?.unwrap_or_default()),
            other => {
                return Err(crate::Error::node(
                    &node.name,
                    node.op(),
                    format!("unknown auto_pad '{other}'"),
                ));
            }
        };
        Ok(Window {
            kernel: to_usize(node.ints("kernel_shape")?, "kernel size")?,
            strides: to_usize(node.ints("strides")?, "stride")?,
            dilations: to_usize(node.ints("dilations")?, "dilation")?,
            padding,
            ceil_mode,
        })
    }

    /// The spans of every spatial axis for this input (and the weights' kernel, for Conv).
    pub(crate) fn resolve(
        &self,
        input: &[usize],
        kernel: Option<&[usize]>,
    ) -> Result<Vec<Span>, String> {
        let rank = input.len();
        let kernel = self.kernel.as_deref().or(kernel).ok_or("no kernel_shape")?;
        let per_axis = |v: &Option<Vec<usize>>, what: &str| -> Result<Vec<usize>, String> {
            match v {
                None => Ok(vec![1; rank]),
                Some(v) if v.len() == rank && v.iter().all(|&x| x > 0) => Ok(v.clone()),
                Some(v) => Err(format!("{what} {v:?} do not fit {rank} spatial axes")),
            }
        };
        if kernel.len() != rank {
            return Err(format!(
                "kernel {kernel:?} does not fit input dims {input:?}"
            ));
        }
        let strides = per_axis(&self.strides, "strides")?;
        let dilations = per_axis(&self.dilations, "dilations")?;
        (0..rank)
            .map(|a| {
                let extent = (kernel[a] - 1) * dilations[a] + 1;
                let (pad_begin, pad_end) = match &self.padding {
                    Padding::Explicit(p) if p.is_empty() => (0, 0),
                    Padding::Explicit(p) if p.len() == 2 * rank => (p[a], p[a + rank]),
                    Padding::Explicit(p) => {
                        return Err(format!("pads {p:?} do not fit {rank} spatial axes"));
                    }
                    same => {
                        let out = input[a].div_ceil(strides[a]);
                        let total = ((out - 1) * strides[a] + extent).saturating_sub(input[a]);
                        match same {
                            Padding::SameUpper => (total / 2, total - total / 2),
                            _ => (total - total / 2, total / 2),
                        }
                    }
                };
                let room = (input[a] + pad_begin + pad_end)
                    .checked_sub(extent)
                    .ok_or_else(|| format!("window {extent} exceeds padded input {}", input[a]))?;
                let mut output = if self.ceil_mode {
                    room.div_ceil(strides[a]) + 1
                } else {
                    room / strides[a] + 1
                };
                // A last window that starts in the end padding is dropped (ceil_mode only).
                if self.ceil_mode && (output - 1) * strides[a] >= input[a] + pad_begin {
                    output -= 1;
                }
                Ok(Span {
                    input: input[a],
                    kernel: kernel[a],
                    stride: strides[a],
                    dilation: dilations[a],
                    pad_begin,
                    pad_end,
                    output,
                })
            })
            .collect()
    }
}
