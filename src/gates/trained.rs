//! What fine-tuning trained, written as a model: the fine-tuned weights in place of the
//! original's, and every gate that ended below the threshold as the function the weights
//! were trained with, y = (1 − α)·act(x) + α·x — never snapped back to act(x) or on to x.
//! A Relu becomes a LeakyRelu of slope α, a LeakyRelu or PRelu of slope s one of slope
//! (1 − α)·s + α; a Clip or a HardSwish is blended with x by a Mul, a Mul and an Add.
//! Gates that crossed the threshold trained as identity: the walk linearises and folds
//! them.

use crate::error::{Error, Result};
use crate::exec::Params;
use crate::gates::{GateGroup, GateOutcome};
use crate::ir::{Attributes, Graph, Model, NodeId, OpKind, Patch, Tensor, Wire};
use crate::passes::ActivationKind;
use crate::passes::activation::recognise;

/// `model` with `weights` and the sub-threshold gates of `schedule` written in.
pub fn write_trained(
    model: &Model,
    groups: &[GateGroup],
    schedule: &[GateOutcome],
    weights: &Params<f32>,
) -> Result<Model> {
    let mut trained = model.clone();
    set_weights(&mut trained.graph, weights)?;
    for outcome in schedule {
        if outcome.crossed_at.is_some() || outcome.alpha == 0.0 {
            continue;
        }
        for activation in &groups[outcome.group].activations {
            blend_with_identity(&mut trained.graph, &activation.node, outcome.alpha as f32)?;
        }
    }
    Ok(trained)
}

/// Every weight of `weights` replaces the initializer of its name, in its dims and type.
pub(crate) fn set_weights(graph: &mut Graph, weights: &Params<f32>) -> Result<()> {
    let mut patch = Patch::new("fine-tuned weights");
    for (name, values) in &weights.weights {
        let value = graph.value_by_name(name);
        let Some((value, old)) = value.and_then(|v| Some((v, graph.constant(v)?))) else {
            return Err(Error::tensor(name, "is not an initializer of the model"));
        };
        let values: Vec<f64> = values.iter().map(|&w| w.into()).collect();
        let tuned = Tensor::from_f64(old.dtype(), old.dims().to_vec(), &values)?;
        let wire = patch.constant(name, tuned);
        patch.shunt(value, wire);
    }
    graph.apply(patch)?;
    Ok(())
}

/// The activation rooted at the node `root` becomes (1 − α)·act(x) + α·x.
pub(crate) fn blend_with_identity(graph: &mut Graph, root: &str, alpha: f32) -> Result<()> {
    let not_found = || Error::graph(format!("gated activation '{root}' is not in the model"));
    let id = graph.node_by_name(root).ok_or_else(not_found)?;
    let activation = recognise(graph, id)?.ok_or_else(not_found)?;
    let node = graph.node(id);
    let x: Wire = activation.input.into();
    let blended = |s: f32| (1.0 - alpha) * s + alpha;
    let mut patch = Patch::new(format!("trained gate >> {root}"));
    match &activation.kind {
        ActivationKind::Relu => leaky_relu(&mut patch, id, x, blended(0.0)),
        ActivationKind::LeakyRelu { alpha: slope } => {
            leaky_relu(&mut patch, id, x, blended(*slope))
        }
        ActivationKind::PRelu { slope } => {
            let slopes = slope
                .to_f32()
                .ok_or_else(|| Error::graph(format!("the slope of '{root}' is not float")))?;
            let slopes: Vec<f32> = slopes.into_iter().map(blended).collect();
            let slope = patch.constant(
                &format!("{root}_trained_slope"),
                Tensor::from_f32(slope.dims().to_vec(), &slopes),
            );
            patch.redefine(
                id,
                OpKind::PRelu,
                Attributes::default(),
                &[Some(x), Some(slope)],
            );
        }
        ActivationKind::Clip { .. } | ActivationKind::HardSwish => {
            // The root's computation moves to a copy; the root itself becomes the sum, so
            // every reader of y reads the blend.
            let act = patch.node(
                &format!("{root}/act"),
                node.kind.clone(),
                node.attributes.clone(),
                &node
                    .inputs
                    .iter()
                    .map(|v| v.map(Into::into))
                    .collect::<Vec<_>>(),
                1,
            )[0];
            let kept = scaled(&mut patch, root, "kept", act, 1.0 - alpha);
            let linear = scaled(&mut patch, root, "linear", x, alpha);
            patch.redefine(
                id,
                OpKind::Add,
                Attributes::default(),
                &[Some(kept), Some(linear)],
            );
        }
    }
    graph.apply(patch)?;
    Ok(())
}

