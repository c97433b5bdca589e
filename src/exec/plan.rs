//! Compiling a region of a graph into a flat list of steps over numbered value slots:
//! the nodes needed to compute the outputs from the fed tensors, in execution order, with
//! a gate step after each gated activation, and what the backward pass must keep.

use std::collections::{HashMap, HashSet};

use super::Gate;
use super::ops::{Op, Unary};
use crate::error::{Error, Result};
use crate::ir::{Graph, OpKind, Tensor, ValueId};

/// Where a value slot's tensor comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Source {
    Feed(usize),
    Weight(usize),
    Computed,
}

#[derive(Debug)]
pub(crate) enum StepKind {
    Node(Op),
    /// y' = (1 − α)·y + α·x with inputs [x, y] and α of this group.
    Gate {
        group: usize,
    },
    /// A gate fused with the single-node activation y = f(x) it wraps; input [x].
    GatedActivation {
        unary: Unary,
        group: usize,
    },
}

#[derive(Debug)]
pub(crate) struct Step {
    pub name: String,
    pub op_type: String,
    pub kind: StepKind,
    pub inputs: Vec<usize>,
    pub output: usize,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub sources: Vec<Source>,
    pub steps: Vec<Step>,
    pub outputs: Vec<usize>,
    pub feed_count: usize,
    /// Weight names and dims, in slot order of `Source::Weight`.
    pub weights: Vec<(String, Vec<usize>)>,
    pub groups: usize,
    /// Slots whose tensor the backward pass reads.
    pub saved: Vec<bool>,
    /// The last step reading each slot (`None`: no step reads it).
    pub last_use: Vec<Option<usize>>,
    pub is_output: Vec<bool>,
}

/// The value of a constant: an initializer, or a `Constant` node's value.
pub(crate) fn constant_of(graph: &Graph, value: ValueId) -> Option<Tensor> {
    if let Some(t) = graph.constant(value) {
        return Some(t.clone());
    }
    let node = graph.node(graph.producer(value)?);
    if node.kind != OpKind::Constant {
        return None;
    }
    if let Ok(Some(t)) = node.tensor("value") {
        return Some(t);
    }
    if let Ok(Some(v)) = node.float("value_float") {
        return Some(Tensor::from_f32(vec![], &[v]));
    }
    if let Ok(Some(v)) = node.floats("value_floats") {
        return Some(Tensor::from_f32(vec![v.len()], &v));
    }
    if let Ok(Some(v)) = node.int("value_int") {
        return Some(Tensor::from_i64(vec![], &[v]));
    }
    node.ints("value_ints")
        .ok()
        .flatten()
        .map(|v| Tensor::from_i64(vec![v.len()], &v))
}

fn lookup(graph: &Graph, name: &str) -> Result<ValueId> {
    graph
        .value_by_name(name)
        .ok_or_else(|| Error::tensor(name, "is not in the graph"))
}

/// A node read for execution: its op and its present data inputs.
struct Compiled {
    op: Op,
    inputs: Vec<ValueId>,
}

fn compile_node(graph: &Graph, id: crate::ir::NodeId) -> Result<Compiled> {
    let node = graph.node(id);
    let constant = |slot: usize| -> Result<Option<Tensor>> {
        let Some(v) = node.input(slot) else {
            return Ok(None);
        };
        constant_of(graph, v).map(Some).ok_or_else(|| {
            let name = &graph.value(v).name;
            Error::node(
                &node.name,
                node.op(),
                format!("input '{name}' must be a constant (an initializer)"),
            )
        })
    };
    let op = Op::from_node(node, graph.opset(), &constant)?.ok_or_else(|| {
        Error::node(
            &node.name,
            node.op(),
            "the executor does not support this operator",
        )
    })?;
    let (max, min) = op.data_inputs(node);
    let slots = &node.inputs[..max.min(node.inputs.len())];
    let inputs: Vec<ValueId> = slots.iter().map_while(|v| *v).collect();
    if inputs.len() < min || slots[inputs.len()..].iter().any(Option::is_some) {
        return Err(Error::node(
            &node.name,
            node.op(),
            format!("needs at least {min} leading inputs"),
        ));
    }
    Ok(Compiled { op, inputs })
}

