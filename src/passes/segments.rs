//! What the folds share: the pass's sweeps over the regions it finds, choosing the
//! segments of a chain to fold (dynamic programming over the cost model's measured
//! gains, as in latency-aware depth compression), measuring one fold on tiny models cut
//! out of the graph, and applying it (with the measured error of a fold exact only away
//! from the border).
//!
//! A chain is p_0 → element 1 → p_1 → … → element m → p_m; segment (a, b) is elements
//! a+1 ..= b, read from p_a, replacing p_b. A fold builds its replacement through an
//! `emit(patch, input, name) → outputs` function, so the same code serves the measured
//! copy and the graph. A region reads one value and leaves one value (a chain segment)
//! or several (a fan-out) to be read outside.

use crate::error::{Error, Result};
use crate::ir::extract::extract;
use crate::ir::shape::{self, Shapes};
use crate::ir::stats::ModelStats;
use crate::ir::{DataType, Graph, Model, NodeId, OpKind, Patch, ValueId, Wire};
use crate::passes::{Ctx, FoldRecord, FoldedLayer, PassOutcome};
use crate::runtime::compare::max_relative_error_on_random;
use crate::runtime::cost::Verdict;

/// What cutting a chain at a linearised value costs in the partition: more than any gain.
const LINEARISED_CUT_PENALTY: f64 = 1e12;
/// Folds past this many times the original MACs never pay, so they are not measured...
const MAX_MAC_RATIO: f64 = 1.5;
/// ...unless the original is this small: then a layer's fixed cost outweighs its
/// arithmetic (a squeeze-excitation's two 1×1 convs on one pixel run faster as one conv
/// of twice the MACs), and only measuring tells.
const OVERHEAD_BOUND_MACS: f64 = (1 << 18) as f64;
/// Sweeps a fold pass makes before it calls a region that keeps folding a loop.
const MAX_SWEEPS: usize = 16;
/// Random samples the border error of an approximate fold is measured on.
const BORDER_ERROR_SAMPLES: usize = 4;

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
/// readers now read the replacement) or removed one of its nodes makes it stale until
/// the next sweep finds it again.
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

/// The regions a fold pass may fold, found on the declared dims.
type FindRegions<C> = fn(&Graph, &Shapes) -> Result<Vec<C>>;
/// The segments of a chain to fold, measured at the analysed dims; what the choice has
/// to tell (notes, a fold sized by pins) goes into the pass's outcome.
type ChooseFolds<C, F> =
    fn(&Graph, &C, &ChainShapes, &Ctx, &mut PassOutcome) -> Result<Vec<Segment<F>>>;
/// Applies one chosen segment; the shapes size the border error of an approximate fold.
type ApplyFold<C, F> = fn(&mut Graph, &C, &Segment<F>, &ChainShapes) -> Result<FoldRecord>;

/// A fold pass's steps: find its regions, choose each one's folds, apply one.
struct Steps<C, F> {
    find: FindRegions<C>,
    choose: ChooseFolds<C, F>,
    apply: ApplyFold<C, F>,
}

/// Runs a fold pass in sweeps: each sweep finds the regions, chooses each one's folds
/// and applies them while the patch budget lasts; regions an earlier fold of the sweep
/// made stale, and regions its folds created, wait for the next sweep. Sweeps stop when
/// one applies nothing.
pub(super) fn run_chain_folds<C: Region, F>(
    pass: &str,
    graph: &mut Graph,
    ctx: &mut Ctx,
    find: FindRegions<C>,
    choose: ChooseFolds<C, F>,
    apply: ApplyFold<C, F>,
) -> Result<PassOutcome> {
    let steps = Steps {
        find,
        choose,
        apply,
    };
    let mut done = PassOutcome::of(pass);
    let nodes_before = graph.node_count() as i64;
    for _ in 0..MAX_SWEEPS {
        let applied = done.stats.patches;
        sweep(graph, ctx, &steps, &mut done)?;
        if done.stats.patches == applied || !ctx.budget_left() {
            done.stats.nodes_removed = nodes_before - graph.node_count() as i64;
            return Ok(done);
        }
    }
    Err(Error::graph(format!(
        "{pass} was still folding after {MAX_SWEEPS} sweeps (last: {})",
        done.stats.rewrites.last().map(String::as_str).unwrap_or("")
    )))
}

