//! `optimize --calib` from the command line, on the bundled digits MobileNet and its 64
//! bundled samples (no ../shared needed): the walk, the report, the plot, and bad data.

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{cli, files_in, optimize_digits_calib, testdata, valid_report};

#[test]
fn learns_writes_the_chosen_step_and_reports_the_walk() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("out.onnx"), dir.path().join("report.json"));
    let plot = dir.path().join("walk.svg");
    let (model, data) = (
        testdata("digits_mobilenetish.onnx"),
        testdata("digits_test64.npz"),
    );
    let run = optimize_digits_calib(
        &out,
        &[
            "--report".as_ref(),
            report.as_os_str(),
            "--seed".as_ref(),
            "7".as_ref(),
            "--plot".as_ref(),
            plot.as_os_str(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("activations removed"), "{}", run.stdout);
    let doc = valid_report(&std::fs::read_to_string(&report).unwrap());
    let mut unmeasured = doc.clone();
    unmeasured["learning"]["walk"]["steps"][1]
        .as_object_mut()
        .unwrap()
        .remove("mac_ratio");
    assert!(!common::report_schema_errors(&unmeasured).is_empty());
    let walk = &doc["learning"]["walk"];
    assert_eq!(doc["seed"], 7);
    let steps = walk["steps"].as_array().expect("the walk's steps");
    let chosen = walk["chosen"].as_u64().unwrap() as usize;
    assert!(steps.len() >= 2, "every candidate group is measured");
    assert_eq!(steps[0]["groups"], 0);
    assert_eq!(steps[chosen]["within_budget"], true);
    // Judged at the worst end of each interval, which holds the figure.
    assert_eq!(
        walk["held_out"],
        serde_json::json!({ "samples": 13, "groups": null, "confidence": 0.95, "splits": 1 })
    );
    let intervals = &steps[chosen]["intervals"];
    let (low, high) = (
        &intervals["agreement"]["low"],
        &intervals["agreement"]["high"],
    );
    let agreement = steps[chosen]["agreement"].as_f64().unwrap();
    assert!(low.as_f64().unwrap() <= agreement && agreement <= high.as_f64().unwrap());
    let flips = intervals["pairwise_flips"]["high"].as_f64().unwrap();
    let drop = (1.0 - low.as_f64().unwrap()).max(flips);
    assert!(
        100.0 * drop <= 5.0,
        "--max-drop 5 holds the worst end: {drop}"
    );
    assert!(
        run.stdout.contains(
            "each step judged at the worst end of its 95 % intervals: 13 held-out samples resampled one by one (the data has no groups)"
        ),
        "{}",
        run.stdout
    );
    // The written model is what the chosen step measured.
    let written = onnx_shallow::load(&out).unwrap();
    let activations = onnx_shallow::passes::activations(&written.graph).unwrap();
    // Activations are recognised after the canonical rewrites: count them on the exact step.
    let exact = onnx_shallow::Options {
        cost: onnx_shallow::Cost::Macs,
        ..Default::default()
    };
    let (base, _) = onnx_shallow::optimize(onnx_shallow::load(&model).unwrap(), &exact).unwrap();
    let before = onnx_shallow::passes::activations(&base.graph).unwrap();
    let removed = steps[chosen]["removed"].as_array().unwrap().len();
    assert_eq!(activations.len() + removed, before.len());
    assert_plots_the_walk(&std::fs::read_to_string(&plot).unwrap(), steps.len());

    // `verify` on the same held-out samples measures what the report says.
    let verify = verify_held_out(&model, &out, &data, &["--seed", "7", "--json"]);
    let verified = valid_report(&verify.stdout);
    assert_eq!(doc["fidelity"]["samples"], verified["samples"]);
    assert_eq!(verified["samples"], 13, "20 % of 64 held out");
    assert_eq!(
        without_pass(&doc["fidelity"]["outputs"]),
        without_pass(&verified["outputs"])
    );
}

fn without_pass(outputs: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut outputs = outputs.as_array().unwrap().clone();
    for output in &mut outputs {
        output.as_object_mut().unwrap().remove("pass");
    }
    outputs
}

/// One point per step joined by the walk's line, the chosen one ringed, axes labelled.
fn assert_plots_the_walk(svg: &str, steps: usize) {
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("class=\"step\"").count(), steps);
    assert_eq!(svg.matches("class=\"chosen\"").count(), 1);
    let line = svg
        .split("<polyline class=\"walk\" points=\"")
        .nth(1)
        .unwrap();
    let points = line.split('"').next().unwrap();
    assert_eq!(points.split(' ').count(), steps);
    assert!(svg.contains("top-1 agreement"));
    assert_eq!(svg.matches("class=\"interval\"").count(), steps);
    assert!(
        svg.contains("MAC ratio"),
        "--cost macs: the estimate is labelled"
    );
}

