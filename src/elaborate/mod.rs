//! Elaboration: instantiates a model's blocks, arguments, loops and
//! conditions into a [`Graph`] of primitive ops. Its input is a
//! [`Program`] that the load stage ([`crate::syntax::load_file`]) parsed,
//! imports included.
//!
//! Blocks can ask for their input's shape (`in.channels`), so shapes are
//! computed with the op rules of [`crate::ops`] as nodes are added; shape
//! inference then re-checks the finished graph as a whole.
//!
//! Errors never stop elaboration: a failed expression yields
//! [`Value::Poison`], which every later step accepts silently, so that one
//! run reports as many independent errors as possible.
//!
//! One `Elaborator` walks the chosen model's body from top to bottom; its
//! methods are spread over one file per concern:
//!
//! - `definitions.rs`: the blocks and models each file can call (its own and
//!   its imports'), the model to compile, and the `Scope` of one block
//!   instance, where names are bound and looked up.
//! - `expr.rs`: evaluating an expression to a [`Value`] (numbers, lists,
//!   ranges, fields of tensors, pipelines, calls of built-in functions); how
//!   unbound names read depends on the `Ctx` (statement, `let`, argument,
//!   value or train section).
//! - `calls.rs`: running bodies (statements, `for` with its unpacking,
//!   `if`, `output`) and block calls: binding arguments to parameters,
//!   recursion checks.
//! - `nodes.rs`: turning a layer call (or `+`, `*`, `concat`, the model's
//!   input) into graph nodes, with their instance names, block paths, spans
//!   and weights.
//! - `train_section.rs`: the `train { ... }` section that applies to the
//!   model, evaluated in its scope; `train_config.rs` checks its entries
//!   into the training configuration ([`crate::config::TrainConfig`]);
//!   `freeze.rs` freezes the layers its `freeze` patterns match.
//! - `layers.rs` (the table of primitive layers and their expansion into
//!   ops), `args.rs` (checking a layer call's arguments against it),
//!   `functions.rs` (the built-in functions: `int`, `min`, `len`...) and
//!   `value.rs` (values and their arithmetic) hold no elaborator state.
//! - `fixture.rs` (tests only): inline `.cnn` fixtures and errors reduced
//!   to comparable values, for the unit tests of every file above.

mod args;
mod calls;
mod definitions;
mod expr;
#[cfg(test)]
mod fixture;
mod freeze;
mod functions;
pub mod layers;
mod nodes;
mod train_config;
mod train_section;
mod value;

use std::collections::HashSet;

use crate::diagnostics::{Diagnostic, Span};
use crate::graph::Graph;
use crate::syntax::ast;
use crate::syntax::Program;

pub use calls::{MAX_CALL_DEPTH, MAX_WORK};
pub use definitions::models;
use definitions::{DefRef, Scope, Visible};
pub use functions::FUNCTIONS;
pub use nodes::MAX_NODES;
pub use train_config::TRAIN_KEYS;
pub use value::{NamedArg, Spanned, Value};

/// Instantiates model `model` of the program's root file (or its only
/// model, when `None`) into a dataflow graph.
pub fn elaborate(program: &Program, model: Option<&str>) -> Result<Graph, Vec<Diagnostic>> {
    let mut elaborator = Elaborator::new(program);
    let graph = match definitions::choose_model(program, model) {
        Ok(def) => elaborator.model(def),
        Err(error) => {
            elaborator.errors.push(error);
            Graph::default()
        }
    };
    let mut errors = elaborator.errors;
    dedup(&mut errors);
    if errors.is_empty() {
        debug_assert_eq!(graph.verify(), Ok(()));
        Ok(graph)
    } else {
        Err(errors)
    }
}

/// Runs `f`, first moving to a new stack segment on the heap when less
/// than a red zone of the current one is left, as rustc does
/// (`ensure_sufficient_stack`).
///
/// Elaboration recurses once per block call (and per level of an
/// expression, which the parser bounds): a generated file whose blocks each
/// call the next, thousands deep, would otherwise overflow the stack of
/// whatever thread compiles it. The red zone covers the frames between two
/// calls of this function in a debug build; each segment holds hundreds of
/// levels.
fn with_stack<R>(f: impl FnOnce() -> R) -> R {
    const RED_ZONE: usize = 512 << 10;
    const SEGMENT: usize = 16 << 20;
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}

