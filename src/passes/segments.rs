//! What the chain folds share: the pass's loop over chains, choosing the segments of a
//! chain to fold (dynamic programming over the cost model's measured gains, as in
//! latency-aware depth compression), measuring one fold on tiny models cut out of the
//! graph, and applying it.
//!
//! A chain is p_0 → element 1 → p_1 → … → element m → p_m; segment (a, b) is elements
//! a+1 ..= b, read from p_a, replacing p_b. A fold builds its replacement through an
//! `emit(patch, input, name) → output` function, so the same code serves the measured
//! copy and the graph.

use crate::error::Result;
use crate::ir::extract::extract;
use crate::ir::shape::{self, Shapes};
use crate::ir::stats::ModelStats;
use crate::ir::{DataType, Graph, Model, NodeId, Patch, ValueId, Wire};
use crate::passes::{Ctx, FoldRecord, PassStats};
use crate::runtime::cost::Verdict;

/// What cutting a chain at a linearised value costs in the partition: more than any gain.
const LINEARISED_CUT_PENALTY: f64 = 1e12;
/// Folds past this many times the original MACs never pay, so they are not measured.
const MAX_MAC_RATIO: f64 = 1.5;

/// A node of a chain.
pub(super) trait ChainElement {
    fn node(&self) -> NodeId;
}

/// What a fold pass found to fold: the value it reads and the nodes it covers.
pub(super) trait Region {
    fn input(&self) -> ValueId;
    fn nodes(&self) -> Vec<NodeId>;
}

impl<E: ChainElement> Region for Chain<E> {
    fn input(&self) -> ValueId {
        self.values[0]
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.elements.iter().map(E::node).collect()
    }
}

/// Regions are found before any is folded; a fold that replaced a region's input (its
/// readers now read the replacement) or removed one of its nodes makes it stale.
fn is_intact(graph: &Graph, region: &impl Region) -> bool {
    !graph.users(region.input()).is_empty()
        && region.nodes().iter().all(|&n| graph.contains_node(n))
}

/// p_0 → element 1 → p_1 → … → element m → p_m.
pub(super) struct Chain<E> {
    pub values: Vec<ValueId>,
    pub elements: Vec<E>,
}

impl<E: ChainElement> Chain<E> {
    /// The chain from `first` (reading `x`, producing `y`), grown while `next` finds
    /// the element that continues it.
    pub(super) fn grow(
        graph: &Graph,
        x: ValueId,
        y: ValueId,
        first: E,
        mut next: impl FnMut(&Chain<E>) -> Option<E>,
    ) -> Chain<E> {
        let mut chain = Chain {
            values: vec![x, y],
            elements: vec![first],
        };
        while let Some(element) = next(&chain) {
            chain.values.push(
                graph
                    .node(element.node())
                    .output(0)
                    .expect("a chain element has an output"),
            );
            chain.elements.push(element);
        }
        chain
    }
}

/// The dims a chain fold works with: declared (what a rewrite must hold at) and analysed
/// (pinned, batch 1: what the cost model measures at).
pub(super) struct ChainShapes {
    pub declared: Shapes,
    pub analysed: Shapes,
}

/// The segments of a chain to fold, measured at the analysed dims.
type ChooseFolds<C, F> = fn(&Graph, &C, &ChainShapes, &Ctx) -> Result<Vec<Segment<F>>>;

/// Runs a chain fold: finds the chains, chooses each one's segments and applies them
/// while the patch budget lasts.
pub(super) fn run_chain_folds<C: Region, F>(
    pass: &str,
    graph: &mut Graph,
    ctx: &Ctx,
    find_chains: fn(&Graph, &Shapes) -> Result<Vec<C>>,
    choose_folds: ChooseFolds<C, F>,
    apply: fn(&mut Graph, &C, &Segment<F>) -> Result<FoldRecord>,
) -> Result<PassStats> {
    let mut stats = PassStats {
        pass: pass.to_string(),
        ..PassStats::default()
    };
    let nodes_before = graph.node_count() as i64;
    let declared = shape::infer(graph, &Default::default())?;
    let pins = ModelStats::analysis_pins(graph, &declared, &ctx.pinned);
    let shapes = ChainShapes {
        analysed: shape::infer(graph, &pins)?,
        declared,
    };
    for chain in find_chains(graph, &shapes.declared)? {
        if !is_intact(graph, &chain) {
            continue;
        }
        for segment in choose_folds(graph, &chain, &shapes, ctx)? {
            if !ctx.budget_left() {
                break;
            }
            let record = apply(graph, &chain, &segment)?;
            stats
                .rewrites
                .push(format!("{pass} >> chain >> {}", record.result));
            stats.patches += 1;
            ctx.count_patch();
            ctx.folds.borrow_mut().push(record);
        }
    }
    stats.nodes_removed = nodes_before - graph.node_count() as i64;
    Ok(stats)
}

/// A segment chosen to fold: elements a+1 ..= b, replaced by `fold`.
pub(super) struct Segment<F> {
    pub a: usize,
    pub b: usize,
    pub fold: F,
    pub verdict: Verdict,
    /// It spans a value the user linearised, so it folds whatever the verdict.
    pub forced: bool,
}