#[test]
fn bad_calibration_data_is_an_error_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let model = testdata("digits_mobilenetish.onnx");
    let missing = dir.path().join("missing.npz");
    let run = cli(&[
        "optimize".as_ref(),
        model.as_os_str(),
        out.as_os_str(),
        "--calib".as_ref(),
        missing.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("missing.npz"), "{}", run.stderr);
    assert!(files_in(dir.path()).is_empty());
    let run = cli(&[
        "optimize".as_ref(),
        model.as_os_str(),
        out.as_os_str(),
        "--calib".as_ref(),
        testdata("digits_test64.npz").as_os_str(),
        "--calib-key".as_ref(),
        "nope".as_ref(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("nope"), "{}", run.stderr);
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn options_no_run_can_honour_are_refused_naming_them_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let (model, data) = (
        testdata("digits_mobilenetish.onnx"),
        testdata("digits_test64.npz"),
    );
    let cases = [
        (["--batch", "0"], "--batch 0"),
        (["--lr", "-0.1"], "--lr -0.1"),
        (["--threshold", "1.5"], "--threshold 1.5"),
        (["--max-drop", "-1"], "--max-drop -1"),
        (["--max-error", "NaN"], "--max-error NaN"),
        (["--target-speedup", "0.8"], "--target-speedup 0.8"),
        (["--weight-lr", "0"], "--weight-lr 0"),
        (["--warmup", "1"], "--warmup 1"),
        (["--label-weight", "-1"], "--label-weight -1"),
        (["--steps", "0"], "--steps 0: expected at least 1 step"),
        (["--threads", "0"], "threads 0"),
        (["--crop-scale", "0.5,0.2"], "--augment"),
        (["--crop-ratio", "2"], "--augment"),
        (
            ["--confidence", "1"],
            "--confidence 1: expected a level in (0, 1)",
        ),
    ];
    for ([flag, value], named) in cases {
        let run = cli(&[
            "optimize".as_ref(),
            model.as_os_str(),
            out.as_os_str(),
            "--calib".as_ref(),
            data.as_os_str(),
            flag.as_ref(),
            value.as_ref(),
        ]);
        assert_eq!(run.code, 2, "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains(named), "{}", run.stderr);
        assert!(files_in(dir.path()).is_empty());
    }
}

/// With `--cost macs` the exact-only step's speedup is its MAC ratio (PP-OCR: 0.995×),
/// so a target of 1.001× is reached before any learned step.
#[test]
fn a_target_speedup_the_exact_only_model_reaches_ends_the_walk_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let model = testdata("ppocr_textline_cls.onnx");
    let args = [
        "--synthetic",
        "8",
        "--cost",
        "macs",
        "--input-shape",
        "x:1,3,48,192",
        "--epochs",
        "1",
    ];
    let run = |target: &str| {
        let mut argv: Vec<&OsStr> = vec!["optimize".as_ref(), model.as_os_str(), out.as_os_str()];
        let target = ["--target-speedup", target, "--force"];
        argv.extend(args.iter().chain(&target).map(OsStr::new));
        cli(&argv)
    };
    let reached = run("1.001");
    assert_eq!(reached.code, 0, "{}", reached.stderr);
    assert!(
        reached
            .stdout
            .contains("the exact-only model reaches the target speedup: writing it"),
        "{}",
        reached.stdout
    );
    assert!(!reached.stdout.contains("no step of the schedule fits"));
    let walked = run("100");
    assert!(
        !walked.stdout.contains("reaches the target speedup"),
        "{}",
        walked.stdout
    );
}

/// `digits_test64.npz`'s inputs with a `group` array: 8 groups of 8 consecutive samples.
fn grouped_digits(path: &Path) {
    use std::io::{Read, Write};
    let mut input = Vec::new();
    let mut digits =
        zip::ZipArchive::new(std::fs::File::open(testdata("digits_test64.npz")).unwrap()).unwrap();
    digits
        .by_name("input.npy")
        .unwrap()
        .read_to_end(&mut input)
        .unwrap();
    let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (64,), }";
    let padded = format!("{header:<117}\n");
    let mut group = b"\x93NUMPY\x01\x00".to_vec();
    group.extend((padded.len() as u16).to_le_bytes());
    group.extend(padded.as_bytes());
    group.extend((0..64i64).flat_map(|i| (i / 8).to_le_bytes()));
    let mut npz = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in [("input.npy", input), ("group.npy", group)] {
        npz.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        npz.write_all(&bytes).unwrap();
    }
    npz.finish().unwrap();
}

/// The grouped digits written in `dir`, and where a run on them writes its model and
/// report.
fn grouped_digits_run(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("grouped.npz");
    grouped_digits(&data);
    (data, dir.join("out.onnx"), dir.join("report.json"))
}

#[test]
fn grouped_data_is_resampled_by_group_and_few_held_out_groups_are_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out, report) = grouped_digits_run(dir.path());
    let model = testdata("digits_mobilenetish.onnx");
    let args: [&OsStr; 4] = [
        "--max-drop".as_ref(),
        "5".as_ref(),
        "--report".as_ref(),
        report.as_os_str(),
    ];
    let run = common::optimize_with_calib(&model, &data, &out, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("16 held-out samples from 2 groups, resampled whole"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("warning: agreement estimated from 2 held-out groups of samples: its 95 % interval is up to ±"),
        "{}",
        run.stderr
    );
    let doc = valid_report(&std::fs::read_to_string(&report).unwrap());
    assert_eq!(doc["learning"]["walk"]["held_out"]["groups"], 2);
    assert_eq!(doc["fidelity"]["groups"], 2);
    // `verify` on the same held-out groups gives the same intervals.
    let verify = verify_held_out(&model, &out, &data, &[]);
    assert!(
        verify
            .stdout
            .contains("intervals at 95 %: 16 samples from 2 groups, resampled whole"),
        "{}",
        verify.stdout
    );
    let json = verify_held_out(&model, &out, &data, &["--json"]);
    let verified = valid_report(&json.stdout);
    assert_eq!(verified["groups"], 2);
    assert_eq!(
        verified["outputs"][0]["intervals"],
        doc["fidelity"]["outputs"][0]["intervals"]
    );
}

