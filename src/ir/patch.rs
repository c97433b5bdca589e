//! The one mutation path. A rewrite rule builds a `Patch` — new constants and nodes wired
//! to existing values, existing nodes redefined in place, and the existing values they
//! replace — and `Graph::apply` applies it: it links the new nodes, moves every use of a
//! replaced value (graph outputs keep their names, and a value the patch created takes
//! over the name of the dead value it replaces), removes what became dead, and refuses a
//! replacement whose element type or shape differs from the value it replaces, or a node
//! whose attributes do not agree with its weight (`ir::check`).

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::ir::check;
use crate::ir::graph::{Graph, Node, NodeId, ValueId};
use crate::ir::op::{Attributes, OpKind};
use crate::ir::shape::{self, Shapes, ValueType};
use crate::ir::tensor::Tensor;
use crate::onnx::pb;

/// A value a patch reads: one already in the graph, or one the patch creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Existing(ValueId),
    Constant(usize),
    Output { node: usize, slot: usize },
}

impl From<ValueId> for Wire {
    fn from(v: ValueId) -> Wire {
        Wire::Existing(v)
    }
}

#[derive(Debug)]
struct PatchNode {
    name: String,
    kind: OpKind,
    attributes: Attributes,
    inputs: Vec<Option<Wire>>,
    outputs: usize,
}

/// An existing node given a new operator, attributes and inputs.
#[derive(Debug)]
struct Redefinition {
    node: NodeId,
    kind: OpKind,
    attributes: Attributes,
    inputs: Vec<Option<Wire>>,
}

#[derive(Debug)]
pub struct Patch {
    /// `pass >> rule >> node`: where this rewrite came from.
    pub origin: String,
    constants: Vec<(String, Tensor)>,
    nodes: Vec<PatchNode>,
    redefinitions: Vec<Redefinition>,
    shunts: Vec<(ValueId, Wire)>,
}

impl Patch {
    pub fn new(origin: impl Into<String>) -> Patch {
        Patch {
            origin: origin.into(),
            constants: Vec::new(),
            nodes: Vec::new(),
            redefinitions: Vec::new(),
            shunts: Vec::new(),
        }
    }

    pub fn constant(&mut self, name: &str, tensor: Tensor) -> Wire {
        self.constants.push((name.to_string(), tensor));
        Wire::Constant(self.constants.len() - 1)
    }

    /// Adds a node; returns its output wires.
    pub fn node(
        &mut self,
        name: &str,
        kind: OpKind,
        attributes: Attributes,
        inputs: &[Option<Wire>],
        outputs: usize,
    ) -> Vec<Wire> {
        self.nodes.push(PatchNode {
            name: name.to_string(),
            kind,
            attributes,
            inputs: inputs.to_vec(),
            outputs,
        });
        let node = self.nodes.len() - 1;
        (0..outputs)
            .map(|slot| Wire::Output { node, slot })
            .collect()
    }

    /// The existing `node` becomes `kind` with these attributes and inputs. It keeps its
    /// name and its output values, whose types must not change.
    pub fn redefine(
        &mut self,
        node: NodeId,
        kind: OpKind,
        attributes: Attributes,
        inputs: &[Option<Wire>],
    ) {
        self.redefinitions.push(Redefinition {
            node,
            kind,
            attributes,
            inputs: inputs.to_vec(),
        });
    }

    /// Every use of `old` (graph outputs included) reads `new` instead.
    pub fn shunt(&mut self, old: ValueId, new: impl Into<Wire>) {
        self.shunts.push((old, new.into()));
    }
}

/// What applying a patch did.
#[derive(Debug)]
pub struct Applied {
    /// The number of nodes it removed.
    pub removed: usize,
    /// The type of every value of the patched graph, at its declared dims.
    pub shapes: Shapes,
}

impl Graph {
    /// Applies a patch (see the module doc), all or nothing: the patch is applied to a
    /// copy of the graph, which takes the graph's place once the patch has been checked.
    pub fn apply(&mut self, patch: Patch) -> Result<Applied> {
        // Cheap: tensors share their bytes, so the copy is the graph's bookkeeping.
        let mut patched = self.clone();
        let applied = patched.apply_or_refuse(patch)?;
        *self = patched;
        Ok(applied)
    }

