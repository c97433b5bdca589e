//! `linearize`: the activations the user names become identity, so the layers on either
//! side can fold (`docs/ARCHITECTURE.md`, folding rule 10, activations).
//!
//! - **Pattern**: an activation `activation` recognises (Relu, Clip, LeakyRelu, PRelu,
//!   HardSwish in any of its forms) with a node whose name matches one of the user's
//!   patterns → its readers read its input x instead; the nodes of the form go. A graph
//!   output keeps its name.
//! - **Algebra**: act(x) becomes x, because the user asked for it.
//! - **Exactness**: not exact: the network changes where the user said it may. Every
//!   other value is computed as before.
//! - **Profitability**: not judged here: the user chose; the folds that follow decide
//!   what the linearised activations buy.
//! - **Ordering**: after the canonical passes (constants are initializers and a
//!   written-out HardSwish is one activation again); before the folds, which fold across
//!   the activations it removes.

use std::fmt;

use crate::error::{Error, Result};
use crate::ir::shape::Shapes;
use crate::ir::{Graph, NodeId, Patch};
use crate::passes::activation::{Activation, recognise, recognise_all};
use crate::passes::{Ctx, Pass, PassOutcome, Rule, patch, rewrite_to_fixed_point};

const NAME: &str = "linearize";

/// How many of the model's activations an unmatched pattern's error lists.
const LISTED_ACTIVATIONS: usize = 5;

/// Replaces by identity every activation with a node named like one of its patterns
/// (`*`: any run of characters, `/` included; `?`: one character).
///
/// ```
/// use onnx_shallow::ir::{Attributes, builder::ModelBuilder};
/// use onnx_shallow::passes::{Ctx, Linearize, Pass};
/// let proto = ModelBuilder::new(13)
///     .input("x", &[1, 4])
///     .node("Relu", &["x"], &["h"], Attributes::default())
///     .node("Sigmoid", &["h"], &["y"], Attributes::default())
///     .output("y")
///     .build();
/// let mut model = onnx_shallow::Model::from_proto(proto)?;
/// let mut ctx = Ctx::default();
/// let stats = Linearize::new(["Relu_*"]).run(&mut model.graph, &mut ctx)?.stats;
/// assert_eq!((stats.patches, model.graph.node_count()), (1, 1));
/// assert!(ctx.linearised.contains("h"));
/// # Ok::<(), onnx_shallow::Error>(())
/// ```
pub struct Linearize {
    patterns: Vec<Glob>,
}

impl Linearize {
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Linearize {
        let patterns = patterns
            .into_iter()
            .map(|p| Glob::new(p.as_ref()))
            .collect();
        Linearize { patterns }
    }

    /// Replaces exactly the activations whose root nodes have these names (no glob
    /// characters: a name is matched as written).
    pub fn nodes<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Linearize {
        let patterns = names
            .into_iter()
            .map(|n| Glob::literal(n.as_ref()))
            .collect();
        Linearize { patterns }
    }

    /// Replaces nothing.
    pub fn none() -> Linearize {
        Linearize {
            patterns: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The activations of `graph` it replaces, in graph order; an error when a pattern
    /// names none.
    pub(crate) fn matching(&self, graph: &Graph) -> Result<Vec<Activation>> {
        self.check_every_pattern_names_one(graph)?;
        let found = recognise_all(graph)?;
        Ok(found
            .into_iter()
            .filter(|a| self.patterns.iter().any(|p| p.names(graph, a)))
            .collect())
    }

    /// Each pattern must name an activation: a typo would otherwise linearise nothing,
    /// silently.
    fn check_every_pattern_names_one(&self, graph: &Graph) -> Result<()> {
        let found = recognise_all(graph)?;
        let names_one = |pattern: &Glob| found.iter().any(|a| pattern.names(graph, a));
        let Some(unmatched) = self.patterns.iter().find(|p| !names_one(p)) else {
            return Ok(());
        };
        Err(Error::Usage(format!(
            "{NAME}: '{unmatched}' names no activation; {}",
            listing(graph, &found)
        )))
    }
}

/// A few of the model's activations, for the user to see how they are named.
fn listing(graph: &Graph, found: &[Activation]) -> String {
    if found.is_empty() {
        return "the model has no activation to linearise".to_string();
    }
    let names: Vec<String> = found
        .iter()
        .take(LISTED_ACTIVATIONS)
        .map(|a| format!("'{}' ({})", graph.node(a.root()).name, a.kind))
        .collect();
    let more = if found.len() > LISTED_ACTIVATIONS {
        ", …"
    } else {
        ""
    };
    format!(
        "the model's {} activations include {}{more}",
        found.len(),
        names.join(", ")
    )
}

impl Pass for Linearize {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Adds the values it linearises to `ctx.linearised`.
    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        self.check_every_pattern_names_one(graph)?;
        rewrite_to_fixed_point(&NamedActivations(&self.patterns), graph, ctx).map(PassOutcome::from)
    }
}

/// The rule: an activation one of the patterns names becomes identity.
struct NamedActivations<'p>(&'p [Glob]);