#[test]
fn k_folds_hold_every_group_out_once_and_pool_the_walk_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out, report) = grouped_digits_run(dir.path());
    let model = testdata("digits_mobilenetish.onnx");
    let run_with = |extra: &[&OsStr]| {
        let mut args: Vec<&OsStr> = vec!["--max-drop".as_ref(), "5".as_ref(), "--force".as_ref()];
        args.extend(extra);
        common::optimize_with_calib(&model, &data, &out, &args)
    };
    let run = run_with(&[
        "--folds".as_ref(),
        "4".as_ref(),
        "--report".as_ref(),
        report.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "64 held-out samples from 8 groups, resampled whole, pooled over 4 folds (each sample held out once)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("(fold 1 of 4; each fold is held out in turn)"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("held-out groups of samples"),
        "{}",
        run.stderr
    );
    let doc = valid_report(&std::fs::read_to_string(&report).unwrap());
    let walk = &doc["learning"]["walk"];
    assert_eq!(
        walk["held_out"],
        serde_json::json!({ "samples": 64, "groups": 8, "confidence": 0.95, "splits": 4 })
    );
    assert_eq!(doc["fidelity"]["samples"], 64);
    // Every step's figures rest on all 64 samples: a step that loses agreement shows it
    // on the pooled outcomes, inside its interval.
    for step in walk["steps"].as_array().unwrap() {
        let intervals = &step["intervals"]["agreement"];
        let agreement = step["agreement"].as_f64().unwrap();
        assert!(
            (agreement * 64.0 - (agreement * 64.0).round()).abs() < 1e-9,
            "{step}"
        );
        assert!(intervals["low"].as_f64().unwrap() <= agreement);
        assert!(agreement <= intervals["high"].as_f64().unwrap());
    }

    let too_many = run_with(&["--folds".as_ref(), "9".as_ref()]);
    assert_eq!(too_many.code, 2, "{}", too_many.stderr);
    assert!(
        too_many
            .stderr
            .contains("cannot deal 8 group(s) of samples into 9 folds, each group whole"),
        "{}",
        too_many.stderr
    );
    let checkpointed = run_with(&[
        "--folds".as_ref(),
        "4".as_ref(),
        "--checkpoint".as_ref(),
        dir.path().join("state").as_os_str(),
    ]);
    assert_eq!(checkpointed.code, 2, "{}", checkpointed.stderr);
}

/// `verify MODEL OUT` on the part of array `input` of `data` that `--holdout 0.2` held out.
fn verify_held_out(model: &Path, out: &Path, data: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "verify".as_ref(),
        model.as_os_str(),
        out.as_os_str(),
        "--inputs".as_ref(),
        data.as_os_str(),
        "--inputs-key".as_ref(),
        "input".as_ref(),
        "--held-out".as_ref(),
        "0.2".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    cli(&args)
}
