//! Broken and hostile input files: each gives a one-line error naming what is wrong,
//! exit code 2, no panic, no output file, no temporary file, and an untouched input.

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use onnx_shallow::ir::Attributes;
use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::onnx::{encode_model, pb};

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
    let bytes = encode_model(&common::matmul_relu());
    assert_refused(
        &bytes[..bytes.len() * 2 / 3],
        &["bad.onnx", "not a valid ONNX model"],
    );
}

#[test]
fn tensor_data_shorter_than_its_dims() {
    let mut model = common::matmul_relu();
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
    let mut model = common::matmul_relu();
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
fn external_data_through_a_symlinked_folder_leading_out_is_refused() {
    let (root, model_dir, _) = folder_with_outside_file();
    std::os::unix::fs::symlink(root.path(), model_dir.join("up")).unwrap();
    common::assert_refused(
        &model_dir,
        &external_model("up/secret.bin"),
        &["tensor 'w'", "outside the model's folder"],
    );
}

#[test]
fn external_data_through_a_symlink_staying_inside_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), [0u8; 64]).unwrap();
    std::os::unix::fs::symlink("w.bin", dir.path().join("link.bin")).unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, external_model("link.bin")).unwrap();
    assert!(onnx_shallow::load(&path).is_ok());
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

/// Every file of `dir` (names and bytes; folders by name), to check that a failed run
/// wrote, removed and changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    common::files_in(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).ok();
            (name, bytes)
        })
        .collect()
}

/// `m.onnx` (x [1, 4] → MatMul → Relu → y), `other.onnx` (its output named z),
/// `random.onnx` (x + RandomNormal: no two runs agree), `symbolic.onnx` (x [N, C]: data
/// for it needs pinned dims), `link.onnx` → `m.onnx`, a corrupt cost cache, an empty
/// folder `sub`.
fn failure_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, model: &pb::ModelProto| {
        std::fs::write(dir.path().join(name), encode_model(model)).unwrap()
    };
    write("m.onnx", &common::matmul_relu());
    let mut other = common::matmul_relu();
    let graph = other.graph.as_mut().unwrap();
    graph.node[1].output[0] = "z".into();
    graph.output[0].name = Some("z".into());
    write("other.onnx", &other);
    write("random.onnx", &common::random_normal_model());
    let symbolic = ModelBuilder::new(13)
        .input("x", &[-1, -1])
        .node("Relu", &["x"], &["y"], Attributes::default())
        .output("y")
        .build();
    write("symbolic.onnx", &symbolic);
    std::os::unix::fs::symlink("m.onnx", dir.path().join("link.onnx")).unwrap();
    std::fs::write(dir.path().join("cache.json"), "{not json").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    dir
}