/// The nodes needed for `outputs` given `feeds`, by a walk up from the outputs.
fn needed_nodes(
    graph: &Graph,
    feeds: &[ValueId],
    outputs: &[ValueId],
) -> Result<HashMap<crate::ir::NodeId, Compiled>> {
    let mut nodes = HashMap::new();
    let mut stack = outputs.to_vec();
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v) || feeds.contains(&v) || constant_of(graph, v).is_some() {
            continue;
        }
        let Some(p) = graph.producer(v) else {
            return Err(Error::tensor(
                &graph.value(v).name,
                "is needed but is neither fed, a constant, nor computed",
            ));
        };
        if let std::collections::hash_map::Entry::Vacant(e) = nodes.entry(p) {
            let compiled = compile_node(graph, p)?;
            stack.extend(&compiled.inputs);
            e.insert(compiled);
        }
    }
    Ok(nodes)
}

struct Builder<'g> {
    graph: &'g Graph,
    plan: Plan,
    /// The slot holding each value's current tensor (a gated value maps to the gate's output).
    slots: HashMap<ValueId, usize>,
}

impl Builder<'_> {
    fn new_slot(&mut self, source: Source) -> usize {
        self.plan.sources.push(source);
        self.plan.sources.len() - 1
    }

    /// The slot of a data input, adding a weight slot for a float constant.
    fn input_slot(&mut self, v: ValueId, node: &str) -> Result<usize> {
        if let Some(&slot) = self.slots.get(&v) {
            return Ok(slot);
        }
        let value = self.graph.value(v);
        let tensor = constant_of(self.graph, v).ok_or_else(|| {
            Error::tensor(
                &value.name,
                format!("read by node '{node}' is not computed (only a node's first output is)"),
            )
        })?;
        if !tensor.dtype().is_float() {
            return Err(Error::tensor(
                &value.name,
                format!("read by node '{node}' as data must be a float tensor"),
            ));
        }
        let slot = self.new_slot(Source::Weight(self.plan.weights.len()));
        self.plan
            .weights
            .push((value.name.clone(), tensor.dims().to_vec()));
        self.slots.insert(v, slot);
        Ok(slot)
    }
}

