//! Helpers for the unit tests of elaboration: small `.cnn` fixtures loaded
//! from memory (or from a fresh folder, for imports), and errors reduced to
//! plain values that tests can compare.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::diagnostics::Diagnostic;
use crate::graph::{Graph, Node};
use crate::syntax::ast::{Item, Stmt};
use crate::syntax::{self, Program};

use super::definitions::Scope;
use super::expr::Ctx;
use super::value::Value;
use super::Elaborator;

/// An error as the user sees it, without the rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The one-line message.
    pub message: String,
    /// The source text under the primary label.
    pub at: String,
    /// The line the primary label starts on, from 1.
    pub line: usize,
    /// The primary label.
    pub label: String,
    /// The secondary labels: the text under each, and its message.
    pub context: Vec<(String, String)>,
    /// The notes and hints.
    pub notes: Vec<String>,
}

/// Loads `text` as `test.cnn` (imports from the standard library only);
/// panics with the rendered errors if it does not load.
pub fn program(text: &str) -> Program {
    syntax::load_source("test.cnn", text, None).unwrap_or_else(|d| panic!("{d}"))
}

/// Writes `files` (name, text) into a fresh folder and loads the first.
pub fn program_on_disk(files: &[(&str, &str)]) -> Program {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "cnnc-elaborate-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a fresh folder in the temporary directory");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("a fixture file");
    }
    let root = dir.join(files[0].0);
    let program = syntax::load_file(&root).unwrap_or_else(|d| panic!("{d}"));
    std::fs::remove_dir_all(&dir).expect("the fixture folder is ours to remove");
    program
}

/// Elaborates the only model of `text`; panics with the errors if there are any.
pub fn graph(text: &str) -> Graph {
    let program = program(text);
    super::elaborate(&program, None)
        .unwrap_or_else(|errors| panic!("{:#?}", reported(&program, errors)))
}

/// The errors of elaborating the only model of `text` (none if it elaborates).
pub fn errors(text: &str) -> Vec<Reported> {
    errors_of(&program(text), None)
}

/// The errors of elaborating model `model` (or the only one) of `program`.
pub fn errors_of(program: &Program, model: Option<&str>) -> Vec<Reported> {
    match super::elaborate(program, model) {
        Ok(_) => Vec::new(),
        Err(errors) => reported(program, errors),
    }
}

/// The only error of elaborating `text`; panics if there is not exactly one.
pub fn error(text: &str) -> Reported {
    match errors(text).as_slice() {
        [one] => one.clone(),
        other => panic!("expected one error, found {other:#?}"),
    }
}

/// The names of the graph's nodes, in the order they were added.
pub fn node_names(graph: &Graph) -> Vec<&str> {
    nodes(graph).map(|n| n.name.as_str()).collect()
}

/// The graph's nodes, in the order they were added.
pub fn nodes(graph: &Graph) -> impl Iterator<Item = &Node> {
    graph.nodes.node_indices().map(|id| &graph.nodes[id])
}

/// The node called `name`; panics if there is none.
pub fn node<'g>(graph: &'g Graph, name: &str) -> &'g Node {
    nodes(graph)
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node `{name}` among {:?}", node_names(graph)))
}

/// Evaluates `expr` in `ctx` in the scope of a model whose input is
/// `[8, 6, 3]` and in which `let`s of `lets` are bound; returns the value
/// and the errors.
pub fn eval(lets: &str, expr: &str, ctx: Ctx) -> (Value, Vec<Reported>) {
    let text = format!("model m : [8, 6, 3] {{\n{lets}\nlet value_under_test = {expr}\n}}\n");
    let program = program(&text);
    let Some(Item::Model(def)) = program.files[program.root].items.first() else {
        panic!("the fixture is a model");
    };
    let Some((Stmt::Let(_, tested), bindings)) = def.body.split_last() else {
        panic!("the fixture ends with a `let`");
    };
    let mut elaborator = Elaborator::new(&program);
    let mut scope = Scope::new(program.root, String::new(), Value::Poison, true);
    let input = elaborator.input(&mut scope, def);
    scope.input = input.clone();
    scope.current = input;
    elaborator.body(&mut scope, bindings, false);
    let value = elaborator.eval(&mut scope, tested, ctx);
    (value, reported(&program, elaborator.errors))
}

/// Errors reduced to [`Reported`] values, with the text under each label.
pub fn reported(program: &Program, errors: Vec<Diagnostic>) -> Vec<Reported> {
    let text = |span| program.sources.snippet(span).to_string();
    errors
        .into_iter()
        .map(|e| Reported {
            message: e.message,
            at: text(e.primary.span),
            line: program
                .sources
                .line_col(e.primary.span.file, e.primary.span.start)
                .0,
            label: e.primary.message,
            context: e
                .secondary
                .into_iter()
                .map(|l| (text(l.span), l.message))
                .collect(),
            notes: e.notes,
        })
        .collect()
}