/// Keeps the first of errors with the same message at the same place: a
/// mistake inside a block used sixteen times is reported once.
fn dedup(errors: &mut Vec<Diagnostic>) {
    let mut seen = HashSet::new();
    errors.retain(|e| seen.insert((e.message.clone(), e.primary.span)));
}

/// The state of one elaboration: the graph built so far and every error.
struct Elaborator<'p> {
    program: &'p Program,
    /// Per file: the definitions visible there (its own, then its imports').
    visible: Visible<'p>,
    graph: Graph,
    errors: Vec<Diagnostic>,
    /// The block calls being expanded: the definition and the call site.
    stack: Vec<(&'p ast::Definition, Span)>,
    /// Set once the node or iteration budget is exhausted: loops then stop.
    budget_reported: bool,
    /// Steps of work done so far (see [`MAX_WORK`]).
    work: usize,
}

impl<'p> Elaborator<'p> {
    /// An elaborator for `program`, with the definitions of every file
    /// indexed (and clashes among them reported).
    fn new(program: &'p Program) -> Elaborator<'p> {
        let mut errors = Vec::new();
        let visible = definitions::index_definitions(program, &mut errors);
        Elaborator {
            program,
            visible,
            graph: Graph::default(),
            errors,
            stack: Vec::new(),
            budget_reported: false,
            work: 0,
        }
    }

    /// Reports `diagnostic`, labelled with the block calls that led to it
    /// (the innermost six).
    fn error(&mut self, mut diagnostic: Diagnostic) {
        let at = diagnostic.primary.span;
        for (def, call) in self.stack.iter().rev().take(6) {
            // A call that contains the fault (a bad argument) needs no label of its own.
            let contains = call.file == at.file && call.start <= at.start && at.end <= call.end;
            if !contains {
                diagnostic = diagnostic.with_context(
                    *call,
                    format!("while expanding `{}` called here", def.name.name),
                );
            }
        }
        self.errors.push(diagnostic);
    }

    /// Builds the graph of `model`: its parameters from their defaults, its
    /// input node, its body, its outputs and its train section.
    fn model(&mut self, model: DefRef<'p>) -> Graph {
        let def = model.def;
        self.graph.name = def.name.name.clone();
        self.graph.sources = self.program.sources.clone();
        let mut scope = Scope::new(model.file, String::new(), Value::Poison, true);
        scope.outputs = Some(Vec::new());
        self.bind_model_params(&mut scope, def);
        let input = self.input(&mut scope, def);
        scope.input = input.clone();
        scope.current = input;
        self.body(&mut scope, &def.body, false);
        self.graph_outputs(&mut scope, def);
        self.graph.train = self.train_section(model, &mut scope);
        std::mem::take(&mut self.graph)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture;

    #[test]
    fn a_mistake_in_a_block_used_many_times_is_reported_once() {
        let errors = fixture::errors(
            "block b { conv(0, 1) }\nmodel m : [8, 8, 1] {\n    b\n    b\n    b\n}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].at, "0");
    }

    #[test]
    fn the_call_that_contains_the_fault_gets_no_label_of_its_own() {
        let error = fixture::error(
            "block b(x) { relu }\nblock outer { b }\nmodel m : [8, 8, 1] { outer }\n",
        );
        assert_eq!(error.message, "missing argument `x` of `b`");
        assert_eq!((error.at.as_str(), error.line), ("b", 2));
        let context: Vec<&str> = error.context.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            context,
            [
                "parameter declared here",
                "while expanding `outer` called here"
            ]
        );
    }

    #[test]
    fn only_the_innermost_six_block_calls_are_labelled() {
        let mut text = String::from("block b0 { conv(0, 1) }\n");
        for i in 1..8 {
            text += &format!("block b{i} {{ b{} }}\n", i - 1);
        }
        text += "model m : [8, 8, 1] { b7 }\n";
        let error = fixture::error(&text);
        let calls: Vec<&str> = error.context.iter().map(|(at, _)| at.as_str()).collect();
        assert_eq!(calls, ["b0", "b1", "b2", "b3", "b4", "b5"]);
    }

    #[test]
    fn a_graph_without_errors_is_returned_whole() {
        let graph = fixture::graph("model seed : [8, 8, 1] {\n    conv(2, 3)\n    flatten\n}\n");
        assert_eq!(graph.name, "seed");
        assert_eq!(fixture::node_names(&graph), ["input", "conv1", "flatten1"]);
        assert_eq!(graph.verify(), Ok(()));
    }
}