pub(crate) fn compile(
    graph: &Graph,
    inputs: &[String],
    outputs: &[String],
    gates: &[Gate],
) -> Result<Plan> {
    let feeds = inputs
        .iter()
        .map(|n| lookup(graph, n))
        .collect::<Result<Vec<_>>>()?;
    let output_ids = outputs
        .iter()
        .map(|n| lookup(graph, n))
        .collect::<Result<Vec<_>>>()?;
    let mut nodes = needed_nodes(graph, &feeds, &output_ids)?;
    let mut gate_of: HashMap<ValueId, &Gate> = HashMap::new();
    for gate in gates {
        if gate_of.insert(lookup(graph, &gate.output)?, gate).is_some() {
            return Err(Error::tensor(&gate.output, "is gated twice"));
        }
    }
    let mut b = Builder {
        graph,
        plan: Plan {
            sources: Vec::new(),
            steps: Vec::new(),
            outputs: Vec::new(),
            feed_count: feeds.len(),
            weights: Vec::new(),
            groups: gates.iter().map(|g| g.group + 1).max().unwrap_or(0),
            saved: Vec::new(),
            last_use: Vec::new(),
            is_output: Vec::new(),
        },
        slots: HashMap::new(),
    };
    for (i, &f) in feeds.iter().enumerate() {
        let slot = b.new_slot(Source::Feed(i));
        b.slots.insert(f, slot);
    }
    let mut gated = HashSet::new();
    for id in graph.topological_order()? {
        let Some(compiled) = nodes.remove(&id) else {
            continue;
        };
        let node = graph.node(id);
        let inputs = compiled
            .inputs
            .iter()
            .map(|&v| b.input_slot(v, &node.name))
            .collect::<Result<Vec<_>>>()?;
        let out_value = node
            .output(0)
            .ok_or_else(|| Error::node(&node.name, node.op(), "has no output"))?;
        let output = b.new_slot(Source::Computed);
        b.plan.steps.push(Step {
            name: node.name.clone(),
            op_type: node.op().to_string(),
            kind: StepKind::Node(compiled.op),
            inputs,
            output,
        });
        b.slots.insert(out_value, output);
        if let Some(gate) = gate_of.get(&out_value) {
            let x = lookup(graph, &gate.input)?;
            let x_slot = *b.slots.get(&x).ok_or_else(|| {
                Error::tensor(
                    &gate.input,
                    format!(
                        "the input of the gate on '{}' is not computed before it",
                        gate.output
                    ),
                )
            })?;
            let last = b.plan.steps.last_mut().expect("just pushed");
            match last.kind {
                StepKind::Node(Op::Unary(unary)) if last.inputs[0] == x_slot => {
                    last.kind = StepKind::GatedActivation {
                        unary,
                        group: gate.group,
                    };
                }
                _ => {
                    let gated_slot = b.new_slot(Source::Computed);
                    b.plan.steps.push(Step {
                        name: format!("gate({} → {})", gate.input, gate.output),
                        op_type: "Gate".into(),
                        kind: StepKind::Gate { group: gate.group },
                        inputs: vec![x_slot, output],
                        output: gated_slot,
                    });
                    b.slots.insert(out_value, gated_slot);
                }
            }
            gated.insert(out_value);
        }
    }
    let ungated = gates.iter().find(|g| {
        graph
            .value_by_name(&g.output)
            .is_none_or(|v| !gated.contains(&v))
    });
    if let Some(gate) = ungated {
        return Err(Error::tensor(
            &gate.output,
            "is gated but not computed in the executed region",
        ));
    }
    b.plan.outputs = output_ids
        .iter()
        .map(|&v| b.input_slot(v, "(graph output)"))
        .collect::<Result<Vec<_>>>()?;
    Ok(finish(b.plan))
}

