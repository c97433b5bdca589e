//! The window of Conv, ConvTranspose, AveragePool and MaxPool — kernel, strides,
//! dilations, pads (explicit or `auto_pad`), group, `ceil_mode`, `count_include_pad` and
//! `output_padding` — read from a node once and checked there. Shape inference, the
//! preflight, the executor and the passes all read a node's window through [`Window`], so
//! a file's claims are judged by one set of rules, and an error names the node.
//!
//! The rules: one entry per spatial axis (two for `pads`: every begin, then every end),
//! kernel sizes, strides and dilations at least 1, pads and output padding at least 0, a
//! group at least 1 and dividing the weight's first dim, and a Conv's `kernel_shape`
//! equal to its weight's spatial dims.

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, Node};
use crate::ir::op::OpKind;
use crate::ir::tensor::Tensor;

/// How the padding of a window is given (`auto_pad`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads` (zeros when absent).
    #[default]
    NotSet,
    /// No padding.
    Valid,
    /// ⌈n/s⌉ outputs, the odd pad at the end.
    SameUpper,
    /// ⌈n/s⌉ outputs, the odd pad at the beginning.
    SameLower,
}

impl AutoPad {
    /// The attribute value as ONNX spells it.
    pub fn name(self) -> &'static str {
        match self {
            AutoPad::NotSet => "NOTSET",
            AutoPad::Valid => "VALID",
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
        }
    }
}

/// One spatial axis of a window, its pads as written (zeros under automatic padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
}

/// Where a window runs along one axis of a given input length: the pads it uses there
/// (automatic padding resolved) and how many outputs it gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub pad_begin: usize,
    pub pad_end: usize,
    pub output: usize,
}

impl Axis {
    /// d·(k − 1) + 1: the input length one output reads; `None` past `usize`.
    pub fn extent(&self) -> Option<usize> {
        (self.kernel - 1).checked_mul(self.dilation)?.checked_add(1)
    }

    /// The pads SAME padding amounts to at input length `input`: ⌈n/s⌉ outputs need
    /// max((⌈n/s⌉ − 1)·s + extent − n, 0) in total, split evenly with the odd one at the
    /// end (`upper`) or at the beginning.
    pub fn same_pads(&self, input: usize, upper: bool) -> Option<(usize, usize)> {
        let outputs = input.div_ceil(self.stride);
        let total = (outputs.saturating_sub(1))
            .checked_mul(self.stride)?
            .checked_add(self.extent()?)?
            .saturating_sub(input);
        let (small, large) = (total / 2, total - total / 2);
        Some(if upper {
            (small, large)
        } else {
            (large, small)
        })
    }

    /// The window along an input of length `input`; `None` when it does not fit in the
    /// padded input (or the sizes overflow). With `ceil_mode` a last partial window
    /// counts, unless it would start in the end padding; SAME and VALID padding ignore
    /// `ceil_mode`, as the ONNX specification defines their output sizes.
    pub fn place(&self, input: usize, auto_pad: AutoPad, ceil_mode: bool) -> Option<Placement> {
        let extent = self.extent()?;
        let (pad_begin, pad_end) = match auto_pad {
            AutoPad::NotSet => (self.pad_begin, self.pad_end),
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper => self.same_pads(input, true)?,
            AutoPad::SameLower => self.same_pads(input, false)?,
        };
        let room = input
            .checked_add(pad_begin)?
            .checked_add(pad_end)?
            .checked_sub(extent)?;
        let ceil_mode = ceil_mode && auto_pad == AutoPad::NotSet;
        let mut output = if ceil_mode {
            room.div_ceil(self.stride) + 1
        } else {
            room / self.stride + 1
        };
        if ceil_mode && (output - 1) * self.stride >= input + pad_begin {
            output -= 1;
        }
        Some(Placement {
            pad_begin,
            pad_end,
            output,
        })
    }
}

