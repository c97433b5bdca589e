//! Learning which activations can go, end to end through the library, on the shared
//! models and their real data: fidelity figures are asserted on data the run never saw.

use crate::common;

use onnx_shallow::calib::Preprocess;
use onnx_shallow::calib::{ArraySelection, CalibSpec, Dataset, ModelInputs, Npz};
use onnx_shallow::exec::{Executor, Gate, Params};
use onnx_shallow::gates::{self, LearnData, LearnOptions, Learning};
use onnx_shallow::ir::shape::PinnedShapes;
use onnx_shallow::passes::{self, Ctx, Linearize, Pass};
use onnx_shallow::progress::Silent;
use onnx_shallow::runtime::compare::compare;
use onnx_shallow::runtime::run_all;
use onnx_shallow::{Cost, Model, Options};

fn digits(index: &str, model: &Model) -> Option<Dataset> {
    let spec = CalibSpec {
        paths: vec![common::shared("data/sklearn_digits_split.npz")?],
        select: ArraySelection {
            key: Some("x".into()),
            index: Some(index.into()),
        },
        ..CalibSpec::default()
    };
    Some(Dataset::load(&spec, model, &Default::default()).unwrap())
}

fn learned(original: &Model, data: &Dataset, options: &LearnOptions) -> Learning {
    let (train, held_out) = data.split(0.2, 0).unwrap();
    learned_on(original, &train, &held_out, options, &Default::default())
}

/// Learns with folds judged by MACs (deterministic), dims pinned as given.
fn learned_on(
    original: &Model,
    train: &Dataset,
    held_out: &Dataset,
    options: &LearnOptions,
    pinned: &PinnedShapes,
) -> Learning {
    learned_with(Cost::Macs, original, train, held_out, options, pinned)
}

/// Learns with folds judged by `cost` (measured: latency decides, as in the CLI).
fn learned_with(
    cost: Cost,
    original: &Model,
    train: &Dataset,
    held_out: &Dataset,
    options: &LearnOptions,
    pinned: &PinnedShapes,
) -> Learning {
    let exact = Options {
        cost: cost.clone(),
        pinned: pinned.clone(),
        ..Options::default()
    };
    let (base, _) = onnx_shallow::optimize(original.clone(), &exact).unwrap();
    let mut ctx = Ctx::new(pinned.clone(), None);
    ctx.cost.replace(cost.into());
    let data = LearnData {
        train,
        held_out,
        more_splits: &[],
    };
    gates::learn(original, &base, &data, &mut ctx, options, &Silent).unwrap()
}

/// The rows of `x` (all arrays of a one-input `.npz`) in `rows`.
fn rows_of(x: &ndarray::ArrayD<f32>, rows: &[usize], source: &str) -> ModelInputs {
    ModelInputs::new(vec![x.select(ndarray::Axis(0), rows)], source).unwrap()
}

/// [`rows_of`] as a data set for `model`.
fn data_of(model: &Model, x: &ndarray::ArrayD<f32>, rows: &[usize], source: &str) -> Dataset {
    Dataset::from_inputs(model, &rows_of(x, rows, source)).unwrap()
}

/// The labels of the rows `index` lists in the digits split.
fn digit_labels(index: &str) -> Vec<i64> {
    let mut npz = Npz::open(&common::shared("data/sklearn_digits_split.npz").unwrap()).unwrap();
    let labels = npz.array("y").unwrap().values;
    let rows = npz.array(index).unwrap().values;
    rows.iter().map(|&r| labels[[r as usize]] as i64).collect()
}

/// Learns on the digits training rows and checks the chosen model's test accuracy is
/// within `tolerance` points of the original's; returns what was learned.
fn digits_model_keeps_accuracy(model: &str, max_drop: f64, tolerance: f64) -> Option<Learning> {
    let original = onnx_shallow::load(&common::shared(&format!("models/{model}"))?).unwrap();
    let mut options = LearnOptions::default();
    options.budget.max_drop = max_drop;
    let learning = learned(&original, &digits("train_idx", &original)?, &options);
    print(&learning);
    let test = digits("test_idx", &original)?.all().unwrap();
    let labels = digit_labels("test_idx");
    let (before, after) = (
        common::top1_accuracy(&original, &test, 0, &labels),
        common::top1_accuracy(&learning.walk.model, &test, 0, &labels),
    );
    eprintln!("{model}: test accuracy {before:.2} % → {after:.2} %");
    assert!(after >= before - tolerance, "{before} → {after}");
    Some(learning)
}

