//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Set by `.ci/run`: tests that read `../shared/` must fail, not skip, when it is missing.
pub const REQUIRE_SHARED: &str = "ONNX_SHALLOW_REQUIRE_SHARED";

/// `../shared/<relative>`, or `None` (with a message) when `../shared/` is absent and
/// not required.
pub fn shared(relative: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if !root.is_dir() {
        if std::env::var_os(REQUIRE_SHARED).is_some() {
            panic!(
                "{} is required ({REQUIRE_SHARED} is set) but absent",
                root.display()
            );
        }
        eprintln!("skipping: {} is absent", root.display());
        return None;
    }
    let path = root.join(relative);
    assert!(
        path.exists(),
        "{} is missing from ../shared/",
        path.display()
    );
    Some(path)
}

/// Set by `.ci/run`: tests that need ONNX Runtime's library must fail, not skip, when
/// `ORT_DYLIB_PATH` does not name one.
pub const REQUIRE_ORT: &str = "ONNX_SHALLOW_REQUIRE_ORT";

/// The ONNX Runtime library `ORT_DYLIB_PATH` names, or `None` (with a message) when it
/// is unset and not required.
pub fn ort_library() -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os(REQUIRE_ORT).is_some() => {
            panic!("ORT_DYLIB_PATH is required ({REQUIRE_ORT} is set) but unset")
        }
        None => {
            eprintln!("skipping: ORT_DYLIB_PATH does not name an ONNX Runtime library");
            None
        }
    }
}

/// Every shared model file (empty when `../shared/` is absent and not required).
pub fn shared_models() -> Vec<PathBuf> {
    let Some(dir) = shared("models") else {
        return Vec::new();
    };
    let mut models: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("shared/models is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    models
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The dims to run a shared model at: its declared input dims with the batch set to
/// `batch` (and the PP-OCR classifier's free H×W set to its 48×192).
pub fn input_dims(model: &onnx_shallow::Model, batch: usize) -> Vec<Vec<usize>> {
    use onnx_shallow::ir::shape;
    let shapes = shape::infer(&model.graph, &Default::default()).unwrap();
    model
        .graph
        .runtime_inputs()
        .map(|input| {
            let dims = shapes.get(input).dims.clone().expect("declared input dims");
            let free = [batch, 3, 48, 192];
            dims.iter()
                .enumerate()
                .map(|(i, d)| d.known().unwrap_or(free[i]))
                .collect()
        })
        .collect()
}

/// Runs a model in tract on seeded standard-normal inputs.
pub fn run_random(
    model: &onnx_shallow::Model,
    dims: &[Vec<usize>],
    seed: u64,
) -> Vec<ndarray::ArrayD<f32>> {
    use onnx_shallow::calib::random::{Rng, normal_array};
    let mut rng = Rng::new(seed);
    let inputs: Vec<_> = dims.iter().map(|d| normal_array(d, &mut rng)).collect();
    onnx_shallow::runtime::Session::new(model, dims)
        .unwrap()
        .run(&inputs)
        .unwrap()
}

/// The relative error of one output against its reference, as the tool reports it.
pub use onnx_shallow::runtime::compare::relative_error;

/// Runs both models in tract on the same seeded standard-normal inputs of `dims` and
/// returns the largest relative error over their outputs (NaN when one is NaN).
pub fn max_relative_error(
    reference: &onnx_shallow::Model,
    candidate: &onnx_shallow::Model,
    dims: &[Vec<usize>],
    seed: u64,
) -> f64 {
    let expected = run_random(reference, dims, seed);
    let actual = run_random(candidate, dims, seed);
    expected
        .iter()
        .zip(&actual)
        .map(|(r, c)| relative_error(r.view(), c.view()))
        .fold(0.0, |max, e| if e.is_nan() || e > max { e } else { max })
}

/// How many nodes of operator `op` the model has.
pub fn count(model: &onnx_shallow::Model, op: &str) -> usize {
    model.graph.nodes().filter(|(_, n)| n.op() == op).count()
}

/// Output of one run of the command-line tool.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `onnx-shallow` with the given arguments.
pub fn cli(args: &[&std::ffi::OsStr]) -> Run {
    run(std::process::Command::new(env!("CARGO_BIN_EXE_onnx-shallow")).args(args))
}

/// `optimize` of the bundled digits MobileNet into `output`, learning from its 64 bundled
/// samples with MAC costs, `extra` options after.
pub fn optimize_digits_calib(output: &Path, extra: &[&std::ffi::OsStr]) -> Run {
    optimize_on_digits(&testdata("digits_mobilenetish.onnx"), output, extra)
}

/// `optimize` of `model` (a digits model, input `input`) into `output` with the 64
/// bundled digits as `--calib` data and MAC costs, `extra` options after.
pub fn optimize_on_digits(model: &Path, output: &Path, extra: &[&std::ffi::OsStr]) -> Run {
    optimize_with_calib(model, &testdata("digits_test64.npz"), output, extra)
}

/// `optimize` of `model` (input `input`) into `output` with `data` (its array `input`) as
/// `--calib` data and MAC costs, `extra` options after.
pub fn optimize_with_calib(
    model: &Path,
    data: &Path,
    output: &Path,
    extra: &[&std::ffi::OsStr],
) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "optimize".as_ref(),
        model.as_os_str(),
        output.as_os_str(),
        "--calib".as_ref(),
        data.as_os_str(),
        "--calib-key".as_ref(),
        "input".as_ref(),
        "--cost".as_ref(),
        "macs".as_ref(),
    ];
    args.extend(extra);
    cli(&args)
}