/// The window attributes of a node, checked. Per-axis lists are kept as written (absent
/// ones default to 1 for strides and dilations, 0 for pads); the kernel is
/// `kernel_shape`, else the weight's spatial dims when they were known where the node was
/// read.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    kernel: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
    output_padding: Option<Vec<usize>>,
    pub auto_pad: AutoPad,
    pub group: usize,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl Window {
    /// Whether `kind` has a window.
    pub fn applies_to(kind: &OpKind) -> bool {
        matches!(
            kind,
            OpKind::Conv | OpKind::ConvTranspose | OpKind::AveragePool | OpKind::MaxPool
        )
    }

    /// Reads and checks the window of a Conv, ConvTranspose, AveragePool or MaxPool.
    /// `weight` holds the dims of a Conv's or ConvTranspose's weight when they are known:
    /// they give the kernel when `kernel_shape` is absent, and are checked against it.
    pub fn of(node: &Node, weight: Option<&[usize]>) -> Result<Window> {
        let error = |reason: String| Error::node(&node.name, node.op(), reason);
        if !Window::applies_to(&node.kind) {
            return Err(error("it has no window".into()));
        }
        let auto_pad = match node.string("auto_pad")? {
            None => AutoPad::NotSet,
            Some(written) => [
                AutoPad::NotSet,
                AutoPad::Valid,
                AutoPad::SameUpper,
                AutoPad::SameLower,
            ]
            .into_iter()
            .find(|p| p.name() == written)
            .ok_or_else(|| error(format!("unknown auto_pad '{written}'")))?,
        };
        let convolution = matches!(node.kind, OpKind::Conv | OpKind::ConvTranspose);
        let weight = weight.filter(|_| convolution);
        let mut spatial = match weight {
            Some(w) => Some(w.len().checked_sub(2).filter(|&s| s > 0).ok_or_else(|| {
                error(format!(
                    "its weight has {} dims; a windowed layer's has at least 3",
                    w.len()
                ))
            })?),
            None => None,
        };
        let mut list = |name: &str, per_axis: usize, least: i64| -> Result<Option<Vec<usize>>> {
            let Some(values) = node.ints(name)? else {
                return Ok(None);
            };
            let axes = spatial.unwrap_or(values.len() / per_axis);
            if values.len() != per_axis * axes || axes == 0 {
                return Err(error(match spatial {
                    Some(s) => format!("{name} has {} entries for {s} spatial axes", values.len()),
                    None => format!(
                        "{name} has {} entries, not {per_axis} per spatial axis",
                        values.len()
                    ),
                }));
            }
            spatial = Some(axes);
            if values.iter().any(|&v| v < least) {
                return Err(error(format!(
                    "{name} {values:?}: each must be at least {least}"
                )));
            }
            Ok(Some(values.into_iter().map(|v| v as usize).collect()))
        };
        let kernel_shape = list("kernel_shape", 1, 1)?;
        let strides = list("strides", 1, 1)?;
        let dilations = list("dilations", 1, 1)?;
        let pads = list("pads", 2, 0)?;
        let output_padding = list("output_padding", 1, 0)?;
        if let (Some(w), Some(k)) = (weight, &kernel_shape)
            && node.kind == OpKind::Conv
            && w[2..] != k[..]
        {
            return Err(error(format!(
                "kernel_shape {k:?} differs from its weight's {:?}",
                &w[2..]
            )));
        }
        if kernel_shape.is_none() && !convolution {
            return Err(error("it has no kernel_shape".into()));
        }
        let group = node.int("group")?.unwrap_or(1);
        let channels = weight.map(|w| w[0] as i64);
        if group < 1 || channels.is_some_and(|c| c % group != 0) {
            return Err(error(match channels {
                Some(c) => format!("group {group} does not divide its weight's {c} channels"),
                None => format!("group {group}: it must be at least 1"),
            }));
        }
        let flag = |name: &str| -> Result<bool> { Ok(node.int(name)?.unwrap_or(0) != 0) };
        Ok(Window {
            kernel: kernel_shape.or_else(|| weight.map(|w| w[2..].to_vec())),
            strides,
            dilations,
            pads,
            output_padding,
            auto_pad,
            group: group as usize,
            ceil_mode: flag("ceil_mode")?,
            count_include_pad: flag("count_include_pad")?,
        })
    }

    /// The number of spatial axes, when an attribute or the weight says.
    /// The window of a windowed `node` of `graph`, with its weight's dims when they are
    /// constant; `None` for other operators.
    pub(crate) fn in_graph(graph: &Graph, node: &Node) -> Result<Option<Window>> {
        if !Window::applies_to(&node.kind) {
            return Ok(None);
        }
        let weight = match node.kind {
            OpKind::Conv | OpKind::ConvTranspose => node
                .input(1)
                .and_then(|w| graph.constant(w))
                .map(Tensor::dims),
            _ => None,
        };
        Window::of(node, weight).map(Some)
    }

    pub fn rank(&self) -> Option<usize> {
        let lists = [
            &self.kernel,
            &self.strides,
            &self.dilations,
            &self.output_padding,
        ];
        lists
            .into_iter()
            .find_map(|l| l.as_ref().map(Vec::len))
            .or_else(|| self.pads.as_ref().map(|p| p.len() / 2))
    }

    /// The kernel size per spatial axis, when known.
    pub fn kernel(&self) -> Option<&[usize]> {
        self.kernel.as_deref()
    }

    /// Every spatial axis. The kernel is the window's own, else `weight_kernel` (the
    /// weight's spatial dims, for a node read before they were known).
    pub fn axes(&self, weight_kernel: Option<&[usize]>) -> Result<Vec<Axis>, String> {
        let kernel = self
            .kernel
            .as_deref()
            .or(weight_kernel)
            .ok_or("its kernel is unknown: no kernel_shape, and no weight dims")?;
        let rank = kernel.len();
        if self.rank().is_some_and(|r| r != rank) || kernel.contains(&0) {
            return Err(format!(
                "kernel {kernel:?} does not fit the window's {} spatial axes",
                self.rank().unwrap_or(rank)
            ));
        }
        let pads = self.pads(rank).unwrap_or_else(|| vec![0; 2 * rank]);
        Ok((0..rank)
            .map(|a| Axis {
                kernel: kernel[a],
                stride: self.strides.as_ref().map_or(1, |s| s[a]),
                dilation: self.dilations.as_ref().map_or(1, |d| d[a]),
                pad_begin: pads[a],
                pad_end: pads[a + rank],
            })
            .collect())
    }

    /// The explicit pads of `rank` spatial axes, every begin then every end: as written,
    /// zeros when absent; `None` when the window has another number of axes.
    pub fn pads(&self, rank: usize) -> Option<Vec<usize>> {
        if self.rank().is_some_and(|r| r != rank) {
            return None;
        }
        Some(self.pads.clone().unwrap_or_else(|| vec![0; 2 * rank]))
    }

    /// The extra output length of a ConvTranspose along `axis` (0 when absent).
    pub fn output_padding(&self, axis: usize) -> usize {
        self.output_padding
            .as_ref()
            .and_then(|p| p.get(axis).copied())
            .unwrap_or(0)
    }

    /// The window reads no padding: no pads beyond zeros and no SAME padding.
    pub fn is_unpadded(&self) -> bool {
        matches!(self.auto_pad, AutoPad::NotSet | AutoPad::Valid)
            && self.pads.as_ref().is_none_or(|p| p.iter().all(|&p| p == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attributes;
    use crate::onnx::pb;

    fn node(op: &str, attributes: Attributes) -> Node {
        Node {
            name: "n".into(),
            kind: OpKind::classify(op, "", &attributes.0),
            attributes,
            inputs: vec![],
            outputs: vec![],
            captures: vec![],
            rest: pb::NodeProto::default(),
        }
    }

    fn conv(attributes: Attributes, weight: &[usize]) -> Result<Window> {
        Window::of(&node("Conv", attributes), Some(weight))
    }

    fn refused(window: Result<Window>, expected: &[&str]) {
        let message = window.unwrap_err().to_string();
        assert!(message.contains("node 'n' (Conv)"), "{message}");
        for e in expected {
            assert!(message.contains(e), "{message} lacks {e}");
        }
    }

    #[test]
    fn a_conv_takes_its_kernel_from_its_weight_and_defaults_the_rest() {
        let window = conv(Attributes::default(), &[8, 4, 3, 5]).unwrap();
        assert_eq!(window.kernel(), Some(&[3, 5][..]));
        assert_eq!(window.rank(), Some(2));
        let axes = window.axes(None).unwrap();
        assert_eq!(
            axes,
            [3, 5].map(|kernel| Axis {
                kernel,
                stride: 1,
                dilation: 1,
                pad_begin: 0,
                pad_end: 0,
            })
        );
        assert_eq!(window.group, 1);
        assert!(window.is_unpadded() && !window.ceil_mode && !window.count_include_pad);
    }

    #[test]
    fn explicit_pads_are_every_begin_then_every_end() {
        let attributes = Attributes::default()
            .with_ints("pads", &[1, 2, 3, 4])
            .with_ints("strides", &[2, 1])
            .with_ints("dilations", &[1, 3])
            .with_int("group", 2);
        let window = conv(attributes, &[8, 2, 3, 3]).unwrap();
        let axes = window.axes(None).unwrap();
        assert_eq!((axes[0].pad_begin, axes[0].pad_end), (1, 3));
        assert_eq!((axes[1].pad_begin, axes[1].pad_end), (2, 4));
        assert_eq!((axes[0].stride, axes[1].dilation), (2, 3));
        assert_eq!(axes[1].extent(), Some(7));
        assert_eq!(window.pads(2), Some(vec![1, 2, 3, 4]));
        assert_eq!(window.pads(3), None);
        assert!(!window.is_unpadded());
        assert_eq!(window.group, 2);
    }

    #[test]
    fn refuses_what_a_file_can_claim_naming_the_node_and_attribute() {
        let weight = [4, 2, 1, 1];
        for (attributes, expected) in [
            (
                Attributes::default().with_ints("strides", &[0, 1]),
                "strides",
            ),
            (
                Attributes::default().with_ints("dilations", &[1, -1]),
                "dilations",
            ),
            (
                Attributes::default().with_ints("pads", &[0, -1, 0, 0]),
                "pads",
            ),
            (
                Attributes::default().with_ints("pads", &[0, 0]),
                "pads has 2 entries for 2",
            ),
            (
                Attributes::default().with_ints("strides", &[1; 3]),
                "strides has 3 entries",
            ),
            (
                Attributes::default().with_ints("kernel_shape", &[3, 3]),
                "differs from its weight",
            ),
            (Attributes::default().with_int("group", 0), "group 0"),
            (
                Attributes::default().with_int("group", 3),
                "does not divide its weight's 4",
            ),
            (
                Attributes::default().with_string("auto_pad", "SAME"),
                "unknown auto_pad 'SAME'",
            ),
        ] {
            refused(conv(attributes, &weight), &[expected]);
        }
        refused(conv(Attributes::default(), &[4, 2]), &["weight has 2 dims"]);
    }

    #[test]
    fn lists_agree_with_each_other_when_the_weight_is_unknown() {
        let attributes = Attributes::default()
            .with_ints("strides", &[1, 1])
            .with_ints("pads", &[0, 0]);
        refused(
            Window::of(&node("Conv", attributes), None),
            &["pads has 2 entries for 2 spatial axes"],
        );
        let attributes = Attributes::default().with_ints("pads", &[0, 0, 0]);
        refused(
            Window::of(&node("Conv", attributes), None),
            &["pads has 3 entries, not 2 per spatial axis"],
        );
        let pool = node("MaxPool", Attributes::default());
        let message = Window::of(&pool, None).unwrap_err().to_string();
        assert!(message.contains("no kernel_shape"), "{message}");
    }

    #[test]
    fn a_conv_read_without_its_weight_takes_the_kernel_later() {
        let attributes = Attributes::default().with_ints("strides", &[2, 2]);
        let window = Window::of(&node("Conv", attributes), None).unwrap();
        assert_eq!(window.kernel(), None);
        assert!(window.axes(None).unwrap_err().contains("kernel is unknown"));
        let axes = window.axes(Some(&[3, 3])).unwrap();
        assert_eq!(axes[1].stride, 2);
        assert!(
            window
                .axes(Some(&[3]))
                .unwrap_err()
                .contains("2 spatial axes")
        );
    }

    #[test]
    fn pools_read_ceil_mode_and_count_include_pad() {
        let attributes = Attributes::default()
            .with_ints("kernel_shape", &[2])
            .with_int("ceil_mode", 1)
            .with_int("count_include_pad", 1);
        let window = Window::of(&node("AveragePool", attributes), None).unwrap();
        assert!(window.ceil_mode && window.count_include_pad);
        assert_eq!(window.rank(), Some(1));
    }

    fn axis(kernel: usize, stride: usize, pads: (usize, usize)) -> Axis {
        Axis {
            kernel,
            stride,
            dilation: 1,
            pad_begin: pads.0,
            pad_end: pads.1,
        }
    }

    #[test]
    fn placement_follows_the_onnx_output_sizes() {
        let place = |a: Axis, n, auto_pad, ceil| a.place(n, auto_pad, ceil).map(|p| p.output);
        // floor((5 + 1 + 1 − 3) / 2) + 1 = 3.
        assert_eq!(
            place(axis(3, 2, (1, 1)), 5, AutoPad::NotSet, false),
            Some(3)
        );
        // 6 inputs, kernel 3, stride 2: ⌈3/2⌉ + 1 = 3 with ceil_mode, 2 without.
        assert_eq!(place(axis(3, 2, (0, 0)), 6, AutoPad::NotSet, true), Some(3));
        assert_eq!(
            place(axis(3, 2, (0, 0)), 6, AutoPad::NotSet, false),
            Some(2)
        );
        // A last window that would start in the end padding is dropped.
        assert_eq!(place(axis(2, 2, (0, 1)), 4, AutoPad::NotSet, true), Some(2));
        // VALID and SAME ignore ceil_mode and any written pads.
        assert_eq!(place(axis(3, 2, (1, 1)), 6, AutoPad::Valid, true), Some(2));
        assert_eq!(
            place(axis(3, 2, (0, 0)), 7, AutoPad::SameUpper, true),
            Some(4)
        );
        // A window larger than its padded input has no placement.
        assert_eq!(place(axis(5, 1, (0, 0)), 4, AutoPad::NotSet, false), None);
        let huge = Axis {
            dilation: usize::MAX,
            ..axis(3, 1, (0, 0))
        };
        assert_eq!(huge.extent(), None);
        assert_eq!(place(huge, 4, AutoPad::NotSet, false), None);
    }

    #[test]
    fn same_padding_puts_the_odd_pad_at_the_end_or_the_beginning() {
        // 7 inputs, kernel 4, stride 2: 4 outputs read 3·2 + 4 = 10, 3 pads in all.
        let a = axis(4, 2, (0, 0));
        assert_eq!(a.same_pads(7, true), Some((1, 2)));
        assert_eq!(a.same_pads(7, false), Some((2, 1)));
        let placed = a.place(7, AutoPad::SameLower, false).unwrap();
        assert_eq!((placed.pad_begin, placed.pad_end, placed.output), (2, 1, 4));
        // A stride larger than the kernel needs no padding.
        assert_eq!(axis(1, 3, (0, 0)).same_pads(7, true), Some((0, 0)));
    }
}
