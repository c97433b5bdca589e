//! The executor's forward pass against the ONNX backend test suite's reference outputs, for
//! the float cases of every operator it supports.

use crate::common;

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use onnx_shallow::exec::{Executor, Params};
use onnx_shallow::ir::{DataType, Model, Tensor};
use onnx_shallow::onnx::pb;
use prost::Message;

const OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "HardSigmoid",
    "HardSwish",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "GlobalAveragePool",
    "AveragePool",
    "MaxPool",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Pad",
    "ReduceMean",
];

/// Cases of those operators the executor refuses, each with the reason.
const REFUSED: &[(&str, &str)] = &[
    ("test_batchnorm_epsilon_training_mode", "training mode"),
    ("test_batchnorm_example_training_mode", "training mode"),
    (
        "test_maxpool_with_argmax_2d_precomputed_pads",
        "the Indices output",
    ),
    (
        "test_maxpool_with_argmax_2d_precomputed_strides",
        "the Indices output",
    ),
];

fn read_tensor(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    Tensor::from_proto(&pb::TensorProto::decode(&bytes[..]).unwrap()).unwrap()
}

fn to_array(t: &Tensor) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(t.dims()), t.to_f32().unwrap()).unwrap()
}

/// The case's graph inputs that are shapes, pads, axes or bounds become initializers
/// (the executor reads those as constants); the rest are fed.
fn constant_input(op: &str, slot: usize, t: &Tensor) -> bool {
    t.dtype() == DataType::Int64 || (matches!(op, "Clip" | "Pad") && slot > 0)
}

enum Outcome {
    Passed,
    /// Integer data, or an operator outside the supported list inside the case.
    NotFloat,
    Refused(String),
    Mismatch(String),
}

fn run_case(dir: &Path, op: &str) -> Outcome {
    let mut proto = onnx_shallow::onnx::load_proto(&dir.join("model.onnx")).unwrap();
    let data = dir.join("test_data_set_0");
    let graph = proto.graph.as_mut().unwrap();
    let mut feeds = Vec::new();
    let mut fed_names = Vec::new();
    let inputs = std::mem::take(&mut graph.input);
    for (slot, input) in inputs.into_iter().enumerate() {
        let tensor = read_tensor(&data.join(format!("input_{slot}.pb")));
        if constant_input(op, slot, &tensor) {
            graph.initializer.push(tensor.to_proto(input.name()));
            continue;
        }
        if tensor.dtype() != DataType::Float {
            return Outcome::NotFloat;
        }
        fed_names.push(input.name().to_string());
        feeds.push(to_array(&tensor));
        graph.input.push(input);
    }
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    let expected: Vec<Tensor> = (0..outputs.len())
        .map(|k| read_tensor(&data.join(format!("output_{k}.pb"))))
        .collect();
    if expected.iter().any(|t| t.dtype() != DataType::Float) {
        return Outcome::NotFloat;
    }
    let model = Model::from_proto(proto).unwrap();
    let exec = match Executor::new(&model.graph, &fed_names, &outputs, Vec::new()) {
        Ok(exec) => exec,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let params = Params::<f32>::new(&exec, &model.graph).unwrap();
    let got = match exec.forward(&feeds, &params, false) {
        Ok(run) => run.outputs,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    for ((got, want), name) in got.iter().zip(&expected).zip(&outputs) {
        let want = to_array(want);
        if got.shape() != want.shape() {
            return Outcome::Mismatch(format!(
                "output {name}: dims {:?}, expected {:?}",
                got.shape(),
                want.shape()
            ));
        }
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = (got - &want).iter().fold(0f32, |m, v| m.max(v.abs()));
        // Some reference outputs are written to four decimals.
        if err > 1e-4 * scale.max(1.0) {
            return Outcome::Mismatch(format!(
                "output {name} off by {err} (largest value {scale}): {got} vs {want}"
            ));
        }
    }
    Outcome::Passed
}

#[test]
fn forward_matches_the_onnx_reference_outputs() {
    let Some(root) = common::shared("onnx-node-tests") else {
        return;
    };
    let index: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    let (mut passed, mut refused, mut mismatched) = (0, Vec::new(), Vec::new());
    for case in &index {
        let (name, op) = (case["name"].as_str().unwrap(), case["op"].as_str().unwrap());
        if !OPS.contains(&op) {
            continue;
        }
        match run_case(&root.join(name), op) {
            Outcome::Passed => passed += 1,
            Outcome::NotFloat => {}
            Outcome::Refused(reason) => refused.push((name.to_string(), reason)),
            Outcome::Mismatch(reason) => mismatched.push((name.to_string(), reason)),
        }
    }
    let unexpected: Vec<_> = refused
        .iter()
        .filter(|(name, reason)| {
            let expected = REFUSED.iter().any(|(n, _)| n == name);
            // An expanded case made of other operators is refused naming that operator.
            let foreign = name.ends_with("_expanded") && reason.contains("does not support");
            !(expected || foreign)
        })
        .collect();
    assert!(mismatched.is_empty(), "mismatched: {mismatched:#?}");
    assert!(unexpected.is_empty(), "refused: {unexpected:#?}");
    eprintln!(
        "{passed} node test cases match; refused as expected: {}",
        refused.len()
    );
    assert!(passed >= 155, "only {passed} cases ran");
}
