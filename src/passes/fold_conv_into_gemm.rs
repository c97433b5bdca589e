//! `fold_conv_into_gemm`: a convolution whose output is flattened straight into a dense
//! layer folds into that layer, the convolution written as its matrix
//! (`docs/ARCHITECTURE.md`, folding rule 5, convolution into a dense layer).
//!
//! Pattern: x[N, C, H, W] → Conv (or AveragePool) → y → (Transpose keeping the batch axis
//! first) → Flatten (axis 1) or Reshape to [0, -1] → Gemm or MatMul by a constant → z,
//! every inner value read only by the next node → x → Flatten → Gemm → z.
//!
//! Algebra: on a map of fixed H×W the conv is an affine map of the flattened input,
//! y = M·x + b (`Dense::from_conv`); a Transpose before the Flatten only reorders the
//! rows of M; then the dense layer's W·(M·x + b) + c = (W·M)·x + (W·b + c).
//!
//! Exactness: exact (≤ 1e-4 relative). The matrix needs the static C×H×W of the
//! declared model (a rewrite must hold at every size the model accepts).
//!
//! Profitability: the matrix reads all C·H·W inputs for every output: cheaper than the
//! conv and the layer for small maps and narrow layers (classifier heads; MTCNN O-Net's
//! 2×2 conv on a 4×4 map before its 256-wide layer), far dearer on large maps. Folds past
//! 1.5× the MACs (of a region not overhead-bound) are not built unless forced, nor
//! matrices past 2²³ entries; the rest is
//! judged by the cost model, and forced when an inner value is one the user linearised
//! (a Relu between the conv and the Flatten).
//!
//! Ordering: after `fold_conv_chains` (a chain folded to one conv can fold on) and
//! `fold_gemm_chains` (a head folded to one layer is cheaper to fold into); before
//! `fold_fan_out`. A chain of convs before the Flatten folds in one conv per sweep.

use crate::error::Result;
use crate::fold::conv::Conv2d;
use crate::fold::gemm::Dense;
use crate::fold::nodes::as_conv;
use crate::ir::shape::Shapes;
use crate::ir::{Attributes, DataType, Graph, NodeId, OpKind, Patch, ValueId, Wire};
use crate::passes::fold_gemm_chains::{dense_layer, emit_gemm, flattens_rows};
use crate::passes::matching::single_use_producer;
use crate::passes::segments::{
    ChainShapes, Region, Replaced, Segment, apply_fold, judge_fold, never_pays, reads_linearised,
    run_chain_folds, single_fold,
};
use crate::passes::{Ctx, FoldRecord, Pass, PassOutcome};

pub(crate) struct FoldConvIntoGemm;

const NAME: &str = "fold_conv_into_gemm";
/// Largest matrix built (f64 entries: 64 MiB).
const MAX_MATRIX: usize = 1 << 23;

/// x → conv → (Transpose) → Flatten → dense layer → output.
struct FlattenedConv {
    input: ValueId,
    output: ValueId,
    conv: Conv2d,
    input_hw: [usize; 2],
    /// Which conv output (in [channel, y, x] order) each flattened feature is, when a
    /// Transpose reorders them.
    order: Option<Vec<usize>>,
    layer: Dense,
    dtype: DataType,
    /// The conv, the Transpose, the Flatten and the layer.
    nodes: Vec<NodeId>,
    /// The values between them.
    inner: Vec<ValueId>,
}

impl Region for FlattenedConv {
    fn input(&self) -> ValueId {
        self.input
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.nodes.clone()
    }
}

impl Pass for FoldConvIntoGemm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        run_chain_folds(NAME, graph, ctx, find_flattened_convs, choose_fold, apply)
    }
}

fn find_flattened_convs(graph: &Graph, shapes: &Shapes) -> Result<Vec<FlattenedConv>> {
    Ok(graph
        .topological_order()?
        .into_iter()
        .filter_map(|layer| as_flattened_conv(graph, layer, shapes))
        .collect())
}

