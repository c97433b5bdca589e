//! Broken and hostile input files: each gives a one-line error naming what is wrong,
//! exit code 2, no panic, no output file, no temporary file, and an untouched input.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;

use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::ir::{Attributes, Tensor};
use onnx_shallow::onnx::{encode_model, pb};

fn relu_model() -> pb::ModelProto {
    ModelBuilder::new(13)
        .input("x", &[1, 4])
        .initializer("w", Tensor::from_f32(vec![4, 4], &[0.25; 16]))
        .node("MatMul", &["x", "w"], &["h"], Attributes::default())
        .node("Relu", &["h"], &["y"], Attributes::default())
        .output("y")
        .build()
}

/// `common::assert_refused` in a fresh folder.
fn assert_refused(bytes: &[u8], expected: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    common::assert_refused(dir.path(), bytes, expected)
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    let run = common::cli(&[OsStr::new("inspect"), missing.as_os_str()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("nope.onnx") && run.stderr.contains("No such file"),
        "{}",
        run.stderr
    );
}

#[test]
fn empty_file() {
    assert_refused(&[], &["bad.onnx", "empty"]);
}

#[test]
fn random_bytes() {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    assert_refused(&bytes, &["bad.onnx", "not a valid ONNX model"]);
}

#[test]
fn truncated_protobuf() {
    let bytes = encode_model(&relu_model());
    assert_refused(
        &bytes[..bytes.len() * 2 / 3],
        &["bad.onnx", "not a valid ONNX model"],
    );
}

#[test]
fn tensor_data_shorter_than_its_dims() {
    let mut model = relu_model();
    let w = &mut model.graph.as_mut().unwrap().initializer[0];
    w.raw_data.as_mut().unwrap().truncate(20);
    assert_refused(&encode_model(&model), &["bad.onnx", "tensor 'w'", "16"]);
}

#[test]
fn graph_cycle() {
    let model = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Add", &["x", "b"], &["a"], Attributes::default())
        .node("Relu", &["a"], &["b"], Attributes::default())
        .output("a")
        .build();
    assert_refused(&encode_model(&model), &["bad.onnx", "cycle"]);
}

#[test]
fn node_reading_a_value_nobody_produces() {
    let model = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Add", &["x", "ghost"], &["y"], Attributes::default())
        .output("y")
        .build();
    assert_refused(&encode_model(&model), &["bad.onnx", "Add_0", "ghost"]);
}

/// The Relu model with its weight moved to external data at `location`.
fn external_model(location: &str) -> Vec<u8> {
    let mut model = relu_model();
    let w = &mut model.graph.as_mut().unwrap().initializer[0];
    w.raw_data = None;
    let entry = |k: &str, v: &str| pb::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    w.external_data = vec![
        entry("location", location),
        entry("offset", "0"),
        entry("length", "64"),
    ];
    w.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    encode_model(&model)
}

/// A folder with a `model/` subfolder (where the model goes) and a 64-byte file beside it.
fn folder_with_outside_file() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("secret.bin");
    std::fs::write(&outside, [0u8; 64]).unwrap();
    let model_dir = root.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    (root, model_dir, outside)
}

#[test]
fn external_data_with_dot_dot_is_refused() {
    let (_root, model_dir, _) = folder_with_outside_file();
    common::assert_refused(
        &model_dir,
        &external_model("../secret.bin"),
        &["tensor 'w'", "inside the model's folder"],
    );
}

#[test]
fn external_data_with_absolute_path_is_refused() {
    let (_root, model_dir, outside) = folder_with_outside_file();
    let location = outside.to_str().unwrap();
    common::assert_refused(
        &model_dir,
        &external_model(location),
        &["tensor 'w'", "inside the model's folder"],
    );
}

#[test]
fn external_data_through_a_symlink_leading_out_is_refused() {
    let (_root, model_dir, outside) = folder_with_outside_file();
    std::os::unix::fs::symlink(&outside, model_dir.join("link.bin")).unwrap();
    common::assert_refused(
        &model_dir,
        &external_model("link.bin"),
        &["tensor 'w'", "outside the model's folder"],
    );
}

#[test]
fn external_data_beyond_the_end_of_its_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), [0u8; 10]).unwrap();
    common::assert_refused(
        dir.path(),
        &external_model("w.bin"),
        &["tensor 'w'", "beyond the end"],
    );
}

#[test]
fn external_data_inside_the_folder_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), [0u8; 64]).unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, external_model("w.bin")).unwrap();
    let model = onnx_shallow::load(&path).unwrap();
    let w = model.graph.value_by_name("w").unwrap();
    assert_eq!(
        model.graph.constant(w).unwrap().to_f32().unwrap(),
        vec![0.0; 16]
    );
}

#[test]
fn output_over_the_input_is_refused_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.onnx");
    let bytes = encode_model(&relu_model());
    std::fs::write(&input, &bytes).unwrap();
    let run = common::cli(&[
        OsStr::new("optimize"),
        input.as_os_str(),
        input.as_os_str(),
        OsStr::new("--exact"),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(std::fs::read(&input).unwrap(), bytes);
}
