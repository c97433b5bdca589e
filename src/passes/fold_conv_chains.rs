//! `fold_conv_chains`: a chain of convolutions (and average pools, and residual Adds that
//! close over part of the chain) with nothing non-linear between them becomes fewer
//! convolutions — where that is faster on the runtime.
//!
//! Pattern: x → L1 → L2 → … → Lm, each Lk a Conv with constant weights or an AveragePool
//! (a depthwise conv of weights 1/k²), or an `Add(p_s, p_k)` closing a skip from an
//! earlier point of the chain. Any contiguous segment whose inner values are read only
//! inside it is a single-entry, single-exit region, and folds into one Conv (plus one
//! Add of a per-position bias map when its bias varies near the border). An AveragePool
//! that leaves its padding out of the count (`count_include_pad = 0`) may end a segment:
//! the fold is then the Conv (and bias map) followed by a Mul by a constant [1, 1, H, W]
//! divisor map.
//!
//! Algebra: `fold::conv_map` (sequential composition, residual identity on the centre
//! tap, f(x) = L(x) + f(0) for the bias, the pool divisor as a per-position scale).
//!
//! Exactness: exact (≤ 1e-4 relative) unless a padded layer follows a mixing one, which
//! is exact only away from the border: such a segment folds only with
//! `allow_approx_borders`, and is reported as approximate, with its measured error. The
//! divisor of a pool excluding its padding needs static spatial dims: without them the
//! pool is left alone, with a note.
//!
//! Profitability: merged layers often cost more (3×3∘3×3 → 5×5 is 1.39× the MACs when
//! the channels are equal), yet a whole linearised inverted-residual block is cheaper as
//! one dense 3×3. So the partition of each chain into segments is chosen by dynamic
//! programming over the cost model's measured gains (as in latency-aware depth
//! compression): a segment folds when it pays `min_gain`, and segments spanning a value
//! the user linearised must fold whatever the verdict. Segments whose folded MACs exceed
//! 1.5× the originals' are not measured (they never pay) unless the originals are so
//! small that a layer's fixed cost dominates; kernels past 11 taps are not built.
//!
//! Ordering: after the canonical passes (BatchNorm and affine already folded, pads
//! explicit) and after `linearize`.

use std::collections::HashSet;

use crate::error::Result;
use crate::fold::conv::{Border, Conv2d};
use crate::fold::conv_map::ConvMap;
use crate::fold::nodes::{MAX_KERNEL, Windowed, emit_conv_map, windowed};
use crate::ir::shape::{Shapes, ValueType};
use crate::ir::{DataType, Graph, NodeId, OpKind, Tensor, ValueId};
use crate::passes::segments::{
    self, ChainElement, ChainShapes, Replaced, Segment, apply_fold, best_partition, judge_fold,
    run_chain_folds,
};
use crate::passes::{Ctx, FoldRecord, Pass, PassOutcome};

pub(crate) struct FoldConvChains;

const NAME: &str = "fold_conv_chains";

enum Element {
    Layer {
        node: NodeId,
        conv: Conv2d,
    },
    /// An AveragePool whose divisor leaves the padding out, as the conv counting it.
    PoolExcludingPads {
        node: NodeId,
        pool: Conv2d,
    },
    /// `Add(p_source, p_previous)`.
    Residual {
        node: NodeId,
        source: usize,
    },
}

impl ChainElement for Element {
    fn node(&self) -> NodeId {
        match self {
            Element::Layer { node, .. }
            | Element::PoolExcludingPads { node, .. }
            | Element::Residual { node, .. } => *node,
        }
    }
}

type Chain = segments::Chain<Element>;

impl Pass for FoldConvChains {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        run_chain_folds(NAME, graph, ctx, find_chains, choose_folds, apply)
    }
}

/// `node` as a chain element when it is a linear windowed layer.
fn as_layer(graph: &Graph, node: NodeId, shapes: &Shapes) -> Option<Element> {
    Some(match windowed(graph, node, shapes)? {
        Windowed::Conv(conv) => Element::Layer { node, conv },
        Windowed::PoolExcludingPads(pool) => Element::PoolExcludingPads { node, pool },
    })
}

