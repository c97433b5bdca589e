//! Saving: what the user's model had is kept; external data; atomic writes.

use crate::common;

use onnx_shallow::SaveOptions;
use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::ir::{Attributes, Tensor};
use onnx_shallow::onnx::{decode_model, pb};

/// A model carrying every model-level field a pass must not touch.
fn decorated_model() -> pb::ModelProto {
    let mut model = ModelBuilder::new(13)
        .input("x", &[-1, 4])
        .initializer(
            "w",
            Tensor::from_f32(
                vec![4, 3],
                &(0..12).map(|i| i as f32 / 7.0).collect::<Vec<_>>(),
            ),
        )
        .node("MatMul", &["x", "w"], &["h"], Attributes::default())
        .node("Relu", &["h"], &["y"], Attributes::default())
        .output("y")
        .build();
    let entry = |k: &str, v: &str| pb::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    model.ir_version = Some(7);
    model.opset_import.push(pb::OperatorSetIdProto {
        domain: Some("com.example".into()),
        version: Some(3),
    });
    model.opset_import.insert(
        0,
        pb::OperatorSetIdProto {
            domain: Some("ai.onnx.ml".into()),
            version: Some(2),
        },
    );
    model.producer_name = Some("exporter".into());
    model.producer_version = Some("9.9".into());
    model.domain = Some("org.example".into());
    model.model_version = Some(42);
    model.doc_string = Some("a model".into());
    model.metadata_props = vec![entry("author", "someone"), entry("licence", "MIT")];
    model.functions.push(pb::FunctionProto {
        name: Some("f".into()),
        domain: Some("com.example".into()),
        ..Default::default()
    });
    model.training_info.push(pb::TrainingInfoProto::default());
    let graph = model.graph.as_mut().unwrap();
    graph.doc_string = Some("the graph".into());
    graph.node[1].name = Some("the_relu".into());
    graph.node[1].doc_string = Some("why a relu".into());
    graph.value_info.push(pb::ValueInfoProto {
        name: Some("h".into()),
        doc_string: Some("hidden".into()),
        ..Default::default()
    });
    model
}

#[test]
fn everything_no_pass_changed_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    let original = decorated_model();
    std::fs::write(&input, onnx_shallow::onnx::encode_model(&original)).unwrap();
    onnx_shallow::save(
        &onnx_shallow::load(&input).unwrap(),
        &output,
        &SaveOptions::default(),
    )
    .unwrap();
    let saved = decode_model(&std::fs::read(&output).unwrap(), &output, None).unwrap();
    assert_eq!(saved.ir_version, original.ir_version);
    assert_eq!(saved.opset_import, original.opset_import);
    assert_eq!(
        (
            &saved.producer_name,
            &saved.producer_version,
            &saved.domain,
            saved.model_version,
            &saved.doc_string
        ),
        (
            &original.producer_name,
            &original.producer_version,
            &original.domain,
            original.model_version,
            &original.doc_string
        )
    );
    assert_eq!(saved.metadata_props, original.metadata_props);
    assert_eq!(saved.functions, original.functions);
    assert_eq!(saved.training_info, original.training_info);
    let (g, o) = (saved.graph.unwrap(), original.graph.unwrap());
    assert_eq!((&g.name, &g.doc_string), (&o.name, &o.doc_string));
    assert_eq!(g.input, o.input);
    assert_eq!(g.output, o.output);
    assert_eq!(g.value_info, o.value_info);
    assert_eq!(g.node, o.node);
    assert_eq!(g.initializer, o.initializer);
}

/// Decoding without a folder to read external data from fails only if a tensor is external.
fn assert_weight_is_external(path: &std::path::Path) {
    let stored = decode_model(&std::fs::read(path).unwrap(), path, None);
    assert!(
        stored.unwrap_err().to_string().contains("external data"),
        "the weight must be external"
    );
}

fn run_saved(path: &std::path::Path) -> Vec<ndarray::ArrayD<f32>> {
    let model = onnx_shallow::load(path).unwrap();
    common::run_random(&model, &[vec![2, 4]], 3)
}

#[test]
fn external_data_when_asked_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, onnx_shallow::onnx::encode_model(&decorated_model())).unwrap();
    let model = onnx_shallow::load(&input).unwrap();
    let options = SaveOptions {
        external_data: true,
        external_min_bytes: 16,
        ..SaveOptions::default()
    };
    onnx_shallow::save(&model, &output, &options).unwrap();
    assert_eq!(
        common::files_in(dir.path()),
        ["in.onnx", "out.onnx", "out.onnx.data"]
    );
    assert_weight_is_external(&output);
    assert_eq!(run_saved(&output), run_saved(&input));
}

#[test]
fn models_over_the_size_limit_go_to_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("big.onnx"));
    std::fs::write(&input, onnx_shallow::onnx::encode_model(&decorated_model())).unwrap();
    let model = onnx_shallow::load(&input).unwrap();
    // The same code path as a model over 2 GiB, with the limit lowered to 100 bytes.
    let options = SaveOptions {
        size_limit: 100,
        external_min_bytes: 16,
        ..SaveOptions::default()
    };
    onnx_shallow::save(&model, &output, &options).unwrap();
    assert!(dir.path().join("big.onnx.data").exists());
    assert_weight_is_external(&output);
    assert_eq!(run_saved(&output), run_saved(&input));
}

#[test]
fn a_failed_save_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    std::fs::write(&input, onnx_shallow::onnx::encode_model(&decorated_model())).unwrap();
    let model = onnx_shallow::load(&input).unwrap();
    // The target is a directory: the rename into place fails after the data was written.
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    assert!(onnx_shallow::save(&model, &target, &SaveOptions::default()).is_err());
    assert_eq!(common::files_in(dir.path()), ["in.onnx", "taken"]);
}
