//! The gated model: the candidate activations gated in standard ONNX operators, for
//! another engine to train, and the gates read back — by structure, not by name — from
//! the model that engine writes after training.
//!
//! A gate is y' = y + α·(x − y), where y = act(x): `Add(y, Mul(α, Sub(x, y)))`, α one
//! scalar float initializer per group (every activation of a group reads the same α).
//! At α = 0 the model is the original; at α = 1 the activation is gone. Training pushes
//! α towards 1 with the penalty λ·Σ_g w_g·(1 − α_g), α clipped to [0, 1].
//!
//! Reading accepts what a framework's re-export changes: new names, the operands of
//! `Add` and `Mul` in either order, α as an initializer or a `Constant` node of one
//! element.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::Params;
use crate::gates::GateGroup;
use crate::gates::trained::{blend_with_identity, set_weights};
use crate::ir::{Attributes, Graph, Model, NodeId, OpKind, Patch, Tensor, ValueId, Wire};
use crate::passes::activation::recognise;
use crate::passes::constant_to_initializer::ConstantToInitializer;
use crate::passes::remove_identity::RemoveIdentity;
use crate::passes::{Ctx, Pass};

/// The `metadata_props` key holding the [`Manifest`] as JSON.
pub const MANIFEST_KEY: &str = "onnx_shallow.gates";

/// What a gated model's gates are and how to train them: written into the model's
/// metadata and, on request, beside it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The gate's function.
    pub gate: String,
    /// The penalty that pushes gates open, as Layer Folding trains it.
    pub penalty: String,
    /// A gate at or past this value is folded; below it, it stays as trained.
    pub threshold: f64,
    /// What a group's `gain` counts: `seconds` (measured) or `MACs` (estimated).
    pub gain_unit: String,
    pub groups: Vec<ManifestGroup>,
}

/// One gate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestGroup {
    /// The name of its α initializer.
    pub gate: String,
    /// The root nodes of the activations it gates.
    pub activations: Vec<String>,
    /// What removing them saves (see `gain_unit`).
    pub gain: f64,
    /// The gain as a share of all groups' gains: the w_g of the penalty.
    pub weight: f64,
    /// The folds removing them lets happen.
    pub folds: Vec<String>,
}

impl Manifest {
    /// The manifest `model` carries, if any.
    pub fn of(model: &Model) -> Result<Option<Manifest>> {
        let Some(text) = model.metadata(MANIFEST_KEY) else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| Error::graph(format!("metadata '{MANIFEST_KEY}' is not a manifest: {e}")))
    }
}

/// `base` (canonical, exact folds applied) with a gate at α = 0 on every activation of
/// `groups`, and the manifest that describes them (also in the model's metadata).
pub fn write_gates(
    base: &Model,
    groups: &[GateGroup],
    threshold: f64,
) -> Result<(Model, Manifest)> {
    let mut gated = base.clone();
    let total: f64 = groups.iter().map(|g| g.gain).sum();
    let mut manifest = Manifest {
        gate: "y' = act(x) + alpha * (x - act(x))".to_string(),
        penalty: "lambda * sum_g w_g * (1 - alpha_g), alpha clipped to [0, 1]".to_string(),
        threshold,
        gain_unit: match groups.iter().any(|g| g.estimate) {
            true => "MACs".to_string(),
            false => "seconds".to_string(),
        },
        groups: Vec::new(),
    };
    for (index, group) in groups.iter().enumerate() {
        let alpha = unused_name(&gated.graph, &format!("onnx_shallow_gate_{index}"));
        let mut patch = Patch::new(format!("gate {alpha}"));
        let alpha_wire = patch.constant(&alpha, Tensor::from_f32(Vec::new(), &[0.0]));
        for root in group.nodes() {
            gate_activation(&gated.graph, &mut patch, root, alpha_wire)?;
        }
        gated.graph.apply(patch)?;
        manifest.groups.push(ManifestGroup {
            gate: alpha,
            activations: group.nodes().map(str::to_string).collect(),
            gain: group.gain,
            weight: if total > 0.0 {
                group.gain / total
            } else {
                1.0 / groups.len() as f64
            },
            folds: group.folds.clone(),
        });
    }
    let text = serde_json::to_string(&manifest).expect("a manifest serialises");
    gated.set_metadata(MANIFEST_KEY, text);
    Ok((gated, manifest))
}