/// The region ending at the dense layer `layer`, walking back to the conv.
fn as_flattened_conv(graph: &Graph, layer: NodeId, shapes: &Shapes) -> Option<FlattenedConv> {
    let flat = graph.node(layer).input(0)?;
    let (layer_map, dtype) = dense_layer(graph, layer, flat)?;
    let flatten = single_use_producer(graph, flat)?;
    let transposed = graph.node(flatten).input(0)?;
    if !flattens_rows(graph, flatten, transposed, shapes.get(transposed).dim(0)) {
        return None;
    }
    let mut nodes = vec![flatten, layer];
    let mut inner = vec![transposed, flat];
    let mut conv_output = transposed;
    let mut perm = None;
    let producer = single_use_producer(graph, transposed)?;
    if graph.node(producer).kind == OpKind::Transpose {
        perm = Some(graph.node(producer).ints("perm").ok()??);
        conv_output = graph.node(producer).input(0)?;
        nodes.insert(0, producer);
        inner.insert(0, conv_output);
    }
    let conv_node = single_use_producer(graph, conv_output)?;
    let conv = as_conv(graph, conv_node, shapes)?;
    nodes.insert(0, conv_node);
    let input = graph.node(conv_node).input(0)?;
    let x = shapes.get(input);
    let input_hw = [x.dim(2)?, x.dim(3)?];
    let out_hw = [
        conv.output_size(0, input_hw[0])?,
        conv.output_size(1, input_hw[1])?,
    ];
    let order = match perm {
        Some(perm) => Some(flattened_order(
            &perm,
            [conv.out_channels, out_hw[0], out_hw[1]],
        )?),
        None => None,
    };
    (layer_map.inputs == conv.out_channels * out_hw[0] * out_hw[1]).then_some(FlattenedConv {
        input,
        output: graph.node(layer).output(0)?,
        conv,
        input_hw,
        order,
        layer: layer_map,
        dtype,
        nodes,
        inner,
    })
}

/// For a [N, C, H, W] value transposed by `perm` (the batch axis staying first) and
/// flattened: which [c, y, x] feature each flattened position holds.
fn flattened_order(perm: &[i64], dims: [usize; 3]) -> Option<Vec<usize>> {
    let [0, rest @ ..] = perm else {
        return None;
    };
    let axes: Vec<usize> = rest
        .iter()
        .map(|&p| usize::try_from(p).ok())
        .collect::<Option<_>>()?;
    let mut sorted = axes.clone();
    sorted.sort_unstable();
    if sorted != [1, 2, 3] {
        return None;
    }
    let sizes: Vec<usize> = axes.iter().map(|&a| dims[a - 1]).collect();
    let total = dims.iter().product();
    Some(
        (0..total)
            .map(|t| {
                let z = [
                    t / (sizes[1] * sizes[2]),
                    (t / sizes[2]) % sizes[1],
                    t % sizes[2],
                ];
                let mut at = [0; 3];
                for (k, &axis) in axes.iter().enumerate() {
                    at[axis - 1] = z[k];
                }
                (at[0] * dims[1] + at[1]) * dims[2] + at[2]
            })
            .collect(),
    )
}

/// The dense layer the region folds into: the conv's matrix, reordered, then the layer.
/// `None` when it is too large to build, or (unless forced) never pays.
fn folded_layer(region: &FlattenedConv, forced: bool) -> Option<Dense> {
    let conv = &region.conv;
    let inputs = conv.in_channels * region.input_hw[0] * region.input_hw[1];
    let (features, outputs) = (region.layer.inputs, region.layer.outputs);
    let taps = conv.in_channels / conv.group * conv.kernel[0] * conv.kernel[1];
    let original = (features * (taps + outputs)) as f64;
    let too_dear = !forced && never_pays(original, (inputs * outputs) as f64);
    if too_dear || inputs.checked_mul(outputs)? > MAX_MATRIX {
        return None;
    }
    let matrix = Dense::from_conv(conv, region.input_hw, MAX_MATRIX)?;
    let ordered = match &region.order {
        Some(order) => matrix.with_outputs_in_order(order)?,
        None => matrix,
    };
    ordered.then(&region.layer)
}