/// The node `id` becomes a LeakyRelu of x with this slope.
fn leaky_relu(patch: &mut Patch, id: NodeId, x: Wire, slope: f32) {
    let attributes = Attributes::default().with_float("alpha", slope);
    patch.redefine(id, OpKind::LeakyRelu, attributes, &[Some(x)]);
}

/// `value · factor`, a new Mul by a scalar.
fn scaled(patch: &mut Patch, root: &str, part: &str, value: Wire, factor: f32) -> Wire {
    let name = format!("{root}/{part}");
    let factor = patch.constant(
        &format!("{name}_factor"),
        Tensor::from_f32(Vec::new(), &[factor]),
    );
    patch.node(
        &name,
        OpKind::Mul,
        Attributes::default(),
        &[Some(value), Some(factor)],
        1,
    )[0]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ndarray::ArrayD;

    use super::*;
    use crate::calib::random::{Rng, normal_array};
    use crate::passes::activation::forms::{ACTIVATIONS, Form, between_convs, input_dims};
    use crate::passes::activations;
    use crate::runtime::Session;
    use crate::testing::relative_error;

    fn run(model: &Model) -> ArrayD<f32> {
        let dims = input_dims();
        let x = normal_array(&dims[0], &mut Rng::new(3));
        Session::new(model, &dims)
            .unwrap()
            .run(&[x])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_gate_below_the_threshold_computes_the_blend_it_was_trained_as() {
        let linear = run(&between_convs(13, Form::Identity));
        for form in ACTIVATIONS {
            let original = between_convs(form.opset(), form);
            let mut trained = original.clone();
            let root = activations(&trained.graph).unwrap()[0].name.clone();
            blend_with_identity(&mut trained.graph, &root, 0.3).unwrap();
            // The second conv is linear: blending before it blends its output.
            let expected = run(&original) * 0.7 + &linear * 0.3;
            let error = relative_error(&expected, &run(&trained));
            assert!(error <= 1e-5, "{form:?}: relative error {error:e}");
        }
    }

    #[test]
    fn a_relu_gate_becomes_a_leaky_relu_of_slope_alpha() {
        let mut trained = between_convs(13, Form::Relu);
        blend_with_identity(&mut trained.graph, "Relu_1", 0.25).unwrap();
        let kinds: Vec<ActivationKind> = activations(&trained.graph)
            .unwrap()
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, [ActivationKind::LeakyRelu { alpha: 0.25 }]);
    }

    #[test]
    fn fine_tuned_weights_replace_the_initializers_of_their_names() {
        let original = between_convs(13, Form::Identity);
        let w2 = original.graph.value_by_name("w2").unwrap();
        let doubled = original.graph.constant(w2).unwrap().to_f32().unwrap();
        let doubled: Vec<f32> = doubled.iter().map(|w| 2.0 * w).collect();
        let weights = Params {
            alpha: Vec::new(),
            weights: BTreeMap::from([(
                "w2".to_string(),
                ArrayD::from_shape_vec(vec![2, 4], doubled).unwrap(),
            )]),
        };
        let trained = write_trained(&original, &[], &[], &weights).unwrap();
        let error = relative_error(&(run(&original) * 2.0), &run(&trained));
        assert!(error <= 1e-6, "relative error {error:e}");

        let unknown = Params {
            alpha: Vec::new(),
            weights: BTreeMap::from([("w9".to_string(), ArrayD::zeros(vec![1]))]),
        };
        let error = write_trained(&original, &[], &[], &unknown).unwrap_err();
        assert!(error.to_string().contains("w9"), "{error}");
    }
}