/// A name no value of `graph` has, `wanted` if free.
fn unused_name(graph: &Graph, wanted: &str) -> String {
    (0..)
        .map(|i| match i {
            0 => wanted.to_string(),
            i => format!("{wanted}_{i}"),
        })
        .find(|name| graph.value_by_name(name).is_none())
        .expect("some suffix is free")
}

/// The activation rooted at `root` computes y' = y + α·(x − y): its computation moves to
/// a copy, and the root, keeping its name and output, becomes the gate's sum.
fn gate_activation(graph: &Graph, patch: &mut Patch, root: &str, alpha: Wire) -> Result<()> {
    let not_found = || Error::graph(format!("gated activation '{root}' is not in the model"));
    let id = graph.node_by_name(root).ok_or_else(not_found)?;
    let activation = recognise(graph, id)?.ok_or_else(not_found)?;
    let x: Wire = activation.input.into();
    let y = copy_node(graph, patch, id, &format!("{root}/act"));
    let plain = Attributes::default();
    let difference = patch.node(
        &format!("{root}/gate_difference"),
        OpKind::Sub,
        plain.clone(),
        &[Some(x), Some(y)],
        1,
    )[0];
    let scaled = patch.node(
        &format!("{root}/gate_scaled"),
        OpKind::Mul,
        plain.clone(),
        &[Some(alpha), Some(difference)],
        1,
    )[0];
    patch.redefine(id, OpKind::Add, plain, &[Some(y), Some(scaled)]);
    Ok(())
}

/// A new node named `name` computing what the node `id` computes; its output.
fn copy_node(graph: &Graph, patch: &mut Patch, id: NodeId, name: &str) -> Wire {
    let node = graph.node(id);
    let inputs: Vec<Option<Wire>> = node.inputs.iter().map(|v| v.map(Into::into)).collect();
    patch.node(name, node.kind.clone(), node.attributes.clone(), &inputs, 1)[0]
}

/// `gated` with training's result written in: each group's α (in manifest order), and
/// the trained weights when the weights were trained too.
pub fn write_training(
    gated: &Model,
    alphas: &[f64],
    weights: Option<&Params<f32>>,
) -> Result<Model> {
    let manifest = Manifest::of(gated)?
        .ok_or_else(|| Error::graph(format!("no '{MANIFEST_KEY}' metadata: not a gated model")))?;
    if alphas.len() != manifest.groups.len() {
        return Err(Error::graph(format!(
            "{} gate values for {} gates",
            alphas.len(),
            manifest.groups.len()
        )));
    }
    let mut trained = gated.clone();
    if let Some(weights) = weights {
        set_weights(&mut trained.graph, weights)?;
    }
    let mut patch = Patch::new("trained gates");
    for (group, &alpha) in manifest.groups.iter().zip(alphas) {
        let value = trained
            .graph
            .value_by_name(&group.gate)
            .filter(|&v| trained.graph.constant(v).is_some())
            .ok_or_else(|| Error::tensor(&group.gate, "is not an initializer of the model"))?;
        let wire = patch.constant(&group.gate, Tensor::from_f32(Vec::new(), &[alpha as f32]));
        patch.shunt(value, wire);
    }
    trained.graph.apply(patch)?;
    Ok(trained)
}

/// A gate read back from a trained model.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Gate {
    /// The node computing the gate's sum, y'.
    pub node: String,
    /// The root node of the activation it gates.
    pub activation: String,
    /// The activation's operator.
    pub op: String,
    /// The value α is read from (one per group: gates that share it are one group).
    pub parameter: String,
    pub alpha: f64,
}