fn find_chains(graph: &Graph, shapes: &Shapes) -> Result<Vec<Chain>> {
    let mut claimed = HashSet::new();
    let mut chains = Vec::new();
    for id in graph.topological_order()? {
        if claimed.contains(&id) {
            continue;
        }
        let Some(first) = as_layer(graph, id, shapes) else {
            continue;
        };
        let node = graph.node(id);
        let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
            continue;
        };
        let chain = Chain::grow(graph, x, y, first, |chain| {
            next_element(graph, chain, shapes)
        });
        claimed.extend(chain.elements.iter().map(Element::node));
        if chain.elements.len() >= 2 {
            chains.push(chain);
        }
    }
    Ok(chains)
}

/// The one reader of the chain's last value that continues it, if there is exactly one.
fn next_element(graph: &Graph, chain: &Chain, shapes: &Shapes) -> Option<Element> {
    let last = *chain.values.last()?;
    if graph.is_output(last) {
        return None;
    }
    let mut readers: Vec<NodeId> = graph.users(last).to_vec();
    readers.dedup();
    let mut candidates = readers.into_iter().filter_map(|user| {
        let node = graph.node(user);
        match node.kind {
            OpKind::Conv | OpKind::AveragePool if node.input(0) == Some(last) => {
                as_layer(graph, user, shapes)
            }
            OpKind::Add => {
                let other = [node.input(0)?, node.input(1)?]
                    .into_iter()
                    .find(|&v| v != last)?;
                let source = chain.values[..chain.values.len() - 1]
                    .iter()
                    .position(|&v| v == other)?;
                same_dims(shapes.get(other), shapes.get(last))
                    .then_some(Element::Residual { node: user, source })
            }
            _ => None,
        }
    });
    let first = candidates.next()?;
    candidates.next().is_none().then_some(first)
}

fn same_dims(a: &ValueType, b: &ValueType) -> bool {
    match (&a.dims, &b.dims) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .skip(1)
                    .all(|(p, q)| p.known().is_some() && p == q)
        }
        _ => false,
    }
}

/// Segment (a, b) reads only p_a from outside and leaves only p_b to be read outside.
fn is_region(graph: &Graph, chain: &Chain, a: usize, b: usize) -> bool {
    let inside: HashSet<NodeId> = chain.elements[a..b].iter().map(Element::node).collect();
    let inner_values_closed = chain.values[a + 1..b]
        .iter()
        .all(|&v| !graph.is_output(v) && graph.users(v).iter().all(|u| inside.contains(u)));
    let skips_inside = chain.elements[a..b].iter().all(|e| match e {
        Element::Residual { source, .. } => *source >= a,
        Element::Layer { .. } | Element::PoolExcludingPads { .. } => true,
    });
    inner_values_closed && skips_inside
}

/// The folded maps of every segment starting at p_a, by end point (`None` where the
/// segment cannot be one convolution).
fn segment_maps(
    chain: &Chain,
    a: usize,
    channels: usize,
    hw: Option<[usize; 2]>,
) -> Vec<Option<ConvMap>> {
    let mut maps: Vec<Option<ConvMap>> = vec![None; chain.elements.len() + 1];
    maps[a] = Some(ConvMap::identity(channels, hw));
    for (k, element) in chain.elements.iter().enumerate().skip(a) {
        let previous = maps[k].as_ref();
        maps[k + 1] = match element {
            Element::Layer { conv, .. } => previous.and_then(|m| m.then(conv).ok()),
            Element::PoolExcludingPads { pool, .. } => {
                previous.and_then(|m| m.then_pool_excluding_pads(pool).ok())
            }
            Element::Residual { source, .. } => maps[*source]
                .as_ref()
                .zip(previous)
                .and_then(|(s, p)| s.plus(p)),
        }
        .filter(|m| m.conv.kernel.iter().all(|&k| k <= MAX_KERNEL));
    }
    maps
}

