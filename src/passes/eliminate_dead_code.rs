//! `eliminate_dead_code`: nodes whose results nobody reads, and unused initializers, go.
//!
//! - **Pattern**: a node none of whose outputs is read or is a graph output → nothing;
//!   an initializer nobody reads (and that is not a graph input) → nothing.
//! - **Algebra**: none.
//! - **Exactness**: bit-exact: graph outputs depend only on what is kept.
//! - **Profitability**: always.
//! - **Ordering**: first, for models that arrive with dead nodes; the patch engine
//!   already removes what each later rewrite leaves dead.

use crate::error::Result;
use crate::ir::Graph;
use crate::passes::{Ctx, Pass, PassOutcome};

pub(crate) struct EliminateDeadCode;

impl Pass for EliminateDeadCode {
    fn name(&self) -> &'static str {
        "eliminate_dead_code"
    }

    /// One sweep removes everything dead (it walks users before producers); it counts
    /// as one rewrite when it removes anything.
    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        let mut done = PassOutcome::of(self.name());
        if !ctx.budget_left() {
            return Ok(done);
        }
        let removed = graph.eliminate_dead_code()?;
        if removed > 0 {
            let stats = &mut done.stats;
            stats.patches = 1;
            stats.nodes_removed = removed as i64;
            stats
                .rewrites
                .push(format!("{} >> sweep >> graph", self.name()));
            ctx.count_patch();
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attributes;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::test_models::{count, model, rewritten};

    #[test]
    fn fires_on_a_dead_chain() {
        let g = model(
            ModelBuilder::new(13)
                .input("x", &[2])
                .node("Relu", &["x"], &["y"], Attributes::default())
                .node("Sigmoid", &["x"], &["dead1"], Attributes::default())
                .node("Tanh", &["dead1"], &["dead2"], Attributes::default())
                .output("y"),
        );
        let (after, stats) = rewritten(&EliminateDeadCode, &g);
        assert_eq!((stats.patches, stats.nodes_removed), (1, 2));
        assert_eq!(after.graph.node_count(), 1);
    }

    #[test]
    fn skips_on_a_live_graph_because_nothing_is_dead() {
        let g = model(
            ModelBuilder::new(13)
                .input("x", &[2])
                .node("Relu", &["x"], &["y"], Attributes::default())
                .output("y"),
        );
        let (after, stats) = rewritten(&EliminateDeadCode, &g);
        assert_eq!((stats.patches, count(&after, "Relu")), (0, 1));
    }
}