/// Fills in what the backward pass keeps and when the forward pass may drop a tensor.
fn finish(mut plan: Plan) -> Plan {
    let n = plan.sources.len();
    plan.saved = vec![false; n];
    plan.last_use = vec![None; n];
    plan.is_output = vec![false; n];
    for (i, step) in plan.steps.iter().enumerate() {
        let saved: &[usize] = match &step.kind {
            StepKind::Node(op) => {
                if op.saves_output() {
                    plan.saved[step.output] = true;
                }
                op.saved_inputs()
            }
            StepKind::Gate { .. } => &[0, 1],
            StepKind::GatedActivation { .. } => &[0],
        };
        for (j, &v) in step.inputs.iter().enumerate() {
            plan.last_use[v] = Some(i);
            if saved.contains(&j) && !matches!(plan.sources[v], Source::Weight(_)) {
                plan.saved[v] = true;
            }
        }
    }
    for &o in &plan.outputs {
        plan.is_output[o] = true;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};

    fn graph(builder: ModelBuilder) -> Graph {
        Model::from_proto(builder.build())
            .expect("a valid model")
            .graph
    }

    fn plan(graph: &Graph, inputs: &[&str], outputs: &[&str], gates: &[Gate]) -> Result<Plan> {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        compile(graph, &names(inputs), &names(outputs), gates)
    }

    fn op_types(plan: &Plan) -> Vec<&str> {
        plan.steps.iter().map(|s| s.op_type.as_str()).collect()
    }

    fn weight(dims: &[usize]) -> Tensor {
        Tensor::from_f32(dims.to_vec(), &vec![0.5; dims.iter().product()])
    }

    fn gate(input: &str, output: &str, group: usize) -> Gate {
        Gate {
            input: input.into(),
            output: output.into(),
            group,
        }
    }

    /// x → MatMul(w) → h → Relu → r → Add(b) → y, stored consumers first, with a branch
    /// no requested output needs: x → Mystery → m → Tanh → t.
    fn dense() -> Graph {
        graph(
            ModelBuilder::new(13)
                .input("x", &[-1, 4])
                .initializer("w", weight(&[4, 3]))
                .initializer("b", weight(&[3]))
                .node("Add", &["r", "b"], &["y"], Attributes::default())
                .node("Relu", &["h"], &["r"], Attributes::default())
                .node("Mystery", &["x"], &["m"], Attributes::default())
                .node("MatMul", &["x", "w"], &["h"], Attributes::default())
                .node("Tanh", &["m"], &["t"], Attributes::default())
                .output("y")
                .output("t"),
        )
    }

    #[test]
    fn only_the_nodes_the_outputs_need_are_compiled_producers_first() {
        let plan = plan(&dense(), &["x"], &["y"], &[]).unwrap();
        assert_eq!(op_types(&plan), ["MatMul", "Relu", "Add"]);
        let slots: Vec<(&[usize], usize)> = plan
            .steps
            .iter()
            .map(|s| (s.inputs.as_slice(), s.output))
            .collect();
        assert_eq!(slots, [(&[0, 1][..], 2), (&[2][..], 3), (&[3, 4][..], 5)]);
        assert_eq!(plan.outputs, [5]);
    }

    #[test]
    fn feeds_come_first_then_each_float_constant_read_as_data_is_a_weight_once() {
        // The target of the Reshape is read as a constant, not as data.
        let graph = graph(
            ModelBuilder::new(13)
                .input("a", &[-1, 3])
                .input("x", &[-1, 3])
                .initializer("b", weight(&[3]))
                .initializer("target", Tensor::from_i64(vec![2], &[0, -1]))
                .node("Add", &["x", "b"], &["s"], Attributes::default())
                .node("Mul", &["s", "b"], &["p"], Attributes::default())
                .node("Reshape", &["p", "target"], &["y"], Attributes::default())
                .output("y"),
        );
        let plan = plan(&graph, &["x", "a"], &["y"], &[]).unwrap();
        assert_eq!(
            plan.sources,
            [
                Source::Feed(0),
                Source::Feed(1),
                Source::Weight(0),
                Source::Computed,
                Source::Computed,
                Source::Computed,
            ]
        );
        assert_eq!(plan.feed_count, 2);
        assert_eq!(plan.weights, [("b".to_string(), vec![3])]);
        assert_eq!(plan.steps[1].inputs, [3, 2], "b read again from its slot");
    }

    #[test]
    fn last_use_is_the_last_step_reading_a_slot_and_requested_values_are_outputs() {
        // x is read by the first step and the last; r is an output read by a later step.
        let graph = graph(
            ModelBuilder::new(13)
                .input("x", &[-1, 3])
                .node("Relu", &["x"], &["r"], Attributes::default())
                .node("Sigmoid", &["r"], &["s"], Attributes::default())
                .node("Add", &["s", "x"], &["y"], Attributes::default())
                .output("y")
                .output("r"),
        );
        let plan = plan(&graph, &["x"], &["y", "r"], &[]).unwrap();
        // Slots: x 0, r 1, s 2, y 3.
        assert_eq!(plan.last_use, [Some(2), Some(1), Some(2), None]);
        assert_eq!(plan.outputs, [3, 1]);
        assert_eq!(plan.is_output, [false, true, false, true]);
    }

    #[test]
    fn saved_marks_what_the_backward_pass_reads_weights_aside() {
        // Slots: x 0, w 1, h 2, r 3, b 4, s 5, y 6.
        let graph = graph(
            ModelBuilder::new(13)
                .input("x", &[-1, 4])
                .initializer("w", weight(&[4, 3]))
                .initializer("b", weight(&[3]))
                .node("MatMul", &["x", "w"], &["h"], Attributes::default())
                .node("Relu", &["h"], &["r"], Attributes::default())
                .node("Add", &["r", "b"], &["s"], Attributes::default())
                .node("Softmax", &["s"], &["y"], Attributes::default())
                .output("y"),
        );
        let plan = plan(&graph, &["x"], &["y"], &[]).unwrap();
        assert_eq!(
            plan.saved,
            [true, false, true, false, false, false, true],
            "MatMul's data input, Relu's input and Softmax's output"
        );
    }

    #[test]
    fn a_gate_on_a_one_node_activation_is_fused_into_it() {
        let plan = plan(&dense(), &["x"], &["y"], &[gate("h", "r", 2)]).unwrap();
        assert_eq!(op_types(&plan), ["MatMul", "Relu", "Add"]);
        assert!(matches!(
            plan.steps[1].kind,
            StepKind::GatedActivation { group: 2, .. }
        ));
        assert_eq!(plan.groups, 3, "α of groups 0 to 2");
        assert_eq!(plan.steps[2].inputs[0], plan.steps[1].output);
        assert!(plan.saved[2], "the activation's input");
    }

    #[test]
    fn a_gate_on_a_longer_activation_is_a_step_its_readers_read() {
        // h → Relu → r1 → Clip → r: the gate blends h and r.
        let graph = graph(
            ModelBuilder::new(13)
                .input("h", &[-1, 3])
                .node("Relu", &["h"], &["r1"], Attributes::default())
                .node("Clip", &["r1"], &["r"], Attributes::default())
                .node("Neg", &["h"], &["unused"], Attributes::default())
                .node("Sigmoid", &["r"], &["y"], Attributes::default())
                .output("y")
                .output("unused"),
        );
        let plan = plan(&graph, &["h"], &["y"], &[gate("h", "r", 0)]).unwrap();
        assert_eq!(op_types(&plan), ["Relu", "Clip", "Gate", "Sigmoid"]);
        // Slots: h 0, r1 1, r 2, gated r 3, y 4.
        let gate_step = &plan.steps[2];
        assert!(matches!(gate_step.kind, StepKind::Gate { group: 0 }));
        assert_eq!(
            (gate_step.inputs.as_slice(), gate_step.output),
            (&[0, 2][..], 3)
        );
        assert_eq!(plan.steps[3].inputs, [3]);
        assert!(plan.saved[0] && plan.saved[2], "both sides of the blend");
        assert_eq!(plan.last_use[0], Some(2), "h is read again by the gate");
    }

    #[test]
    fn gates_it_cannot_place_are_errors() {
        let error = |gates: &[Gate]| {
            plan(&dense(), &["x"], &["y"], gates)
                .unwrap_err()
                .to_string()
        };
        let twice = error(&[gate("h", "r", 0), gate("h", "r", 1)]);
        assert!(twice.contains("gated twice"), "{twice}");
        let outside = error(&[gate("m", "t", 0)]);
        assert!(
            outside.contains("'t'") && outside.contains("not computed"),
            "{outside}"
        );
        let backwards = error(&[gate("y", "r", 0)]);
        assert!(backwards.contains("not computed before it"), "{backwards}");
    }

    #[test]
    fn what_the_region_cannot_compute_is_an_error_naming_it() {
        let dense = dense();
        let unsupported = plan(&dense, &["x"], &["t"], &[]).unwrap_err().to_string();
        assert!(
            unsupported.contains("Mystery") && unsupported.contains("does not support"),
            "{unsupported}"
        );
        let unfed = plan(&dense, &[], &["y"], &[]).unwrap_err().to_string();
        assert!(
            unfed.contains("'x'") && unfed.contains("neither fed"),
            "{unfed}"
        );
        let integer = graph(
            ModelBuilder::new(13)
                .input("x", &[-1, 3])
                .initializer("k", Tensor::from_i64(vec![3], &[1, 2, 3]))
                .node("Add", &["x", "k"], &["y"], Attributes::default())
                .output("y"),
        );
        let integer = plan(&integer, &["x"], &["y"], &[]).unwrap_err().to_string();
        assert!(integer.contains("must be a float tensor"), "{integer}");
        let pool = Attributes::default().with_ints("kernel_shape", &[2, 2]);
        let indices = graph(
            ModelBuilder::new(13)
                .input("x", &[-1, 3, 4, 4])
                .node("MaxPool", &["x"], &["p", "indices"], pool)
                .node("Add", &["p", "indices"], &["y"], Attributes::default())
                .output("y"),
        );
        let second = plan(&indices, &["x"], &["y"], &[]).unwrap_err().to_string();
        assert!(second.contains("only a node's first output"), "{second}");
    }
}
