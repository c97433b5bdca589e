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

/// Output of one run of the command-line tool.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `onnx-shallow` with the given arguments.
pub fn cli(args: &[&std::ffi::OsStr]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnx-shallow"))
        .args(args)
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
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
