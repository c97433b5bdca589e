//! The graph: nodes and values with use-def links. Values are SSA: each has at most one
//! producer (a node output), or is a graph input or a constant (initializer). Mutation
//! goes through `ir::patch`; this module keeps the links consistent.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::ir::op::{Attributes, OpKind};
use crate::ir::tensor::Tensor;
use crate::onnx::pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) usize);

#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// The declared type (graph input/output or `value_info`), kept as stored.
    pub info: Option<pb::ValueInfoProto>,
    pub(crate) constant: Option<Tensor>,
    pub(crate) producer: Option<(NodeId, usize)>,
    pub(crate) users: Vec<NodeId>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub kind: OpKind,
    pub attributes: Attributes,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Option<ValueId>>,
    /// Outer values read by name from inside subgraph attributes (If/Loop/Scan bodies).
    pub(crate) captures: Vec<ValueId>,
    /// Everything else the stored node had (doc_string, overload, metadata_props).
    pub(crate) rest: pb::NodeProto,
}

impl Node {
    pub fn op(&self) -> &str {
        self.kind.name()
    }

    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn output(&self, i: usize) -> Option<ValueId> {
        self.outputs.get(i).copied().flatten()
    }

    fn error(&self, reason: String) -> Error {
        Error::node(&self.name, self.op(), reason)
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        self.attributes.int(name).map_err(|e| self.error(e))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        self.attributes.ints(name).map_err(|e| self.error(e))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>> {
        self.attributes.float(name).map_err(|e| self.error(e))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        self.attributes.floats(name).map_err(|e| self.error(e))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        self.attributes.string(name).map_err(|e| self.error(e))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.attributes.tensor(name).map_err(|e| self.error(e))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub(crate) nodes: Vec<Option<Node>>,
    pub(crate) values: Vec<Value>,
    pub(crate) names: HashMap<String, ValueId>,
    pub(crate) inputs: Vec<ValueId>,
    pub(crate) outputs: Vec<ValueId>,
    /// Constants in the order they are stored as initializers.
    pub(crate) initializers: Vec<ValueId>,
    /// Values whose declared type goes to `value_info`.
    pub(crate) value_info: Vec<ValueId>,
    /// The ONNX opset of the default domain, which decides the form of new nodes.
    pub(crate) opset: i64,
    /// IR version < 4: initializers listed as inputs are still constants.
    pub(crate) legacy_initializer_inputs: bool,
    /// Everything else the stored graph had (name, doc_string, sparse initializers, …).
    pub(crate) rest: pb::GraphProto,
}

impl Graph {
    pub fn opset(&self) -> i64 {
        self.opset
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    /// For rewriting a value's declared type; its wiring changes only through patches.
    pub(crate) fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.0]
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[id.0].as_ref().expect("live node id")
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id.0].as_mut().expect("live node id")
    }

    /// False once a rewrite has removed the node.
    pub fn contains_node(&self, id: NodeId) -> bool {
        self.nodes.get(id.0).is_some_and(Option::is_some)
    }

