//! ONNX Runtime as the engine (`--engine ort`): its library found or refused with a
//! message that says how to point at one, its outputs as its own Python package computes
//! them, the bench gate, and fold decisions taken from the engine's own timings. Without
//! the `ort` feature, asking for it is a clear error.

mod common;

#[cfg(feature = "ort")]
use std::ffi::OsStr;

#[cfg(not(feature = "ort"))]
#[test]
fn a_build_without_the_feature_says_how_to_get_the_engine() {
    let model = common::testdata("digits_mobilenetish.onnx");
    let run = common::cli(&[
        "bench".as_ref(),
        model.as_os_str(),
        "--engine".as_ref(),
        "ort".as_ref(),
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--features ort"), "{}", run.stderr);
}

/// `bench --engine ort` of the digits model against itself, library at `library`.
#[cfg(feature = "ort")]
fn bench_digits_in_onnxruntime(library: &OsStr, extra: &[&OsStr]) -> common::Run {
    let model = common::testdata("digits_mobilenetish.onnx");
    bench_model_in_onnxruntime(&model, library, extra)
}

/// `bench --engine ort` of `model` against itself, library at `library`.
#[cfg(feature = "ort")]
fn bench_model_in_onnxruntime(
    model: &std::path::Path,
    library: &OsStr,
    extra: &[&OsStr],
) -> common::Run {
    let mut args: Vec<&OsStr> = vec![
        "bench".as_ref(),
        model.as_os_str(),
        model.as_os_str(),
        "--engine".as_ref(),
        "ort".as_ref(),
        "--ort-lib".as_ref(),
        library,
    ];
    args.extend(extra);
    common::cli(&args)
}

#[cfg(feature = "ort")]
#[test]
fn a_library_that_is_missing_or_not_onnx_runtime_is_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libonnxruntime.so.1");
    let model = common::testdata("digits_mobilenetish.onnx");
    for (library, reason) in [
        (missing.as_os_str(), "no such file"),
        (model.as_os_str(), "cannot use it as ONNX Runtime"),
    ] {
        let run = bench_digits_in_onnxruntime(library, &[]);
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        let path = library.to_string_lossy();
        for expected in [&*path, reason, "--ort-lib PATH", "ORT_DYLIB_PATH"] {
            assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
        }
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

#[cfg(feature = "ort")]
#[test]
fn without_a_library_the_error_says_how_to_point_at_one() {
    let model = common::testdata("digits_mobilenetish.onnx");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnx-shallow"))
        .args([
            "bench".as_ref(),
            model.as_os_str(),
            "--engine".as_ref(),
            "ort".as_ref(),
        ])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no ONNX Runtime library given") && stderr.contains("--ort-lib PATH"),
        "{stderr}"
    );
}

#[cfg(feature = "ort")]
#[test]
fn bench_in_onnxruntime_of_a_model_against_itself_passes_a_gate_of_1_1() {
    let Some(library) = common::ort_library() else {
        return;
    };
    let run = bench_digits_in_onnxruntime(
        library.as_os_str(),
        &["--max-ratio".as_ref(), "1.1".as_ref(), "--json".as_ref()],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let doc = common::valid_report(&run.stdout);
    assert_eq!(doc["engine"]["name"], "onnxruntime", "{doc}");
    assert_eq!(doc["engine"]["threads"], 1, "{doc}");
    assert_eq!(doc["engine"]["opt_level"], "all", "{doc}");
    assert_eq!(doc["gate"]["pass"], true, "{doc}");
}

#[cfg(feature = "ort")]
mod engine {
    use super::common;
    use onnx_shallow::calib::npy::Npz;
    use onnx_shallow::calib::{self, ArraySelection, Preprocess};
    use onnx_shallow::runtime::{Engine, OrtOptions};

    /// How far the `ort` engine may be from onnxruntime's Python package (same library,
    /// same settings: only the run differs).
    const RTOL: f64 = 1e-5;

    fn expected(name: &str) -> ndarray::ArrayD<f32> {
        let path = common::testdata("onnxruntime_outputs.npz");
        Npz::open(&path).unwrap().array(name).unwrap().values
    }

    /// `model` run in the `ort` engine on the first `samples` rows of array `key` of
    /// `inputs`, against what onnxruntime's Python package computed.
    fn assert_runs_as_python_does(
        model: &str,
        inputs: &std::path::Path,
        key: &str,
        samples: usize,
    ) {
        let Some(library) = common::ort_library() else {
            return;
        };
        let model_path = common::testdata(model);
        let model = onnx_shallow::load(&model_path).unwrap();
        let select = ArraySelection {
            key: Some(key.into()),
            index: None,
        };
        let names = calib::input_names(&model);
        let inputs =
            calib::load_selected_inputs(inputs, &names, &select, &Preprocess::default()).unwrap();
        let batch = inputs.batch(0..samples);
        let dims: Vec<Vec<usize>> = batch.iter().map(|a| a.shape().to_vec()).collect();
        let engine = Engine::OnnxRuntime(OrtOptions {
            library: Some(library),
            ..OrtOptions::default()
        });
        let outputs = engine.load(&model, &dims).unwrap().run(&batch).unwrap();
        let expected = expected(model_path.file_stem().unwrap().to_str().unwrap());
        assert_eq!(outputs[0].shape(), expected.shape());
        let error = (&outputs[0] - &expected)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &e| m.max(e));
        let scale = expected.mapv(f32::abs).fold(0.0f32, |m, &e| m.max(e));
        let relative = f64::from(error / scale);
        assert!(
            relative <= RTOL,
            "{model_path:?}: relative error {relative:e}"
        );
    }

    #[test]
    fn the_digits_model_runs_as_in_onnxruntimes_python_package() {
        let inputs = common::testdata("digits_test64.npz");
        assert_runs_as_python_does("digits_mobilenetish.onnx", &inputs, "input", 64);
    }

    #[test]
    fn the_ppocr_classifier_runs_as_in_onnxruntimes_python_package() {
        let Some(inputs) = common::shared("data/textline_0_180_page.npz") else {
            return;
        };
        assert_runs_as_python_does("ppocr_textline_cls.onnx", &inputs, "x", 8);
    }
}

#[cfg(feature = "ort")]
#[test]
fn verify_in_onnxruntime_reports_the_engine_it_compared_in() {
    let Some(library) = common::ort_library() else {
        return;
    };
    let (model, inputs) = (
        common::testdata("digits_mobilenetish.onnx"),
        common::testdata("digits_test64.npz"),
    );
    let run = common::cli(&[
        "verify".as_ref(),
        model.as_os_str(),
        model.as_os_str(),
        "--inputs".as_ref(),
        inputs.as_os_str(),
        "--inputs-key".as_ref(),
        "input".as_ref(),
        "--engine".as_ref(),
        "ort".as_ref(),
        "--ort-lib".as_ref(),
        library.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let doc = common::valid_report(&run.stdout);
    assert_eq!(doc["engine"]["name"], "onnxruntime", "{doc}");
    assert_eq!(doc["pass"], true, "{doc}");
}

/// A linear inverted-residual block on [1, 8, 12, 12] (1×1 expand to 16, depthwise 3×3,
/// 1×1 project, + input): its one fold, into a dense 3×3, is the cost model's call.
#[cfg(feature = "ort")]
fn linear_block() -> Vec<u8> {
    use onnx_shallow::ir::builder::ModelBuilder;
    use onnx_shallow::ir::{Attributes, Tensor};
    let weights = |dims: &[usize], seed: f32| {
        let len = dims.iter().product::<usize>();
        let values: Vec<f32> = (0..len)
            .map(|i| 0.2 * (i as f32 * 0.37 + seed).sin())
            .collect();
        Tensor::from_f32(dims.to_vec(), &values)
    };
    let conv = |pads: i64, group: i64| {
        Attributes::default()
            .with_ints("pads", &[pads; 4])
            .with_ints("strides", &[1, 1])
            .with_int("group", group)
    };
    let model = ModelBuilder::new(13)
        .input("x", &[1, 8, 12, 12])
        .initializer("we", weights(&[16, 8, 1, 1], 1.0))
        .initializer("wd", weights(&[16, 1, 3, 3], 2.0))
        .initializer("wp", weights(&[8, 16, 1, 1], 3.0))
        .node("Conv", &["x", "we"], &["e"], conv(0, 1))
        .node("Conv", &["e", "wd"], &["d"], conv(1, 16))
        .node("Conv", &["d", "wp"], &["p"], conv(0, 1))
        .node("Add", &["x", "p"], &["y"], Attributes::default())
        .output("y")
        .build();
    onnx_shallow::onnx::encode_model(&model)
}

#[cfg(feature = "ort")]
#[test]
fn a_fold_is_decided_by_the_timings_of_the_chosen_engine() {
    let Some(library) = common::ort_library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (model, cache) = (dir.path().join("block.onnx"), dir.path().join("cost.json"));
    std::fs::write(&model, linear_block()).unwrap();
    let optimize = |engine: &str| -> serde_json::Value {
        let (output, report) = (dir.path().join("out.onnx"), dir.path().join("report.json"));
        let mut args: Vec<&OsStr> = vec![
            "optimize".as_ref(),
            model.as_os_str(),
            output.as_os_str(),
            "--exact".as_ref(),
            "--cost-cache".as_ref(),
            cache.as_os_str(),
            "--report".as_ref(),
            report.as_os_str(),
            "--engine".as_ref(),
            engine.as_ref(),
        ];
        if engine == "ort" {
            args.extend(["--ort-lib".as_ref(), library.as_os_str()]);
        }
        let run = common::cli(&args);
        assert_eq!(run.code, 0, "{engine}: {}{}", run.stdout, run.stderr);
        common::valid_report(&std::fs::read_to_string(report).unwrap())
    };
    // Measured once in each engine, then each engine's verdicts rewritten: the fold is
    // twice as fast in tract and twice as slow in ONNX Runtime.
    optimize("tract");
    optimize("ort");
    let rewrite = || {
        let mut kept: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        let entries = kept["entries"].as_object_mut().unwrap();
        for engine in ["tract ", "onnxruntime "] {
            assert!(
                entries.keys().any(|k| k.starts_with(engine)),
                "{engine}: {entries:?}"
            );
        }
        for (key, verdict) in entries.iter_mut() {
            let folded = if key.starts_with("tract ") { 0.5 } else { 2.0 };
            *verdict = serde_json::json!({ "original": 1.0, "folded": folded, "estimate": false });
        }
        std::fs::write(&cache, serde_json::to_vec(&kept).unwrap()).unwrap();
    };
    // A fold that pays on its cut-out is timed on the whole model too: once it has been,
    // the whole model's verdict is rewritten as well.
    rewrite();
    optimize("tract");
    rewrite();
    let folds = |report: &serde_json::Value| report["folds"].as_array().unwrap().len();
    let in_tract = optimize("tract");
    assert_eq!(folds(&in_tract), 1, "{}", in_tract["folds"]);
    assert_eq!(in_tract["confirmation"]["kept"], true, "{in_tract}");
    assert_eq!(in_tract["latency"]["engine"]["name"], "tract");
    let in_onnxruntime = optimize("ort");
    assert_eq!(folds(&in_onnxruntime), 0, "{}", in_onnxruntime["folds"]);
    assert!(in_onnxruntime["confirmation"].is_null(), "{in_onnxruntime}");
    assert_eq!(in_onnxruntime["latency"]["engine"]["name"], "onnxruntime");
}

#[cfg(feature = "ort")]
#[test]
fn a_model_claiming_a_huge_value_is_refused_before_onnxruntime_builds_it() {
    let Some(library) = common::ort_library() else {
        return;
    };
    let model = common::huge_constant_of_shape();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.onnx");
    std::fs::write(&path, onnx_shallow::onnx::encode_model(&model)).unwrap();
    let run = bench_model_in_onnxruntime(&path, library.as_os_str(), &[]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("ConstantOfShape_0") && run.stderr.contains("elements"),
        "{}",
        run.stderr
    );
}

#[cfg(feature = "ort")]
#[test]
fn a_learned_output_is_run_in_onnxruntime_and_computes_as_in_tract() {
    let Some(library) = common::ort_library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("out.onnx"), dir.path().join("report.json"));
    let run = common::optimize_digits_calib(
        &out,
        &[
            "--engine".as_ref(),
            "ort".as_ref(),
            "--ort-lib".as_ref(),
            library.as_os_str(),
            "--max-drop".as_ref(),
            "5".as_ref(),
            "--report".as_ref(),
            report.as_os_str(),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("in onnxruntime, the output computes as in tract: max relative error"),
        "{}",
        run.stdout
    );
    let doc = common::valid_report(&std::fs::read_to_string(&report).unwrap());
    let in_engine = &doc["verification"]["in_engine"];
    assert_eq!(in_engine["samples"], 8, "{doc}");
    let error = in_engine["outputs"][0]["max_rel_error"].as_f64().unwrap();
    assert!(error <= 1e-4, "{error}");
    assert!(doc["learning"]["walk"]["steps"].as_array().unwrap().len() >= 2);
}