/// The gates of `graph` (constants as initializers), in graph order, and notes on what
/// looks like a gate but is not one (kept as it is). An error when α is not a number in
/// [0, 1].
fn read_gates(graph: &Graph) -> Result<(Vec<Gate>, Vec<String>)> {
    let mut gates = Vec::new();
    let mut notes = Vec::new();
    for id in graph.topological_order()? {
        if graph.node(id).op() != "Add" {
            continue;
        }
        let Some(arithmetic) = GateArithmetic::at(graph, id) else {
            continue;
        };
        match arithmetic.gate(graph)? {
            Ok(gate) => gates.push(gate),
            Err(unread) => notes.push(format!(
                "node '{}' computes y + α·(x − y) but {unread}: kept as it is",
                graph.node(id).name
            )),
        }
    }
    Ok((gates, notes))
}

/// `Add(y, Mul(α, Sub(x, y)))` at an Add node.
struct GateArithmetic {
    sum: NodeId,
    x: ValueId,
    y: ValueId,
    alpha: ValueId,
}

impl GateArithmetic {
    fn at(graph: &Graph, sum: NodeId) -> Option<GateArithmetic> {
        let node = graph.node(sum);
        let [Some(a), Some(b)] = node.inputs[..] else {
            return None;
        };
        [(a, b), (b, a)].into_iter().find_map(|(y, scaled)| {
            let mul = graph.node(graph.producer(scaled)?);
            let [Some(p), Some(q)] = mul.inputs[..] else {
                return None;
            };
            if mul.op() != "Mul" {
                return None;
            }
            [(p, q), (q, p)]
                .into_iter()
                .find_map(|(alpha, difference)| {
                    let sub = graph.node(graph.producer(difference)?);
                    match (sub.op(), &sub.inputs[..]) {
                        ("Sub", &[Some(x), Some(minus)]) if minus == y => {
                            Some(GateArithmetic { sum, x, y, alpha })
                        }
                        _ => None,
                    }
                })
        })
    }

    /// The gate, when y is a recognised activation of x and α a one-element constant;
    /// otherwise what is not.
    fn gate(&self, graph: &Graph) -> Result<std::result::Result<Gate, String>> {
        let parameter = &graph.value(self.alpha).name;
        let Some(constant) = graph.constant(self.alpha).filter(|t| t.numel() == 1) else {
            return Ok(Err(format!(
                "α ('{parameter}') is not a one-element constant"
            )));
        };
        let activation = match graph.producer(self.y) {
            Some(producer) => recognise(graph, producer)?.map(|a| (producer, a)),
            None => None,
        };
        let Some((producer, activation)) =
            activation.filter(|(_, a)| a.input == self.x && a.output == self.y)
        else {
            return Ok(Err("y is not an activation of x".to_string()));
        };
        let node = &graph.node(self.sum).name;
        let alpha = Some(constant)
            .and_then(|t| t.to_f64())
            .and_then(|values| values.first().copied())
            .ok_or_else(|| {
                Error::tensor(parameter, format!("the α of gate '{node}' is not a float"))
            })?;
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::tensor(
                parameter,
                format!(
                    "the α of gate '{node}' is {alpha}: expected a value in [0, 1] (clip it in training)"
                ),
            ));
        }
        Ok(Ok(Gate {
            node: node.clone(),
            activation: graph.node(producer).name.clone(),
            op: activation.kind.name().to_string(),
            parameter: parameter.clone(),
            alpha,
        }))
    }
}

/// A trained gated model with its gates resolved.
#[derive(Clone, Debug)]
pub struct Ungated {
    /// Every gate gone: below the threshold, the activation as trained (blended with
    /// identity by α); at or past it, the plain activation, for the caller to linearise.
    pub model: Model,
    pub gates: Vec<Gate>,
    /// The root nodes of the activations whose gates are at or past the threshold.
    pub crossed: Vec<String>,
    /// What the reader left as it found it, and why.
    pub notes: Vec<String>,
}

