//! Models that lie about their size or structure. Each is refused by `inspect` and
//! `optimize --exact` with exit code 2 and one line naming the file, tensor or node,
//! leaving no file behind, with the tool's address space bounded far below what the file
//! claims (`common::cli_bounded`), so memory follows the input's size, not its claims.

use crate::common;

use std::ffi::OsStr;

use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::ir::{Attributes, Tensor};
use onnx_shallow::onnx::{encode_model, pb};

fn weight(model: &mut pb::ModelProto) -> &mut pb::TensorProto {
    &mut model.graph.as_mut().unwrap().initializer[0]
}

fn refused(model: &pb::ModelProto, expected: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    common::assert_refused(dir.path(), &encode_model(model), expected)
}

/// A model whose one node reads `x` and a Constant holding `value`.
fn with_constant(value: pb::TensorProto) -> pb::ModelProto {
    ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node(
            "Constant",
            &[],
            &["c"],
            Attributes::default().with_tensor("value", value),
        )
        .node("Add", &["x", "c"], &["y"], Attributes::default())
        .output("y")
        .build()
}

#[test]
fn raw_data_far_shorter_than_its_dims_claim() {
    let mut model = common::matmul_relu();
    weight(&mut model).dims = vec![1 << 20, 1 << 20];
    refused(
        &model,
        &["bad.onnx", "tensor 'w'", "1099511627776", "holds 16"],
    );
}

#[test]
fn typed_data_shorter_than_its_dims_claim() {
    let mut model = common::matmul_relu();
    let w = weight(&mut model);
    w.raw_data = None;
    w.float_data = vec![0.5; 3];
    refused(&model, &["bad.onnx", "tensor 'w'", "holds 3"]);
}

#[test]
fn string_tensor_with_fewer_strings_than_its_dims() {
    let mut model = common::matmul_relu();
    let w = weight(&mut model);
    w.raw_data = None;
    w.data_type = Some(pb::tensor_proto::DataType::String as i32);
    w.string_data = vec![b"a".to_vec()];
    refused(&model, &["bad.onnx", "tensor 'w'", "16 strings"]);
}

#[test]
fn constant_node_claiming_more_than_it_holds() {
    let value = pb::TensorProto {
        dims: vec![1 << 30],
        data_type: Some(1),
        raw_data: Some(vec![0; 4].into()),
        ..Default::default()
    };
    refused(
        &with_constant(value),
        &["bad.onnx", "Constant", "1073741824"],
    );
}

#[test]
fn dims_whose_product_overflows() {
    for dims in [
        vec![1 << 40, 1 << 40],
        vec![i64::MAX, 2],
        vec![3, 1 << 62, 4],
    ] {
        let mut model = common::matmul_relu();
        weight(&mut model).dims = dims;
        refused(&model, &["bad.onnx", "tensor 'w'", "dims ["]);
    }
}

#[test]
fn negative_tensor_dims() {
    for dims in [vec![-1, 4], vec![4, i64::MIN]] {
        let mut model = common::matmul_relu();
        weight(&mut model).dims = dims;
        refused(&model, &["bad.onnx", "tensor 'w'", "negative dimension"]);
    }
}

#[test]
fn negative_dims_in_a_constant_node() {
    let value = pb::TensorProto {
        dims: vec![-4],
        data_type: Some(1),
        raw_data: Some(vec![0; 16].into()),
        ..Default::default()
    };
    refused(
        &with_constant(value),
        &["bad.onnx", "Constant", "negative dimension"],
    );
}

/// A Conv reading `x` [1, 1, 4, 4] with a 1×1 weight and the given attributes.
fn conv_with(attributes: Attributes) -> pb::ModelProto {
    ModelBuilder::new(13)
        .input("x", &[1, 1, 4, 4])
        .initializer("w", Tensor::from_f32(vec![1, 1, 1, 1], &[2.0]))
        .node("Conv", &["x", "w"], &["y"], attributes)
        .output("y")
        .build()
}

