//! Which activations are worth a gate: those whose linearisation lets a fold happen that
//! the cost model accepts — and which of them must go together (a whole inverted-residual
//! block folds only when both of its activations go).
//!
//! Each activation is tried alone: linearised on a copy of the graph, the folds run with
//! their verdicts judged (not forced), and the accepted folds across it make it a group
//! of its own. The activations left over are tried together with their neighbours (the
//! activations one layer away), one connected set at a time; what an accepted fold spans
//! there becomes one group. The rest are not candidates: removing them buys nothing.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::error::Result;
use crate::ir::Graph;
use crate::passes::activation::{Activation, ActivationKind, recognise_all};
use crate::passes::{self, Ctx, FoldRecord, Linearize, Pass};

/// An activation a gate blends with identity: y' = (1 − α)·act(x) + α·x.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatedActivation {
    /// Its root node (the node producing y).
    pub node: String,
    #[serde(serialize_with = "kind_name")]
    pub kind: ActivationKind,
    /// x.
    pub input: String,
    /// y.
    pub output: String,
}

fn kind_name<S: serde::Serializer>(
    kind: &ActivationKind,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&kind.to_string())
}

/// Activations that share one gate: the folds they enable need all of them linear.
#[derive(Clone, Debug, Serialize)]
pub struct GateGroup {
    pub activations: Vec<GatedActivation>,
    /// What the group's folds save: seconds, or MACs when `estimate`.
    pub gain: f64,
    pub estimate: bool,
    /// The folds, as `source + source → result`.
    pub folds: Vec<String>,
}

impl GateGroup {
    /// Its activations' root node names.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.activations.iter().map(|a| a.node.as_str())
    }
}

/// The gate groups of `graph` (canonical, exact folds applied), in execution order.
pub fn candidates(graph: &Graph, ctx: &mut Ctx) -> Result<Vec<GateGroup>> {
    let found = recognise_all(graph)?;
    let mut groups = Vec::new();
    let mut left = Vec::new();
    for activation in &found {
        let trial = Trial::run(graph, ctx, &[activation])?;
        match trial.group(graph, &[activation]) {
            Some(group) => groups.push(group),
            None => left.push(activation),
        }
    }
    for set in neighbour_sets(graph, &left) {
        let trial = Trial::run(graph, ctx, &set)?;
        groups.extend(trial.group(graph, &set));
    }
    let order: HashMap<&str, usize> = found
        .iter()
        .enumerate()
        .map(|(i, a)| (graph.node(a.root()).name.as_str(), i))
        .collect();
    groups.sort_by_key(|g| g.nodes().map(|n| order[n]).min());
    Ok(groups)
}

/// The activations `linearize` names, as one group: what the user chose to remove, to be
/// linear from the start of training (their gain is not measured).
pub fn named(graph: &Graph, linearize: &Linearize) -> Result<Vec<GateGroup>> {
    let activations = linearize.matching(graph)?;
    Ok(vec![GateGroup {
        activations: activations.iter().map(|a| gated(graph, a)).collect(),
        gain: 0.0,
        estimate: true,
        folds: Vec::new(),
    }])
}

/// The folds that ran on a copy of the graph with some activations linearised.
struct Trial {
    folds: Vec<FoldRecord>,
}

impl Trial {
    fn run(graph: &Graph, ctx: &mut Ctx, activations: &[&Activation]) -> Result<Trial> {
        let mut copy = graph.clone();
        let names = activations.iter().map(|a| &graph.node(a.root()).name);
        Linearize::nodes(names).run(&mut copy, ctx)?;
        // Judged, not forced: the point is to learn which folds pay.
        ctx.linearised.clear();
        let folded = passes::run_pipeline(&passes::folding(), &mut copy, ctx)?;
        Ok(Trial {
            folds: folded.folds,
        })
    }

    /// The group made of the activations the accepted folds span, if any.
    fn group(&self, graph: &Graph, activations: &[&Activation]) -> Option<GateGroup> {
        let mut spanned = BTreeSet::new();
        let mut folds = Vec::new();
        for (i, fold) in self.folds.iter().enumerate() {
            let nodes = origin_nodes(&self.folds, i);
            let across: Vec<usize> = (0..activations.len())
                .filter(|&a| spans(graph, &nodes, activations[a]))
                .collect();
            if !across.is_empty() {
                spanned.extend(across);
                folds.push(fold);
            }
        }
        if spanned.is_empty() {
            return None;
        }
        Some(GateGroup {
            activations: spanned
                .into_iter()
                .map(|a| gated(graph, activations[a]))
                .collect(),
            gain: folds.iter().map(|f| f.verdict.gain()).sum(),
            estimate: folds.iter().any(|f| f.verdict.estimate),
            folds: folds
                .iter()
                .map(|f| format!("{} → {}", f.sources.join(" + "), f.result))
                .collect(),
        })
    }
}

/// The nodes of the graph the folds started from that fold `i` replaced, through earlier
/// folds whose results it folded again.
fn origin_nodes(folds: &[FoldRecord], i: usize) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    for source in &folds[i].sources {
        match folds[..i]
            .iter()
            .rposition(|f| f.layers.iter().any(|l| &l.node == source))
        {
            Some(earlier) => nodes.extend(origin_nodes(folds, earlier)),
            None => {
                nodes.insert(source.clone());
            }
        }
    }
    nodes
}

/// A fold spans an activation when it replaced both the node producing x and a node
/// reading y.
fn spans(graph: &Graph, folded: &BTreeSet<String>, activation: &Activation) -> bool {
    let name = |node| graph.node(node).name.as_str();
    let producer = graph.producer(activation.input).map(name);
    let readers = graph.users(activation.output).iter().map(|&n| name(n));
    producer.is_some_and(|p| folded.contains(p)) && readers.into_iter().any(|r| folded.contains(r))
}

fn gated(graph: &Graph, activation: &Activation) -> GatedActivation {
    GatedActivation {
        node: graph.node(activation.root()).name.clone(),
        kind: activation.kind.clone(),
        input: graph.value(activation.input).name.clone(),
        output: graph.value(activation.output).name.clone(),
    }
}

/// The activations connected through single layers (y of one read by the node producing
/// x of the other), in connected sets.
fn neighbour_sets<'a>(graph: &Graph, activations: &[&'a Activation]) -> Vec<Vec<&'a Activation>> {
    let adjacent = |a: &Activation, b: &Activation| {
        graph
            .producer(b.input)
            .is_some_and(|p| graph.users(a.output).contains(&p))
    };
    let mut set_of: Vec<usize> = (0..activations.len()).collect();
    fn root(set_of: &mut [usize], mut i: usize) -> usize {
        while set_of[i] != i {
            set_of[i] = set_of[set_of[i]];
            i = set_of[i];
        }
        i
    }
    for i in 0..activations.len() {
        for j in 0..activations.len() {
            if adjacent(activations[i], activations[j]) {
                let (ri, rj) = (root(&mut set_of, i), root(&mut set_of, j));
                set_of[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut sets: Vec<Vec<&Activation>> = Vec::new();
    let mut index_of_root = HashMap::new();
    for (i, &activation) in activations.iter().enumerate() {
        let r = root(&mut set_of, i);
        let index = *index_of_root.entry(r).or_insert_with(|| {
            sets.push(Vec::new());
            sets.len() - 1
        });
        sets[index].push(activation);
    }
    sets.retain(|set| set.len() > 1);
    sets
}
