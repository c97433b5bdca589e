//! Models with symbolic dims: the output of `optimize` keeps them (and still runs at other
//! sizes), folds that need static sizes are skipped with a note, and `verify` takes
//! calibration data of any number of samples.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;

use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::ir::{Attributes, Tensor};
use onnx_shallow::onnx::{decode_model, encode_model, pb};
use onnx_shallow::passes::{self, Ctx};
use onnx_shallow::{Cost, Model, Options};

/// `optimize --exact --cost macs` with `extra` options; returns the written model.
fn optimize(input: &Path, output: &Path, extra: &[&str]) -> Model {
    let mut args = common::optimize_exact_args(input, output);
    args.extend(extra.iter().map(OsStr::new));
    let run = common::cli(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    onnx_shallow::load(output).unwrap()
}

/// The stored graph inputs and outputs, as declared.
fn declared(path: &Path) -> (Vec<pb::ValueInfoProto>, Vec<pb::ValueInfoProto>) {
    let graph = decode_model(&std::fs::read(path).unwrap(), path, path.parent())
        .unwrap()
        .graph
        .unwrap();
    (graph.input, graph.output)
}

/// Both models give the same outputs (within 1e-4 relative) at each of `dims`.
fn assert_same_outputs(a: &Model, b: &Model, dims: &[Vec<usize>]) {
    for d in dims {
        let (x, y) = (
            common::run_random(a, std::slice::from_ref(d), 7),
            common::run_random(b, std::slice::from_ref(d), 7),
        );
        for (x, y) in x.iter().zip(&y) {
            assert_eq!(x.shape(), y.shape(), "at {d:?}");
            let error = common::relative_error(x.view(), y.view());
            assert!(error <= 1e-4, "at {d:?}: relative error {error:e}");
        }
    }
}

/// PP-OCR's classifier declares its input `[-1, 3, ?, ?]`: pinned to analyse and verify,
/// and the output still declares (and accepts) any batch and any H×W.
#[test]
fn symbolic_batch_and_spatial_dims_stay_symbolic() {
    let input = common::testdata("ppocr_textline_cls.onnx");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    let optimized = optimize(&input, &output, &["--input-shape", "x:1,3,48,192"]);
    assert_eq!(declared(&output), declared(&input));
    let original = onnx_shallow::load(&input).unwrap();
    assert_same_outputs(
        &original,
        &optimized,
        &[vec![1, 3, 48, 192], vec![3, 3, 48, 100]],
    );
}

#[test]
fn a_symbolic_batch_stays_symbolic_through_folds() {
    let input = common::testdata("digits_mobilenetish.onnx");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    let optimized = optimize(&input, &output, &[]);
    assert_eq!(declared(&output), declared(&input));
    let original = onnx_shallow::load(&input).unwrap();
    assert_same_outputs(&original, &optimized, &[vec![1, 1, 8, 8], vec![5, 1, 8, 8]]);
}

/// x [N, 2, H, W] → 1×1 conv with a bias → padded 3×3 conv: exact as one conv only with
/// a per-position bias map, which needs static H×W.
fn pointwise_then_padded(dims: &[pb::tensor_shape_proto::Dimension]) -> Model {
    let mut proto = ModelBuilder::new(13)
        .input("x", &[1, 2, 1, 1])
        .initializer(
            "w1",
            Tensor::from_f32(vec![2, 2, 1, 1], &[1.0, 0.5, -0.5, 2.0]),
        )
        .initializer("b1", Tensor::from_f32(vec![2], &[0.25, -1.0]))
        .initializer(
            "w2",
            Tensor::from_f32(
                vec![2, 2, 3, 3],
                &(0..36).map(|i| i as f32 / 36.0).collect::<Vec<_>>(),
            ),
        )
        .node("Conv", &["x", "w1", "b1"], &["h"], Attributes::default())
        .node(
            "Conv",
            &["h", "w2"],
            &["y"],
            Attributes::default().with_ints("pads", &[1, 1, 1, 1]),
        )
        .output("y")
        .build();
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        input.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        unreachable!("the builder declares tensor inputs");
    };
    tensor.shape.as_mut().unwrap().dim = dims.to_vec();
    Model::from_proto(proto).unwrap()
}

fn dim(value: pb::tensor_shape_proto::dimension::Value) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        value: Some(value),
        ..Default::default()
    }
}

