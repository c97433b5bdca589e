//! Replays every input the fuzzers kept (`fuzz/corpus/<target>/`) through the same
//! entry point the fuzz target calls, so CI guards what fuzzing found without running
//! the fuzzer.

use std::path::{Path, PathBuf};

use onnx_shallow::fuzzing::{self, Sandbox};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

#[test]
fn load_rewrite_save_corpus() {
    let root = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::create(root.path()).unwrap();
    for file in corpus("load_rewrite_save") {
        eprintln!("{}", file.display());
        sandbox.load_rewrite_save(&std::fs::read(&file).unwrap());
    }
}

#[test]
fn fold_math_corpus() {
    for file in corpus("fold_math") {
        fuzzing::fold_math(&std::fs::read(&file).unwrap());
    }
}
