//! A model over protobuf's 2 GiB limit: read with external data, optimized, written with
//! its tensors in external data automatically. (`tests/it/save.rs` runs the same saving path
//! on a small model with the size limit lowered.)

use crate::common;

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::ir::{Attributes, Tensor};
use onnx_shallow::onnx::{encode_model, pb};
use prost::Message;

const K: usize = 1024;
/// K·N float weights: just over 2 GiB.
const N: usize = 513 * 1024;

#[test]
#[ignore = "writes 4 GB of files and needs about 15 GB of memory; run with --ignored"]
fn a_model_over_2_gib_is_optimized_and_written_with_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("in.onnx.data");
    let mut file = BufWriter::new(File::create(&weights).unwrap());
    for i in 0..K * N {
        let value = ((i % 251) as f32 - 125.0) / 1024.0;
        file.write_all(&value.to_le_bytes()).unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    let mut model = ModelBuilder::new(13)
        .input("x", &[1, K as i64])
        .initializer("w", Tensor::from_f32(vec![1], &[0.0]))
        .initializer("b", Tensor::from_f32(vec![N], &vec![0.5; N]))
        .node("MatMul", &["x", "w"], &["h"], Attributes::default())
        .node("Add", &["h", "b"], &["y"], Attributes::default())
        .output("y")
        .build();
    let w = &mut model.graph.as_mut().unwrap().initializer[0];
    w.dims = vec![K as i64, N as i64];
    point_at(w, "in.onnx.data", 0);
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, encode_model(&model)).unwrap();

    let run = common::cli(&common::optimize_exact_args(&input, &output));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("matmul_add_to_gemm"), "{}", run.stdout);

    let saved = pb::ModelProto::decode(&std::fs::read(&output).unwrap()[..]).unwrap();
    let graph = saved.graph.unwrap();
    let gemm = graph.node.iter().find(|n| n.op_type() == "Gemm").unwrap();
    let weight = graph
        .initializer
        .iter()
        .find(|t| t.name() == gemm.input[1])
        .unwrap();
    assert_eq!(weight.dims, [K as i64, N as i64]);
    let entry = |key: &str| {
        let entry = weight.external_data.iter().find(|e| e.key() == key);
        entry.unwrap().value().to_string()
    };
    assert_eq!(entry("location"), "out.onnx.data");
    let offset = entry("offset").parse().unwrap();
    assert!(
        same_bytes(
            &weights,
            0,
            &dir.path().join("out.onnx.data"),
            offset,
            K * N * 4
        ),
        "the weights changed"
    );
}

/// Points `tensor` at its data in `location`, from `offset` on.
fn point_at(tensor: &mut pb::TensorProto, location: &str, offset: u64) {
    let entry = |key: &str, value: String| pb::StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    };
    tensor.raw_data = None;
    tensor.external_data = vec![
        entry("location", location.into()),
        entry("offset", offset.to_string()),
    ];
    tensor.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
}

/// `len` bytes of `a` from `a_offset` equal those of `b` from `b_offset`, compared a
/// chunk at a time.
fn same_bytes(a: &Path, a_offset: u64, b: &Path, b_offset: u64, len: usize) -> bool {
    let open = |path: &Path, offset: u64| {
        let mut file = File::open(path).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        BufReader::new(file.take(len as u64))
    };
    let (mut a, mut b) = (open(a, a_offset), open(b, b_offset));
    let (mut x, mut y) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    let mut left = len;
    while left > 0 {
        let n = left.min(x.len());
        a.read_exact(&mut x[..n]).unwrap();
        b.read_exact(&mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        left -= n;
    }
    true
}
