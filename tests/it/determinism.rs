//! The same input and options give a byte-identical output file. (With measured costs,
//! the same cost cache does: `optimize_exact.rs`.) A learned run with `--cost macs`
//! chooses by MACs, so the same seed gives the same file too.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;

fn optimized_bytes(input: &Path, output: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        OsStr::new("optimize"),
        input.as_os_str(),
        output.as_os_str(),
        OsStr::new("--cost"),
        OsStr::new("macs"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let run = common::cli(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    std::fs::read(output).unwrap()
}

#[test]
fn mac_costs_give_byte_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let calib = common::testdata("digits_test64.npz");
    let learned = [
        "--calib",
        calib.to_str().unwrap(),
        "--calib-key",
        "input",
        "--epochs",
        "3",
        "--seed",
        "5",
    ];
    for (model, extra) in [
        (
            "ppocr_textline_cls.onnx",
            &["--exact", "--input-shape", "x:1,3,48,192"][..],
        ),
        // Every activation linearised: the folds run, and their order matters.
        ("digits_mobilenetish.onnx", &["--linearize", "*"][..]),
        ("digits_mobilenetish.onnx", &learned[..]),
    ] {
        let input = common::testdata(model);
        let first = optimized_bytes(&input, &dir.path().join("a.onnx"), extra);
        let second = optimized_bytes(&input, &dir.path().join("b.onnx"), extra);
        assert!(first == second, "{model}: two runs wrote different bytes");
    }
}
