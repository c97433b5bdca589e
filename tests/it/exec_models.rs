//! The executor against tract on every shared model (after the canonical rewrites, as the
//! trainer sees them), and its results independent of the number of threads.

use crate::common;

use onnx_shallow::calib::random::{Rng, normal_array};
use onnx_shallow::exec::{Executor, Gate, Params, Wanted};
use onnx_shallow::passes::{self, Ctx};
use onnx_shallow::runtime::Session;
use onnx_shallow::{Model, ir::Graph};

fn canonical(path: &std::path::Path) -> Model {
    let mut model = onnx_shallow::load(path).unwrap();
    passes::run_pipeline(&passes::canonical(), &mut model.graph, &mut Ctx::default()).unwrap();
    model
}

fn names(graph: &Graph, ids: impl Iterator<Item = onnx_shallow::ir::ValueId>) -> Vec<String> {
    ids.map(|v| graph.value(v).name.clone()).collect()
}

/// A gate on every single-node activation, each its own group.
fn gate_every_activation(graph: &Graph) -> Vec<Gate> {
    graph
        .nodes()
        .filter(|(_, n)| n.kind.is_activation())
        .enumerate()
        .map(|(group, (_, n))| Gate {
            input: graph.value(n.input(0).unwrap()).name.clone(),
            output: graph.value(n.output(0).unwrap()).name.clone(),
            group,
        })
        .collect()
}

#[test]
fn forward_matches_tract_on_every_shared_model() {
    let models = common::shared_models();
    for path in &models {
        let model = canonical(path);
        let graph = &model.graph;
        let dims = common::input_dims(&model, 2);
        let mut rng = Rng::new(21);
        let inputs: Vec<_> = dims.iter().map(|d| normal_array(d, &mut rng)).collect();
        let want = Session::new(&model, &dims).unwrap().run(&inputs).unwrap();
        let exec = Executor::new(
            graph,
            &names(graph, graph.runtime_inputs()),
            &names(graph, graph.outputs().iter().copied()),
            Vec::new(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let params = Params::new(&exec, graph).unwrap();
        let got = exec.forward(&inputs, &params, false).unwrap().outputs;
        for (k, (got, want)) in got.iter().zip(&want).enumerate() {
            let err = common::relative_error(want.view(), got.view());
            assert!(
                err <= 1e-4,
                "{} output {k}: relative error {err}",
                path.display()
            );
        }
    }
}

/// Forward and backward (gates, weights and inputs) on one thread and on the default pool.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let Some(path) = common::shared("models/digits_mobilenetish_sklearn-digits_op13.onnx") else {
        return;
    };
    let model = canonical(&path);
    let graph = &model.graph;
    let gates = gate_every_activation(graph);
    assert!(gates.len() >= 6);
    let inputs = names(graph, graph.runtime_inputs());
    let exec = Executor::new(
        graph,
        &inputs,
        &names(graph, graph.outputs().iter().copied()),
        gates,
    )
    .unwrap();
    let mut params = Params::<f32>::new(&exec, graph).unwrap();
    params.alpha.iter_mut().for_each(|a| *a = 0.25);
    let x = normal_array(&[32, 1, 8, 8], &mut Rng::new(5));
    let step = || {
        let run = exec
            .forward(std::slice::from_ref(&x), &params, true)
            .unwrap();
        let g = run.outputs[0].mapv(|v| v.sin());
        let grads = exec
            .backward(
                &run,
                &[g],
                &params,
                Wanted {
                    weights: true,
                    inputs: true,
                },
            )
            .unwrap();
        (run.outputs[0].clone(), grads)
    };
    let (out_many, many) = step();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (out_one, one) = one_thread.install(step);
    assert_eq!(out_many, out_one);
    assert_eq!(many.alpha, one.alpha);
    assert!(many.alpha.iter().all(|a| *a != 0.0));
    assert_eq!(many.weights, one.weights);
    assert_eq!(many.inputs, one.inputs);
}
