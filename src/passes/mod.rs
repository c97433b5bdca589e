//! Graph rewrites. Each pass has a stable name (by which [`Options::passes`](crate::Options::passes)
//! selects it, and the report names it), runs to a fixed point through the patch engine, and reports what it
//! changed. Passes can be run one by one from the library:
//!
//! ```no_run
//! use onnx_shallow::passes::{self, Ctx};
//! let mut model = onnx_shallow::load("in.onnx".as_ref())?;
//! let mut ctx = Ctx::default();
//! for pass in passes::canonical() {
//!     let stats = pass.run(&mut model.graph, &mut ctx)?.stats;
//!     println!("{}: {} rewrites", stats.pass, stats.patches);
//! }
//! onnx_shallow::save(&model, "out.onnx".as_ref(), &Default::default())?;
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

use std::cell::RefCell;
use std::collections::HashSet;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::shape::{self, PinnedShapes, Shapes};
use crate::ir::{Graph, Node, NodeId, Patch};
use crate::runtime::cost::{CostModel, Verdict};

pub(crate) mod activation;
mod commute_global_pool;
pub(crate) mod constant_to_initializer;
mod eliminate_dead_code;
mod fold_affine;
mod fold_batchnorm;
mod fold_constants;
mod fold_conv_chains;
mod fold_conv_into_gemm;
mod fold_fan_out;
mod fold_gemm_chains;
mod fold_pad_into_conv;
mod fold_parallel_convs;
mod fuse_hardswish;
mod linearize;
mod matching;
mod matmul_add_to_gemm;
pub(crate) mod remove_identity;
mod resolve_auto_pad;
mod resolve_reshape_shapes;
mod segments;
#[cfg(test)]
pub(crate) mod test_models;

pub use activation::{ActivationKind, NamedActivation, activations};
pub use linearize::Linearize;

/// What one pass changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PassStats {
    pub pass: String,
    /// Rewrites applied.
    pub patches: usize,
    /// Nodes removed, net of the ones added.
    pub nodes_removed: i64,
    /// The origin of each applied rewrite (`pass >> rule >> node`).
    pub rewrites: Vec<String>,
}

/// What passes share: pinned input dims for analysis, a budget of rewrites (to bisect a
/// bad rewrite: stop after N), and what folding needs: the cost model that judges a
/// fold, and where activations were linearised. Rewrites never see pinned dims: a
/// rewrite must hold at every input size the model accepts, so rules get the declared
/// dims; pinned dims only size the cost model's measurements. What a pass did is its
/// [`PassOutcome`].
#[derive(Debug, Default)]
pub struct Ctx {
    pub pinned: PinnedShapes,
    pub max_patches: Option<usize>,
    pub folding: FoldOptions,
    /// Shared: a fold pass judges its candidates from closures that also read the
    /// context, and the cost model caches what it measures.
    pub cost: RefCell<CostModel>,
    /// Values an activation was removed from ([`Linearize`] adds them): folds across
    /// them always happen.
    pub linearised: HashSet<String>,
    /// Rewrites applied so far, against `max_patches`.
    applied: usize,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassOutcome {
    pub stats: PassStats,
    /// Every fold it applied, for the report and the model's metadata.
    pub folds: Vec<FoldRecord>,
    /// What its folds left alone that the user would want to know about, and why.
    pub notes: Vec<String>,
    /// A fold was sized at the pinned dims (a bias map where H×W are symbolic): the
    /// graph runs only at those dims, and must declare them ([`run_pipeline`] does).
    pub sized_by_pins: bool,
}

impl PassOutcome {
    /// Nothing done yet by the pass `name`.
    fn of(name: &str) -> PassOutcome {
        PassStats {
            pass: name.to_string(),
            ..PassStats::default()
        }
        .into()
    }