/// The pair folds only where its bias map can be built: with static H×W, not with a
/// symbolic one (the output must hold at every size the model accepts) unless the user
/// pins it.
#[test]
fn a_bias_map_fold_needs_static_spatial_dims() {
    use pb::tensor_shape_proto::dimension::Value::{DimParam, DimValue};
    let options = Options {
        cost: Cost::Macs,
        ..Options::default()
    };
    let symbolic = [
        dim(DimParam("N".into())),
        dim(DimValue(2)),
        dim(DimParam("H".into())),
        dim(DimParam("W".into())),
    ];
    // Unpinned, the passes leave the pair alone; and `optimize`, which verifies its output
    // on data of the input's dims, asks for them.
    let mut unpinned = pointwise_then_padded(&symbolic);
    let mut ctx = Ctx::default();
    *ctx.cost.borrow_mut() = Cost::Macs.into();
    let pipeline: Vec<_> = passes::canonical()
        .into_iter()
        .chain(passes::folding())
        .collect();
    let done = passes::run_pipeline(&pipeline, &mut unpinned.graph, &mut ctx).unwrap();
    assert!(done.folds.is_empty());
    assert_eq!(unpinned.graph.node_count(), 2);
    let error = onnx_shallow::optimize(pointwise_then_padded(&symbolic), &options).unwrap_err();
    assert!(error.to_string().contains("'x'"), "{error}");

    // Pinned, the pair folds at the pinned H×W, and the output says it runs only there.
    let pinned = Options {
        pinned: [("x".to_string(), vec![1, 2, 5, 7])].into(),
        ..options.clone()
    };
    let (sized, report) =
        onnx_shallow::optimize(pointwise_then_padded(&symbolic), &pinned).unwrap();
    assert_eq!(report.folds.len(), 1, "with pinned H×W the pair folds");
    assert!(
        report.notes.iter().any(|n| n.contains("pinned dims")),
        "{:?}",
        report.notes
    );
    let input = &sized.to_proto().unwrap().graph.unwrap().input[0];
    assert_eq!(dims_of(input), ["N", "2", "5", "7"]);
    assert_same_outputs(
        &pointwise_then_padded(&symbolic),
        &sized,
        &[vec![3, 2, 5, 7]],
    );
    let static_hw = [
        dim(DimParam("N".into())),
        dim(DimValue(2)),
        dim(DimValue(6)),
        dim(DimValue(6)),
    ];
    let (folded, report) =
        onnx_shallow::optimize(pointwise_then_padded(&static_hw), &options).unwrap();
    assert_eq!(report.folds.len(), 1, "with static H×W the pair folds");
    assert_same_outputs(
        &pointwise_then_padded(&static_hw),
        &folded,
        &[vec![3, 2, 6, 6]],
    );
}

/// A declared input's dims, numbers and names alike.
fn dims_of(info: &pb::ValueInfoProto) -> Vec<String> {
    use pb::tensor_shape_proto::dimension::Value::{DimParam, DimValue};
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("a tensor input");
    };
    tensor
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(DimValue(v)) => v.to_string(),
            Some(DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect()
}

/// An `.npy` file of `dims` float32 values counting up from 0 (scaled).
fn write_npy(path: &Path, dims: &[usize]) {
    let shape: Vec<String> = dims.iter().map(usize::to_string).collect();
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        shape.join(", ")
    );
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header);
    let count: usize = dims.iter().product();
    bytes.extend((0..count).flat_map(|i| ((i % 17) as f32 / 8.0 - 1.0).to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// A model declaring batch 1 and one declaring a symbolic batch both verify on 5 and on
/// 1 samples: samples go to tract in batches the model accepts.
#[test]
fn verify_takes_any_number_of_samples() {
    let dir = tempfile::tempdir().unwrap();
    for batch in [vec![1], vec![-1]] {
        let dims: Vec<i64> = [&batch[..], &[4]].concat();
        let model = ModelBuilder::new(13)
            .input("x", &dims)
            .initializer("w", Tensor::from_f32(vec![4, 3], &[0.5; 12]))
            .node("MatMul", &["x", "w"], &["y"], Attributes::default())
            .output("y")
            .build();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, encode_model(&model)).unwrap();
        for samples in [5, 1] {
            let data = dir.path().join("x.npy");
            write_npy(&data, &[samples, 4]);
            let run = common::cli(&[
                OsStr::new("verify"),
                path.as_os_str(),
                path.as_os_str(),
                OsStr::new("--inputs"),
                data.as_os_str(),
                OsStr::new("--json"),
            ]);
            assert_eq!(
                run.code, 0,
                "batch {batch:?}, {samples} samples: {}",
                run.stderr
            );
            let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(report["samples"], samples);
        }
    }
}
