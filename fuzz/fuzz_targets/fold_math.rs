//! The fold math on random shapes and attributes (see `onnx_shallow::fuzzing::fold_math`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| onnx_shallow::fuzzing::fold_math(bytes));