impl Rule for NamedActivations<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn rewrite(
        &self,
        graph: &Graph,
        id: NodeId,
        _: &Shapes,
        ctx: &mut Ctx,
    ) -> Result<Option<Patch>> {
        let named = |activation: &Activation| self.0.iter().any(|p| p.names(graph, activation));
        let Some(activation) = recognise(graph, id)?.filter(named) else {
            return Ok(None);
        };
        // The folds that follow fold across x whatever the cost model says. x goes by
        // its name, or by y's when y is a graph output whose name x takes over.
        let names = [activation.input, activation.output].map(|v| graph.value(v).name.clone());
        ctx.linearised.extend(names);
        let mut patch = patch(NAME, activation.kind.name(), graph.node(id));
        patch.shunt(activation.output, activation.input);
        Ok(Some(patch))
    }
}

/// A node-name pattern: `*` matches any run of characters, `/` included; `?` matches
/// one character; every other character matches itself.
#[derive(Clone, Debug)]
struct Glob(Vec<Token>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Token {
    AnyRun,
    AnyOne,
    Char(char),
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        let token = |c| match c {
            '*' => Token::AnyRun,
            '?' => Token::AnyOne,
            c => Token::Char(c),
        };
        Glob(pattern.chars().map(token).collect())
    }

    /// A pattern matching `name` only, even when it holds `*` or `?`.
    fn literal(name: &str) -> Glob {
        Glob(name.chars().map(Token::Char).collect())
    }

    /// Some node of the activation has a name it matches.
    fn names(&self, graph: &Graph, activation: &Activation) -> bool {
        let name = |&node: &NodeId| graph.node(node).name.as_str();
        activation.nodes.iter().any(|node| self.matches(name(node)))
    }

    fn matches(&self, name: &str) -> bool {
        let (pattern, name) = (&self.0, name.chars().collect::<Vec<char>>());
        let (mut p, mut n) = (0, 0);
        // Where the last `*` stood and where its run ended: on a mismatch the run grows
        // by one character. Retrying only the last `*` is enough, as a later `*` can
        // absorb whatever an earlier one would have.
        let mut last_star: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some(Token::AnyRun) => {
                    last_star = Some((p, n));
                    p += 1;
                }
                Some(&Token::AnyOne) => {
                    p += 1;
                    n += 1;
                }
                Some(&Token::Char(c)) if c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match last_star {
                    Some((star, run_end)) => {
                        last_star = Some((star, run_end + 1));
                        (p, n) = (star + 1, run_end + 1);
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&t| t == Token::AnyRun)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let char = |t: &Token| match t {
            Token::AnyRun => '*',
            Token::AnyOne => '?',
            Token::Char(c) => *c,
        };
        f.write_str(&self.0.iter().map(char).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::PassStats;
    use crate::passes::activation::activations;
    use crate::passes::activation::forms::{ACTIVATIONS, Form, between_convs, input_dims};
    use crate::passes::test_models::{count, model};
    use crate::testing::max_relative_error;

    fn linearised(model: &Model, patterns: &[&str]) -> Result<(Model, PassStats)> {
        let mut after = model.clone();
        let stats = Linearize::new(patterns)
            .run(&mut after.graph, &mut Ctx::default())?
            .stats;
        Ok((after, stats))
    }

    #[test]
    fn fires_on_every_form_and_computes_what_identity_computes() {
        for form in ACTIVATIONS {
            let before = between_convs(form.opset(), form);
            let (after, stats) = linearised(&before, &["*"]).unwrap();
            assert_eq!(stats.patches, 1, "{form:?}");
            assert_eq!(after.graph.node_count(), 2, "{form:?}");
            let identity = between_convs(form.opset(), Form::Identity);
            let error = max_relative_error(&identity, &after, &input_dims(), 5);
            assert!(error <= 1e-6, "{form:?}: relative error {error:e}");
        }
    }

    #[test]
    fn fires_on_a_form_when_any_of_its_nodes_matches() {
        let before = between_convs(13, Form::WrittenOutMulThenDiv);
        let (after, _) = linearised(&before, &["Clip_?"]).unwrap();
        assert!(activations(&after.graph).unwrap().is_empty());
        assert_eq!(after.graph.node_count(), 2);
    }

    #[test]
    fn fires_only_on_the_named_activations_and_records_their_inputs() {
        let b = ModelBuilder::new(13)
            .input("x", &[2, 3])
            .node("Relu", &["x"], &["r"], Attributes::default())
            .node("LeakyRelu", &["r"], &["l"], Attributes::default())
            .node("Relu", &["l"], &["y"], Attributes::default());
        let before = model(b.output("y"));
        let mut after = before.clone();
        let mut ctx = Ctx::default();
        Linearize::new(["Leaky*", "Relu_2"])
            .run(&mut after.graph, &mut ctx)
            .unwrap();
        let left: Vec<String> = after.graph.nodes().map(|(_, n)| n.name.clone()).collect();
        assert_eq!(left, ["Relu_0"]);
        let mut recorded: Vec<String> = ctx.linearised.into_iter().collect();
        recorded.sort();
        assert_eq!(recorded, ["l", "r", "y"]);
    }

    #[test]
    fn fires_on_an_activation_producing_a_graph_output_and_keeps_its_name() {
        let b = ModelBuilder::new(13)
            .input("x", &[2, 3])
            .node("Sigmoid", &["x"], &["h"], Attributes::default())
            .node("Relu", &["h"], &["y"], Attributes::default());
        let (after, _) = linearised(&model(b.output("y")), &["*"]).unwrap();
        assert_eq!(count(&after, "Relu"), 0);
        assert_eq!(after.graph.value(after.graph.outputs()[0]).name, "y");
    }

    #[test]
    fn errors_on_a_pattern_naming_no_activation_and_lists_the_activations() {
        let before = between_convs(13, Form::Relu);
        let error = linearised(&before, &["Relu_1", "Rleu*"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("'Rleu*' names no activation"), "{error}");
        assert!(error.contains("'Relu_1' (Relu)"), "{error}");
    }

    #[test]
    fn errors_on_a_model_without_activations_and_says_so() {
        let error = linearised(&between_convs(13, Form::Identity), &["*"]).unwrap_err();
        assert!(
            error.to_string().contains("no activation to linearise"),
            "{error}"
        );
    }

    #[test]
    fn glob_star_spans_slashes_and_question_mark_is_one_character() {
        let block = Glob::new("/features/features.3/*Clip*");
        assert!(block.matches("/features/features.3/conv/conv.0/conv.0.2/Clip"));
        assert!(!block.matches("/features/features.13/conv/conv.0/conv.0.2/Clip"));
        assert!(!block.matches("/features/features.3/conv/conv.2/Conv"));
        let one = Glob::new("Relu@?");
        assert!(one.matches("Relu@7") && !one.matches("Relu@17") && !one.matches("Relu@"));
        assert!(Glob::new("*").matches("") && Glob::new("a*b*c").matches("abxbc"));
        assert!(!Glob::new("a*b*c").matches("abxbcx"));
        assert!(Glob::new("Div@0").matches("Div@0") && !Glob::new("Div@0").matches("Div@01"));
        assert!(Glob::new("é?").matches("éß"));
        assert!(
            Glob::literal("Relu_*").matches("Relu_*") && !Glob::literal("Relu_*").matches("Relu_1")
        );
    }
}