#[test]
fn huge_attribute_arrays() {
    let million = vec![1i64; 1 << 20];
    for name in ["pads", "strides", "dilations", "kernel_shape"] {
        let model = conv_with(Attributes::default().with_ints(name, &million));
        refused(&model, &["bad.onnx", "Conv_0", name]);
    }
}

#[test]
fn window_attributes_out_of_range() {
    for (attributes, name) in [
        (
            Attributes::default().with_ints("strides", &[0, 1]),
            "strides",
        ),
        (
            Attributes::default().with_ints("dilations", &[1, -1]),
            "dilations",
        ),
        (
            Attributes::default().with_ints("pads", &[0, -1, 0, 0]),
            "pads",
        ),
        (
            Attributes::default().with_ints("kernel_shape", &[1 << 31, 1 << 31]),
            "kernel_shape",
        ),
        (Attributes::default().with_int("group", 0), "group"),
        (Attributes::default().with_int("group", 1 << 40), "group"),
    ] {
        refused(&conv_with(attributes), &["bad.onnx", "Conv_0", name]);
    }
}

/// What only claims too much, a huge value computed at run time, is refused by `optimize`
/// before tract allocates it; `inspect` computes nothing and reports it.
fn refused_by_optimize(model: &pb::ModelProto, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    common::assert_optimize_refused(dir.path(), &encode_model(model), expected);
}

#[test]
fn pads_claiming_a_huge_output() {
    let pads = [1 << 40; 4];
    let model = conv_with(Attributes::default().with_ints("pads", &pads));
    refused_by_optimize(&model, &["Conv_0", "would hold"]);
}

#[test]
fn a_constant_of_shape_claiming_a_huge_output() {
    let model = common::huge_constant_of_shape();
    refused_by_optimize(&model, &["ConstantOfShape_0", "4398046511104 elements"]);
}

#[test]
fn a_range_claiming_a_huge_output() {
    let scalar = |v: f32| Tensor::from_f32(vec![], &[v]);
    let model = ModelBuilder::new(13)
        .input("x", &[1])
        .initializer("start", scalar(0.0))
        .initializer("limit", scalar(1e15))
        .initializer("delta", scalar(1.0))
        .node(
            "Range",
            &["start", "limit", "delta"],
            &["r"],
            Attributes::default(),
        )
        .node("Add", &["x", "r"], &["y"], Attributes::default())
        .output("y")
        .build();
    refused_by_optimize(&model, &["Range_0", "would hold"]);
}

#[test]
fn a_pool_window_far_larger_than_its_input() {
    let model = ModelBuilder::new(13)
        .input("x", &[1, 1, 4, 4])
        .initializer("w", Tensor::from_f32(vec![1, 1, 1, 1], &[2.0]))
        .node("Conv", &["x", "w"], &["c"], Attributes::default())
        .node(
            "AveragePool",
            &["c"],
            &["y"],
            Attributes::default().with_ints("kernel_shape", &[1 << 16, 1 << 16]),
        )
        .output("y")
        .build();
    refused_by_optimize(&model, &["AveragePool_1", "window spans 65536"]);
}

/// tract indexes a BatchNormalization's channel dim unchecked (found by fuzzing).
#[test]
fn a_batch_norm_of_a_vector() {
    let vector = || Tensor::from_f32(vec![2], &[1.0, 2.0]);
    let model = ModelBuilder::new(13)
        .input("x", &[2])
        .initializer("s", vector())
        .initializer("b", vector())
        .initializer("m", vector())
        .initializer("v", vector())
        .node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            Attributes::default(),
        )
        .output("y")
        .build();
    refused_by_optimize(&model, &["BatchNormalization_0", "1 dims"]);
}

