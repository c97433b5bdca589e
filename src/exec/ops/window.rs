//! Sliding-window geometry shared by Conv and the pools: the node's window (read and
//! checked by `ir::window`) resolved against an input's dims, per spatial axis.

use crate::ir::window::Window;

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

/// The spans of every spatial axis of `window` for this input (and the weights' kernel,
/// for a Conv whose window was read without it).
pub(crate) fn spans(
    window: &Window,
    input: &[usize],
    kernel: Option<&[usize]>,
) -> Result<Vec<Span>, String> {
    let axes = window.axes(kernel)?;
    if axes.len() != input.len() {
        let kernel: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
        return Err(format!(
            "kernel {kernel:?} does not fit input dims {input:?}"
        ));
    }
    axes.iter()
        .zip(input)
        .map(|(axis, &n)| {
            let placed = axis
                .place(n, window.auto_pad, window.ceil_mode)
                .ok_or_else(|| {
                    let extent = axis
                        .extent()
                        .map_or("overflowing".into(), |e| e.to_string());
                    format!("window {extent} exceeds padded input {n}")
                })?;
            Ok(Span {
                input: n,
                kernel: axis.kernel,
                stride: axis.stride,
                dilation: axis.dilation,
                pad_begin: placed.pad_begin,
                pad_end: placed.pad_end,
                output: placed.output,
            })
        })
        .collect()
}