    fn apply_or_refuse(&mut self, patch: Patch) -> Result<Applied> {
        let refuse = |reason: String| Error::graph(format!("rewrite {}: {reason}", patch.origin));
        for &(old, _) in &patch.shunts {
            if self.is_captured(old) {
                return Err(refuse(format!(
                    "'{}' is read by a subgraph and cannot be replaced",
                    self.value(old).name
                )));
            }
        }
        let constants: Vec<ValueId> = patch
            .constants
            .into_iter()
            .map(|(name, t)| self.add_constant(&name, t))
            .collect();
        let mut outputs: Vec<Vec<ValueId>> = Vec::with_capacity(patch.nodes.len());
        let mut defined: Vec<NodeId> = Vec::new();
        let resolve = |w: Wire, outputs: &[Vec<ValueId>]| match w {
            Wire::Existing(v) => v,
            Wire::Constant(i) => constants[i],
            Wire::Output { node, slot } => outputs[node][slot],
        };
        for node in patch.nodes {
            let outs: Vec<ValueId> = (0..node.outputs)
                .map(|k| self.add_value(&format!("{}_output_{k}", node.name)))
                .collect();
            let inputs = node
                .inputs
                .iter()
                .map(|w| w.map(|w| resolve(w, &outputs)))
                .collect();
            let name = self.unique_node_name(&node.name);
            let id = self.add_node(Node {
                name,
                kind: node.kind,
                attributes: node.attributes,
                inputs,
                outputs: outs.iter().copied().map(Some).collect(),
                captures: Vec::new(),
                rest: pb::NodeProto::default(),
            });
            defined.push(id);
            outputs.push(outs);
        }
        // Each redefined node as it was, and its outputs' names (names change below, the
        // refusal names what was there): the types its outputs had are those of its old
        // definition.
        let mut redefined: Vec<(Node, Vec<String>)> = Vec::new();
        for r in patch.redefinitions {
            let inputs = r
                .inputs
                .iter()
                .map(|w| w.map(|w| resolve(w, &outputs)))
                .collect();
            let old = self.node(r.node).clone();
            let names = old.outputs.iter().flatten();
            let names = names.map(|&out| self.value(out).name.clone()).collect();
            redefined.push((old, names));
            self.redefine_node(r.node, r.kind, r.attributes, inputs);
            defined.push(r.node);
        }
        // A value the patch created takes the name of the value it replaces once that is
        // gone (graph outputs keep their names through `replace_uses`).
        let shunts: Vec<(ValueId, ValueId, bool)> = patch
            .shunts
            .iter()
            .map(|&(old, w)| {
                (
                    old,
                    resolve(w, &outputs),
                    !matches!(w, Wire::Existing(_)) && !self.is_output(old),
                )
            })
            .collect();
        // (old, new, old's name, old's declared type): a graph output hands its declared
        // type on to what stands in its place, so it is read before.
        let mut shunted: Vec<(ValueId, ValueId, String, ValueType)> = Vec::new();
        for &(old, new, _) in &shunts {
            let value = self.value(old);
            let declared = value.info.as_ref().map(ValueType::of_info);
            let (name, declared) = (value.name.clone(), declared.unwrap_or_default());
            shunted.push((old, self.replace_uses(old, new), name, declared));
        }
        // One inference serves both sides, run while the dead code is still in: the patched
        // graph computes every replacement, and still computes each value a shunt replaced
        // as it was; the old definition of a redefined node is evaluated against it.
        let shapes = shape::infer(self, &Default::default())?;
        let mut replacements: Vec<(ValueType, ValueId, String)> = Vec::new();
        for (old, names) in redefined {
            let before = shape::outputs_of(self, &old, &shapes)
                .into_iter()
                .zip(names);
            replacements.extend(before.map(|((out, before), name)| (before, out, name)));
        }
        replacements.extend(
            shunted
                .into_iter()
                .map(|(old, new, name, declared)| (shapes.get(old).or(&declared), new, name)),
        );
        let removed = self.eliminate_dead_code()?;
        for (old, new, takes_name) in shunts {
            if takes_name && self.is_undefined(old) {
                self.take_name(old, new);
            }
        }
        for id in defined.into_iter().filter(|&id| self.contains_node(id)) {
            check::window_attributes(self, self.node(id)).map_err(|e| refuse(e.to_string()))?;
        }
        for (before, new, name) in replacements {
            if !before.compatible(shapes.get(new)) {
                return Err(refuse(format!(
                    "the replacement for '{name}' is {}, the value was {before}",
                    shapes.get(new)
                )));
            }
        }
        Ok(Applied { removed, shapes })
    }