/// A model and the `x` and `y` arrays of an `.npz`.
fn model_and_samples(
    model: &std::path::Path,
    data: &std::path::Path,
) -> (Model, ndarray::ArrayD<f32>, ndarray::ArrayD<f32>) {
    let mut npz = Npz::open(data).unwrap();
    (
        onnx_shallow::load(model).unwrap(),
        npz.array("x").unwrap().values,
        npz.array("y").unwrap().values,
    )
}

fn removed(learning: &Learning) -> &[String] {
    &learning.walk.steps[learning.walk.chosen].removed
}

fn print(learning: &Learning) {
    for step in &learning.walk.steps {
        eprintln!(
            "{} groups ({:?}): agreement {:?} pairwise flips {:?} error {:?} intervals {:?} MACs {:.3} latency {:?} fits {} refit {:?}",
            step.groups,
            step.removed,
            step.agreement,
            step.pairwise_flips,
            step.max_error,
            step.intervals,
            step.mac_ratio,
            step.latency_ratio,
            step.within_budget,
            step.refitted
                .iter()
                .map(|r| (r.before, r.after))
                .collect::<Vec<_>>()
        );
    }
    eprintln!("chosen {}", learning.walk.chosen);
}

/// The bundled digits MobileNet and its 64 bundled samples.
fn bundled_digits() -> (Model, Dataset) {
    let original = onnx_shallow::load(&common::testdata("digits_mobilenetish.onnx")).unwrap();
    let spec = CalibSpec {
        paths: vec![common::testdata("digits_test64.npz")],
        select: ArraySelection {
            key: Some("input".into()),
            index: None,
        },
        ..CalibSpec::default()
    };
    let data = Dataset::load(&spec, &original, &Default::default()).unwrap();
    (original, data)
}

/// When no gate crosses the threshold (here: no training at all), the walk starts with the
/// group that keeps the most agreement folded alone (measured here as the run does, refit
/// off).
#[test]
fn groups_whose_gates_never_cross_are_walked_best_alone_first() {
    let (original, data) = bundled_digits();
    let (train, held_out) = data.split(0.2, 0).unwrap();
    let mut options = LearnOptions {
        refit: false,
        ..LearnOptions::default()
    };
    options.train.epochs = Some(0);
    let learning = learned_on(&original, &train, &held_out, &options, &Default::default());
    let held_out = held_out.all().unwrap();
    assert!(learning.groups.len() >= 2, "{:?}", learning.groups);
    let exact = Options {
        cost: Cost::Macs,
        ..Options::default()
    };
    let (base, _) = onnx_shallow::optimize(original.clone(), &exact).unwrap();
    let alone = |group: &gates::GateGroup| {
        let mut ctx = Ctx::default();
        ctx.cost.replace(Cost::Macs.into());
        let mut model = base.clone();
        let nodes: Vec<String> = group.nodes().map(String::from).collect();
        Linearize::nodes(&nodes)
            .run(&mut model.graph, &mut ctx)
            .unwrap();
        passes::run_pipeline(&passes::folding(), &mut model.graph, &mut ctx).unwrap();
        compare(&original, &model, &held_out).unwrap().outputs[0]
            .agreement
            .unwrap()
    };
    let best = learning.groups.iter().map(alone).fold(f64::MIN, f64::max);
    assert_eq!(learning.walk.steps[1].agreement, Some(best));
}