/// The best partition of the chain into folded segments.
fn choose_folds(
    graph: &Graph,
    chain: &Chain,
    shapes: &ChainShapes,
    ctx: &Ctx,
    done: &mut PassOutcome,
) -> Result<Vec<Segment<ConvMap>>> {
    note_pools_without_static_dims(graph, chain, shapes, done);
    let segments = best_partition(
        graph,
        &chain.values,
        ctx,
        |a| foldable_maps(graph, chain, a, shapes, ctx, done),
        |a, b, map, forced| {
            let ends = (chain.values[a], &chain.values[b..=b]);
            let dtype = weight_dtype(graph, chain, a);
            judge_fold(graph, ends, &shapes.analysed, forced, ctx, |p, x, n| {
                Ok(vec![emit_conv_map(p, x, map, dtype, n)?])
            })
        },
    )?;
    for segment in &segments {
        note_sized_by_pins(graph, chain, segment, shapes, done);
    }
    Ok(segments)
}

/// A map with per-position data (a bias map, a pool divisor) built at pinned H×W holds
/// only at those dims: say so, and have the output declare them.
fn note_sized_by_pins(
    graph: &Graph,
    chain: &Chain,
    segment: &Segment<ConvMap>,
    shapes: &ChainShapes,
    done: &mut PassOutcome,
) {
    let map = &segment.fold;
    let per_position = map.bias_map.is_some() || map.position_scale.is_some();
    if per_position && spatial_dims(&shapes.declared, chain.values[segment.a]).is_none() {
        done.sized_by_pins = true;
        done.note(format!(
            "{NAME}: the fold ending at '{}' adds a per-position map sized at the pinned dims; the output declares them and runs only at them",
            graph.node(chain.elements[segment.b - 1].node()).name
        ));
    }
}

fn spatial_dims(shapes: &Shapes, value: ValueId) -> Option<[usize; 2]> {
    let dims = shapes.get(value);
    dims.dim(2).zip(dims.dim(3)).map(|(h, w)| [h, w])
}

/// A pool excluding its padding cannot fold without static (or pinned) spatial dims: say
/// so.
fn note_pools_without_static_dims(
    graph: &Graph,
    chain: &Chain,
    shapes: &ChainShapes,
    done: &mut PassOutcome,
) {
    for (k, element) in chain.elements.iter().enumerate() {
        if let Element::PoolExcludingPads { node, .. } = element
            && spatial_dims(&shapes.analysed, chain.values[k]).is_none()
        {
            done.note(format!(
                "{NAME}: '{}' averages without counting its padding, a per-position divisor that needs static spatial dims; pin the input's dims to fold it",
                graph.node(*node).name
            ));
        }
    }
}

/// A fold across a padded conv that a bias reaches needs a per-position bias map, which
/// needs static spatial dims: say so where they are missing.
fn note_bias_maps_without_static_dims(
    graph: &Graph,
    chain: &Chain,
    maps: &[Option<ConvMap>],
    done: &mut PassOutcome,
) {
    for (element, map) in chain.elements.iter().zip(maps) {
        if let (Element::Layer { node, conv }, Some(map)) = (element, map)
            && map.needs_static_dims(conv)
        {
            done.note(format!(
                "{NAME}: folding into '{}' needs a per-position bias map (it pads what a bias reached), which needs static spatial dims; pin the input's dims to fold it",
                graph.node(*node).name
            ));
        }
    }
}

