//! Elaboration: instantiates a model's blocks, arguments, loops and
//! conditions into a [`Graph`] of primitive ops.
//!
//! Blocks can ask for their input's shape (`in.channels`), so shapes are
//! computed with the op rules of [`crate::ops`] as nodes are added; shape
//! inference then re-checks the finished graph as a whole.
//!
//! Errors never stop elaboration: a failed expression yields
//! [`Value::Poison`], which every later step accepts silently, so that one
//! run reports as many independent errors as possible.

mod args;
pub mod layers;
mod value;

use std::collections::{HashMap, HashSet};

use petgraph::stable_graph::NodeIndex;

use crate::diagnostics::{suggest, Diagnostic, FileId, Span};
use crate::graph::{Graph, Init, Node, Op, Param, Shape};
use crate::ops;
use crate::syntax::ast::{self, BinOp, Expr, ExprKind, Ident, Stmt, UnOp};
use crate::syntax::Program;
use crate::train;
pub use value::{NamedArg, Spanned, Value};

/// The most nodes a model may have; more means a runaway loop.
pub const MAX_NODES: usize = 1_000_000;

/// The most `for` iterations one model may run, all loops together: nested
/// loops over long ranges would otherwise run for hours without adding a node.
pub const MAX_ITERATIONS: usize = 1_000_000;

/// The names of the models defined in the program's root file, in order.
pub fn models(program: &Program) -> Vec<String> {
    root_definitions(program)
        .filter(|(_, is_model)| *is_model)
        .map(|(d, _)| d.name.name.clone())
        .collect()
}

/// Instantiates model `model` of the program's root file (or its only
/// model, when `None`) into a dataflow graph.
pub fn elaborate(program: &Program, model: Option<&str>) -> Result<Graph, Vec<Diagnostic>> {
    let mut elaborator = Elaborator::new(program);
    let graph = match elaborator.choose_model(model) {
        Some(def) => elaborator.model(def),
        None => Graph::default(),
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

fn root_definitions(program: &Program) -> impl Iterator<Item = (&ast::Definition, bool)> {
    program.files[program.root]
        .items
        .iter()
        .filter_map(|item| match item {
            ast::Item::Block(d) => Some((d, false)),
            ast::Item::Model(d) => Some((d, true)),
            _ => None,
        })
}

/// Keeps the first of errors with the same message at the same place: a
/// mistake inside a block used sixteen times is reported once.
fn dedup(errors: &mut Vec<Diagnostic>) {
    let mut seen = HashSet::new();
    errors.retain(|e| seen.insert((e.message.clone(), e.primary.span)));
}

/// A block or model definition and the file it is in.
#[derive(Clone, Copy)]
struct DefRef<'p> {
    file: FileId,
    def: &'p ast::Definition,
    is_model: bool,
}

/// How unbound names and calls are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// A statement: unbound names and calls apply layers to the current tensor.
    Statement,
    /// An argument: unbound names are symbols (`same`, `relu`); calls still apply layers.
    Argument,
    /// The train section: unbound names are symbols and calls are configuration (`nadam(lr: 0.1)`).
    Train,
}

/// One block instance being expanded.
struct Scope {
    file: FileId,
    path: String,
    frames: Vec<HashMap<String, Value>>,
    counters: HashMap<String, usize>,
    taken: HashSet<String>,
    input: Value,
    current: Value,
    /// The declared outputs; `Some` only in the model being compiled.
    outputs: Option<Vec<(String, Value, Span)>>,
    is_model: bool,
}

impl Scope {
    fn lookup(&self, name: &str) -> Option<&Value> {
        self.frames.iter().rev().find_map(|f| f.get(name))
    }

    fn bind(&mut self, name: &str, value: Value) {
        // A scope always has at least its parameter frame.
        self.frames
            .last_mut()
            .expect("scope has a frame")
            .insert(name.to_string(), value);
    }

    fn bound_names(&self) -> Vec<String> {
        self.frames.iter().flat_map(|f| f.keys().cloned()).collect()
    }
}

struct Elaborator<'p> {
    program: &'p Program,
    /// Per file: the definitions visible there (its own, then its imports').
    visible: Vec<HashMap<&'p str, Vec<DefRef<'p>>>>,
    graph: Graph,
    errors: Vec<Diagnostic>,
    /// The block calls being expanded: the definition and the call site.
    stack: Vec<(&'p ast::Definition, Span)>,
    /// Set once the node or iteration budget is exhausted: loops then stop.
    budget_reported: bool,
    /// `for` iterations run so far.
    iterations: usize,
}

