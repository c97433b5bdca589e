//! The algebra's convolutions as graph nodes: a Conv with constant weights or an
//! AveragePool read as a `Conv2d`, and a `Conv2d` or `ConvMap` written into a patch. The
//! fold passes and the refit share them.

use crate::error::Result;
use crate::fold::conv::Conv2d;
use crate::fold::conv_map::ConvMap;
use crate::ir::shape::Shapes;
use crate::ir::window::{AutoPad, Window};
use crate::ir::{Attributes, DataType, Graph, NodeId, OpKind, Patch, Tensor, Wire};

/// Composite kernels past this many taps a side are not built.
pub(crate) const MAX_KERNEL: usize = 11;

/// A windowed layer that is linear: a convolution, or an average pool whose divisor
/// leaves the padding out (the convolution counting it, then a per-position scale).
pub(crate) enum Windowed {
    Conv(Conv2d),
    PoolExcludingPads(Conv2d),
}

/// The weights and geometry of a 2-D Conv with constant weights, or of an AveragePool
/// that is a convolution (no padding counted out, no ceil mode).
pub(crate) fn as_conv(graph: &Graph, node: NodeId, shapes: &Shapes) -> Option<Conv2d> {
    match windowed(graph, node, shapes)? {
        Windowed::Conv(conv) => Some(conv),
        Windowed::PoolExcludingPads(_) => None,
    }
}

/// A 2-D Conv with constant weights, or an AveragePool (not in ceil mode), as a
/// convolution; the pool's divisor may leave its padding out.
pub(crate) fn windowed(graph: &Graph, node: NodeId, shapes: &Shapes) -> Option<Windowed> {
    let n = graph.node(node);
    // A graph's windows were checked when its nodes entered it.
    let window = Window::in_graph(graph, n).ok()??;
    let axes = window.axes(None).ok()?;
    let [h, w] = axes[..] else {
        return None;
    };
    if window.auto_pad != AutoPad::NotSet {
        return None;
    }
    let pads = [h.pad_begin, w.pad_begin, h.pad_end, w.pad_end];
    let stride = [h.stride, w.stride];
    let dilation = [h.dilation, w.dilation];
    let kernel = [h.kernel, w.kernel];
    match n.kind {
        OpKind::Conv => {
            let weight = graph.constant(n.input(1)?)?;
            let dims = weight.dims();
            if !weight.dtype().is_float() {
                return None;
            }
            let group = window.group;
            let bias = match n.input(2) {
                Some(b) => graph.constant(b)?.to_f64()?,
                None => vec![0.0; dims[0]],
            };
            Some(Windowed::Conv(Conv2d {
                weight: weight.to_f64()?,
                bias,
                out_channels: dims[0],
                in_channels: dims[1] * group,
                group,
                kernel,
                stride,
                dilation,
                pads,
            }))
        }
        OpKind::AveragePool => {
            if window.ceil_mode {
                return None;
            }
            // A larger window never folds; building its taps would cost what the file claims.
            if kernel.iter().any(|&k| k > MAX_KERNEL) {
                return None;
            }
            let channels = shapes.get(n.input(0)?).dim(1)?;
            let taps = kernel[0] * kernel[1];
            let pool = Conv2d {
                weight: vec![1.0 / taps as f64; channels * taps],
                bias: vec![0.0; channels],
                out_channels: channels,
                in_channels: channels,
                group: channels,
                kernel,
                stride,
                dilation,
                pads,
            };
            Some(if window.count_include_pad || !pool.is_padded() {
                Windowed::Conv(pool)
            } else {
                Windowed::PoolExcludingPads(pool)
            })
        }
        _ => None,
    }
}

/// Adds the map's Conv, then the Add of its bias map and the Mul by its divisor map when
/// it has them, reading `x`; returns the output.
pub(crate) fn emit_conv_map(
    patch: &mut Patch,
    x: Wire,
    map: &ConvMap,
    dtype: DataType,
    name: &str,
) -> Result<Wire> {
    let mut y = emit_conv(patch, x, &map.emitted_conv(), dtype, name)?;
    let steps = [
        (&map.bias_map, OpKind::Add, "bias_map"),
        (&map.position_scale, OpKind::Mul, "divisor_map"),
    ];
    for (feature_map, op, what) in steps {
        let Some(feature_map) = feature_map else {
            continue;
        };
        let dims = vec![
            1,
            feature_map.channels,
            feature_map.hw[0],
            feature_map.hw[1],
        ];
        let constant = patch.constant(
            &format!("{name}.{what}"),
            Tensor::from_f64(dtype, dims, &feature_map.values)?,
        );
        y = patch.node(
            &format!("{name}.{}_{what}", op.name().to_lowercase()),
            op,
            Attributes::default(),
            &[Some(y), Some(constant)],
            1,
        )[0];
    }
    Ok(y)
}

/// Adds `conv` as a Conv node reading `x`, its weights stored as `dtype`; returns its output.
pub(crate) fn emit_conv(
    patch: &mut Patch,
    x: Wire,
    conv: &Conv2d,
    dtype: DataType,
    name: &str,
) -> Result<Wire> {
    let dims = vec![
        conv.out_channels,
        conv.in_channels / conv.group,
        conv.kernel[0],
        conv.kernel[1],
    ];
    let weight = patch.constant(
        &format!("{name}.weight"),
        Tensor::from_f64(dtype, dims, &conv.weight)?,
    );
    let mut inputs = vec![Some(x), Some(weight)];
    if conv.bias.iter().any(|&b| b != 0.0) {
        inputs.push(Some(patch.constant(
            &format!("{name}.bias"),
            Tensor::from_f64(dtype, vec![conv.out_channels], &conv.bias)?,
        )));
    }
    let ints = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
    let attributes = Attributes::default()
        .with_ints("kernel_shape", &ints(&conv.kernel))
        .with_ints("strides", &ints(&conv.stride))
        .with_ints("dilations", &ints(&conv.dilation))
        .with_ints("pads", &ints(&conv.pads))
        .with_int("group", conv.group as i64);
    Ok(patch.node(name, OpKind::Conv, attributes, &inputs, 1)[0])
}