/// The maps of the segments starting at p_a that may fold: regions whose map is exact
/// everywhere, or only away from the border when that is allowed. Per-position maps are
/// sized at the declared spatial dims, or else at the pinned ones.
fn foldable_maps(
    graph: &Graph,
    chain: &Chain,
    a: usize,
    shapes: &ChainShapes,
    ctx: &Ctx,
    done: &mut PassOutcome,
) -> Vec<Option<ConvMap>> {
    let input = chain.values[a];
    let Some(channels) = shapes.declared.get(input).dim(1) else {
        return vec![None; chain.elements.len() + 1];
    };
    let hw = spatial_dims(&shapes.declared, input).or(spatial_dims(&shapes.analysed, input));
    let mut maps = segment_maps(chain, a, channels, hw);
    note_bias_maps_without_static_dims(graph, chain, &maps, done);
    for (b, map) in maps.iter_mut().enumerate().skip(a + 2) {
        let allowed = map
            .as_ref()
            .is_some_and(|m| m.border != Border::InteriorOnly || ctx.folding.allow_approx_borders);
        if !allowed || !is_region(graph, chain, a, b) {
            *map = None;
        }
    }
    maps
}

fn weight_dtype(graph: &Graph, chain: &Chain, a: usize) -> DataType {
    chain.elements[a..]
        .iter()
        .find_map(|e| match e {
            Element::Layer { node, .. } => graph
                .node(*node)
                .input(1)
                .and_then(|w| graph.constant(w))
                .map(Tensor::dtype),
            Element::Residual { .. } | Element::PoolExcludingPads { .. } => None,
        })
        .unwrap_or(DataType::Float)
}