/// Adds the Flatten of `x` and the folded layer; returns the layer's output.
fn emit(patch: &mut Patch, x: Wire, layer: &Dense, dtype: DataType, name: &str) -> Result<Wire> {
    let flat = patch.node(
        &format!("{name}.flatten"),
        OpKind::Flatten,
        Attributes::default().with_int("axis", 1),
        &[Some(x)],
        1,
    )[0];
    emit_gemm(patch, flat, layer, dtype, name)
}

fn choose_fold(
    graph: &Graph,
    region: &FlattenedConv,
    shapes: &ChainShapes,
    ctx: &Ctx,
    _: &mut PassOutcome,
) -> Result<Vec<Segment<Dense>>> {
    let forced = reads_linearised(graph, ctx, region.inner.iter().copied());
    let Some(layer) = folded_layer(region, forced) else {
        return Ok(Vec::new());
    };
    let ends = (region.input, std::slice::from_ref(&region.output));
    let verdict = judge_fold(graph, ends, &shapes.analysed, forced, ctx, |p, x, n| {
        Ok(vec![emit(p, x, &layer, region.dtype, n)?])
    })?;
    Ok(single_fold(layer, verdict, forced, ctx))
}

fn apply(
    graph: &mut Graph,
    region: &FlattenedConv,
    segment: &Segment<Dense>,
    shapes: &ChainShapes,
) -> Result<FoldRecord> {
    let replaced = Replaced {
        input: region.input,
        outputs: std::slice::from_ref(&region.output),
        nodes: &region.nodes,
    };
    apply_fold(
        graph,
        NAME,
        replaced,
        segment,
        true,
        &shapes.analysed,
        |p, x, n| Ok(vec![emit(p, x, &segment.fold, region.dtype, n)?]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::segments::testing::{run_with, verdict};
    use crate::passes::test_models::{EXACT, conv_attrs, count, ints, model, weights};
    use crate::testing::max_relative_error;

    /// x[·, 4, `hw`] → Conv 3×3 (bias, pads 1, stride 2) → c → (Transpose `perm`) →
    /// Reshape [0, -1] → Gemm [6, 8·⌈h/2⌉·⌈w/2⌉] → y.
    fn conv_head(hw: [i64; 2], perm: Option<&[i64]>) -> Model {
        let features = 8 * ((hw[0].max(1) + 1) / 2) * ((hw[1].max(1) + 1) / 2);
        let mut builder = ModelBuilder::new(13)
            .input("x", &[-1, 4, hw[0], hw[1]])
            .initializer("w", weights(&[8, 4, 3, 3], 1))
            .initializer("b", weights(&[8], 2))
            .initializer("wg", weights(&[6, features as usize], 3))
            .initializer("bg", weights(&[6], 4))
            .initializer("shape", ints(&[2], &[0, -1]))
            .node(
                "Conv",
                &["x", "w", "b"],
                &["c"],
                conv_attrs(&[1; 4], &[2, 2], 1),
            );
        let mut flattened = "c";
        if let Some(perm) = perm {
            builder = builder.node(
                "Transpose",
                &["c"],
                &["t"],
                Attributes::default().with_ints("perm", perm),
            );
            flattened = "t";
        }
        model(
            builder
                .node(
                    "Reshape",
                    &[flattened, "shape"],
                    &["f"],
                    Attributes::default(),
                )
                .node(
                    "Gemm",
                    &["f", "wg", "bg"],
                    &["y"],
                    Attributes::default().with_int("transB", 1),
                )
                .output("y"),
        )
    }

    #[test]
    fn fires_on_a_conv_flattened_into_a_gemm_and_stays_exact() {
        for perm in [None, Some(&[0, 3, 2, 1][..]), Some(&[0, 2, 3, 1][..])] {
            let before = conv_head([5, 6], perm);
            let (after, done) = run_with(&FoldConvIntoGemm, &before, verdict(2.0, 1.0), &[]);
            assert_eq!(
                (count(&after, "Conv"), count(&after, "Gemm")),
                (0, 1),
                "{perm:?}"
            );
            assert!(done.folds[0].exact);
            let error = max_relative_error(&before, &after, &[vec![3, 4, 5, 6]], 1);
            assert!(error <= EXACT, "{perm:?}: relative error {error:e}");
        }
    }

    #[test]
    fn skips_a_fold_the_cost_model_says_is_slower_unless_linearised() {
        let before = conv_head([5, 6], None);
        let (after, done) = run_with(&FoldConvIntoGemm, &before, verdict(1.0, 1.2), &[]);
        assert_eq!(count(&after, "Conv"), 1);
        assert!(done.folds.is_empty());
        let (after, done) = run_with(&FoldConvIntoGemm, &before, verdict(1.0, 1.2), &["c"]);
        assert_eq!(count(&after, "Conv"), 0);
        assert!(done.folds[0].forced);
    }

    #[test]
    fn skips_without_static_spatial_dims() {
        let before = conv_head([-1, -1], None);
        let (after, _) = run_with(&FoldConvIntoGemm, &before, verdict(2.0, 1.0), &["c"]);
        assert_eq!(count(&after, "Conv"), 1);
    }

    #[test]
    fn skips_a_transpose_that_moves_the_batch_axis() {
        assert_eq!(flattened_order(&[1, 0, 2, 3], [2, 2, 2]), None);
        assert_eq!(
            flattened_order(&[0, 1, 2, 3], [2, 1, 2]),
            Some(vec![0, 1, 2, 3])
        );
        // [C=2, H=1, W=2] transposed to [W, H, C]: features (w, c) = (0,0),(0,1),(1,0),(1,1).
        assert_eq!(
            flattened_order(&[0, 3, 2, 1], [2, 1, 2]),
            Some(vec![0, 2, 1, 3])
        );
    }

    #[test]
    fn skips_a_map_whose_matrix_is_too_large_to_build() {
        // The conv's matrix would have 4·64·64 × 8·32·32 entries.
        let before = conv_head([64, 64], None);
        let (after, _) = run_with(&FoldConvIntoGemm, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

        #[test]
        fn random_convs_flattened_into_a_gemm_fold_exactly(
            kernel in proptest::array::uniform2(1..4usize), stride in 1..3usize,
            dilation in 1..3usize, pads in proptest::array::uniform4(0..3usize),
            group in 1..3usize, hw in proptest::array::uniform2(3..7usize),
            perm in proptest::sample::select(vec![None, Some([0, 3, 2, 1]), Some([0, 2, 3, 1])]),
            seed in 0u64..1000
        ) {
            let pads: Vec<i64> = pads.iter().map(|&p| p as i64).collect();
            let extent = |axis: usize| dilation * (kernel[axis] - 1) + 1;
            let out = |axis: usize| (hw[axis] + pads[axis] as usize + pads[axis + 2] as usize)
                .checked_sub(extent(axis)).map(|span| span / stride + 1);
            let (Some(oh), Some(ow)) = (out(0), out(1)) else {
                return Ok(());
            };
            let mut builder = ModelBuilder::new(13)
                .input("x", &[-1, 4, hw[0] as i64, hw[1] as i64])
                .initializer("w", weights(&[4, 4 / group, kernel[0], kernel[1]], seed))
                .initializer("b", weights(&[4], seed + 1))
                .initializer("wg", weights(&[4 * oh * ow, 5], seed + 2))
                .initializer("shape", ints(&[2], &[0, -1]))
                .node(
                    "Conv",
                    &["x", "w", "b"],
                    &["c"],
                    conv_attrs(&pads, &[stride as i64; 2], group as i64)
                        .with_ints("dilations", &[dilation as i64; 2]),
                );
            let mut flattened = "c";
            if let Some(perm) = perm {
                builder = builder.node("Transpose", &["c"], &["t"], Attributes::default().with_ints("perm", &perm));
                flattened = "t";
            }
            let before = model(
                builder
                    .node("Reshape", &[flattened, "shape"], &["f"], Attributes::default())
                    .node("MatMul", &["f", "wg"], &["y"], Attributes::default())
                    .output("y"),
            );
            let (after, _) = run_with(&FoldConvIntoGemm, &before, verdict(1.0, 2.0), &["c"]);
            proptest::prop_assert_eq!(count(&after, "Conv"), 0);
            let error = max_relative_error(&before, &after, &[vec![2, 4, hw[0], hw[1]]], seed);
            proptest::prop_assert!(error <= EXACT, "relative error {error:e}");
        }
    }
}