impl<'p> Elaborator<'p> {
    fn new(program: &'p Program) -> Elaborator<'p> {
        let mut elaborator = Elaborator {
            program,
            visible: Vec::new(),
            graph: Graph::default(),
            errors: Vec::new(),
            stack: Vec::new(),
            budget_reported: false,
            iterations: 0,
        };
        elaborator.index_definitions();
        elaborator
    }

    /// Builds the per-file tables of visible definitions, reporting
    /// definitions that clash within one file or with a built-in layer.
    fn index_definitions(&mut self) {
        let own: Vec<Vec<DefRef<'p>>> = (0..self.program.files.len())
            .map(|f| self.own_definitions(f))
            .collect();
        for (file, defs) in own.iter().enumerate() {
            let mut table: HashMap<&'p str, Vec<DefRef<'p>>> = HashMap::new();
            for d in defs {
                let name = d.def.name.name.as_str();
                if layers::signature(name).is_some() {
                    self.errors.push(
                        Diagnostic::error(
                            d.def.name.span,
                            format!("`{name}` is a built-in layer and cannot be redefined"),
                            "this definition",
                        )
                        .with_note("help: choose another name for the block"),
                    );
                    continue;
                }
                if let Some(first) = table.get(name).and_then(|v| v.first()) {
                    self.errors.push(
                        Diagnostic::error(
                            d.def.name.span,
                            format!("`{name}` is defined twice"),
                            "second definition",
                        )
                        .with_context(first.def.name.span, "first definition"),
                    );
                    continue;
                }
                table.insert(name, vec![*d]);
            }
            for &import in &self.program.imports[file] {
                for d in &own[import] {
                    let entry = table.entry(d.def.name.name.as_str()).or_default();
                    // Local definitions shadow imported ones; two imports
                    // with the same name are ambiguous (reported on use).
                    if entry.first().is_none_or(|e| e.file != file)
                        && !entry.iter().any(|e| std::ptr::eq(e.def, d.def))
                    {
                        entry.push(*d);
                    }
                }
            }
            self.visible.push(table);
        }
    }

    fn own_definitions(&self, file: FileId) -> Vec<DefRef<'p>> {
        self.program.files[file]
            .items
            .iter()
            .filter_map(|item| match item {
                ast::Item::Block(def) => Some(DefRef {
                    file,
                    def,
                    is_model: false,
                }),
                ast::Item::Model(def) => Some(DefRef {
                    file,
                    def,
                    is_model: true,
                }),
                _ => None,
            })
            .collect()
    }