fn apply(
    graph: &mut Graph,
    chain: &Chain,
    segment: &Segment<ConvMap>,
    shapes: &ChainShapes,
) -> Result<FoldRecord> {
    let nodes: Vec<NodeId> = chain.elements[segment.a..segment.b]
        .iter()
        .map(Element::node)
        .collect();
    let region = Replaced {
        input: chain.values[segment.a],
        outputs: &chain.values[segment.b..=segment.b],
        nodes: &nodes,
    };
    let dtype = weight_dtype(graph, chain, segment.a);
    let exact = segment.fold.border == Border::Exact;
    apply_fold(
        graph,
        NAME,
        region,
        segment,
        exact,
        &shapes.analysed,
        |p, x, n| Ok(vec![emit_conv_map(p, x, &segment.fold, dtype, n)?]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::segments::testing::{run_with, verdict};
    use crate::passes::test_models::{EXACT, conv_attrs, count, model, weights};
    use crate::testing::max_relative_error;

    const C: usize = 4;
    const E: usize = 12;

    /// An inverted-residual block without its activations: 1×1 expand → depthwise 3×3
    /// (padded) → 1×1 project, plus the skip.
    fn linear_block() -> Model {
        model(
            ModelBuilder::new(13)
                .input("x", &[-1, C as i64, 9, 9])
                .initializer("we", weights(&[E, C, 1, 1], 1))
                .initializer("be", weights(&[E], 2))
                .initializer("wd", weights(&[E, 1, 3, 3], 3))
                .initializer("bd", weights(&[E], 4))
                .initializer("wp", weights(&[C, E, 1, 1], 5))
                .initializer("bp", weights(&[C], 6))
                .node(
                    "Conv",
                    &["x", "we", "be"],
                    &["e"],
                    conv_attrs(&[0; 4], &[1, 1], 1),
                )
                .node(
                    "Conv",
                    &["e", "wd", "bd"],
                    &["d"],
                    conv_attrs(&[1; 4], &[1, 1], E as i64),
                )
                .node(
                    "Conv",
                    &["d", "wp", "bp"],
                    &["p"],
                    conv_attrs(&[0; 4], &[1, 1], 1),
                )
                .node("Add", &["x", "p"], &["y"], Attributes::default())
                .output("y"),
        )
    }

    #[test]
    fn fires_on_a_whole_block_when_the_cost_model_says_it_is_faster() {
        let before = linear_block();
        let (after, done) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &[]);
        // One dense 3×3 with the identity on its centre tap, and the border bias map.
        assert_eq!((count(&after, "Conv"), count(&after, "Add")), (1, 1));
        let folds = &done.folds;
        assert_eq!(folds.len(), 1);
        assert_eq!(folds[0].sources.len(), 4);
        assert!(folds[0].exact && !folds[0].forced);
        let error = max_relative_error(&before, &after, &[vec![2, C, 9, 9]], 3);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    /// A squeeze-excitation's bottleneck without its Relu: 1×1 16 → 4 → 16 on `hw`×`hw`;
    /// as one 1×1 conv it has twice the MACs.
    fn bottleneck(hw: i64) -> Model {
        let conv = |b: ModelBuilder, x, w, y| {
            b.node("Conv", &[x, w], &[y], conv_attrs(&[0; 4], &[1, 1], 1))
        };
        let builder = ModelBuilder::new(13)
            .input("x", &[1, 16, hw, hw])
            .initializer("w1", weights(&[4, 16, 1, 1], 1))
            .initializer("w2", weights(&[16, 4, 1, 1], 2));
        model(conv(conv(builder, "x", "w1", "s"), "s", "w2", "y").output("y"))
    }

    #[test]
    fn dearer_folds_are_measured_only_where_a_layer_costs_more_than_its_arithmetic() {
        // On one pixel the pair is 128 MACs: the cost model decides (here: faster).
        let (after, _) = run_with(&FoldConvChains, &bottleneck(1), verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 1);
        // On 64×64 pixels (524 288 MACs) twice the MACs never pays: not even judged.
        let (after, _) = run_with(&FoldConvChains, &bottleneck(64), verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 2);
    }

    #[test]
    fn skips_a_fold_the_cost_model_says_is_slower() {
        let before = linear_block();
        let (after, done) = run_with(&FoldConvChains, &before, verdict(1.0, 1.2), &[]);
        assert_eq!(count(&after, "Conv"), 3);
        assert!(done.folds.is_empty());
    }

    #[test]
    fn folds_across_linearised_values_even_when_slower() {
        let before = linear_block();
        let (after, done) = run_with(&FoldConvChains, &before, verdict(1.0, 1.2), &["e", "d"]);
        // The cut after the project conv is free, so the cheaper partition keeps the Add.
        assert!(
            count(&after, "Conv") == 1,
            "the convs around the linearised values fold"
        );
        assert!(done.folds.iter().all(|f| f.forced));
        let error = max_relative_error(&before, &after, &[vec![1, C, 9, 9]], 4);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    #[test]
    fn skips_padded_after_padded_unless_approximate_borders_are_allowed() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, C as i64, 9, 9])
                .initializer("w1", weights(&[C, C, 3, 3], 1))
                .initializer("w2", weights(&[C, C, 3, 3], 2))
                .node(
                    "Conv",
                    &["x", "w1"],
                    &["h"],
                    conv_attrs(&[1; 4], &[1, 1], 1),
                )
                .node(
                    "Conv",
                    &["h", "w2"],
                    &["y"],
                    conv_attrs(&[1; 4], &[1, 1], 1),
                )
                .output("y"),
        );
        let (exact_only, _) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&exact_only, "Conv"), 2);
        let folding = crate::passes::FoldOptions {
            allow_approx_borders: true,
            ..Default::default()
        };
        let mut ctx = Ctx {
            cost: verdict(2.0, 1.0).into(),
            folding,
            ..Ctx::default()
        };
        let mut approx = before.clone();
        let done = FoldConvChains.run(&mut approx.graph, &mut ctx).unwrap();
        assert_eq!(count(&approx, "Conv"), 1);
        let fold = &done.folds[0];
        assert!(!fold.exact);
        // Measured on the region, which is the whole model here: the border error shows.
        let error = fold
            .border_error
            .expect("an approximate fold carries its error");
        let whole = max_relative_error(&before, &approx, &[vec![1, C, 9, 9]], 0);
        assert!(
            error > EXACT && error < 3.0 * whole && whole < 3.0 * error,
            "{error} vs {whole}"
        );
    }

    #[test]
    fn skips_a_chain_whose_middle_value_is_read_elsewhere() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, C as i64, 9, 9])
                .initializer("w1", weights(&[C, C, 1, 1], 1))
                .initializer("w2", weights(&[C, C, 1, 1], 2))
                .node(
                    "Conv",
                    &["x", "w1"],
                    &["h"],
                    conv_attrs(&[0; 4], &[1, 1], 1),
                )
                .node(
                    "Conv",
                    &["h", "w2"],
                    &["y"],
                    conv_attrs(&[0; 4], &[1, 1], 1),
                )
                .node("Relu", &["h"], &["z"], Attributes::default())
                .output("y")
                .output("z"),
        );
        let (after, _) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 2);
    }

    #[test]
    fn a_chain_reading_a_value_an_earlier_fold_replaced_folds_on_the_next_sweep() {
        // x → a → b → p; p feeds two readers, so the first chain stops at p and a second
        // starts at c; folding the first replaces p, so the second waits a sweep.
        let one = || conv_attrs(&[0; 4], &[1, 1], 1);
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, C as i64, 5, 5])
                .initializer("wa", weights(&[C, C, 1, 1], 1))
                .initializer("wb", weights(&[C, C, 1, 1], 2))
                .initializer("wc", weights(&[C, C, 1, 1], 3))
                .initializer("wd", weights(&[C, C, 1, 1], 4))
                .initializer("we", weights(&[C, C, 1, 1], 5))
                .node("Conv", &["x", "wa"], &["a"], one())
                .node("Conv", &["a", "wb"], &["p"], one())
                .node("Conv", &["p", "wc"], &["c"], one())
                .node("Conv", &["c", "wd"], &["y1"], one())
                .node("Conv", &["p", "we"], &["y2"], one())
                .output("y1")
                .output("y2"),
        );
        let (after, done) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!((count(&after, "Conv"), done.folds.len()), (3, 2));
        let error = max_relative_error(&before, &after, &[vec![1, C, 5, 5]], 5);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    /// x → Conv `kernel`×`kernel` (bias, same pads) → c → AveragePool 3×3 (`pads`,
    /// stride 2, its padding left out of the count) → y, on `hw` inputs.
    fn conv_then_pool(kernel: usize, pads: &[i64], hw: [i64; 2]) -> Model {
        let same = (kernel / 2) as i64;
        model(
            ModelBuilder::new(13)
                .input("x", &[-1, C as i64, hw[0], hw[1]])
                .initializer("w", weights(&[E, C, kernel, kernel], 1))
                .initializer("b", weights(&[E], 2))
                .node(
                    "Conv",
                    &["x", "w", "b"],
                    &["c"],
                    conv_attrs(&[same; 4], &[1, 1], 1),
                )
                .node(
                    "AveragePool",
                    &["c"],
                    &["y"],
                    Attributes::default()
                        .with_ints("kernel_shape", &[3, 3])
                        .with_ints("pads", pads)
                        .with_ints("strides", &[2, 2]),
                )
                .output("y"),
        )
    }

    #[test]
    fn fires_on_an_average_pool_excluding_its_padding_with_a_divisor_map() {
        for pads in [[1, 1, 1, 1], [0, 1, 2, 0]] {
            // Forced: the 3×3 stride-2 composite has more MACs than the 1×1 it replaces.
            let before = conv_then_pool(1, &pads, [9, 8]);
            let (after, done) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &["c"]);
            let ops = ["Conv", "AveragePool", "Mul"].map(|op| count(&after, op));
            assert_eq!(ops, [1, 0, 1], "{pads:?}");
            assert!(done.folds[0].exact);
            let error = max_relative_error(&before, &after, &[vec![2, C, 9, 8]], 6);
            assert!(error <= EXACT, "{pads:?}: relative error {error:e}");
        }
    }

    #[test]
    fn an_average_pool_excluding_its_padding_after_a_mixing_conv_is_approximate() {
        let before = conv_then_pool(3, &[1; 4], [9, 8]);
        let (after, _) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &["c"]);
        assert_eq!(count(&after, "AveragePool"), 1);
    }

    #[test]
    fn skips_an_average_pool_excluding_its_padding_without_static_dims_with_a_note() {
        let before = conv_then_pool(1, &[1; 4], [-1, -1]);
        let (after, done) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &["c"]);
        assert_eq!(count(&after, "AveragePool"), 1);
        let notes = &done.notes;
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("'AveragePool_1'") && notes[0].contains("static"),
            "{notes:?}"
        );
    }

    #[test]
    fn skips_a_bias_map_fold_without_static_dims_with_a_note_and_folds_it_pinned() {
        // A 1×1 conv with a bias, then a padded 3×3: exact with a bias map.
        let padded_pair = |hw: i64| {
            model(
                ModelBuilder::new(13)
                    .input("x", &[-1, C as i64, hw, hw])
                    .initializer("w1", weights(&[C, C, 1, 1], 1))
                    .initializer("b1", weights(&[C], 2))
                    .initializer("w2", weights(&[C, C, 3, 3], 3))
                    .node(
                        "Conv",
                        &["x", "w1", "b1"],
                        &["h"],
                        conv_attrs(&[0; 4], &[1, 1], 1),
                    )
                    .node(
                        "Conv",
                        &["h", "w2"],
                        &["y"],
                        conv_attrs(&[1; 4], &[1, 1], 1),
                    )
                    .output("y"),
            )
        };
        let (after, done) = run_with(&FoldConvChains, &padded_pair(-1), verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 2);
        let notes = &done.notes;
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("'Conv_1'") && notes[0].contains("pin the input's dims"),
            "{notes:?}"
        );
        let (after, done) = run_with(&FoldConvChains, &padded_pair(6), verdict(2.0, 1.0), &[]);
        assert_eq!((count(&after, "Conv"), count(&after, "Add")), (1, 1));
        assert!(done.notes.is_empty());
    }

    /// One random conv of a chain on `C` channels: kernel, stride, dilation, pads
    /// (asymmetric), groups, bias.
    #[derive(Clone, Debug)]
    struct RandomConv {
        kernel: [usize; 2],
        stride: usize,
        dilation: usize,
        pads: [usize; 4],
        group: usize,
        bias: bool,
    }

    fn random_conv(same_size: bool) -> impl proptest::strategy::Strategy<Value = RandomConv> {
        use proptest::prelude::*;
        (
            0..3usize,
            0..3usize,
            1..3usize,
            1..3usize,
            prop::array::uniform4(0..3usize),
            prop_oneof![Just(1usize), Just(2), Just(C)],
            any::<bool>(),
        )
            .prop_map(move |(kh, kw, stride, dilation, pads, group, bias)| {
                if same_size {
                    // Odd kernels, stride 1, "same" pads: the output keeps the input size.
                    let (kh, kw) = (2 * kh + 1, 2 * kw + 1);
                    let (ph, pw) = (dilation * (kh - 1) / 2, dilation * (kw - 1) / 2);
                    RandomConv {
                        kernel: [kh, kw],
                        stride: 1,
                        dilation,
                        pads: [ph, pw, ph, pw],
                        group,
                        bias,
                    }
                } else {
                    RandomConv {
                        kernel: [kh + 1 + kw % 2 * 2, kw + 1],
                        stride,
                        dilation,
                        pads,
                        group,
                        bias,
                    }
                }
            })
    }

    /// x → conv → … → conv (→ Add(x, ·) when `residual`), as a model on 13×11 inputs.
    fn random_chain(convs: &[RandomConv], residual: bool, seed: u64) -> Model {
        let mut builder = ModelBuilder::new(13).input("x", &[-1, C as i64, 13, 11]);
        let mut current = "x".to_string();
        for (k, c) in convs.iter().enumerate() {
            let (w, b, y) = (format!("w{k}"), format!("b{k}"), format!("y{k}"));
            let pads: Vec<i64> = c.pads.iter().map(|&p| p as i64).collect();
            let attrs = conv_attrs(&pads, &[c.stride as i64; 2], c.group as i64)
                .with_ints("dilations", &[c.dilation as i64; 2]);
            builder = builder.initializer(
                &w,
                weights(&[C, C / c.group, c.kernel[0], c.kernel[1]], seed + k as u64),
            );
            let inputs: Vec<&str> = if c.bias {
                builder = builder.initializer(&b, weights(&[C], seed + 100 + k as u64));
                vec![&current, &w, &b]
            } else {
                vec![&current, &w]
            };
            builder = builder.node("Conv", &inputs, &[&y], attrs);
            current = y;
        }
        if residual {
            builder = builder.node("Add", &["x", &current], &["sum"], Attributes::default());
            current = "sum".into();
        }
        model(builder.output(&current))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

        #[test]
        fn random_chains_fold_exactly(
            convs in proptest::collection::vec(random_conv(false), 1..4), seed in 0u64..1000
        ) {
            let before = random_chain(&convs, false, seed);
            // Windows that do not fit the 13×11 input make no model to compare.
            proptest::prop_assume!(crate::runtime::Session::new(&before, &[vec![1, C, 13, 11]]).is_ok());
            let (after, _) = run_with(&FoldConvChains, &before, verdict(2.0, 1.0), &[]);
            let error = max_relative_error(&before, &after, &[vec![2, C, 13, 11]], seed);
            proptest::prop_assert!(error <= EXACT, "relative error {error:e}");
        }

        #[test]
        fn random_residual_blocks_fold_exactly(
            convs in proptest::collection::vec(random_conv(true), 1..4), seed in 0u64..1000
        ) {
            let before = random_chain(&convs, true, seed);
            // Every conv output linearised: the block must fold whole wherever that is exact.
            let names: Vec<String> = (0..convs.len()).map(|k| format!("y{k}")).collect();
            let linearised: Vec<&str> = names.iter().map(String::as_str).collect();
            let (after, done) = run_with(&FoldConvChains, &before, verdict(1.0, 2.0), &linearised);
            let error = max_relative_error(&before, &after, &[vec![2, C, 13, 11]], seed);
            proptest::prop_assert!(error <= EXACT, "relative error {error:e}");
            // Pointwise layers then one of any kernel: exact, so one conv, the skip included.
            if convs[..convs.len() - 1].iter().all(|c| c.kernel == [1, 1]) {
                proptest::prop_assert_eq!(count(&after, "Conv"), 1, "{:?}", done.folds);
                proptest::prop_assert!(done.folds.iter().any(|f| f.sources.iter().any(|s| s.starts_with("Add"))));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

        #[test]
        fn average_pools_excluding_their_padding_fold_exactly_after_a_pointwise_conv(
            kernel in 2..4usize, stride in 1..3usize, pads in proptest::array::uniform4(0..3usize),
            group in proptest::prelude::prop_oneof![proptest::strategy::Just(1usize), proptest::strategy::Just(C)],
            seed in 0u64..1000
        ) {
            proptest::prop_assume!(pads.iter().all(|&p| p < kernel) && pads.iter().any(|&p| p > 0));
            let pads: Vec<i64> = pads.iter().map(|&p| p as i64).collect();
            let before = model(
                ModelBuilder::new(13)
                    .input("x", &[-1, C as i64, 13, 11])
                    .initializer("w", weights(&[C, C / group, 1, 1], seed))
                    .initializer("b", weights(&[C], seed + 1))
                    .node("Conv", &["x", "w", "b"], &["c"], conv_attrs(&[0; 4], &[1, 1], group as i64))
                    .node(
                        "AveragePool",
                        &["c"],
                        &["y"],
                        Attributes::default()
                            .with_ints("kernel_shape", &[kernel as i64; 2])
                            .with_ints("pads", &pads)
                            .with_ints("strides", &[stride as i64; 2]),
                    )
                    .output("y"),
            );
            let (after, _) = run_with(&FoldConvChains, &before, verdict(1.0, 2.0), &["c"]);
            proptest::prop_assert_eq!(count(&after, "AveragePool"), 0);
            let error = max_relative_error(&before, &after, &[vec![2, C, 13, 11]], seed);
            proptest::prop_assert!(error <= EXACT, "relative error {error:e}");
        }
    }
}