/// One sweep of `run_chain_folds`, adding its folds to `done`.
fn sweep<C: Region, F>(
    graph: &mut Graph,
    ctx: &mut Ctx,
    steps: &Steps<C, F>,
    done: &mut PassOutcome,
) -> Result<()> {
    let declared = shape::infer(graph, &Default::default())?;
    let pins = ModelStats::analysis_pins(graph, &declared, &ctx.pinned);
    let shapes = ChainShapes {
        analysed: shape::infer(graph, &pins)?,
        declared,
    };
    for region in (steps.find)(graph, &shapes.declared)? {
        if !is_intact(graph, &region) {
            continue;
        }
        for segment in (steps.choose)(graph, &region, &shapes, ctx, done)? {
            if !ctx.budget_left() {
                return Ok(());
            }
            let record = (steps.apply)(graph, &region, &segment, &shapes)?;
            let stats = &mut done.stats;
            stats
                .rewrites
                .push(format!("{} >> chain >> {}", stats.pass, record.result));
            stats.patches += 1;
            ctx.count_patch();
            done.folds.push(record);
        }
    }
    Ok(())
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
    let linearised = &ctx.linearised;
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
            let value = base + verdict.gain() + if forced { LINEARISED_CUT_PENALTY } else { 0.0 };
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

/// The one fold of a region that is not a chain, when the cost model's verdict pays (or
/// the fold is forced).
pub(super) fn single_fold<F>(
    fold: F,
    verdict: Option<Verdict>,
    forced: bool,
    ctx: &Ctx,
) -> Vec<Segment<F>> {
    verdict
        .filter(|v| forced || v.pays(ctx.folding.min_gain))
        .map(|verdict| Segment {
            a: 0,
            b: 1,
            fold,
            verdict,
            forced,
        })
        .into_iter()
        .collect()
}

/// Some of `values` carries what an activation the user linearised read or produced.
pub(super) fn reads_linearised(
    graph: &Graph,
    ctx: &Ctx,
    values: impl IntoIterator<Item = ValueId>,
) -> bool {
    values
        .into_iter()
        .any(|v| ctx.linearised.contains(&graph.value(v).name))
}

/// A region cut out of the graph as a model, the same region folded, and the dims of
/// its input they run at.
struct RegionModels {
    original: Model,
    folded: Model,
    dims: Vec<usize>,
}

impl RegionModels {
    /// The region `input` → `outputs` and its replacement built by `emit`, at the
    /// analysed (pinned, batch 1) dims of `input`; `None` when those are not static.
    fn cut(
        graph: &Graph,
        (input, outputs): (ValueId, &[ValueId]),
        analysed: &Shapes,
        emit: impl FnOnce(&mut Patch, Wire, &str) -> Result<Vec<Wire>>,
    ) -> Result<Option<RegionModels>> {
        let Some(dims) = analysed.get(input).static_dims() else {
            return Ok(None);
        };
        let dtype = analysed.get(input).dtype.unwrap_or(DataType::Float);
        let original = extract(graph, input, dtype, &dims, outputs)?;
        let mut folded = original.clone();
        let x = folded.graph.inputs()[0];
        let region_outputs = folded.graph.outputs().to_vec();
        let mut patch = Patch::new("measure");
        let replacements = emit(&mut patch, x.into(), "folded")?;
        for (old, new) in region_outputs.into_iter().zip(replacements) {
            patch.shunt(old, new);
        }
        folded.graph.apply(patch)?;
        Ok(Some(RegionModels {
            original,
            folded,
            dims,
        }))
    }
}

/// The cost model's judgement on replacing the region `input` → `outputs` by what `emit`
/// builds (one wire per output), both cut out at the analysed (pinned, batch 1) dims;
/// `None` when those dims are not static, when the fold is not forced and only forced
/// folds are asked for, or when it is not forced and has more than 1.5× the MACs of an
/// original that is not overhead-bound.
pub(super) fn judge_fold(
    graph: &Graph,
    ends: (ValueId, &[ValueId]),
    analysed: &Shapes,
    forced: bool,
    ctx: &Ctx,
    emit: impl FnOnce(&mut Patch, Wire, &str) -> Result<Vec<Wire>>,
) -> Result<Option<Verdict>> {
    if !forced && ctx.folding.forced_only {
        return Ok(None);
    }
    let Some(models) = RegionModels::cut(graph, ends, analysed, emit)? else {
        return Ok(None);
    };
    let macs = |m: &Model| ModelStats::of(&m.graph, &Default::default()).map(|s| s.macs as f64);
    if !forced && never_pays(macs(&models.original)?, macs(&models.folded)?) {
        return Ok(None);
    }
    ctx.cost
        .borrow_mut()
        .judge(&models.original, &models.folded, &models.dims)
        .map(Some)
}

/// Whether a fold of these MACs is too dear to be worth measuring.
pub(super) fn never_pays(original_macs: f64, folded_macs: f64) -> bool {
    original_macs > OVERHEAD_BOUND_MACS && folded_macs > MAX_MAC_RATIO * original_macs
}

/// The region a fold replaces: `nodes`, reading `input`, leaving `outputs` to be read
/// outside.
pub(super) struct Replaced<'a> {
    pub input: ValueId,
    pub outputs: &'a [ValueId],
    pub nodes: &'a [NodeId],
}

