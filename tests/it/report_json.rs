//! The JSON documents against `docs/report.schema.json`: real reports validate, the schema
//! rejects broken ones, and `optimize --report`'s fidelity is what `verify` says of the
//! same files.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

/// Runs `optimize` with `options` on the digits MobileNet, returning the report and the
/// output model's path.
fn optimize_report(dir: &Path, options: &[&str]) -> (Value, std::path::PathBuf) {
    let (output, report) = (dir.join("out.onnx"), dir.join("report.json"));
    let input = common::testdata("digits_mobilenetish.onnx");
    let mut args = vec![
        OsStr::new("optimize"),
        input.as_os_str(),
        output.as_os_str(),
        OsStr::new("--report"),
        report.as_os_str(),
    ];
    args.extend(options.iter().map(OsStr::new));
    let run = common::cli(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The before/after table is the last thing printed, agreement included.
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("top-1 agreement"), "{}", run.stdout);
    let text = std::fs::read_to_string(&report).unwrap();
    (common::valid_report(&text), output)
}

#[test]
fn the_schema_is_a_valid_json_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(jsonschema::meta::is_valid(&schema));
}

#[test]
fn exact_report_validates_and_its_fidelity_is_what_verify_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (report, output) = optimize_report(dir.path(), &["--exact", "--cost", "macs"]);
    assert_eq!(report["command"], "optimize");
    assert_eq!(report["options"]["exact"], true);
    assert_eq!(report["before"]["ops"]["Constant"], 12);
    assert!(report["after"]["ops"].get("Constant").is_none());
    let pass = |name: &str| {
        report["passes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pass"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(pass("constant_to_initializer")["patches"], 12);
    assert_eq!(report["verification"]["against"], "original");
    assert_eq!(report["verification"]["pass"], true);
    assert_eq!(report["latency"]["pairs"], 30);

    let input = common::testdata("digits_mobilenetish.onnx");
    let verify = common::cli(&[
        OsStr::new("verify"),
        input.as_os_str(),
        output.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let verified = common::valid_report(&verify.stdout);
    assert_eq!(report["fidelity"]["inputs"], verified["inputs"]);
    let without_pass = |outputs: &Value| -> Vec<Value> {
        let mut outputs = outputs.as_array().unwrap().clone();
        for output in &mut outputs {
            output.as_object_mut().unwrap().remove("pass");
        }
        outputs
    };
    assert_eq!(
        without_pass(&report["fidelity"]["outputs"]),
        without_pass(&verified["outputs"])
    );
}

#[test]
fn linearised_report_lists_the_removed_activations_and_the_folds() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = optimize_report(dir.path(), &["--linearize", "*", "--cost", "macs"]);
    let removed = report["activations_removed"].as_array().unwrap();
    // The model's 6 Clips and 4 HardSwish (as x·HardSigmoid(x)).
    assert_eq!(removed.len(), 10, "{removed:#?}");
    assert_eq!(removed.iter().filter(|a| a["op"] == "HardSwish").count(), 4);
    assert!(removed.iter().all(|a| a["gate"].is_null()));
    assert_eq!(report["verification"]["against"], "linearised");
    let folds = report["folds"].as_array().unwrap();
    assert!(!folds.is_empty());
    assert!(
        folds
            .iter()
            .all(|f| f["sources"].as_array().unwrap().len() >= 2)
    );
    assert!(folds.iter().any(|f| f["forced"] == true));
    // Linearising changed the network: the fidelity to the original says so.
    assert!(
        report["fidelity"]["outputs"][0]["max_rel_error"]
            .as_f64()
            .unwrap()
            > 1e-3
    );
}

#[test]
fn inspect_and_verify_documents_validate() {
    let model = common::testdata("digits_mobilenetish.onnx");
    let inspect = common::cli(&[
        OsStr::new("inspect"),
        model.as_os_str(),
        OsStr::new("--json"),
    ]);
    let doc = common::valid_report(&inspect.stdout);
    assert_eq!(
        (doc["command"].as_str(), doc["depth"].as_u64()),
        (Some("inspect"), Some(14))
    );
    let verify = common::cli(&[
        OsStr::new("verify"),
        model.as_os_str(),
        model.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--random"),
        OsStr::new("2"),
    ]);
    let doc = common::valid_report(&verify.stdout);
    assert_eq!(
        (doc["command"].as_str(), doc["samples"].as_u64()),
        (Some("verify"), Some(2))
    );
}

#[test]
fn the_schema_rejects_missing_keys_and_other_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = optimize_report(dir.path(), &["--exact", "--cost", "macs"]);
    let mut without_latency = report.clone();
    without_latency.as_object_mut().unwrap().remove("latency");
    let mut next_version = report.clone();
    next_version["schema_version"] = 2.into();
    let mut negative_params = report;
    negative_params["before"]["params"] = (-1).into();
    for broken in [without_latency, next_version, negative_params] {
        assert!(!common::report_schema_errors(&broken).is_empty());
    }
}