    fn unique_node_name(&self, base: &str) -> String {
        let taken: HashSet<&str> = self.nodes().map(|(_, node)| node.name.as_str()).collect();
        if !taken.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken.contains(n.as_str()))
            .expect("a free name")
    }

    /// Moves every use of `old` to `new`. A graph output keeps its name: `new` takes it
    /// over when `new` is a plain intermediate value, otherwise an Identity carries it.
    /// Returns the value that now stands where `old` stood.
    fn replace_uses(&mut self, old: ValueId, new: ValueId) -> ValueId {
        for user in self.users(old).to_vec() {
            let slots: Vec<usize> = self
                .node(user)
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == Some(old))
                .map(|(i, _)| i)
                .collect();
            for slot in slots {
                self.set_input(user, slot, Some(new));
            }
        }
        if !self.is_output(old) {
            return new;
        }
        let carrier = if self.can_take_output_name(new) {
            new
        } else {
            let carrier = self.add_value(&format!("{}_carrier", self.value(old).name));
            self.add_node(Node {
                name: self.unique_node_name(&format!("{}_identity", self.value(old).name)),
                kind: OpKind::Identity,
                attributes: Attributes::default(),
                inputs: vec![Some(new)],
                outputs: vec![Some(carrier)],
                captures: Vec::new(),
                rest: pb::NodeProto::default(),
            });
            carrier
        };
        self.take_name(old, carrier);
        self.values[carrier.0].info = self.values[old.0].info.take();
        for output in self.outputs.iter_mut().filter(|o| **o == old) {
            *output = carrier;
        }
        carrier
    }

    /// A plain intermediate value can take over a graph output's name; replacing an
    /// output by anything else needs an Identity to carry the name.
    pub(crate) fn can_take_output_name(&self, value: ValueId) -> bool {
        self.producer(value).is_some()
            && !self.is_output(value)
            && !self.inputs.contains(&value)
            && !self.is_captured(value)
    }

    /// `to` takes the name of `from`, which gets a placeholder.
    fn take_name(&mut self, from: ValueId, to: ValueId) {
        let name = self.value(from).name.clone();
        self.rename(from, &format!("{name}_replaced"));
        self.rename(to, &name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;

    /// x [2, 4] → Relu → r → Sigmoid → y.
    fn model() -> Model {
        let proto = ModelBuilder::new(13)
            .input("x", &[2, 4])
            .node("Relu", &["x"], &["r"], Attributes::default())
            .node("Sigmoid", &["r"], &["y"], Attributes::default())
            .output("y")
            .build();
        Model::from_proto(proto).unwrap()
    }

    fn bytes(model: &Model) -> Vec<u8> {
        prost::Message::encode_to_vec(&model.to_proto().unwrap())
    }

    #[test]
    fn a_refused_patch_leaves_the_graph_as_it_was() {
        let mut model = model();
        let original = bytes(&model);
        let r = model.graph.value_by_name("r").unwrap();
        // A constant of another shape in place of r: refused once the patch has been
        // wired in, which must be undone.
        let mut patch = Patch::new("test");
        let wrong = patch.constant("wrong", Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]));
        patch.shunt(r, wrong);
        let error = model.graph.apply(patch).unwrap_err().to_string();
        assert!(error.contains("'r'"), "{error}");
        assert_eq!(bytes(&model), original);
    }

    #[test]
    fn a_shunt_moves_every_use_and_a_graph_output_keeps_its_name() {
        let mut model = model();
        let (x, y) = (
            model.graph.value_by_name("x").unwrap(),
            model.graph.value_by_name("y").unwrap(),
        );
        let mut patch = Patch::new("test");
        let tanh = patch.node(
            "Tanh_new",
            OpKind::Tanh,
            Attributes::default(),
            &[Some(x.into())],
            1,
        )[0];
        patch.shunt(y, tanh);
        let removed = model.graph.apply(patch).unwrap().removed;
        assert_eq!(removed, 2, "the Relu and the Sigmoid are dead");
        let ops: Vec<&str> = model.graph.nodes().map(|(_, n)| n.op()).collect();
        assert_eq!(ops, ["Tanh"]);
        let output = model.graph.outputs()[0];
        assert_eq!(model.graph.value(output).name, "y");
    }

    #[test]
    fn a_redefinition_is_checked_against_what_the_node_computed() {
        let mut model = model();
        let original = bytes(&model);
        let relu = model.graph.node_by_name("Relu_0").unwrap();
        let x = model.graph.value_by_name("x").unwrap();
        // A Transpose of x is [4, 2] where the Relu gave [2, 4].
        let mut patch = Patch::new("test");
        patch.redefine(
            relu,
            OpKind::Transpose,
            Attributes::default(),
            &[Some(x.into())],
        );
        let error = model.graph.apply(patch).unwrap_err().to_string();
        assert!(error.contains("'r'") && error.contains("[2,4]"), "{error}");
        assert_eq!(bytes(&model), original);
    }

    #[test]
    fn a_graph_output_is_checked_against_its_declared_type() {
        // y comes from an operator nothing is inferred of, and is declared [2, 4].
        let mut proto = ModelBuilder::new(13)
            .input("x", &[2, 4])
            .node("Mystery", &["x"], &["y"], Attributes::default())
            .output("y")
            .build();
        let declared = ModelBuilder::new(13).input("y", &[2, 4]).build();
        let graph = proto.graph.as_mut().unwrap();
        graph.output[0] = declared.graph.unwrap().input.remove(0);
        let mut model = Model::from_proto(proto).unwrap();
        let y = model.graph.value_by_name("y").unwrap();
        let mut patch = Patch::new("test");
        let wrong = patch.constant("wrong", Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]));
        patch.shunt(y, wrong);
        let error = model.graph.apply(patch).unwrap_err().to_string();
        assert!(error.contains("'y'") && error.contains("[2,4]"), "{error}");
    }

    #[test]
    fn the_types_an_applied_patch_returns_are_the_patched_graphs() {
        let mut model = model();
        let (x, r) = (
            model.graph.value_by_name("x").unwrap(),
            model.graph.value_by_name("r").unwrap(),
        );
        let mut patch = Patch::new("test");
        let flat = patch.node(
            "Flatten_new",
            OpKind::Flatten,
            Attributes::default().with_int("axis", 1),
            &[Some(x.into())],
            1,
        )[0];
        let relu = model.graph.producer(r).unwrap();
        patch.redefine(relu, OpKind::Tanh, Attributes::default(), &[Some(x.into())]);
        let sum = patch.node(
            "Add_new",
            OpKind::Add,
            Attributes::default(),
            &[Some(r.into()), Some(flat)],
            1,
        )[0];
        let y = model.graph.value_by_name("y").unwrap();
        patch.shunt(y, sum);
        let applied = model.graph.apply(patch).unwrap();
        let inferred = shape::infer(&model.graph, &Default::default()).unwrap();
        let ops: Vec<&str> = model.graph.nodes().map(|(_, n)| n.op()).collect();
        assert_eq!(ops, ["Tanh", "Flatten", "Add"]);
        for (_, node) in model.graph.nodes() {
            for &value in node.inputs.iter().chain(&node.outputs).flatten() {
                assert_eq!(applied.shapes.get(value), inferred.get(value));
            }
        }
        let y = model.graph.outputs()[0];
        assert_eq!(applied.shapes.get(y).static_dims(), Some(vec![2, 4]));
    }
}