/// Resolves the gates of `trained`; an error when it has none.
pub fn ungate(trained: &Model, threshold: f64) -> Result<Ungated> {
    let mut model = trained.clone();
    // A re-export may hold α and the Clip bounds in Constant nodes, and read an α equal
    // to another through an Identity.
    let mut ctx = Ctx::default();
    ConstantToInitializer.run(&mut model.graph, &mut ctx)?;
    RemoveIdentity.run(&mut model.graph, &mut ctx)?;
    let (gates, mut notes) = read_gates(&model.graph)?;
    if gates.is_empty() {
        let seen = notes.iter().map(|n| format!("; {n}")).collect::<String>();
        return Err(Error::graph(format!(
            "no gates found: expected activations gated as y + α·(x − y), α a one-element \
             constant (as `onnx-shallow gate` writes them){seen}"
        )));
    }
    notes.extend(missing_from_manifest(trained, &gates)?);
    let mut crossed = Vec::new();
    for gate in &gates {
        restore_activation(&mut model.graph, gate)?;
        if gate.alpha >= threshold {
            crossed.push(gate.node.clone());
        } else if gate.alpha > 0.0 {
            blend_with_identity(&mut model.graph, &gate.node, gate.alpha as f32)?;
        }
    }
    Ok(Ungated {
        model,
        gates,
        crossed,
        notes,
    })
}

/// The gate's sum node becomes its activation again (the activation's root copied into
/// it): the gate's other nodes fall away.
fn restore_activation(graph: &mut Graph, gate: &Gate) -> Result<()> {
    let found = |name: &str| {
        graph
            .node_by_name(name)
            .ok_or_else(|| Error::graph(format!("gate node '{name}' is not in the model")))
    };
    let (sum, activation) = (found(&gate.node)?, found(&gate.activation)?);
    let act = graph.node(activation);
    let (kind, attributes, inputs) = (
        act.kind.clone(),
        act.attributes.clone(),
        act.inputs
            .iter()
            .map(|v| v.map(Into::into))
            .collect::<Vec<_>>(),
    );
    let mut patch = Patch::new(format!("ungate {}", gate.node));
    patch.redefine(sum, kind, attributes, &inputs);
    graph.apply(patch)?;
    Ok(())
}

