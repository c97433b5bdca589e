//! Load → IR → canonical rewrites → save → load, external data confined to a sandbox
//! (see `onnx_shallow::fuzzing::Sandbox`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use onnx_shallow::fuzzing::Sandbox;

static ROOT: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a temporary folder"));
static SANDBOX: LazyLock<Sandbox> =
    LazyLock::new(|| Sandbox::create(ROOT.path()).expect("the sandbox folder"));

fuzz_target!(
    init: {
        // Constant folding catches tract's panics on malformed nodes (they mean "cannot
        // evaluate"); libfuzzer-sys's hook would abort on them first, so restore the default.
        let _ = std::panic::take_hook();
    },
    |bytes: &[u8]| SANDBOX.load_rewrite_save(bytes)
);