#[test]
fn subgraphs_nested_past_the_decoder_limit() {
    let mut body = pb::GraphProto::default();
    for _ in 0..200 {
        let node = pb::NodeProto {
            op_type: Some("If".into()),
            input: vec!["x".into()],
            output: vec!["y".into()],
            attribute: vec![pb::AttributeProto {
                name: Some("then_branch".into()),
                r#type: Some(pb::attribute_proto::AttributeType::Graph as i32),
                g: Some(body),
                ..Default::default()
            }],
            ..Default::default()
        };
        body = pb::GraphProto {
            node: vec![node],
            ..Default::default()
        };
    }
    let mut model = common::matmul_relu();
    model.graph.as_mut().unwrap().node.push(body.node.remove(0));
    refused(&model, &["bad.onnx", "not a valid ONNX model", "recursion"]);
}

/// `n` Relu nodes in a chain, each named by `name(i)`, each writing `output(i)`.
fn relu_chain(
    n: usize,
    name: impl Fn(usize) -> String,
    output: impl Fn(usize) -> String,
) -> pb::ModelProto {
    let mut model = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .output(&output(n - 1))
        .build();
    let graph = model.graph.as_mut().unwrap();
    graph.node = (0..n)
        .map(|i| pb::NodeProto {
            name: Some(name(i)),
            op_type: Some("Relu".into()),
            input: vec![if i == 0 { "x".into() } else { output(i - 1) }],
            output: vec![output(i)],
            ..Default::default()
        })
        .collect();
    model
}

#[test]
fn thousands_of_nodes_with_one_name() {
    let model = relu_chain(5000, |_| "same".into(), |i| format!("v{i}"));
    refused(&model, &["bad.onnx", "node 'same' (Relu)", "same name"]);
}

#[test]
fn thousands_of_nodes_writing_one_value() {
    let mut model = relu_chain(5000, |i| format!("n{i}"), |_| "v".into());
    model.graph.as_mut().unwrap().node[0].input = vec!["x".into()];
    refused(&model, &["bad.onnx", "node 'n1' (Relu)", "'v'"]);
}

#[test]
fn a_cycle_through_thousands_of_nodes() {
    let mut model = relu_chain(5000, |i| format!("n{i}"), |i| format!("v{i}"));
    model.graph.as_mut().unwrap().node[0].input = vec!["v4999".into()];
    refused(&model, &["bad.onnx", "cycle", "node 'n0'"]);
}

#[test]
fn a_node_reading_its_own_output() {
    let model = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Add", &["x", "y"], &["y"], Attributes::default())
        .output("y")
        .build();
    refused(&model, &["bad.onnx", "cycle", "Add_0"]);
}

/// A negative `dim_value` in a declared type is how some exporters write "unknown":
/// accepted as unknown, and kept as written.
#[test]
fn a_negative_dim_value_in_a_value_info_means_unknown() {
    use pb::tensor_shape_proto::dimension::Value;
    let mut model = common::matmul_relu();
    let input = &mut model.graph.as_mut().unwrap().input[0];
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        input.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        unreachable!("the builder declares tensor inputs");
    };
    tensor.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(-1));
    let dir = tempfile::tempdir().unwrap();
    let (path, output) = (dir.path().join("m.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&path, encode_model(&model)).unwrap();
    let inspect = common::cli_bounded(&[
        OsStr::new("inspect"),
        path.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    let stats: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(stats["inputs"][0]["shape"], serde_json::json!(["?", 4]));
    let optimize = common::cli_bounded(&[
        OsStr::new("optimize"),
        path.as_os_str(),
        output.as_os_str(),
        OsStr::new("--exact"),
        OsStr::new("--cost"),
        OsStr::new("macs"),
    ]);
    assert_eq!(optimize.code, 0, "{}", optimize.stderr);
    let saved =
        onnx_shallow::onnx::decode_model(&std::fs::read(&output).unwrap(), &output, None).unwrap();
    assert_eq!(
        saved.graph.unwrap().input[0],
        model.graph.unwrap().input[0],
        "the declared input is kept as written"
    );
}