    fn note(&mut self, note: String) {
        note_once(&mut self.notes, note);
    }
}

impl From<PassStats> for PassOutcome {
    fn from(stats: PassStats) -> PassOutcome {
        PassOutcome {
            stats,
            ..PassOutcome::default()
        }
    }
}

/// What passes run one after another did: each one's stats, and their folds and notes in
/// order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineOutcome {
    pub passes: Vec<PassStats>,
    pub folds: Vec<FoldRecord>,
    /// Each note once.
    pub notes: Vec<String>,
}

impl PipelineOutcome {
    /// Adds what one more pass did.
    pub fn add(&mut self, pass: PassOutcome) {
        self.extend(PipelineOutcome {
            passes: vec![pass.stats],
            folds: pass.folds,
            notes: pass.notes,
        });
    }

    /// Adds what the passes run after these did.
    pub fn extend(&mut self, later: PipelineOutcome) {
        self.passes.extend(later.passes);
        self.folds.extend(later.folds);
        for note in later.notes {
            note_once(&mut self.notes, note);
        }
    }
}

/// Records a note once, however many sweeps or passes come across its cause.
fn note_once(notes: &mut Vec<String>, note: String) {
    if !notes.contains(&note) {
        notes.push(note);
    }
}

/// How folding decides.
#[derive(Clone, Debug)]
pub struct FoldOptions {
    /// A fold must be at least this much faster (a fraction of the original's time).
    pub min_gain: f64,
    /// Allow folds exact only away from the border (padded after padded).
    pub allow_approx_borders: bool,
    /// Fold only what linearised activations force, none the cost model would judge:
    /// the model the judged folds are confirmed against.
    pub forced_only: bool,
}

impl Default for FoldOptions {
    fn default() -> Self {
        FoldOptions {
            min_gain: 0.02,
            allow_approx_borders: false,
            forced_only: false,
        }
    }
}

/// One applied fold.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FoldRecord {
    /// The nodes folded away.
    pub sources: Vec<String>,
    /// The nodes that replace them, for reading (`layers` says which replaces which).
    pub result: String,
    /// Each layer the fold made and the node whose output it now computes.
    #[serde(skip)]
    pub layers: Vec<FoldedLayer>,
    /// False for a fold exact only away from the border.
    pub exact: bool,
    pub verdict: Verdict,
    /// Made because the user linearised an activation inside it, whatever the verdict.
    pub forced: bool,
    /// For a fold that is not exact: the max relative error of the folded region against
    /// the region it replaced, measured in tract on signed random inputs at the real dims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub border_error: Option<f64>,
}

/// A layer a fold made, standing for the node that produced one output of the region.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedLayer {
    pub node: String,
    /// The node of the graph as the fold found it (itself possibly an earlier fold's).
    pub replaces: String,
}

impl Ctx {
    pub fn new(pinned: PinnedShapes, max_patches: Option<usize>) -> Ctx {
        Ctx {
            pinned,
            max_patches,
            ..Ctx::default()
        }
    }

    fn count_patch(&mut self) {
        self.applied += 1;
    }

    /// Rewrites applied so far, to run passes again from there ([`Ctx::rewind_to`]).
    pub fn patches_applied(&self) -> usize {
        self.applied
    }

    /// Counts the patch budget as if only `applied` rewrites had been made: passes run
    /// again from an earlier graph get the budget they had there.
    pub fn rewind_to(&mut self, applied: usize) {
        self.applied = applied;
    }

    fn budget_left(&self) -> bool {
        self.max_patches.is_none_or(|max| self.applied < max)
    }
}

pub trait Pass {
    /// Stable name, as users select passes by it.
    fn name(&self) -> &'static str;
    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome>;
}

/// A pass made of one rule: "does this node match → the patch that rewrites it".
/// `shapes` are inferred from the declared model, never from pinned dims.
pub(crate) trait Rule {
    fn name(&self) -> &'static str;
    fn rewrite(
        &self,
        graph: &Graph,
        node: NodeId,
        shapes: &Shapes,
        ctx: &mut Ctx,
    ) -> Result<Option<Patch>>;
}

impl<R: Rule> Pass for R {
    fn name(&self) -> &'static str {
        Rule::name(self)
    }

    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        rewrite_to_fixed_point(self, graph, ctx).map(PassOutcome::from)
    }
}