/// The best partition of the chain through `values` (p_0 … p_m), maximising the measured
/// gain; cuts at linearised values are (all but) forbidden. `folds_from(a)` gives the fold
/// of each segment (a, b), indexed by b (`None` where the segment does not fold), and
/// `judge(a, b, fold, forced)` its verdict (`None` when not worth measuring).
pub(super) fn best_partition<F>(
    graph: &Graph,
    values: &[ValueId],
    ctx: &Ctx,
    mut folds_from: impl FnMut(usize) -> Vec<Option<F>>,
    mut judge: impl FnMut(usize, usize, &F, bool) -> Result<Option<Verdict>>,
) -> Result<Vec<Segment<F>>> {
    let m = values.len() - 1;
    let linearised = ctx.linearised.borrow();
    let is_joint = |k: usize| k > 0 && k < m && linearised.contains(&graph.value(values[k]).name);
    let mut best: Vec<f64> = vec![f64::NEG_INFINITY; m + 1];
    let mut choice: Vec<Option<Segment<F>>> = (0..=m).map(|_| None).collect();
    let mut from: Vec<usize> = vec![0; m + 1];
    best[0] = 0.0;
    for a in 0..m {
        let penalty = if is_joint(a) {
            LINEARISED_CUT_PENALTY
        } else {
            0.0
        };
        let base = best[a] - penalty;
        if base > best[a + 1] {
            best[a + 1] = base;
            from[a + 1] = a;
            choice[a + 1] = None;
        }
        for (b, fold) in folds_from(a).into_iter().enumerate().skip(a + 2) {
            let Some(fold) = fold else { continue };
            let forced = (a + 1..b).any(is_joint);
            let Some(verdict) = judge(a, b, &fold, forced)? else {
                continue;
            };
            if !forced && !verdict.pays(ctx.folding.min_gain) {
                continue;
            }
            let value = base
                + (verdict.original - verdict.folded)
                + if forced { LINEARISED_CUT_PENALTY } else { 0.0 };
            if value > best[b] {
                best[b] = value;
                from[b] = a;
                choice[b] = Some(Segment {
                    a,
                    b,
                    fold,
                    verdict,
                    forced,
                });
            }
        }
    }
    let mut segments = Vec::new();
    let mut b = m;
    while b > 0 {
        if let Some(segment) = choice[b].take() {
            segments.push(segment);
        }
        b = from[b];
    }
    Ok(segments)
}

/// The cost model's verdict on replacing the region `input` → `output` by what `emit`
/// builds, both cut out at the analysed (pinned, batch 1) dims; `None` when those dims are
/// not static, or when the fold is not forced and has more than 1.5× the original MACs.
pub(super) fn judge_fold(
    graph: &Graph,
    (input, output): (ValueId, ValueId),
    analysed: &Shapes,
    forced: bool,
    ctx: &Ctx,
    emit: impl FnOnce(&mut Patch, Wire, &str) -> Result<Wire>,
) -> Result<Option<Verdict>> {
    let Some(dims) = analysed.get(input).static_dims() else {
        return Ok(None);
    };
    let dtype = analysed.get(input).dtype.unwrap_or(DataType::Float);
    let original = extract(graph, input, dtype, &dims, &[output])?;
    let mut folded = original.clone();
    let (x, y) = (folded.graph.inputs()[0], folded.graph.outputs()[0]);
    let mut patch = Patch::new("measure");
    let replacement = emit(&mut patch, x.into(), "folded")?;
    patch.shunt(y, replacement);
    folded.graph.apply(patch)?;
    let macs = |m: &Model| ModelStats::of(&m.graph, &Default::default()).map(|s| s.macs as f64);
    if !forced && macs(&folded)? > MAX_MAC_RATIO * macs(&original)? {
        return Ok(None);
    }
    ctx.cost
        .borrow_mut()
        .judge(&original, &folded, &dims)
        .map(Some)
}

/// Replaces the region `input` → `output` made of `nodes` by what `emit` builds, named
/// after the last node; the record of the fold (`exact`: everywhere, not only away from
/// the border).
pub(super) fn apply_fold<F>(
    graph: &mut Graph,
    pass: &str,
    (input, output): (ValueId, ValueId),
    nodes: &[NodeId],
    segment: &Segment<F>,
    exact: bool,
    emit: impl FnOnce(&mut Patch, Wire, &str) -> Result<Wire>,
) -> Result<FoldRecord> {
    let sources: Vec<String> = nodes.iter().map(|&n| graph.node(n).name.clone()).collect();
    let result = format!("{}.folded", sources.last().expect("a segment has nodes"));
    let mut patch = Patch::new(format!("{pass} >> chain >> {result}"));
    let replacement = emit(&mut patch, input.into(), &result)?;
    patch.shunt(output, replacement);
    graph.apply(patch)?;
    Ok(FoldRecord {
        sources,
        result,
        exact,
        verdict: segment.verdict,
        forced: segment.forced,
    })
}

/// What the chain folds' tests share: running a pass under a fixed verdict.
#[cfg(test)]
pub(super) mod testing {
    use crate::ir::Model;
    use crate::passes::{Ctx, Pass};
    use crate::runtime::cost::{CostModel, Verdict};

    /// A cost model that always answers `original` against `folded`.
    pub(crate) fn verdict(original: f64, folded: f64) -> CostModel {
        CostModel::Fixed(Box::new(move |_, _| Verdict {
            original,
            folded,
            estimate: false,
        }))
    }

    /// Runs `pass` on a copy of `model` with `cost`, the values named `linearised`
    /// marked linearised; the result and the context (with its fold records).
    pub(crate) fn run_with(
        pass: &dyn Pass,
        model: &Model,
        cost: CostModel,
        linearised: &[&str],
    ) -> (Model, Ctx) {
        let ctx = Ctx {
            cost: cost.into(),
            ..Ctx::default()
        };
        ctx.linearised
            .borrow_mut()
            .extend(linearised.iter().map(|s| s.to_string()));
        let mut after = model.clone();
        pass.run(&mut after.graph, &ctx).expect("the pass runs");
        (after, ctx)
    }
}