    /// Live nodes in storage order (see `topological_order` for execution order).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| NodeId(i))
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (NodeId(i), n)))
    }

    pub fn node_count(&self) -> usize {
        self.nodes.iter().flatten().count()
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// Inputs the user feeds (graph inputs that are not constants).
    pub fn runtime_inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs
            .iter()
            .copied()
            .filter(|&v| self.constant(v).is_none())
    }

    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes()
            .find(|(_, node)| node.name == name)
            .map(|(id, _)| id)
    }

    /// The constant value, if `id` is an initializer that the user cannot override.
    pub fn constant(&self, id: ValueId) -> Option<&Tensor> {
        let overridable = !self.legacy_initializer_inputs && self.inputs.contains(&id);
        self.values[id.0].constant.as_ref().filter(|_| !overridable)
    }

    pub fn producer(&self, id: ValueId) -> Option<NodeId> {
        self.values[id.0].producer.map(|(n, _)| n)
    }

    /// Nodes reading `id` (once per reading input, so a node may repeat).
    pub fn users(&self, id: ValueId) -> &[NodeId] {
        &self.values[id.0].users
    }

    pub fn is_output(&self, id: ValueId) -> bool {
        self.outputs.contains(&id)
    }

    /// The value is read only by `node` (and is not a graph output).
    pub fn has_single_use(&self, id: ValueId) -> bool {
        !self.is_output(id) && self.users(id).len() == 1
    }

    /// True when a subgraph reads this value by name, so its name must not change.
    pub fn is_captured(&self, id: ValueId) -> bool {
        self.users(id)
            .iter()
            .any(|&n| self.node(n).captures.contains(&id))
    }

    pub(crate) fn unique_name(&self, base: &str) -> String {
        if !self.names.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.names.contains_key(n))
            .expect("a free name")
    }

    pub(crate) fn add_value(&mut self, name: &str) -> ValueId {
        let name = self.unique_name(name);
        let id = ValueId(self.values.len());
        self.names.insert(name.clone(), id);
        self.values.push(Value {
            name,
            info: None,
            constant: None,
            producer: None,
            users: Vec::new(),
        });
        id
    }

    pub(crate) fn add_constant(&mut self, name: &str, tensor: Tensor) -> ValueId {
        let id = self.add_value(name);
        self.values[id.0].constant = Some(tensor);
        self.initializers.push(id);
        id
    }

    /// Adds a node, linking it as producer of its outputs and user of its inputs.
    pub(crate) fn add_node(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.link(id, &node);
        self.nodes.push(Some(node));
        id
    }

    fn link(&mut self, id: NodeId, node: &Node) {
        for (slot, out) in node.outputs.iter().enumerate() {
            if let Some(out) = out {
                self.values[out.0].producer = Some((id, slot));
            }
        }
        for &input in node.inputs.iter().flatten().chain(&node.captures) {
            self.values[input.0].users.push(id);
        }
    }

    pub(crate) fn remove_node(&mut self, id: NodeId) -> Node {
        let node = self.nodes[id.0].take().expect("live node id");
        for &input in node.inputs.iter().flatten().chain(&node.captures) {
            let users = &mut self.values[input.0].users;
            if let Some(pos) = users.iter().position(|&u| u == id) {
                users.remove(pos);
            }
        }
        for out in node.outputs.iter().flatten() {
            self.values[out.0].producer = None;
        }
        node
    }

    /// Rewires one input of a node.
    pub(crate) fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        if let Some(old) = std::mem::replace(&mut self.node_mut(node).inputs[slot], value) {
            let users = &mut self.values[old.0].users;
            if let Some(pos) = users.iter().position(|&u| u == node) {
                users.remove(pos);
            }
        }
        if let Some(value) = value {
            self.values[value.0].users.push(node);
        }
    }

    /// Gives a node a new operator, attributes and inputs; it keeps its name and outputs.
    pub(crate) fn redefine_node(
        &mut self,
        id: NodeId,
        kind: OpKind,
        attributes: Attributes,
        inputs: Vec<Option<ValueId>>,
    ) {
        for slot in 0..self.node(id).inputs.len() {
            self.set_input(id, slot, None);
        }
        let node = self.node_mut(id);
        node.kind = kind;
        node.attributes = attributes;
        node.inputs = vec![None; inputs.len()];
        for (slot, value) in inputs.into_iter().enumerate() {
            self.set_input(id, slot, value);
        }
    }

    /// No node, graph input or initializer defines the value any more.
    pub(crate) fn is_undefined(&self, id: ValueId) -> bool {
        self.producer(id).is_none()
            && !self.inputs.contains(&id)
            && !self.initializers.contains(&id)
    }

    /// Renames a value (keeping names unique).
    pub(crate) fn rename(&mut self, id: ValueId, name: &str) {
        let old = std::mem::take(&mut self.values[id.0].name);
        self.names.remove(&old);
        let name = self.unique_name(name);
        self.names.insert(name.clone(), id);
        self.values[id.0].name = name;
    }

    /// Nodes in an execution order: producers before users, ties broken by storage order
    /// (so an already sorted graph keeps its order). A cycle is an error naming a node in it.
    pub fn topological_order(&self) -> Result<Vec<NodeId>> {
        let mut pending: HashMap<NodeId, usize> = HashMap::new();
        let mut ready = BTreeSet::new();
        for (id, node) in self.nodes() {
            let deps = node
                .inputs
                .iter()
                .flatten()
                .chain(&node.captures)
                .filter(|v| self.producer(**v).is_some())
                .count();
            if deps == 0 {
                ready.insert(id);
            } else {
                pending.insert(id, deps);
            }
        }
        let mut order = Vec::with_capacity(self.node_count());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for out in self.node(id).outputs.iter().flatten() {
                for &user in &self.values[out.0].users {
                    let left = pending.get_mut(&user).expect("a pending user");
                    *left -= 1;
                    if *left == 0 {
                        pending.remove(&user);
                        ready.insert(user);
                    }
                }
            }
        }
        match pending.keys().min() {
            None => Ok(order),
            Some(&stuck) => Err(Error::graph(format!(
                "the graph has a cycle through node '{}' ({})",
                self.node(stuck).name,
                self.node(stuck).op()
            ))),
        }
    }

    /// Removes nodes whose results nobody reads and constants nobody uses; returns how
    /// many nodes went.
    pub fn eliminate_dead_code(&mut self) -> Result<usize> {
        let mut removed = 0;
        for id in self.topological_order()?.into_iter().rev() {
            let dead = self
                .node(id)
                .outputs
                .iter()
                .flatten()
                .all(|&v| self.users(v).is_empty() && !self.is_output(v));
            if dead {
                self.remove_node(id);
                removed += 1;
            }
        }
        let live = |g: &Graph, v: ValueId| {
            !g.users(v).is_empty() || g.is_output(v) || g.inputs.contains(&v)
        };
        let initializers = std::mem::take(&mut self.initializers);
        self.initializers = initializers
            .into_iter()
            .filter(|&v| live(self, v))
            .collect();
        let value_info = std::mem::take(&mut self.value_info);
        self.value_info = value_info
            .into_iter()
            .filter(|&v| self.producer(v).is_some() || self.values[v.0].constant.is_some())
            .collect();
        Ok(removed)
    }
}
