//! What the fuzz targets (`fuzz/`) run, shared with the corpus replay test
//! (`tests/it/fuzz_corpus.rs`) so that every input the fuzzer kept is checked in CI too.
//!
//! Each entry takes arbitrary bytes. An error is the expected answer to a bad input; a
//! panic (from the library, or from an assertion here) is a finding.

use std::path::{Path, PathBuf};

use crate::fold::conv::{self, Border, Conv2d, FeatureMap};
use crate::fold::conv_map::ConvMap;
use crate::fold::gemm::Dense;
use crate::ir::Model;
use crate::ir::stats::ModelStats;
use crate::onnx::{self, SaveOptions, pb};
use crate::passes::{self, Ctx};
use crate::runtime;

/// Rewrites per model, so one input cannot run for long.
const MAX_PATCHES: usize = 64;

/// The bytes of the file outside the model's folder: a model that loads must never hold
/// them (unless its own bytes did).
const OUTSIDE_MARKER: &[u8; 8] = b"OUTSIDE!";

/// A folder laid out to tempt external data out of the model's folder:
///
/// ```text
/// root/outside.bin            OUTSIDE_MARKER repeated
/// root/model/inside.bin       bytes a model may read
/// root/model/link_in.bin   -> inside.bin
/// root/model/link_out.bin  -> ../outside.bin
/// root/model/up            -> ..
/// root/out/                   where rewritten models are saved
/// ```
pub struct Sandbox {
    model_dir: PathBuf,
    out_dir: PathBuf,
}

impl Sandbox {
    /// Lays out the folder under `root` (which must exist).
    pub fn create(root: &Path) -> std::io::Result<Sandbox> {
        let model_dir = root.join("model");
        let out_dir = root.join("out");
        std::fs::create_dir_all(&model_dir)?;
        std::fs::create_dir_all(&out_dir)?;
        std::fs::write(root.join("outside.bin"), OUTSIDE_MARKER.repeat(512))?;
        let inside: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(model_dir.join("inside.bin"), inside)?;
        for (link, target) in [
            ("link_in.bin", "inside.bin"),
            ("link_out.bin", "../outside.bin"),
            ("up", ".."),
        ] {
            let link = model_dir.join(link);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(target, link)?;
            }
        }
        Ok(Sandbox { model_dir, out_dir })
    }

    /// Load (external data from the model folder) → IR → statistics and the checks made
    /// before tract runs it → canonical rewrites → save (inline, and with external data) →
    /// load again.
    pub fn load_rewrite_save(&self, bytes: &[u8]) {
        let origin = self.model_dir.join("fuzz.onnx");
        let Ok(proto) = onnx::decode_model(bytes, &origin, Some(&self.model_dir)) else {
            return;
        };
        assert_confined(&proto, bytes);
        let Ok(mut model) = Model::from_proto(proto) else {
            return;
        };
        let _ = ModelStats::of(&model.graph, &Default::default());
        let _ = runtime::check_runnable(&model, &Default::default());
        let mut ctx = Ctx::new(Default::default(), Some(MAX_PATCHES));
        if passes::run_pipeline(&passes::canonical(), &mut model.graph, &mut ctx).is_err() {
            return;
        }
        let nodes = model.graph.node_count();
        let external = SaveOptions {
            external_data: true,
            external_min_bytes: 16,
            ..SaveOptions::default()
        };
        for (name, options) in [
            ("inline.onnx", SaveOptions::default()),
            ("external.onnx", external),
        ] {
            let path = self.out_dir.join(name);
            crate::save(&model, &path, &options).expect("a rewritten model saves");
            let reloaded = crate::load(&path).expect("a saved model loads again");
            assert_eq!(reloaded.graph.node_count(), nodes, "{name}: nodes changed");
        }
    }
}

/// No tensor holds bytes of the file outside the model's folder. (A read shorter than
/// two markers could escape this check; the fuzzer's reads are mostly longer.)
fn assert_confined(model: &pb::ModelProto, input: &[u8]) {
    let holds_marker = |bytes: &[u8]| bytes.windows(8).any(|w| w == OUTSIDE_MARKER);
    if holds_marker(input) {
        return;
    }
    let mut model = model.clone();
    onnx::for_each_tensor_mut(&mut model, &mut |tensor| {
        let raw = tensor.raw_data.as_deref().unwrap_or_default();
        assert!(
            !holds_marker(raw),
            "tensor '{}' holds data from outside the model's folder",
            tensor.name()
        );
        Ok(())
    })
    .expect("the check never fails");
}

/// Reads small parameters from the fuzzer's bytes (zero once they run out).
struct Params<'a>(std::slice::Iter<'a, u8>);