/// x [1, 4] + RandomNormal: no two runs agree, so no rewrite of it can be verified.
pub fn random_normal_model() -> onnx_shallow::onnx::pb::ModelProto {
    use onnx_shallow::ir::{Attributes, builder::ModelBuilder};
    ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node(
            "RandomNormal",
            &[],
            &["r"],
            Attributes::default().with_ints("shape", &[1, 4]),
        )
        .node("Add", &["x", "r"], &["y"], Attributes::default())
        .output("y")
        .build()
}

/// Address space (KiB) the tool gets in `cli_bounded`: a few times what it needs for a
/// small model, far below what a hostile file claims.
pub const ADDRESS_SPACE_KB: u64 = 1 << 20;

/// x [1, 4] → MatMul(w [4, 4]) → Relu → y.
pub fn matmul_relu() -> onnx_shallow::onnx::pb::ModelProto {
    use onnx_shallow::ir::{Attributes, Tensor, builder::ModelBuilder};
    ModelBuilder::new(13)
        .input("x", &[1, 4])
        .initializer("w", Tensor::from_f32(vec![4, 4], &[0.25; 16]))
        .node("MatMul", &["x", "w"], &["h"], Attributes::default())
        .node("Relu", &["h"], &["y"], Attributes::default())
        .output("y")
        .build()
}

/// x [1, 4] + ConstantOfShape([2^20, 2^20, 4]): a value of 4·2^40 elements computed at
/// run time, which an engine must refuse to build.
pub fn huge_constant_of_shape() -> onnx_shallow::onnx::pb::ModelProto {
    use onnx_shallow::ir::{Attributes, Tensor, builder::ModelBuilder};
    ModelBuilder::new(13)
        .input("x", &[1, 4])
        .initializer("shape", Tensor::from_i64(vec![3], &[1 << 20, 1 << 20, 4]))
        .node("ConstantOfShape", &["shape"], &["c"], Attributes::default())
        .node("Add", &["x", "c"], &["y"], Attributes::default())
        .output("y")
        .build()
}

