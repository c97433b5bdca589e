//! Training elsewhere, folding here: `gate` writes the candidate activations gated in
//! standard operators, a trainer sets the gates (the crate's own, or PyTorch through
//! `examples/train_gated.py`), and `optimize --from-gates` folds them back, verified.

use crate::common;

use std::ffi::OsStr;

use onnx_shallow::calib::{ArraySelection, CalibSpec, Dataset, Npz};
use onnx_shallow::gates::gated::{Manifest, write_training};
use onnx_shallow::gates::train::{TrainData, TrainOptions, train};
use onnx_shallow::gates::{self, GateOutcome};
use onnx_shallow::ir::shape;
use onnx_shallow::progress::Silent;
use onnx_shallow::runtime::compare::{Tolerance, compare};
use onnx_shallow::{Cost, Model, Options};

fn macs() -> Options {
    Options {
        cost: Cost::Macs,
        ..Options::default()
    }
}

fn bundled_digits() -> Model {
    onnx_shallow::load(&common::testdata("digits_mobilenetish.onnx")).unwrap()
}

/// The rows `index` lists of the shared digits split, and their labels.
fn digits(index: &str, model: &Model) -> Option<(Dataset, Vec<i64>)> {
    let path = common::shared("data/sklearn_digits_split.npz")?;
    let spec = CalibSpec {
        paths: vec![path.clone()],
        select: ArraySelection {
            key: Some("x".into()),
            index: Some(index.into()),
        },
        labels: Some("y".into()),
        ..CalibSpec::default()
    };
    let data = Dataset::load(&spec, model, &Default::default()).unwrap();
    let mut npz = Npz::open(&path).unwrap();
    let labels = npz.array("y").unwrap().values;
    let rows = npz.array(index).unwrap().values;
    let labels = rows.iter().map(|&r| labels[[r as usize]] as i64).collect();
    Some((data, labels))
}

/// Each group's α in group order, as training left it.
fn alphas(schedule: &[GateOutcome], groups: usize) -> Vec<f64> {
    (0..groups)
        .map(|g| schedule.iter().find(|o| o.group == g).unwrap().alpha)
        .collect()
}

#[test]
fn the_crates_trainer_round_trips_through_a_gated_model_and_the_fold_is_exact() {
    let original = bundled_digits();
    let (Some((train_rows, _)), Some((test, labels))) = (
        digits("train_idx", &original),
        digits("test_idx", &original),
    ) else {
        return;
    };
    let gated = onnx_shallow::gate(original.clone(), &macs(), 0.9).unwrap();
    assert!(gated.groups.len() >= 2, "{:?}", gated.manifest);

    let (train_part, held_out) = train_rows.split(0.2, 0).unwrap();
    let shapes = shape::infer(&gated.base.graph, &Default::default()).unwrap();
    let targets = gates::targets(&gated.base.graph, &shapes, &[]).unwrap();
    let options = TrainOptions {
        finetune: true,
        steps: Some(240),
        weight_lr: 1e-3,
        ..TrainOptions::default()
    };
    let data = TrainData {
        train: &train_part,
        held_out: &held_out,
    };
    let training = train(
        &gated.base,
        &gated.groups,
        &[],
        &targets,
        &data,
        &options,
        &Silent,
    )
    .unwrap();
    let alphas = alphas(&training.schedule, gated.groups.len());
    let crossed = alphas.iter().filter(|&&a| a == 1.0).count();
    assert!(crossed >= 1, "no gate crossed: {alphas:?}");

    // Through a file, as another engine would hand it back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trained.onnx");
    let trained = write_training(&gated.model, &alphas, training.weights.as_ref()).unwrap();
    onnx_shallow::save(&trained, &path, &Default::default()).unwrap();
    let trained = onnx_shallow::load(&path).unwrap();

    let (folded, report) =
        onnx_shallow::optimize_from_gates(trained.clone(), &macs(), 0.9).unwrap();
    assert_eq!(
        report.gates.len(),
        gated
            .manifest
            .groups
            .iter()
            .map(|g| g.activations.len())
            .sum::<usize>()
    );
    assert!(!report.folds.is_empty(), "nothing folded");
    let test_inputs = test.all().unwrap();
    let comparison = compare(&trained, &folded, &test_inputs).unwrap();
    assert!(
        comparison.within(&Tolerance::default()),
        "{:?}",
        comparison.outputs
    );
    let figures =
        [&original, &trained, &folded].map(|m| common::top1_accuracy(m, &test_inputs, 0, &labels));
    eprintln!(
        "{crossed} of {} gates crossed; test accuracy original {:.2} %, trained gated {:.2} %, folded {:.2} % ({} samples)",
        alphas.len(),
        figures[0],
        figures[1],
        figures[2],
        labels.len()
    );
    assert_eq!(figures[1], figures[2]);
    assert!(folded.metadata(gates::gated::MANIFEST_KEY).is_none());
}

#[test]
fn the_manifest_lists_each_group_its_gate_gain_and_penalty_weight() {
    let gated = onnx_shallow::gate(bundled_digits(), &macs(), 0.9).unwrap();
    assert_eq!(
        Manifest::of(&gated.model).unwrap().as_ref(),
        Some(&gated.manifest)
    );
    let weights: f64 = gated.manifest.groups.iter().map(|g| g.weight).sum();
    assert!((weights - 1.0).abs() < 1e-9, "{weights}");
    for (group, listed) in gated.groups.iter().zip(&gated.manifest.groups) {
        assert_eq!(group.gain, listed.gain);
        let alpha = gated.model.graph.value_by_name(&listed.gate).unwrap();
        let tensor = gated.model.graph.constant(alpha).unwrap();
        assert_eq!(
            (tensor.dims(), tensor.to_f64().unwrap()),
            (&[][..], vec![0.0])
        );
    }
    assert_eq!(gated.manifest.gain_unit, "MACs");
}