impl Params<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    /// A number in 0..n.
    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    fn pair(&mut self, n: usize) -> [usize; 2] {
        [1 + self.below(n), 1 + self.below(n)]
    }

    /// A multiple of 1/16 in [−8, 8): products and sums of a few thousand of them are
    /// exact in f64, so any order of summation gives the same result.
    fn value(&mut self) -> f64 {
        self.byte() as i8 as f64 / 16.0
    }

    fn values(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.value()).collect()
    }

    fn conv(&mut self, in_channels: usize) -> Conv2d {
        let divisors: Vec<usize> = (1..=in_channels)
            .filter(|g| in_channels.is_multiple_of(*g))
            .collect();
        let group = divisors[self.below(divisors.len())];
        let out_channels = group * (1 + self.below(3));
        let kernel = self.pair(3);
        let weight = self.values(out_channels * (in_channels / group) * kernel[0] * kernel[1]);
        let bias = if self.below(2) == 0 {
            vec![0.0; out_channels]
        } else {
            self.values(out_channels)
        };
        Conv2d {
            weight,
            bias,
            out_channels,
            in_channels,
            group,
            kernel,
            stride: self.pair(3),
            dilation: self.pair(2),
            pads: [0; 4].map(|_| self.below(3)),
        }
    }

    /// A conv with `a`'s channels and stride whose output lines up with `a`'s (as
    /// `conv::sum` requires), or `None` when the drawn geometry cannot.
    fn aligned_conv(&mut self, a: &Conv2d) -> Option<Conv2d> {
        let mut b = self.conv(a.in_channels);
        b.out_channels = a.out_channels;
        b.group = 1;
        b.weight = self.values(a.out_channels * a.in_channels * b.kernel[0] * b.kernel[1]);
        b.bias = self.values(a.out_channels);
        b.stride = a.stride;
        for axis in 0..2 {
            let shrink = |c: &Conv2d| c.dilation[axis] * (c.kernel[axis] - 1);
            let end = (shrink(&b) + a.pads[axis] + a.pads[axis + 2])
                .checked_sub(shrink(a) + b.pads[axis])?;
            b.pads[axis + 2] = end;
        }
        Some(b)
    }

    fn feature_map(&mut self, channels: usize) -> FeatureMap {
        let hw = self.pair(9);
        FeatureMap {
            channels,
            hw,
            values: self.values(channels * hw[0] * hw[1]),
        }
    }
}

/// The fold math on random shapes and attributes, checked against evaluating the layers
/// one after the other: conv∘conv (`conv::compose` and the `ConvMap` a chain fold
/// builds, bias map included), parallel convs (`conv::sum`), and dense maps.
pub fn fold_math(bytes: &[u8]) {
    let mut params = Params(bytes.iter());
    let channels = 1 + params.below(4);
    let first = params.conv(channels);
    let second = params.conv(first.out_channels);
    let input = params.feature_map(channels);
    check_compose(&first, &second, &input);
    check_conv_map(&first, &second, &input);
    if let Some(other) = params.aligned_conv(&first) {
        check_sum(&first, &other, &input);
    }
    check_mismatched_compose(&first, &mut params);
    check_dense(&mut params);
}

fn assert_close(folded: &FeatureMap, direct: &FeatureMap, what: &str) {
    assert_eq!(
        (folded.channels, folded.hw),
        (direct.channels, direct.hw),
        "{what}: dims"
    );
    for (f, d) in folded.values.iter().zip(&direct.values) {
        assert!((f - d).abs() <= 1e-9 * (1.0 + d.abs()), "{what}: {f} ≠ {d}");
    }
}

fn check_compose(first: &Conv2d, second: &Conv2d, input: &FeatureMap) {
    let (composite, border) = conv::compose(first, second).expect("compatible convs compose");
    composite.validate().expect("the composite is consistent");
    let Some(direct) = first.apply(input).and_then(|h| second.apply(&h)) else {
        return;
    };
    if border == Border::Exact {
        let folded = composite
            .apply(input)
            .expect("the composite fits its input");
        assert_close(&folded, &direct, "compose");
    }
}

fn check_conv_map(first: &Conv2d, second: &Conv2d, input: &FeatureMap) {
    let identity = ConvMap::identity(input.channels, Some(input.hw));
    let Ok(map) = identity.then(first).and_then(|m| m.then(second)) else {
        return;
    };
    let Some(direct) = first.apply(input).and_then(|h| second.apply(&h)) else {
        return;
    };
    if map.border == Border::InteriorOnly {
        return;
    }
    let mut folded = map.emitted_conv().apply(input).expect("the fold fits");
    if let Some(bias) = &map.bias_map {
        assert_eq!(bias.hw, folded.hw, "bias map dims");
        folded
            .values
            .iter_mut()
            .zip(&bias.values)
            .for_each(|(v, b)| *v += b);
    }
    assert_close(&folded, &direct, "conv map");
}

fn check_sum(a: &Conv2d, b: &Conv2d, input: &FeatureMap) {
    let summed = conv::sum(a, b).expect("aligned convs sum");
    let (Some(ya), Some(yb)) = (a.apply(input), b.apply(input)) else {
        return;
    };
    let direct = FeatureMap {
        values: ya
            .values
            .iter()
            .zip(&yb.values)
            .map(|(x, y)| x + y)
            .collect(),
        ..ya
    };
    let folded = summed.apply(input).expect("the sum fits its input");
    assert_close(&folded, &direct, "sum");
}

/// Inconsistent convolutions are errors, not panics.
fn check_mismatched_compose(first: &Conv2d, params: &mut Params) {
    let wrong_channels = params.conv(first.out_channels + 1);
    assert!(conv::compose(first, &wrong_channels).is_err());
    let mut short = first.clone();
    short.weight.pop();
    assert!(conv::compose(&short, &wrong_channels).is_err());
}

fn check_dense(params: &mut Params) {
    let [n0, n1] = params.pair(6);
    let n2 = 1 + params.below(6);
    let dense = |params: &mut Params, inputs: usize, outputs: usize| Dense {
        weight: params.values(outputs * inputs),
        bias: params.values(outputs),
        inputs,
        outputs,
    };
    let (d1, d2) = (dense(params, n0, n1), dense(params, n1, n2));
    let x = params.values(n0);
    let apply = |d: &Dense, x: &[f64]| -> Vec<f64> {
        (0..d.outputs)
            .map(|o| {
                d.bias[o]
                    + (0..d.inputs)
                        .map(|i| d.weight[o * d.inputs + i] * x[i])
                        .sum::<f64>()
            })
            .collect()
    };
    let both = d1.then(&d2).expect("matching widths compose");
    assert_eq!(apply(&both, &x), apply(&d2, &apply(&d1, &x)), "dense");
    assert!(d2.then(&d2).is_none() || n1 == n2);
}