/// The arguments of `optimize INPUT OUTPUT --exact --cost macs` (exact rewrites, nothing
/// timed).
pub fn optimize_exact_args<'a>(input: &'a Path, output: &'a Path) -> Vec<&'a std::ffi::OsStr> {
    use std::ffi::OsStr;
    vec![
        OsStr::new("optimize"),
        input.as_os_str(),
        output.as_os_str(),
        OsStr::new("--exact"),
        OsStr::new("--cost"),
        OsStr::new("macs"),
    ]
}

/// Runs `onnx-shallow` with its address space limited to `ADDRESS_SPACE_KB`: allocating
/// what a hostile file claims then kills the tool (and fails the test) instead of
/// swapping the machine.
pub fn cli_bounded(args: &[&std::ffi::OsStr]) -> Run {
    run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_onnx-shallow"))
        .args(args))
}

fn run(command: &mut std::process::Command) -> Run {
    let out = command.output().expect("the binary runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Checks the failure contract of one run: exit code 2, one line on stderr holding every
/// `expected` piece, no panic.
pub fn assert_one_line_error(run: &Run, expected: &[&str]) {
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "one line: {}",
        run.stderr
    );
    for needle in expected {
        assert!(
            run.stderr.contains(needle),
            "'{needle}' missing from: {}",
            run.stderr
        );
    }
}

/// Writes `bytes` as `bad.onnx` in `dir`, runs `optimize --exact` and `inspect` on it
/// (address space bounded), and checks the failure contract for both: exit 2, one line
/// naming what is wrong, no output or temporary file left, the input untouched. Returns
/// optimize's error line.
pub fn assert_refused(dir: &Path, bytes: &[u8], expected: &[&str]) -> String {
    check_refusal(dir, bytes, expected, true)
}

/// Like `assert_refused` for a model that only claims too much (a huge value computed at
/// run time): `optimize` refuses it, `inspect`, which computes nothing, reports it.
pub fn assert_optimize_refused(dir: &Path, bytes: &[u8], expected: &[&str]) -> String {
    check_refusal(dir, bytes, expected, false)
}

fn check_refusal(dir: &Path, bytes: &[u8], expected: &[&str], inspect_refuses: bool) -> String {
    let input = dir.join("bad.onnx");
    std::fs::write(&input, bytes).unwrap();
    let before = files_in(dir);
    let output = dir.join("out.onnx");
    let optimize = cli_bounded(&optimize_exact_args(&input, &output));
    assert_one_line_error(&optimize, expected);
    let inspect = cli_bounded(&[std::ffi::OsStr::new("inspect"), input.as_os_str()]);
    if inspect_refuses {
        assert_one_line_error(&inspect, expected);
    } else {
        assert_eq!(inspect.code, 0, "inspect: {}", inspect.stderr);
    }
    assert_eq!(files_in(dir), before, "files were left behind");
    assert_eq!(std::fs::read(&input).unwrap(), bytes, "the input changed");
    optimize.stderr
}

/// Files in `dir`, sorted, for checking that nothing (partial or temporary) was left.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every way a JSON document breaks `docs/report.schema.json` (none when it is valid).
pub fn report_schema_errors(doc: &serde_json::Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("{e} at '{}'", e.instance_path()))
        .collect()
}

/// Parses a command's JSON output and checks it against the schema.
pub fn valid_report(text: &str) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_str(text).expect("the output is JSON");
    let errors = report_schema_errors(&doc);
    assert!(errors.is_empty(), "{}\nin {doc:#}", errors.join("\n"));
    doc
}

/// Top-1 accuracy, in percent, of output `output` of `model` against `labels`.
pub fn top1_accuracy(
    model: &onnx_shallow::Model,
    inputs: &onnx_shallow::calib::ModelInputs,
    output: usize,
    labels: &[i64],
) -> f64 {
    let scores = &onnx_shallow::runtime::run_all(model, inputs, 32).unwrap()[output];
    let correct = scores
        .outer_iter()
        .zip(labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            best.0 as i64 == **label
        })
        .count();
    100.0 * correct as f64 / labels.len() as f64
}