/// Each failure of each command: its exit code (2 for an error, 1 for an output that
/// fails its own verification), one line on stderr naming what and where, and every
/// file as it was: nothing written, nothing left behind, no input changed. Arguments
/// starting with `@` are paths in the folder.
#[test]
fn every_command_fails_cleanly() {
    let dir = failure_folder();
    let cases: &[(&[&str], i32, &[&str])] = &[
        (
            &["optimize", "@m.onnx", "@missing/out.onnx", "--exact"],
            2,
            &["missing/out.onnx", "does not exist"],
        ),
        (
            &["optimize", "@m.onnx", "@sub", "--exact"],
            2,
            &["sub", "is a folder"],
        ),
        (
            &[
                "optimize",
                "@m.onnx",
                "@out.onnx",
                "--exact",
                "--report",
                "@missing/r.json",
            ],
            2,
            &["r.json", "does not exist"],
        ),
        (
            &[
                "optimize",
                "@m.onnx",
                "@out.onnx",
                "--exact",
                "--input-shape",
                "x:1,a",
            ],
            2,
            &["--input-shape 'x:1,a'"],
        ),
        (
            &[
                "optimize",
                "@m.onnx",
                "@out.onnx",
                "--exact",
                "--input-shape",
                "nosuch:1,4",
            ],
            2,
            &["'nosuch'", "not an input", "x"],
        ),
        (
            &[
                "optimize",
                "@m.onnx",
                "@out.onnx",
                "--exact",
                "--passes",
                "nope",
            ],
            2,
            &["unknown pass 'nope'"],
        ),
        (
            &[
                "optimize",
                "@m.onnx",
                "@out.onnx",
                "--linearize",
                "nomatch*",
            ],
            2,
            &["'nomatch*'", "Relu_1"],
        ),
        (&["optimize", "@m.onnx", "@out.onnx"], 2, &["--exact"]),
        (
            &["optimize", "@m.onnx", "@m.onnx", "--exact"],
            2,
            &["m.onnx", "--force"],
        ),
        (
            &["optimize", "@m.onnx", "@sub/../m.onnx", "--exact"],
            2,
            &["m.onnx", "--force"],
        ),
        (
            &["optimize", "@m.onnx", "@link.onnx", "--exact"],
            2,
            &["link.onnx", "--force"],
        ),
        (
            &[
                "optimize",
                "@m.onnx",
                "@out.onnx",
                "--exact",
                "--cost-cache",
                "@cache.json",
            ],
            2,
            &["cache.json"],
        ),
        (
            &["optimize", "@symbolic.onnx", "@out.onnx", "--exact"],
            2,
            &["'x'", "--input-shape"],
        ),
        (
            &[
                "optimize",
                "@random.onnx",
                "@out.onnx",
                "--exact",
                "--cost",
                "macs",
            ],
            1,
            &["nothing was written"],
        ),
        (
            &["verify", "@m.onnx", "@missing.onnx"],
            2,
            &["missing.onnx", "No such file"],
        ),
        (
            &["verify", "@m.onnx", "@m.onnx", "--inputs", "@missing.npy"],
            2,
            &["missing.npy"],
        ),
        (&["verify", "@m.onnx", "@other.onnx"], 2, &["[y]", "[z]"]),
        (
            &["verify", "@m.onnx", "@m.onnx", "--preprocess", "imagenet"],
            2,
            &["--preprocess", "--inputs"],
        ),
        (
            &["verify", "@symbolic.onnx", "@symbolic.onnx"],
            2,
            &["'x'", "--input-shape"],
        ),
        (
            &["inspect", "@m.onnx", "--input-shape", "x:0"],
            2,
            &["--input-shape 'x:0'"],
        ),
        (
            &["inspect", "@m.onnx", "--input-shape", "nosuch:1,4"],
            2,
            &["'nosuch'", "not an input"],
        ),
    ];
    for (args, code, expected) in cases {
        let args: Vec<std::ffi::OsString> = args
            .iter()
            .map(|a| match a.strip_prefix('@') {
                Some(name) => dir.path().join(name).into_os_string(),
                None => a.into(),
            })
            .collect();
        let before = snapshot(dir.path());
        let run = common::cli(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
        assert_eq!(run.code, *code, "{args:?}: {}", run.stderr);
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line: {}", run.stderr);
        for needle in *expected {
            assert!(
                errors[0].contains(needle),
                "{args:?}: '{needle}' missing from {}",
                errors[0]
            );
        }
        assert!(
            snapshot(dir.path()) == before,
            "{args:?} changed the folder"
        );
    }
}

#[test]
fn output_over_the_input_is_written_with_force() {
    let dir = failure_folder();
    let input = dir.path().join("m.onnx");
    let before = std::fs::read(&input).unwrap();
    let run = common::cli(&[
        OsStr::new("optimize"),
        input.as_os_str(),
        input.as_os_str(),
        OsStr::new("--exact"),
        OsStr::new("--cost"),
        OsStr::new("macs"),
        OsStr::new("--force"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = onnx_shallow::load(&input).unwrap();
    assert!(after.metadata("onnx_shallow.version").is_some());
    assert_ne!(std::fs::read(&input).unwrap(), before);
}