/// A step over budget is reported but not built on: every later step adds its group to
/// the last step within budget (step 0, the exact-only model, when none is).
#[test]
fn the_walk_builds_only_on_steps_within_budget() {
    let (original, data) = bundled_digits();
    let learning = learned(&original, &data, &LearnOptions::default());
    print(&learning);
    let steps = &learning.walk.steps;
    let over_then_more = (1..steps.len() - 1).any(|k| !steps[k].within_budget);
    assert!(over_then_more, "the walk has no step after one over budget");
    for k in 1..steps.len() {
        let kept = (1..k).rev().find(|&j| steps[j].within_budget).unwrap_or(0);
        let (step, kept) = (&steps[k], &steps[kept]);
        assert_eq!(step.groups, kept.groups + 1, "step {k}");
        assert_eq!(
            step.removed[..kept.removed.len()],
            kept.removed[..],
            "step {k}"
        );
        assert!(step.removed.len() > kept.removed.len(), "step {k}");
    }
}

/// Augmented training sees other samples than plain training (its loss curve differs),
/// the same ones for the same seed.
#[test]
fn augmentation_trains_on_new_crops_and_flips_that_the_seed_fixes() {
    let (original, data) = bundled_digits();
    let losses = |augment: bool, seed: u64| {
        let mut options = LearnOptions::default();
        options.train.epochs = Some(2);
        options.train.seed = seed;
        let learning = learned(&original, &data.with_augment(augment).unwrap(), &options);
        learning.training.unwrap().losses
    };
    let augmented = losses(true, 1);
    assert_eq!(augmented, losses(true, 1));
    assert_ne!(augmented, losses(true, 2));
    assert_ne!(augmented, losses(false, 1));
}

/// With fine-tuned weights the walk has one learned step, the crossed groups folded
/// together; a gate left below the threshold is written as what it trained as (a Relu
/// of gate α: a LeakyRelu of slope α), and the model written computes the trained one.
#[test]
fn fine_tuned_gates_below_the_threshold_are_written_as_trained() {
    let Some(path) = common::shared("models/digits_mlp_sklearn-digits_op13.onnx") else {
        return;
    };
    let original = onnx_shallow::load(&path).unwrap();
    let Some(data) = digits("train_idx", &original) else {
        return;
    };
    let mut options = LearnOptions::default();
    options.train.finetune = true;
    // Short and slow enough that one of the three gates stays below the threshold.
    options.train.epochs = Some(1);
    options.train.lr = 0.02;
    options.budget.max_drop = 100.0;
    let learning = learned(&original, &data, &options);
    print(&learning);
    let training = learning.training.as_ref().unwrap();
    let crossed = training
        .schedule
        .iter()
        .filter(|o| o.crossed_at.is_some())
        .count();
    let below: Vec<f64> = training
        .schedule
        .iter()
        .filter(|o| o.crossed_at.is_none() && o.alpha > 0.0)
        .map(|o| o.alpha)
        .collect();
    assert!(crossed > 0 && !below.is_empty(), "{:?}", training.schedule);
    assert_eq!(learning.walk.steps.len(), 2);
    assert_eq!(
        learning.walk.steps[0].agreement,
        Some(1.0),
        "step 0 is exact"
    );
    assert_eq!(learning.walk.steps[1].groups, crossed);
    assert!(learning.walk.steps[1].refitted.is_empty());
    assert_eq!(learning.walk.chosen, 1);
    let mut slopes: Vec<f64> = passes::activations(&learning.walk.model.graph)
        .unwrap()
        .into_iter()
        .filter_map(|a| match a.kind {
            passes::ActivationKind::LeakyRelu { alpha } => Some(alpha as f64),
            _ => None,
        })
        .collect();
    slopes.sort_by(f64::total_cmp);
    let mut expected = below.clone();
    expected.sort_by(f64::total_cmp);
    assert_eq!(slopes.len(), expected.len(), "{slopes:?} vs {expected:?}");
    for (slope, alpha) in slopes.iter().zip(&expected) {
        assert!((slope - alpha).abs() < 1e-6, "{slopes:?} vs {expected:?}");
    }
    let inputs = data.all().unwrap();
    let trained = trained_outputs(&original, &learning, &inputs);
    let written = &run_all(&learning.walk.model, &inputs, 32).unwrap()[0];
    let error = (written - &trained)
        .mapv(f32::abs)
        .fold(0.0f32, |m, &v| m.max(v))
        / trained.mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
    assert!(error < 1e-4, "relative error {error:e}");
}

