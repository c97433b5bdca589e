//! Round trips: protobuf bytes, and the IR judged by tract outputs.

use crate::common;

use onnx_shallow::onnx::{decode_model, encode_model};

#[test]
fn decode_then_encode_gives_the_same_bytes_for_every_shared_model() {
    for path in common::shared_models() {
        let bytes = std::fs::read(&path).unwrap();
        let model = decode_model(&bytes, &path, path.parent()).unwrap();
        assert!(
            encode_model(&model) == bytes,
            "{} re-encodes differently",
            path.display()
        );
    }
}

#[test]
fn load_then_save_runs_bit_identically_in_tract_for_every_shared_model() {
    let dir = tempfile::tempdir().unwrap();
    for path in common::shared_models() {
        let model = onnx_shallow::load(&path).unwrap();
        let out = dir.path().join("saved.onnx");
        onnx_shallow::save(&model, &out, &Default::default()).unwrap();
        let saved = onnx_shallow::load(&out).unwrap();
        let dims = common::input_dims(&model, 2);
        let (before, after) = (
            common::run_random(&model, &dims, 1),
            common::run_random(&saved, &dims, 1),
        );
        assert_eq!(before, after, "{} changed through the IR", path.display());
    }
}