    fn choose_model(&mut self, name: Option<&str>) -> Option<DefRef<'p>> {
        let root = self.program.root;
        let models: Vec<DefRef<'p>> = self
            .own_definitions(root)
            .into_iter()
            .filter(|d| d.is_model)
            .collect();
        let file_start = Span::new(root, 0, 0);
        match name {
            Some(name) => {
                let found = models.iter().find(|d| d.def.name.name == name).copied();
                if found.is_none() {
                    let names: Vec<&str> =
                        models.iter().map(|d| d.def.name.name.as_str()).collect();
                    let error = Diagnostic::error(
                        file_start,
                        format!("this file has no model `{name}`"),
                        "",
                    )
                    .with_note(format!("its models: {}", list_or_none(&names)));
                    self.errors.push(suggest(error, name, names));
                }
                found
            }
            None => match models.as_slice() {
                [one] => Some(*one),
                [] => {
                    self.errors.push(
                        Diagnostic::error(file_start, "this file defines no model", "").with_note(
                            "help: a model is `model name : [height, width, channels] { ... }`",
                        ),
                    );
                    None
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|d| d.def.name.name.as_str()).collect();
                    self.errors.push(
                        Diagnostic::error(
                            file_start,
                            "this file defines several models; choose one",
                            "",
                        )
                        .with_note(format!("its models: {}", names.join(", ")))
                        .with_note(format!("help: pass `--model {}`", names[0])),
                    );
                    None
                }
            },
        }
    }

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

    fn model(&mut self, model: DefRef<'p>) -> Graph {
        let def = model.def;
        self.graph.name = def.name.name.clone();
        let mut scope = self.new_scope(model.file, String::new(), Value::Poison, true);
        scope.outputs = Some(Vec::new());
        for param in &def.params {
            let value = match &param.default {
                Some(default) => self.eval(&mut scope, default, Ctx::Argument),
                None => {
                    self.errors.push(
                        Diagnostic::error(
                            param.name.span,
                            format!("parameter `{}` has no default value", param.name.name),
                            "no default",
                        )
                        .with_note(
                            "a model compiled on its own needs a default for every parameter",
                        )
                        .with_note(format!(
                            "help: write `{} = VALUE`, or call this model from another one",
                            param.name.name
                        )),
                    );
                    Value::Poison
                }
            };
            scope.bind(&param.name.name, value);
        }
        let input = self.input(&mut scope, def);
        scope.input = input.clone();
        scope.current = input;
        self.body(&mut scope, &def.body, false);
        let mut outputs = scope.outputs.take().unwrap_or_default();
        if outputs.is_empty() {
            outputs.push(("output".into(), scope.current.clone(), def.name.span));
        }
        for (name, value, span) in outputs {
            match value {
                Value::Tensor(id, _) => self.graph.outputs.push((name, id)),
                Value::Poison => {}
                other => self.errors.push(Diagnostic::error(
                    span,
                    format!("output `{name}` is {}, not a tensor", other.describe()),
                    "declared here",
                )),
            }
        }
        self.graph.train = self.train_section(model, &mut scope);
        std::mem::take(&mut self.graph)
    }

    fn new_scope(&self, file: FileId, path: String, input: Value, is_model: bool) -> Scope {
        Scope {
            file,
            path,
            frames: vec![HashMap::new()],
            counters: HashMap::new(),
            taken: HashSet::new(),
            current: input.clone(),
            input,
            outputs: None,
            is_model,
        }
    }

    /// Creates the input node from the model's declared shape.
    fn input(&mut self, scope: &mut Scope, def: &ast::Definition) -> Value {
        // The grammar requires a shape on every model.
        let shape_expr = def.input.as_ref().expect("models declare an input shape");
        let value = self.eval(scope, shape_expr, Ctx::Argument);
        let error = |span: Span, what: &Value| {
            Diagnostic::error(
                span,
                "a model's input shape must be a list of positive integers",
                format!("this is {}", what.describe()),
            )
            .with_note("help: write the shape as [height, width, channels], e.g. [28, 28, 1]")
        };
        let items = match &value {
            Value::List(items) if !items.is_empty() => items,
            Value::Poison => return Value::Poison,
            other => {
                self.errors.push(error(shape_expr.span, other));
                return Value::Poison;
            }
        };
        // An element with an error of its own has been reported already.
        if items.contains(&Value::Poison) {
            return Value::Poison;
        }
        let mut dims = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::Int(d) if *d > 0 => dims.push(*d as u64),
                other => {
                    // The grammar makes the shape a list literal: point at the element.
                    let span = match &shape_expr.kind {
                        ExprKind::List(exprs) => exprs.get(i).map_or(shape_expr.span, |e| e.span),
                        _ => shape_expr.span,
                    };
                    self.errors.push(error(span, other));
                    return Value::Poison;
                }
            }
        }
        let op = Op::Input { shape: dims };
        self.add_node(
            scope,
            "input",
            "",
            "input",
            op,
            &[],
            Init::Zeros,
            true,
            shape_expr.span,
        )
    }

    fn train_section(
        &mut self,
        model: DefRef<'p>,
        scope: &mut Scope,
    ) -> Option<train::TrainConfig> {
        let file = &self.program.files[model.file];
        let single_model = file
            .items
            .iter()
            .filter(|i| matches!(i, ast::Item::Model(_)))
            .count()
            == 1;
        let mut chosen = None;
        for item in &file.items {
            let ast::Item::Train(t) = item else { continue };
            let applies = match &t.model {
                Some(name) => name.name == model.def.name.name,
                None if single_model => true,
                None => {
                    self.errors.push(
                        Diagnostic::error(
                            t.span,
                            "this `train` section does not say which model it trains",
                            "",
                        )
                        .with_note(
                            "help: the file has several models: write `train MODEL { ... }`",
                        ),
                    );
                    false
                }
            };
            if applies {
                if chosen.is_some() {
                    self.errors.push(Diagnostic::error(
                        t.span,
                        "a second `train` section for the same model",
                        "duplicate",
                    ));
                } else {
                    chosen = Some(t);
                }
            }
        }
        let section = chosen?;
        let entries: Vec<(Ident, Spanned)> = section
            .entries
            .iter()
            .map(|(key, value)| {
                (
                    key.clone(),
                    Spanned {
                        value: self.eval(scope, value, Ctx::Train),
                        span: value.span,
                    },
                )
            })
            .collect();
        let outputs: Vec<&str> = self.graph.outputs.iter().map(|(n, _)| n.as_str()).collect();
        match train::check(&entries, &outputs) {
            Ok(config) => Some(config),
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }

    /// Runs a body's statements. With `value_at_end`, the last statement may
    /// compute any value (the branch of an `if` expression), which is returned.
    fn body(&mut self, scope: &mut Scope, body: &[Stmt], value_at_end: bool) -> Option<Value> {
        let mut last = None;
        for (i, stmt) in body.iter().enumerate() {
            last = None;
            match stmt {
                Stmt::Let(name, expr) => {
                    let value = self.eval(scope, expr, Ctx::Statement);
                    scope.bind(&name.name, value);
                }
                Stmt::Output(name, expr) => self.output(scope, name, expr),
                Stmt::For {
                    index,
                    var,
                    iter,
                    body,
                } => self.for_loop(scope, index.as_ref(), var, iter, body),
                Stmt::Expr(expr) => {
                    let value = self.eval(scope, expr, Ctx::Statement);
                    match &value {
                        Value::Tensor(..) | Value::Poison => scope.current = value.clone(),
                        _ if value_at_end && i + 1 == body.len() => {}
                        other => {
                            self.error(
                                Diagnostic::error(expr.span, "a statement must produce a tensor", format!("this is {}", other.describe()))
                                    .with_note("help: bind values with `let name = ...`; a statement applies layers"),
                            );
                            scope.current = Value::Poison;
                        }
                    }
                    last = Some(value);
                }
            }
        }
        last
    }

    fn output(&mut self, scope: &mut Scope, name: &Ident, expr: &Expr) {
        let value = self.eval(scope, expr, Ctx::Statement);
        match &mut scope.outputs {
            Some(outputs) => {
                if let Some((_, _, first)) = outputs.iter().find(|(n, _, _)| *n == name.name) {
                    let first = *first;
                    self.error(
                        Diagnostic::error(name.span, format!("output `{}` is declared twice", name.name), "second declaration")
                            .with_context(first, "first declaration"),
                    );
                } else {
                    outputs.push((name.name.clone(), value, name.span));
                }
            }
            // A model called as a block contributes its main result only.
            None if scope.is_model => {}
            None => self.error(
                Diagnostic::error(name.span, "`output` can only be declared in a model", "inside a block")
                    .with_note("help: return the tensor as the block's result and declare the output in the model"),
            ),
        }
    }

    fn for_loop(
        &mut self,
        scope: &mut Scope,
        index: Option<&Ident>,
        var: &Ident,
        iter: &Expr,
        body: &[Stmt],
    ) {
        let items = match self.eval(scope, iter, Ctx::Argument) {
            Value::List(items) => items,
            Value::Poison => {
                scope.current = Value::Poison;
                return;
            }
            other => {
                self.error(Diagnostic::error(
                    iter.span,
                    "`for` needs a list or a range",
                    format!("this is {}", other.describe()),
                ));
                scope.current = Value::Poison;
                return;
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            // Past the node limit `add_node` adds nothing, so the node count
            // cannot end a loop; the flag does.
            if self.budget_reported {
                scope.current = Value::Poison;
                return;
            }
            self.iterations += 1;
            if self.iterations > MAX_ITERATIONS {
                self.budget_reported = true;
                self.error(
                    Diagnostic::error(
                        iter.span,
                        format!("the loops run more than {MAX_ITERATIONS} iterations"),
                        "while iterating over this",
                    )
                    .with_note("help: check the bounds of `for` loops"),
                );
                scope.current = Value::Poison;
                return;
            }
            scope.frames.push(HashMap::new());
            if let Some(index) = index {
                scope.bind(&index.name, Value::Int(i as i64));
            }
            scope.bind(&var.name, item);
            self.body(scope, body, false);
            scope.frames.pop();
        }
    }

    fn eval(&mut self, scope: &mut Scope, expr: &Expr, ctx: Ctx) -> Value {
        let span = expr.span;
        let inner = if ctx == Ctx::Train {
            Ctx::Train
        } else {
            Ctx::Argument
        };
        match &expr.kind {
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(x) => Value::Float(*x),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::List(items) => {
                Value::List(items.iter().map(|e| self.eval(scope, e, inner)).collect())
            }
            ExprKind::Record(fields) => Value::Record(
                fields
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.name.clone(),
                            Spanned {
                                value: self.eval(scope, v, inner),
                                span: v.span,
                            },
                        )
                    })
                    .collect(),
            ),
            ExprKind::Input => scope.input.clone(),
            ExprKind::Name(name, alias) => self.name(scope, name, alias.as_ref(), ctx),
            ExprKind::Call(call) if ctx == Ctx::Train => {
                let args = call
                    .args
                    .iter()
                    .map(|a| {
                        let value = self.eval(scope, &a.value, Ctx::Train);
                        (
                            a.name.as_ref().map(|n| n.name.clone()),
                            Spanned {
                                value,
                                span: a.value.span,
                            },
                        )
                    })
                    .collect();
                Value::Config(call.callee.name.clone(), args)
            }
            ExprKind::Call(call) => {
                let input = scope.current.clone();
                self.call(
                    scope,
                    &call.callee,
                    &call.args,
                    call.alias.as_ref(),
                    input,
                    span,
                )
            }
            ExprKind::Pipe(head, stages) => self.pipe(scope, head, stages, ctx),
            ExprKind::Binary(op, lhs, rhs) => self.binary(scope, *op, lhs, rhs, ctx, span),
            ExprKind::Unary(op, operand) => {
                let value = self.eval(scope, operand, inner);
                self.unary(*op, value, span)
            }
            ExprKind::Field(base, field) => {
                let value = self.eval(scope, base, ctx);
                self.field(value, field)
            }
            ExprKind::Index(base, index) => {
                let list = self.eval(scope, base, ctx);
                let index_value = self.eval(scope, index, inner);
                self.index(list, index_value, index.span)
            }
            ExprKind::Range(start, end) => {
                let start = self.eval(scope, start, inner);
                let end = self.eval(scope, end, inner);
                self.range(start, end, span)
            }
            ExprKind::If(cond, then, otherwise) => {
                self.if_expr(scope, cond, then, otherwise.as_deref())
            }
            ExprKind::Where(init, assigns) => self.init_where(scope, init, assigns),
        }
    }

    fn name(&mut self, scope: &mut Scope, name: &Ident, alias: Option<&Ident>, ctx: Ctx) -> Value {
        if let Some(value) = scope.lookup(&name.name) {
            let value = value.clone();
            if let Some(alias) = alias {
                self.error(Diagnostic::error(
                    alias.span,
                    "`as` names a layer or block call",
                    format!("`{}` is a value, not a call", name.name),
                ));
            }
            return value;
        }
        if ctx == Ctx::Statement || alias.is_some() {
            let input = scope.current.clone();
            self.call(scope, name, &[], alias, input, name.span)
        } else {
            Value::Symbol(name.name.clone())
        }
    }

    fn pipe(&mut self, scope: &mut Scope, head: &Expr, stages: &[Expr], ctx: Ctx) -> Value {
        let head_ctx = if ctx == Ctx::Train {
            Ctx::Train
        } else {
            Ctx::Statement
        };
        let mut value = self.eval(scope, head, head_ctx);
        for stage in stages {
            value = match &stage.kind {
                ExprKind::Call(call) => self.call(
                    scope,
                    &call.callee,
                    &call.args,
                    call.alias.as_ref(),
                    value,
                    stage.span,
                ),
                ExprKind::Name(name, alias) if scope.lookup(&name.name).is_none() => {
                    self.call(scope, name, &[], alias.as_ref(), value, stage.span)
                }
                _ => {
                    self.error(
                        Diagnostic::error(
                            stage.span,
                            "a pipeline stage must be a layer or block",
                            "this is a value",
                        )
                        .with_note("help: `x -> f` applies the layer or block `f` to `x`"),
                    );
                    Value::Poison
                }
            };
        }
        value
    }

    /// Applies layer or block `callee` to `input`.
    fn call(
        &mut self,
        scope: &mut Scope,
        callee: &Ident,
        args: &[ast::Arg],
        alias: Option<&Ident>,
        input: Value,
        span: Span,
    ) -> Value {
        let name = callee.name.as_str();
        if name == "concat" {
            return self.concat(scope, args, alias, span);
        }
        if layers::signature(name).is_some() {
            return self.layer(scope, name, args, alias, input, span);
        }
        let candidates = self.visible[scope.file]
            .get(name)
            .cloned()
            .unwrap_or_default();
        match candidates.as_slice() {
            [def] => self.block(scope, *def, args, alias, input, span),
            [] => {
                let mut known: Vec<String> =
                    layers::LAYERS.iter().map(|(n, _)| n.to_string()).collect();
                known.extend(self.visible[scope.file].keys().map(|k| k.to_string()));
                known.extend(scope.bound_names());
                let error = Diagnostic::error(
                    callee.span,
                    format!("unknown layer or block `{name}`"),
                    "not a layer, block or value",
                );
                let error = suggest(error, name, known.iter().map(String::as_str));
                self.error(error);
                Value::Poison
            }
            many => {
                let mut error = Diagnostic::error(
                    callee.span,
                    format!("`{name}` is ambiguous: several imported files define it"),
                    "which one?",
                );
                for d in many {
                    error = error.with_context(d.def.name.span, "defined here");
                }
                self.error(
                    error.with_note("help: define it once, or import only one of these files"),
                );
                Value::Poison
            }
        }
    }

    fn layer(
        &mut self,
        scope: &mut Scope,
        name: &str,
        args: &[ast::Arg],
        alias: Option<&Ident>,
        input: Value,
        span: Span,
    ) -> Value {
        // Only called for names in the layer table.
        let signature = layers::signature(name).unwrap_or(&[]);
        let values = self.eval_args(scope, args);
        let bound = args::bind_layer(name, signature, &values, span);
        let args = match bound {
            Ok(args) => args,
            Err(errors) => {
                for e in errors {
                    self.error(e);
                }
                return Value::Poison;
            }
        };
        let path = self.instance_name(scope, name, alias, span);
        let (mut node, mut shape) = match input {
            Value::Tensor(id, shape) => (id, shape),
            Value::Poison => return Value::Poison,
            other => {
                self.error(Diagnostic::error(
                    span,
                    format!("`{name}` must be applied to a tensor"),
                    format!("its input here is {}", other.describe()),
                ));
                return Value::Poison;
            }
        };
        let trainable = signature.iter().all(|s| s.name != "trainable") || args.bool("trainable");
        for part in layers::expand(name, &args) {
            match self.add_node(
                scope,
                &path,
                part.suffix,
                name,
                part.op,
                &[(node, shape)],
                part.init,
                trainable,
                span,
            ) {
                Value::Tensor(id, s) => (node, shape) = (id, s),
                other => return other,
            }
        }
        Value::Tensor(node, shape)
    }

    fn eval_args(&mut self, scope: &mut Scope, args: &[ast::Arg]) -> Vec<(Option<Ident>, Spanned)> {
        args.iter()
            .map(|a| {
                (
                    a.name.clone(),
                    Spanned {
                        value: self.eval(scope, &a.value, Ctx::Argument),
                        span: a.value.span,
                    },
                )
            })
            .collect()
    }

    fn concat(
        &mut self,
        scope: &mut Scope,
        args: &[ast::Arg],
        alias: Option<&Ident>,
        span: Span,
    ) -> Value {
        let values = self.eval_args(scope, args);
        let positional: Vec<&Spanned> = values
            .iter()
            .filter(|(n, _)| n.is_none())
            .map(|(_, v)| v)
            .collect();
        let named: Vec<(Option<Ident>, Spanned)> = values
            .iter()
            .filter(|(n, _)| n.is_some())
            .cloned()
            .collect();
        let Ok(options) = args::bind_layer(
            "concat",
            layers::LAYERS
                .iter()
                .find(|(n, _)| *n == "concat")
                .map(|(_, s)| *s)
                .unwrap_or(&[]),
            &named,
            span,
        )
        .map_err(|errors| errors.into_iter().for_each(|e| self.error(e))) else {
            return Value::Poison;
        };
        let mut inputs = Vec::new();
        let mut poisoned = false;
        for v in &positional {
            match &v.value {
                Value::Tensor(id, shape) => inputs.push((*id, shape.clone())),
                Value::Poison => poisoned = true,
                other => {
                    self.error(Diagnostic::error(
                        v.span,
                        "`concat` joins tensors",
                        format!("this is {}", other.describe()),
                    ));
                    poisoned = true;
                }
            }
        }
        if positional.len() < 2 {
            self.error(
                Diagnostic::error(
                    span,
                    "`concat` needs at least two tensors",
                    format!("{} given", positional.len()),
                )
                .with_note("help: `concat(a, b, ...)` joins tensors along the channels"),
            );
            return Value::Poison;
        }
        if poisoned {
            return Value::Poison;
        }
        let rank = inputs[0].1.rank() as i64;
        let axis = options.signed("axis");
        let normalized = if axis < 0 { rank + axis } else { axis };
        if normalized < 0 || normalized >= rank {
            self.error(Diagnostic::error(
                span,
                format!("`concat` along axis {axis}, but its inputs have rank {rank}"),
                "bad axis",
            ));
            return Value::Poison;
        }
        let path = self.instance_name(scope, "concat", alias, span);
        self.add_node(
            scope,
            &path,
            "",
            "concat",
            Op::Concat {
                axis: normalized as usize,
            },
            &inputs,
            Init::Zeros,
            true,
            span,
        )
    }

    /// Expands a block (or a model used as a block) applied to `input`.
    fn block(
        &mut self,
        scope: &mut Scope,
        target: DefRef<'p>,
        args: &[ast::Arg],
        alias: Option<&Ident>,
        input: Value,
        span: Span,
    ) -> Value {
        let def = target.def;
        if let Some(pos) = self.stack.iter().position(|(d, _)| std::ptr::eq(*d, def)) {
            let chain: Vec<&str> = self.stack[pos..]
                .iter()
                .map(|(d, _)| d.name.name.as_str())
                .chain([def.name.name.as_str()])
                .collect();
            self.error(
                Diagnostic::error(
                    span,
                    format!("`{}` calls itself", def.name.name),
                    "recursive call",
                )
                .with_context(def.name.span, "defined here")
                .with_note(format!("the calls: {}", chain.join(" -> ")))
                .with_note("help: blocks cannot be recursive; repeat layers with `for` instead"),
            );
            return Value::Poison;
        }
        let values = self.eval_args(scope, args);
        let path = self.instance_name(scope, &def.name.name, alias, span);
        let full = join(&scope.path, &path);
        let mut inner = self.new_scope(target.file, full, input.clone(), target.is_model);
        self.stack.push((def, span));
        let ok = self.bind_block_args(&mut inner, def, values, span);
        if ok {
            self.body(&mut inner, &def.body, false);
        }
        self.stack.pop();
        if !ok || matches!(input, Value::Poison) {
            return Value::Poison;
        }
        if !matches!(input, Value::Tensor(..)) {
            self.error(Diagnostic::error(
                span,
                format!("`{}` must be applied to a tensor", def.name.name),
                format!("its input here is {}", input.describe()),
            ));
            return Value::Poison;
        }
        inner.current
    }

    /// Binds a block's parameters from the call's arguments and defaults.
    fn bind_block_args(
        &mut self,
        inner: &mut Scope,
        def: &ast::Definition,
        values: Vec<(Option<Ident>, Spanned)>,
        span: Span,
    ) -> bool {
        let params: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        let mut given: Vec<Option<Value>> = vec![None; params.len()];
        let mut ok = true;
        let mut positional = 0;
        for (name, value) in values {
            let slot = match &name {
                None => {
                    positional += 1;
                    if positional > params.len() {
                        self.error(
                            Diagnostic::error(
                                value.span,
                                format!(
                                    "too many arguments: `{}` takes {}",
                                    def.name.name,
                                    params.len()
                                ),
                                "extra argument",
                            )
                            .with_context(def.name.span, "defined here"),
                        );
                        ok = false;
                        continue;
                    }
                    positional - 1
                }
                Some(n) => match params.iter().position(|p| *p == n.name) {
                    Some(i) => i,
                    None => {
                        let error = Diagnostic::error(
                            n.span,
                            format!("`{}` has no parameter `{}`", def.name.name, n.name),
                            "unknown argument",
                        )
                        .with_context(def.name.span, "defined here")
                        .with_note(format!("its parameters: {}", list_or_none(&params)));
                        self.error(suggest(error, &n.name, params.iter().copied()));
                        ok = false;
                        continue;
                    }
                },
            };
            if given[slot].is_some() {
                self.error(Diagnostic::error(
                    value.span,
                    format!("parameter `{}` is given twice", params[slot]),
                    "duplicate argument",
                ));
                ok = false;
                continue;
            }
            given[slot] = Some(value.value);
        }
        for (param, value) in def.params.iter().zip(given) {
            let value = match (value, &param.default) {
                (Some(v), _) => v,
                // Defaults are evaluated in the block's own scope, so they may use earlier parameters.
                (None, Some(default)) => self.eval(inner, default, Ctx::Argument),
                (None, None) => {
                    self.error(
                        Diagnostic::error(
                            span,
                            format!(
                                "missing argument `{}` of `{}`",
                                param.name.name, def.name.name
                            ),
                            "in this call",
                        )
                        .with_context(param.name.span, "parameter declared here"),
                    );
                    ok = false;
                    Value::Poison
                }
            };
            inner.bind(&param.name.name, value);
        }
        ok
    }

    /// The name of a layer or block instance within its scope: `as NAME`, or
    /// the callee's name numbered per scope (`conv1`, `conv2`).
    fn instance_name(
        &mut self,
        scope: &mut Scope,
        base: &str,
        alias: Option<&Ident>,
        span: Span,
    ) -> String {
        if let Some(alias) = alias {
            if !scope.taken.insert(alias.name.clone()) {
                self.error(Diagnostic::error(alias.span, format!("the name `{}` is already used in this block", alias.name), "duplicate name")
                    .with_note("help: inside a `for` loop, leave out `as` and instances are numbered automatically"));
            }
            return alias.name.clone();
        }
        let _ = span;
        loop {
            let counter = scope.counters.entry(base.to_string()).or_insert(0);
            *counter += 1;
            let candidate = format!("{base}{counter}");
            if scope.taken.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    /// Adds one node for `op` on `inputs`, inferring its shape and weights.
    #[allow(clippy::too_many_arguments)]
    fn add_node(
        &mut self,
        scope: &Scope,
        layer: &str,
        suffix: &str,
        kind: &str,
        op: Op,
        inputs: &[(NodeIndex, Shape)],
        init: Init,
        trainable: bool,
        span: Span,
    ) -> Value {
        if self.graph.nodes.node_count() >= MAX_NODES {
            if !self.budget_reported {
                self.budget_reported = true;
                self.error(
                    Diagnostic::error(
                        span,
                        format!("the model grows beyond {MAX_NODES} nodes"),
                        "while adding this layer",
                    )
                    .with_note("help: check the bounds of `for` loops"),
                );
            }
            return Value::Poison;
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|(_, s)| s).collect();
        let shape = match ops::infer(&op, &shapes) {
            Ok(shape) => shape,
            Err(e) => {
                // Name the layer the user wrote (`conv`), not its op (`conv2d`).
                let e = e.for_layer(kind);
                let mut error = Diagnostic::error(span, e.to_string(), shape_label(kind, &shapes));
                if let Some(hint) = e.hint() {
                    error = error.with_note(hint);
                }
                self.error(error);
                return Value::Poison;
            }
        };
        let params = ops::params(&op, &shapes)
            .into_iter()
            .map(|(name, shape, natural)| Param {
                name: name.to_string(),
                shape,
                trainable: natural && trainable,
                init: param_init(name, &init),
            })
            .collect();
        let layer_path = join(&scope.path, layer);
        let name = if suffix.is_empty() {
            layer_path.clone()
        } else {
            format!("{layer_path}.{suffix}")
        };
        let node = Node {
            op,
            name,
            layer: layer_path,
            layer_kind: kind.to_string(),
            params,
            span,
            trace: self.stack.iter().map(|(_, s)| *s).collect(),
        };
        let ids: Vec<NodeIndex> = inputs.iter().map(|(id, _)| *id).collect();
        let id = self.graph.add(node, &ids);
        if matches!(self.graph.nodes[id].op, Op::Input { .. }) {
            self.graph.input = Some(id);
        }
        Value::Tensor(id, shape)
    }

    fn binary(
        &mut self,
        scope: &mut Scope,
        op: BinOp,
        lhs: &Expr,
        rhs: &Expr,
        ctx: Ctx,
        span: Span,
    ) -> Value {
        let operand_ctx = if ctx == Ctx::Statement {
            Ctx::Statement
        } else {
            ctx
        };
        let left = self.eval(scope, lhs, operand_ctx);
        if let (BinOp::And | BinOp::Or, Value::Bool(b)) = (op, &left) {
            // Short-circuit, so that `i > 0 and sizes[i - 1] > 1` is safe.
            if (op == BinOp::And && !b) || (op == BinOp::Or && *b) {
                return Value::Bool(*b);
            }
        }
        let right = self.eval(scope, rhs, operand_ctx);
        match (&left, &right) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::Tensor(a, sa), Value::Tensor(b, sb))
                if matches!(op, BinOp::Add | BinOp::Mul) =>
            {
                let (kind, graph_op) = if op == BinOp::Add {
                    ("add", Op::Add)
                } else {
                    ("multiply", Op::Multiply)
                };
                let path = self.instance_name(scope, kind, None, span);
                let inputs = [(*a, sa.clone()), (*b, sb.clone())];
                self.add_node(
                    scope,
                    &path,
                    "",
                    kind,
                    graph_op,
                    &inputs,
                    Init::Zeros,
                    true,
                    span,
                )
            }
            _ => match value::binary(op, &left, &right) {
                Ok(v) => v,
                Err(message) => {
                    self.error(Diagnostic::error(
                        span,
                        message,
                        format!("{} {} {}", left.describe(), op.symbol(), right.describe()),
                    ));
                    Value::Poison
                }
            },
        }
    }

    fn unary(&mut self, op: UnOp, value: Value, span: Span) -> Value {
        match (op, &value) {
            (_, Value::Poison) => Value::Poison,
            (UnOp::Neg, Value::Int(i)) => match i.checked_neg() {
                Some(n) => Value::Int(n),
                None => {
                    self.error(Diagnostic::error(
                        span,
                        "integer overflow",
                        format!("-({i}) does not fit in 64 bits"),
                    ));
                    Value::Poison
                }
            },
            (UnOp::Neg, Value::Float(x)) => Value::Float(-x),
            (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
            _ => {
                let what = if op == UnOp::Neg {
                    "negate"
                } else {
                    "apply `not` to"
                };
                self.error(Diagnostic::error(
                    span,
                    format!("cannot {what} {}", value.describe()),
                    "here",
                ));
                Value::Poison
            }
        }
    }

    fn field(&mut self, value: Value, field: &Ident) -> Value {
        let shape = match &value {
            Value::Tensor(_, shape) => shape,
            Value::Poison => return Value::Poison,
            other => {
                self.error(Diagnostic::error(
                    field.span,
                    format!("`.{}` needs a tensor", field.name),
                    format!("the value is {}", other.describe()),
                ));
                return Value::Poison;
            }
        };
        let dims: Vec<i64> = shape.0.iter().map(|&d| d as i64).collect();
        let image = |i: usize| {
            if dims.len() == 3 {
                Some(Value::Int(dims[i]))
            } else {
                None
            }
        };
        let result = match field.name.as_str() {
            "shape" => Some(Value::List(dims.iter().map(|&d| Value::Int(d)).collect())),
            "rank" => Some(Value::Int(dims.len() as i64)),
            "channels" => dims.last().map(|&c| Value::Int(c)),
            "height" => image(0),
            "width" => image(1),
            _ => {
                let error = Diagnostic::error(
                    field.span,
                    format!("tensors have no field `{}`", field.name),
                    "unknown field",
                )
                .with_note("tensors have: shape, rank, height, width, channels");
                self.error(suggest(
                    error,
                    &field.name,
                    ["shape", "rank", "height", "width", "channels"],
                ));
                return Value::Poison;
            }
        };
        result.unwrap_or_else(|| {
            self.error(Diagnostic::error(
                field.span,
                format!("`.{}` needs an image [height, width, channels]", field.name),
                format!("the tensor has shape {shape}"),
            ));
            Value::Poison
        })
    }

    fn index(&mut self, list: Value, index: Value, span: Span) -> Value {
        match (&list, &index) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::List(items), Value::Int(i)) => {
                let len = items.len() as i64;
                let at = if *i < 0 { len + i } else { *i };
                if (0..len).contains(&at) {
                    items[at as usize].clone()
                } else {
                    self.error(Diagnostic::error(
                        span,
                        format!("index {i} is out of range"),
                        format!("the list has {len} elements"),
                    ));
                    Value::Poison
                }
            }
            _ => {
                self.error(
                    Diagnostic::error(
                        span,
                        format!("cannot index {} with {}", list.describe(), index.describe()),
                        "here",
                    )
                    .with_note("help: lists are indexed with integers: `sizes[0]`, `sizes[-1]`"),
                );
                Value::Poison
            }
        }
    }

    fn range(&mut self, start: Value, end: Value, span: Span) -> Value {
        match (&start, &end) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::Int(a), Value::Int(b)) => {
                let len = b.saturating_sub(*a).max(0);
                if len as u64 > value::MAX_LIST as u64 {
                    self.error(Diagnostic::error(
                        span,
                        format!(
                            "the range has {len} elements, more than {}",
                            value::MAX_LIST
                        ),
                        "too long",
                    ));
                    return Value::Poison;
                }
                Value::List((*a..*b).map(Value::Int).collect())
            }
            _ => {
                self.error(Diagnostic::error(
                    span,
                    "a range needs integer bounds",
                    format!("{}..{}", start.describe(), end.describe()),
                ));
                Value::Poison
            }
        }
    }

    fn if_expr(
        &mut self,
        scope: &mut Scope,
        cond: &Expr,
        then: &[Stmt],
        otherwise: Option<&[Stmt]>,
    ) -> Value {
        let branch = match self.eval(scope, cond, Ctx::Argument) {
            Value::Bool(true) => Some(then),
            Value::Bool(false) => otherwise,
            Value::Poison => return Value::Poison,
            other => {
                self.error(
                    Diagnostic::error(
                        cond.span,
                        "an `if` condition must be a boolean",
                        format!("this is {}", other.describe()),
                    )
                    .with_note("help: compare values, e.g. `if stride > 1 { ... }`"),
                );
                return Value::Poison;
            }
        };
        let Some(branch) = branch else {
            return scope.current.clone();
        };
        let saved = scope.current.clone();
        scope.frames.push(HashMap::new());
        let last = self.body(scope, branch, true);
        scope.frames.pop();
        let result = last.unwrap_or_else(|| scope.current.clone());
        scope.current = saved;
        result
    }

    fn init_where(&mut self, scope: &mut Scope, init: &Expr, assigns: &[(Expr, Expr)]) -> Value {
        let base = match self.eval(scope, init, Ctx::Argument) {
            Value::Symbol(name) => match layers::init_symbol(&name) {
                Some(init) => init,
                None => {
                    let error = Diagnostic::error(
                        init.span,
                        format!("unknown initializer `{name}`"),
                        "here",
                    );
                    self.error(suggest(error, &name, layers::INITS.iter().copied()));
                    return Value::Poison;
                }
            },
            Value::Poison => return Value::Poison,
            other => {
                self.error(Diagnostic::error(
                    init.span,
                    "`where` follows an initializer name",
                    format!("this is {}", other.describe()),
                ));
                return Value::Poison;
            }
        };
        let mut entries = Vec::new();
        for (pattern, value) in assigns {
            let value_span = value.span;
            let number = self.eval(scope, value, Ctx::Argument);
            let ExprKind::List(axes) = &pattern.kind else {
                continue;
            };
            let slices = args::slices(axes, |e| self.eval(scope, e, Ctx::Argument));
            match (slices, number.as_f64()) {
                (Ok(slices), Some(x)) => entries.push((slices, x)),
                (Err(e), _) => self.error(e),
                (_, None) => self.error(Diagnostic::error(
                    value_span,
                    "an entry's value must be a number",
                    format!("this is {}", number.describe()),
                )),
            }
        }
        Value::Init(Init::Set(Box::new(base), entries))
    }
}

/// The initializer of a weight called `name`: kernels and centres take the
/// layer's initializer; biases start at zero and scales at one.
fn param_init(name: &str, kernel_init: &Init) -> Init {
    match name {
        "kernel" | "centers" => kernel_init.clone(),
        "gamma" | "moving_variance" | "coefficient" => Init::Ones,
        _ => Init::Zeros,
    }
}

fn shape_label(layer: &str, shapes: &[&Shape]) -> String {
    match shapes {
        [] => "declared here".to_string(),
        [one] => format!("`{layer}` applied to a tensor of shape {one}"),
        many => format!(
            "`{layer}` of shapes {}",
            many.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