/// The first output of the network training left, run by the training executor: the
/// exact-only model with its gates at their trained α and its fine-tuned weights.
fn trained_outputs(
    original: &Model,
    learning: &Learning,
    inputs: &ModelInputs,
) -> ndarray::ArrayD<f32> {
    let exact = Options {
        cost: Cost::Macs,
        ..Options::default()
    };
    let (base, _) = onnx_shallow::optimize(original.clone(), &exact).unwrap();
    let gates: Vec<Gate> = (learning.groups.iter().enumerate())
        .flat_map(|(group, g)| {
            g.activations.iter().map(move |a| Gate {
                input: a.input.clone(),
                output: a.output.clone(),
                group,
            })
        })
        .collect();
    let graph = &base.graph;
    let name = |v| graph.value(v).name.clone();
    let executor = Executor::new(
        graph,
        &[name(graph.inputs()[0])],
        &[name(graph.outputs()[0])],
        gates,
    )
    .unwrap();
    let mut params = Params::new(&executor, graph).unwrap();
    let tuned = learning
        .training
        .as_ref()
        .unwrap()
        .weights
        .as_ref()
        .unwrap();
    params.alpha = tuned.alpha.clone();
    params.weights.extend(tuned.weights.clone());
    let forward = executor.forward(inputs.arrays(), &params, false).unwrap();
    forward.outputs[0].clone()
}

/// The second ReLU costs 1.5 points of held-out agreement, 3.4 at the worst end
/// of its interval over the 269 held-out samples: the budget that lets it go is 3.5.
#[test]
fn digits_mlp_loses_two_relus_and_keeps_its_accuracy() {
    let Some(learning) =
        digits_model_keeps_accuracy("digits_mlp_sklearn-digits_op13.onnx", 3.5, 0.5)
    else {
        return;
    };
    assert!(removed(&learning).len() >= 2, "{:?}", removed(&learning));
}

#[test]
fn digits_cnn_loses_an_activation_and_keeps_its_accuracy() {
    let Some(learning) =
        digits_model_keeps_accuracy("digits_cnn_sklearn-digits_op13.onnx", 1.0, 0.5)
    else {
        return;
    };
    assert!(!removed(&learning).is_empty());
}

#[test]
fn digits_mobilenets_lose_an_activation_and_keep_their_accuracy() {
    for model in [
        "digits_mobilenetish_sklearn-digits_op13.onnx",
        "digits_mobilenetish_sklearn-digits_op14_hardswish.onnx",
    ] {
        let Some(learning) = digits_model_keeps_accuracy(model, 1.0, 0.5) else {
            return;
        };
        assert!(!removed(&learning).is_empty(), "{model}");
    }
}