/// A gated model trained by `examples/train_gated.py` under `torchrun --nproc_per_node 2`
/// and exported by PyTorch: new names, PyTorch's operators (HardSigmoid written out,
/// Clip bounds in Constant nodes, α as `alphas.N`).
#[test]
fn a_pytorch_reexport_folds_back_and_equals_the_trained_model_where_gates_are_open() {
    let trained_path = common::testdata("digits_mobilenetish_gated_pytorch.onnx");
    let trained = onnx_shallow::load(&trained_path).unwrap();
    let (folded, report) =
        onnx_shallow::optimize_from_gates(trained.clone(), &macs(), 0.9).unwrap();
    assert!(
        report
            .gates
            .iter()
            .all(|g| g.parameter.starts_with("alphas."))
    );
    let removed = report.activations_removed.len();
    assert!(
        removed >= 1 && removed < report.gates.len(),
        "{:?}",
        report.gates
    );
    assert!(
        report.gates.iter().any(|g| g.op == "HardSwish"),
        "{:?}",
        report.gates
    );
    let dims = onnx_shallow::calib::sample_dims(&trained, &Default::default()).unwrap();
    let inputs = onnx_shallow::calib::random_inputs(&dims, 16, 1).unwrap();
    let comparison = compare(&trained, &folded, &inputs).unwrap();
    assert!(
        comparison.within(&Tolerance::default()),
        "{:?}",
        comparison.outputs
    );
    assert!(report.after.depth < report.before.depth);
}

#[test]
fn the_cli_gates_then_folds_back_and_refuses_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let (input, gated, manifest) = (
        common::testdata("digits_mobilenetish.onnx"),
        dir.path().join("gated.onnx"),
        dir.path().join("gates.json"),
    );
    let run = common::cli(&[
        "gate".as_ref(),
        input.as_os_str(),
        gated.as_os_str(),
        "--manifest".as_ref(),
        manifest.as_os_str(),
        "--cost".as_ref(),
        "macs".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("onnx_shallow_gate_0"), "{}", run.stdout);
    let listed: Manifest = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(listed.threshold, 0.9);

    // Every gate at 1, folded back: nothing of the gates remains.
    let model = onnx_shallow::load(&gated).unwrap();
    let open = write_training(&model, &vec![1.0; listed.groups.len()], None).unwrap();
    let trained = dir.path().join("trained.onnx");
    onnx_shallow::save(&open, &trained, &Default::default()).unwrap();
    let out = dir.path().join("out.onnx");
    let report = dir.path().join("report.json");
    let fold = |model: &std::path::Path| {
        common::cli(&[
            "optimize".as_ref(),
            model.as_os_str(),
            out.as_os_str(),
            "--from-gates".as_ref(),
            "--cost".as_ref(),
            "macs".as_ref(),
            "--report".as_ref(),
            report.as_os_str(),
        ])
    };
    let run = fold(&trained);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("at or past the threshold"),
        "{}",
        run.stdout
    );
    let doc = common::valid_report(&std::fs::read_to_string(&report).unwrap());
    assert!(
        doc["gates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["alpha"] == 1.0)
    );

    // Gates at 0.1 removed with --threshold 0.05: far from what was trained, which the
    // budget judges on --calib data.
    let far = write_training(&model, &vec![0.1; listed.groups.len()], None).unwrap();
    onnx_shallow::save(&far, &trained, &Default::default()).unwrap();
    let judged = |max_drop: &str| {
        let options: [&OsStr; 5] = [
            "--from-gates".as_ref(),
            "--threshold".as_ref(),
            "0.05".as_ref(),
            "--max-drop".as_ref(),
            max_drop.as_ref(),
        ];
        common::optimize_on_digits(&trained, &out, &options)
    };
    std::fs::remove_file(&out).unwrap();
    let run = judged("0");
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--max-drop 0"), "{}", run.stderr);
    assert!(!out.exists());
    let run = judged("100");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("output vs trained model, on"),
        "{}",
        run.stdout
    );

    // The original has no gates; a gate's α of 1.5 or NaN cannot be read as trained.
    std::fs::remove_file(&out).unwrap();
    let run = fold(&input);
    common::assert_one_line_error(&run, &["no gates found"]);
    for alpha in [1.5, f64::NAN] {
        let bad = write_training(&model, &vec![alpha; listed.groups.len()], None).unwrap();
        onnx_shallow::save(&bad, &trained, &Default::default()).unwrap();
        let run = fold(&trained);
        common::assert_one_line_error(&run, &["onnx_shallow_gate_0", "[0, 1]"]);
    }
    assert!(!out.exists(), "an output was written on error");
    // A model with no activation to gate: an error, no file.
    let plain = dir.path().join("plain.onnx");
    std::fs::write(
        &plain,
        onnx_shallow::onnx::encode_model(&common::random_normal_model()),
    )
    .unwrap();
    let refused = dir.path().join("refused.onnx");
    let run = common::cli(&[
        "gate".as_ref(),
        plain.as_os_str(),
        refused.as_os_str(),
        "--cost".as_ref(),
        "macs".as_ref(),
    ]);
    common::assert_one_line_error(&run, &["no activation is worth a gate"]);
    assert!(!refused.exists());
    let arguments: [&OsStr; 4] = [
        "gate".as_ref(),
        input.as_os_str(),
        gated.as_os_str(),
        "--threshold".as_ref(),
    ];
    let run = common::cli(&[&arguments[..], &["1.5".as_ref()]].concat());
    common::assert_one_line_error(&run, &["--threshold 1.5"]);
}