/// Replaces the region by what `emit` builds (one wire per output), named after the
/// node producing each output; the record of the fold. `exact`: everywhere, not only
/// away from the border; otherwise the record carries the error measured on the region
/// cut out at the analysed dims.
pub(super) fn apply_fold<F>(
    graph: &mut Graph,
    pass: &str,
    region: Replaced,
    segment: &Segment<F>,
    exact: bool,
    analysed: &Shapes,
    emit: impl Fn(&mut Patch, Wire, &str) -> Result<Vec<Wire>>,
) -> Result<FoldRecord> {
    let name = |n: NodeId| graph.node(n).name.clone();
    let sources: Vec<String> = region.nodes.iter().map(|&n| name(n)).collect();
    // (output value, the node producing it): the output's name stays with the value that
    // replaces it, which finds the layer made for it once the patch is applied.
    let outputs: Vec<(String, String)> = region
        .outputs
        .iter()
        .filter_map(|&v| Some((graph.value(v).name.clone(), name(graph.producer(v)?))))
        .collect();
    let result = outputs
        .iter()
        .map(|(_, producer)| format!("{producer}.folded"))
        .collect::<Vec<_>>()
        .join(", ");
    let ends = (region.input, region.outputs);
    let border_error = if exact {
        None
    } else {
        RegionModels::cut(graph, ends, analysed, &emit)?
            .map(|m| {
                let sample_dims = m.dims[1..].to_vec();
                max_relative_error_on_random(
                    &m.original,
                    &m.folded,
                    &[sample_dims],
                    BORDER_ERROR_SAMPLES,
                )
            })
            .transpose()?
    };
    let mut patch = Patch::new(format!("{pass} >> chain >> {result}"));
    let replacements = emit(&mut patch, region.input.into(), &result)?;
    for (&old, new) in region.outputs.iter().zip(replacements) {
        patch.shunt(old, new);
    }
    graph.apply(patch)?;
    let layers = outputs
        .into_iter()
        .filter_map(|(value, replaces)| {
            let mut producer = graph.producer(graph.value_by_name(&value)?)?;
            // A graph output the layer's value could not name is carried by an Identity.
            if graph.node(producer).kind == OpKind::Identity {
                producer = graph.producer(graph.node(producer).input(0)?)?;
            }
            Some(FoldedLayer {
                node: graph.node(producer).name.clone(),
                replaces,
            })
        })
        .collect();
    Ok(FoldRecord {
        sources,
        result,
        layers,
        exact,
        verdict: segment.verdict,
        forced: segment.forced,
        border_error,
    })
}

/// What the chain folds' tests share: running a pass under a fixed verdict.
#[cfg(test)]
pub(super) mod testing {
    use crate::ir::Model;
    use crate::passes::{Ctx, Pass, PassOutcome};
    use crate::runtime::cost::{Cost, CostModel, Verdict};

    /// A cost model that always answers `original` against `folded`.
    pub(crate) fn verdict(original: f64, folded: f64) -> CostModel {
        let decide = move |_: &Model, _: &Model| Verdict::exact(original, folded);
        Cost::Custom(std::sync::Arc::new(decide)).into()
    }

    /// Runs `pass` on a copy of `model` with `cost`, the values named `linearised`
    /// marked linearised; the result and what the pass did (its fold records).
    pub(crate) fn run_with(
        pass: &dyn Pass,
        model: &Model,
        cost: CostModel,
        linearised: &[&str],
    ) -> (Model, PassOutcome) {
        let mut ctx = Ctx {
            cost: cost.into(),
            linearised: linearised.iter().map(|s| s.to_string()).collect(),
            ..Ctx::default()
        };
        let mut after = model.clone();
        let done = pass.run(&mut after.graph, &mut ctx).expect("the pass runs");
        (after, done)
    }
}