/// The classifier's squeeze-excitation ReLUs sit between two 1×1 convs on one pixel: one
/// conv of twice the MACs runs faster there, which only measuring shows (the MAC estimate
/// rejects those folds), so this test judges folds in tract. The budget is "no decision
/// changed, none close to changing" (`max_drop` 0: no flip, no pairwise flip): on half of
/// the 62 even samples held out, one flip is 3 points. The SE refits have one row per
/// training sample (31), where a ridge strength chosen on one fifth of them (6 rows) let
/// a step keep every held-out decision yet flip odd ones; it is chosen on every fifth in
/// turn. The steps within budget differ in latency by about the timing's noise, so the
/// choice rests on the tie rule: the most groups folded among those as fast as the
/// fastest.
#[test]
fn ppocr_classifier_loses_two_activations_and_keeps_its_agreement() {
    let (Some(data), Some(model)) = (
        common::shared("data/textline_0_180_page.npz"),
        Some(common::testdata("ppocr_textline_cls.onnx")),
    ) else {
        return;
    };
    let (original, x, y) = model_and_samples(&model, &data);
    let n = x.shape()[0];
    let even: Vec<usize> = (0..n).step_by(2).collect();
    let odd: Vec<usize> = (1..n).step_by(2).collect();
    // Calibrate on the even samples (half of them held out for selection), measure on
    // the odd ones.
    let (train_rows, held_rows): (Vec<usize>, Vec<usize>) = even.iter().partition(|&&r| r % 4 != 0);
    let pinned: PinnedShapes = [("x".to_string(), vec![1, 3, 48, 192])]
        .into_iter()
        .collect();
    let mut options = LearnOptions::default();
    options.budget.max_drop = 0.0;
    let learning = learned_with(
        Cost::Measured,
        &original,
        &data_of(&original, &x, &train_rows, "even"),
        &data_of(&original, &x, &held_rows, "even, held out"),
        &options,
        &pinned,
    );
    print(&learning);
    let test = rows_of(&x, &odd, "odd");
    let labels: Vec<i64> = odd.iter().map(|&r| y[[r]] as i64).collect();
    let (before, after) = (
        common::top1_accuracy(&original, &test, 0, &labels),
        common::top1_accuracy(&learning.walk.model, &test, 0, &labels),
    );
    let agreement = onnx_shallow::runtime::compare::compare(&original, &learning.walk.model, &test)
        .unwrap()
        .outputs[0]
        .agreement
        .unwrap();
    eprintln!("ppocr: accuracy on odd samples {before:.2} % → {after:.2} %, agreement {agreement}");
    assert!(removed(&learning).len() >= 2, "{:?}", removed(&learning));
    assert!(after >= before - 1.0 && agreement >= 0.98);
}

/// Measured and not met: without prelu5, bbox_reg is off by 0.78 max relative error on
/// the held-out crops after the refit (1.31 with `--finetune`). The best linear map
/// from the 1 152 trunk features to bbox_reg, fitted on 160 to 9 760 augmented crops,
/// stays at 0.37–0.51, and fine-tuning every weight by distillation in PyTorch (Adam,
/// 3 000 steps of 32 augmented crops) at 0.42–0.49 (prelu4 instead: 0.43–0.49), against
/// a budget of 0.05.
#[test]
#[ignore = "not met: without its trunk PRelu, O-Net's bbox_reg stays ≥ 0.37 held-out error by any refit or fine-tuning tried (budget 0.05)"]
fn mtcnn_onet_loses_its_trunk_prelu_within_budget() {
    let (Some(data), Some(model)) = (
        common::shared("data/lfw_subset_face_nonface.npz"),
        common::shared("models/mtcnn_onet_facenet-pytorch2.6.0_op13.onnx"),
    ) else {
        return;
    };
    let (original, gray, y) = model_and_samples(&model, &data);
    // 25×25 gray in [0, 1] → 48×48 RGB, (x − 127.5) / 128 on 0–255 pixels.
    let samples = gray.shape()[0];
    let nhwc = gray
        .insert_axis(ndarray::Axis(3))
        .broadcast(vec![samples, 25, 25, 3])
        .unwrap()
        .to_owned();
    let preprocess =
        Preprocess::parse("layout=nhwc,resize=48,scale=255,mean=127.5,std=128").unwrap();
    let x = preprocess.apply(nhwc.into_dyn()).unwrap();
    let n = x.shape()[0];
    let (train_rows, held_rows): (Vec<usize>, Vec<usize>) = (0..n).partition(|r| r % 5 != 0);
    let options = LearnOptions {
        output_kinds: ["bbox_reg", "landmarks"]
            .map(|o| (o.to_string(), gates::OutputKind::Regression))
            .to_vec(),
        ..LearnOptions::default()
    };
    let learning = learned_on(
        &original,
        &data_of(&original, &x, &train_rows, "lfw"),
        &data_of(&original, &x, &held_rows, "lfw, held out"),
        &options,
        &Default::default(),
    );
    print(&learning);
    let all = rows_of(&x, &(0..n).collect::<Vec<_>>(), "lfw");
    let labels: Vec<i64> = y.iter().map(|&l| l as i64).collect();
    let face = |m: &Model| common::top1_accuracy(m, &all, 2, &labels);
    assert!(!removed(&learning).is_empty());
    assert!(learning.walk.steps[learning.walk.chosen].within_budget);
    assert_eq!(face(&original), face(&learning.walk.model));
}