/// An empty patch whose origin reads `pass >> rule >> node`.
pub(crate) fn patch(pass: &str, rule: &str, node: &Node) -> Patch {
    Patch::new(format!("{pass} >> {rule} >> {}", node.name))
}

/// Upper bound on rewrites per node per pass before the driver calls it a loop.
const MAX_REWRITES_PER_NODE: usize = 8;

/// Sweeps the nodes in execution order, applying each rewrite as it is found, until a
/// sweep finds none. Nodes a patch adds are visited by the next sweep.
fn rewrite_to_fixed_point(rule: &dyn Rule, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassStats> {
    let mut stats = PassStats {
        pass: rule.name().to_string(),
        ..PassStats::default()
    };
    let nodes_before = graph.node_count() as i64;
    let cap = MAX_REWRITES_PER_NODE * (graph.node_count() + 1);
    let mut changed = true;
    while changed && ctx.budget_left() {
        changed = false;
        let mut shapes = shape::infer(graph, &PinnedShapes::default())?;
        for node in graph.topological_order()? {
            if !ctx.budget_left() {
                break;
            }
            if !graph.contains_node(node) {
                continue;
            }
            let Some(patch) = rule.rewrite(graph, node, &shapes, ctx)? else {
                continue;
            };
            stats.rewrites.push(patch.origin.clone());
            shapes = graph.apply(patch)?.shapes;
            stats.patches += 1;
            ctx.count_patch();
            if stats.patches > cap {
                return Err(Error::graph(format!(
                    "pass {} did not reach a fixed point after {} rewrites (last: {})",
                    rule.name(),
                    stats.patches,
                    stats.rewrites.last().map(String::as_str).unwrap_or("")
                )));
            }
            changed = true;
        }
    }
    stats.nodes_removed = nodes_before - graph.node_count() as i64;
    Ok(stats)
}

/// The exact canonical rewrites, in the order they run (each pass's doc says why it
/// sits where it does).
pub fn canonical() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(eliminate_dead_code::EliminateDeadCode),
        Box::new(constant_to_initializer::ConstantToInitializer),
        Box::new(remove_identity::RemoveIdentity),
        Box::new(fold_constants::FoldConstants),
        Box::new(fuse_hardswish::FuseHardSwish),
        Box::new(resolve_reshape_shapes::ResolveReshapeShapes),
        Box::new(resolve_auto_pad::ResolveAutoPad),
        Box::new(fold_pad_into_conv::FoldPadIntoConv),
        Box::new(matmul_add_to_gemm::MatMulAddToGemm),
        Box::new(fold_batchnorm::FoldBatchNorm),
        Box::new(fold_affine::FoldAffine),
    ]
}

/// The folds, run after the canonical rewrites (and after `linearize`), in the order
/// they run (each pass's doc says why it sits where it does).
pub fn folding() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(fold_parallel_convs::FoldParallelConvs),
        Box::new(commute_global_pool::CommuteGlobalPool),
        Box::new(fold_conv_chains::FoldConvChains),
        Box::new(fold_gemm_chains::FoldGemmChains),
        Box::new(fold_conv_into_gemm::FoldConvIntoGemm),
        Box::new(fold_fan_out::FoldFanOut),
    ]
}

/// Runs passes in order, each to its fixed point. A graph some fold sized at the pinned
/// dims declares them.
pub fn run_pipeline(
    passes: &[Box<dyn Pass>],
    graph: &mut Graph,
    ctx: &mut Ctx,
) -> Result<PipelineOutcome> {
    let mut outcome = PipelineOutcome::default();
    let mut sized_by_pins = false;
    for pass in passes {
        let done = pass.run(graph, ctx)?;
        sized_by_pins |= done.sized_by_pins;
        outcome.add(done);
    }
    if sized_by_pins {
        crate::ir::shape::declare_pinned_dims(graph, &ctx.pinned);
    }
    Ok(outcome)
}