/// A note when the model's manifest lists more gated activations than were read: the
/// others' gates were changed beyond recognition.
fn missing_from_manifest(trained: &Model, gates: &[Gate]) -> Result<Vec<String>> {
    let Some(manifest) = Manifest::of(trained)? else {
        return Ok(Vec::new());
    };
    let listed = manifest.groups.iter().flat_map(|g| &g.activations);
    let missing: Vec<&String> = listed
        .filter(|name| !gates.iter().any(|g| &&g.node == name))
        .collect();
    Ok(match missing.is_empty() {
        true => Vec::new(),
        false => vec![format!(
            "the manifest lists gated activations whose gates were not recognised (kept as they are): {}",
            missing
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::Linearize;
    use crate::passes::activation::forms::{ACTIVATIONS, Form, between_convs, input_dims};
    use crate::passes::activations;
    use crate::testing::max_relative_error;

    /// `model`'s one activation gated (as group 0), and its root's name.
    fn gated(model: &Model) -> (Model, String) {
        let root = activations(&model.graph).unwrap()[0].name.clone();
        let groups = crate::gates::candidates::named(&model.graph, &Linearize::nodes([&root]));
        let (gated, _) = write_gates(model, &groups.unwrap(), 0.9).unwrap();
        (gated, root)
    }

    fn error(reference: &Model, candidate: &Model) -> f64 {
        max_relative_error(reference, candidate, &input_dims(), 5)
    }

    #[test]
    fn a_gate_is_the_activation_at_zero_identity_at_one_and_reads_back_as_written() {
        let linear = between_convs(13, Form::Identity);
        for form in ACTIVATIONS {
            let original = between_convs(form.opset(), form);
            let (gated, root) = gated(&original);
            assert!(error(&original, &gated) <= 1e-6, "{form:?} at α = 0");
            let open = write_training(&gated, &[1.0], None).unwrap();
            assert!(error(&linear, &open) <= 1e-5, "{form:?} at α = 1");

            let half = write_training(&gated, &[0.3], None).unwrap();
            let (gates, notes) = read_gates(&half.graph).unwrap();
            assert!(notes.is_empty(), "{form:?}: {notes:?}");
            assert_eq!(gates.len(), 1, "{form:?}");
            assert_eq!(
                (gates[0].node.as_str(), gates[0].alpha as f32),
                (root.as_str(), 0.3)
            );

            let kept = ungate(&half, 0.9).unwrap();
            assert!(kept.crossed.is_empty());
            assert!(
                error(&half, &kept.model) <= 1e-5,
                "{form:?} kept as trained"
            );
            assert!(read_gates(&kept.model.graph).unwrap().0.is_empty());

            let crossed = ungate(&write_training(&gated, &[0.95], None).unwrap(), 0.9).unwrap();
            assert_eq!(crossed.crossed, [root]);
            assert!(
                error(&original, &crossed.model) <= 1e-6,
                "{form:?} restored"
            );
        }
    }

    /// x → Relu → y, gated by hand as a re-export might write it: the Add's and the
    /// Mul's operands swapped, α in a Constant node.
    fn reexported(alpha: f32, sub_reads: &str) -> Model {
        let value = Tensor::from_f32(vec![1], &[alpha]).to_proto("alpha");
        let proto = ModelBuilder::new(13)
            .input("x", &[2, 4])
            .node("Relu", &["x"], &["r"], Attributes::default())
            .node(
                "Constant",
                &[],
                &["alpha"],
                Attributes::default().with_tensor("value", value),
            )
            .node("Sub", &[sub_reads, "r"], &["d"], Attributes::default())
            .node("Mul", &["d", "alpha"], &["m"], Attributes::default())
            .node("Add", &["m", "r"], &["y"], Attributes::default())
            .output("y")
            .build();
        Model::from_proto(proto).unwrap()
    }

    #[test]
    fn a_reexported_gate_is_read_whatever_its_operand_order_and_alpha_node() {
        let trained = ungate(&reexported(0.25, "x"), 0.9).unwrap();
        assert_eq!(trained.gates.len(), 1);
        assert_eq!(trained.gates[0].alpha, 0.25);
        assert_eq!(trained.gates[0].op, "Relu");
        let kinds: Vec<String> = activations(&trained.model.graph)
            .unwrap()
            .iter()
            .map(|a| a.kind.to_string())
            .collect();
        assert_eq!(kinds, ["LeakyRelu(0.25)"]);
    }

    #[test]
    fn alpha_outside_zero_to_one_or_nan_is_refused_naming_it() {
        for alpha in [1.5, -0.1, f32::NAN] {
            let error = ungate(&reexported(alpha, "x"), 0.9)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("'alpha'") && error.contains("'Add_4'") && error.contains("[0, 1]"),
                "{error}"
            );
        }
    }

    #[test]
    fn gate_arithmetic_around_no_activation_is_a_note_and_no_gate_an_error() {
        // Sub reads y − y: the gate's shape, but not around an activation of its input.
        let error = ungate(&reexported(0.5, "r"), 0.9).unwrap_err().to_string();
        assert!(
            error.contains("no gates found")
                && error.contains("'Add_4'")
                && error.contains("y is not an activation of x"),
            "{error}"
        );
        let proto = ModelBuilder::new(13)
            .input("x", &[2, 4])
            .input("alpha", &[1])
            .node("Relu", &["x"], &["r"], Attributes::default())
            .node("Sub", &["x", "r"], &["d"], Attributes::default())
            .node("Mul", &["alpha", "d"], &["m"], Attributes::default())
            .node("Add", &["r", "m"], &["y"], Attributes::default())
            .output("y")
            .build();
        let error = ungate(&Model::from_proto(proto).unwrap(), 0.9).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("α ('alpha') is not a one-element constant"),
            "{error}"
        );
    }
}
