//! Bodies and block calls: running statements, `for` loops, `if` branches
//! and `output` declarations, and expanding a block (or a model used as a
//! block) where it is called, with its arguments bound to its parameters.

use std::collections::HashMap;

use crate::diagnostics::{suggest, Diagnostic, Span};
use crate::syntax::ast::{self, Expr, ForVar, Ident, Stmt};

use super::definitions::{list_or_none, DefRef, Scope};
use super::expr::{self, Ctx};
use super::value::{Spanned, Value};
use super::{functions, layers, Elaborator};

/// The most steps of work elaborating one model may take: each `for`
/// iteration and each block call is a step, and each element of a list an
/// expression yields. Nested loops over long ranges, or blocks that each
/// call the one before ten times, would otherwise run for hours without
/// adding a node; this bound keeps any file to a fraction of a second, far
/// above what a model written by hand takes (ResNet-50 takes about 200).
pub const MAX_WORK: usize = 100_000;

/// The errors after which elaboration stops, as the work budget stops it:
/// a block with a fault, called from thousands of places, would otherwise
/// report (and suggest a name for) the same fault thousands of times, and
/// no one reads past the first screens of errors.
pub const MAX_ERRORS: usize = 100;

/// How deep block calls may nest. Elaboration grows its stack as it needs
/// (see `with_stack`), but every node keeps the names and call sites of all
/// the blocks around it, so a chain of blocks each calling the next takes
/// memory of the order of the square of its depth; this bound keeps it
/// under half a gigabyte, far above any model written by hand.
pub const MAX_CALL_DEPTH: usize = 4096;

/// A layer or block call as written: `callee(args) as alias`, or a bare
/// `callee` (no arguments), at `span`.
#[derive(Clone, Copy)]
pub(super) struct CallSite<'a> {
    pub(super) callee: &'a Ident,
    pub(super) args: &'a [ast::Arg],
    pub(super) alias: Option<&'a Ident>,
    pub(super) span: Span,
    /// What can be called where it stands, should the callee be unknown.
    pub(super) expected: Expected,
}

/// What can be called at a call site, among which an unknown name's
/// suggestion is sought: `len(xs)` in an expression is not a misspelt `lrn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expected {
    /// A layer or block applied to a tensor: a statement, a pipeline stage,
    /// a bare name.
    LayerOrBlock,
    /// A built-in function: where only a value makes sense (an operand of
    /// `-`, an argument of a layer or of a function).
    Function,
    /// Either: the value of a `let`, an argument of a block, an element of
    /// a list.
    Any,
}

impl<'a> CallSite<'a> {
    /// The call `call`, written at `span` where a layer or block is expected.
    pub(super) fn of(call: &'a ast::Call, span: Span) -> CallSite<'a> {
        CallSite {
            callee: &call.callee,
            args: &call.args,
            alias: call.alias.as_ref(),
            span,
            expected: Expected::LayerOrBlock,
        }
    }

    /// A bare name used as a call, without arguments.
    pub(super) fn bare(callee: &'a Ident, alias: Option<&'a Ident>, span: Span) -> CallSite<'a> {
        CallSite {
            callee,
            args: &[],
            alias,
            span,
            expected: Expected::LayerOrBlock,
        }
    }

    /// The same call, where `expected` can be called.
    pub(super) fn expecting(self, expected: Expected) -> CallSite<'a> {
        CallSite { expected, ..self }
    }
}

/// A call's arguments, evaluated: each with its name, if given.
pub(super) type EvaluatedArgs = Vec<(Option<Ident>, Spanned)>;

impl<'p> Elaborator<'p> {
    /// Runs a body's statements. With `value_at_end`, the last statement may
    /// compute any value (the branch of an `if` expression), which is returned.
    pub(super) fn body(
        &mut self,
        scope: &mut Scope,
        body: &[Stmt],
        value_at_end: bool,
    ) -> Option<Value> {
        let mut last = None;
        for (i, stmt) in body.iter().enumerate() {
            last = None;
            match stmt {
                Stmt::Let(name, expr) => {
                    let value = self.eval(scope, expr, Ctx::Let);
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
                    let is_result = value_at_end && i + 1 == body.len();
                    last = Some(self.statement(scope, expr, is_result));
                }
            }
        }
        last
    }

    /// Applies layer or block `site.callee` to `input`.
    pub(super) fn call(&mut self, scope: &mut Scope, site: CallSite, input: Value) -> Value {
        let name = site.callee.name.as_str();
        if name == "concat" {
            return self.concat(scope, site);
        }
        if layers::signature(name).is_some() {
            return self.layer(scope, site, input);
        }
        if functions::is_function(name) {
            // A bare `max`, or a pipeline stage `-> len`: a function
            // called with arguments never gets here.
            self.error(
                Diagnostic::error(
                    site.callee.span,
                    format!("`{name}` is a built-in function, not a layer or block"),
                    "applied to a tensor here",
                )
                .with_note(functions::usage(name)),
            );
            return Value::Poison;
        }
        match self.find_definition(scope, site.callee, site.expected) {
            Some(def) => self.block(scope, def, site, input),
            None => Value::Poison,
        }
    }

    /// Evaluates a call's arguments in `ctx` (an argument: bare names are
    /// symbols).
    pub(super) fn eval_args(
        &mut self,
        scope: &mut Scope,
        args: &[ast::Arg],
        ctx: Ctx,
    ) -> EvaluatedArgs {
        args.iter()
            .map(|a| (a.name.clone(), self.spanned(scope, &a.value, ctx)))
            .collect()
    }

    /// `if cond { ... } else { ... }`: the chosen branch's value, run in a
    /// frame of its own; without an `else`, a false condition leaves the
    /// current tensor.
    pub(super) fn if_expr(
        &mut self,
        scope: &mut Scope,
        cond: &Expr,
        then: &[Stmt],
        otherwise: Option<&[Stmt]>,
    ) -> Value {
        let branch = match self.eval(scope, cond, Ctx::Value) {
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

    /// Binds the parameters of the model being compiled to their defaults:
    /// nothing calls it, so every parameter needs one.
    pub(super) fn bind_model_params(&mut self, scope: &mut Scope, def: &ast::Definition) {
        for param in &def.params {
            let value = match &param.default {
                Some(default) => self.eval(scope, default, Ctx::Argument),
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
    }

    /// Runs an expression statement: a tensor becomes the current tensor;
    /// any other value is an error, unless it is the result of an `if` branch.
    fn statement(&mut self, scope: &mut Scope, expr: &Expr, is_result: bool) -> Value {
        let value = self.eval(scope, expr, Ctx::Statement);
        match &value {
            Value::Tensor(..) | Value::Poison => scope.current = value.clone(),
            _ if is_result => {}
            other => {
                self.error(
                    Diagnostic::error(
                        expr.span,
                        "a statement must produce a tensor",
                        format!("this is {}", other.describe()),
                    )
                    .with_note(
                        "help: bind values with `let name = ...`; a statement applies layers",
                    ),
                );
                scope.current = Value::Poison;
            }
        }
        value
    }

    /// `output name = expr`: declares one of the model's outputs.
    fn output(&mut self, scope: &mut Scope, name: &Ident, expr: &Expr) {
        let value = self.eval(scope, expr, Ctx::Statement);
        match &mut scope.outputs {
            Some(outputs) => {
                if let Some((_, _, first)) = outputs.iter().find(|(n, _, _)| *n == name.name) {
                    let first = *first;
                    self.error(
                        Diagnostic::error(
                            name.span,
                            format!("output `{}` is declared twice", name.name),
                            "second declaration",
                        )
                        .with_context(first, "first declaration"),
                    );
                } else {
                    outputs.push((name.name.clone(), value, name.span));
                }
            }
            // A model called as a block contributes its main result only.
            None if scope.is_model => {}
            None => self.error(
                Diagnostic::error(
                    name.span,
                    "`output` can only be declared in a model",
                    "inside a block",
                )
                .with_note(
                    "help: return the tensor as the block's result and declare the output in the model",
                ),
            ),
        }
    }

    /// `for [index,] var in iter { body }`: runs the body once per element,
    /// each time in a frame of its own; `var` may unpack each element.
    fn for_loop(
        &mut self,
        scope: &mut Scope,
        index: Option<&Ident>,
        var: &ForVar,
        iter: &Expr,
        body: &[Stmt],
    ) {
        if !self.distinct_loop_names(index, var) {
            scope.current = Value::Poison;
            return;
        }
        let Some(items) = self.loop_items(scope, iter) else {
            scope.current = Value::Poison;
            return;
        };
        for (i, item) in items.into_iter().enumerate() {
            if !self.count_iteration(iter.span) {
                scope.current = Value::Poison;
                return;
            }
            scope.frames.push(HashMap::new());
            if let Some(index) = index {
                scope.bind(&index.name, Value::Int(i as i64));
            }
            let errors = self.errors.len();
            if self.bind_element(scope, var, item, i, iter) {
                self.body(scope, body, false);
            } else {
                scope.current = Value::Poison;
            }
            scope.frames.pop();
            // The next iterations would mostly report the same errors again.
            if self.errors.len() > errors {
                return;
            }
        }
    }

    /// Whether the names a `for` binds are all different; reports the
    /// first repeated one (`for (a, a) in ...`).
    fn distinct_loop_names(&mut self, index: Option<&Ident>, var: &ForVar) -> bool {
        let names: Vec<&Ident> = index.into_iter().chain(var.names()).collect();
        for (i, name) in names.iter().enumerate() {
            if let Some(first) = names[..i].iter().find(|n| n.name == name.name) {
                self.error(
                    Diagnostic::error(
                        name.span,
                        format!("`{}` is bound twice by this `for`", name.name),
                        "second binding",
                    )
                    .with_context(first.span, "first binding"),
                );
                return false;
            }
        }
        true
    }

    /// Binds element `i` of the loop over `iter` to `var`: the element, or
    /// its items one per name. False, with the error reported, for an
    /// element that does not unpack into the names.
    fn bind_element(
        &mut self,
        scope: &mut Scope,
        var: &ForVar,
        item: Value,
        i: usize,
        iter: &Expr,
    ) -> bool {
        let (names, pattern) = match var {
            ForVar::Name(name) => {
                scope.bind(&name.name, item);
                return true;
            }
            ForVar::Unpack(names, pattern) => (names, *pattern),
        };
        match item {
            Value::List(items) if items.len() == names.len() => {
                for (name, value) in names.iter().zip(items) {
                    scope.bind(&name.name, value);
                }
                true
            }
            // An element with an error of its own, reported already.
            Value::Poison => {
                for name in names {
                    scope.bind(&name.name, Value::Poison);
                }
                true
            }
            other => {
                let written: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
                self.error(
                    Diagnostic::error(
                        expr::element_span(iter, i),
                        format!(
                            "cannot unpack the element at index {i} into `({})`",
                            written.join(", ")
                        ),
                        format!("the element at index {i} is {}", other.describe()),
                    )
                    .with_context(pattern, format!("{} names", names.len()))
                    .with_note(format!(
                        "help: each element must be a list of {} elements, one per name",
                        names.len()
                    )),
                );
                false
            }
        }
    }

    /// The elements a `for` loop runs over; `None` after an error.
    fn loop_items(&mut self, scope: &mut Scope, iter: &Expr) -> Option<Vec<Value>> {
        match self.eval(scope, iter, Ctx::Argument) {
            Value::List(items) => Some(items),
            Value::Poison => None,
            other => {
                self.error(Diagnostic::error(
                    iter.span,
                    "`for` needs a list or a range",
                    format!("this is {}", other.describe()),
                ));
                None
            }
        }
    }

    /// Counts one more `for` iteration (of the loop over `span`); false once
    /// the node or iteration budget is exhausted, or [`MAX_ERRORS`] errors
    /// are reported, which ends every loop.
    fn count_iteration(&mut self, span: Span) -> bool {
        self.spend(1, span, "while iterating over this")
    }

    /// Charges `steps` steps of work at `span` (labelled `doing`); false,
    /// with the error reported once, when the model's [`MAX_WORK`] is
    /// spent, and false once [`MAX_ERRORS`] errors are reported: loops and
    /// block calls then stop, and values become poison.
    pub(super) fn spend(&mut self, steps: usize, span: Span, doing: &str) -> bool {
        // Past the node limit `add_node` adds nothing, so the node count
        // cannot end a loop; the flag does.
        if self.budget_reported || self.errors.len() >= MAX_ERRORS {
            return false;
        }
        self.work = self.work.saturating_add(steps);
        if self.work > MAX_WORK {
            self.budget_reported = true;
            self.error(
                Diagnostic::error(
                    span,
                    format!("elaborating the model takes more than {MAX_WORK} steps"),
                    doing,
                )
                .with_note(
                    "a step is a `for` iteration, a block call or an element of a list \
                     (a range, or a list a name holds)",
                )
                .with_note("help: check the bounds of `for` loops and ranges"),
            );
            return false;
        }
        true
    }

    /// Expands a block (or a model used as a block) applied to `input`: its
    /// body runs in a scope of its own, named by its instance path.
    fn block(
        &mut self,
        scope: &mut Scope,
        target: DefRef<'p>,
        site: CallSite,
        input: Value,
    ) -> Value {
        let def = target.def;
        if let Some(error) = self.recursion(def, site.span) {
            self.error(error);
            return Value::Poison;
        }
        if self.stack.len() >= MAX_CALL_DEPTH {
            self.error(self.too_deep(def, site.span));
            return Value::Poison;
        }
        if !self.spend(1, site.span, "while expanding this call") {
            return Value::Poison;
        }
        let values = self.eval_args(scope, site.args, Ctx::Argument);
        let path = self.instance_name(scope, &def.name.name, site.alias);
        let full = scope.qualified(&path);
        let mut inner = Scope::new(target.file, full, input.clone(), target.is_model);
        self.stack.push((def, site.span));
        let ok = self.bind_block_args(&mut inner, def, values, site.span);
        if ok {
            self.body(&mut inner, &def.body, false);
        }
        self.stack.pop();
        if !ok || matches!(input, Value::Poison) {
            return Value::Poison;
        }
        if !matches!(input, Value::Tensor(..)) {
            self.error(Diagnostic::error(
                site.span,
                format!("`{}` must be applied to a tensor", def.name.name),
                format!("its input here is {}", input.describe()),
            ));
            return Value::Poison;
        }
        inner.current
    }

    /// The error for a call of `def` at `span` while `def` is being
    /// expanded already, directly or through other blocks.
    fn recursion(&self, def: &ast::Definition, span: Span) -> Option<Diagnostic> {
        let pos = self.stack.iter().position(|(d, _)| std::ptr::eq(*d, def))?;
        let chain: Vec<&str> = self.stack[pos..]
            .iter()
            .map(|(d, _)| d.name.name.as_str())
            .chain([def.name.name.as_str()])
            .collect();
        let error = Diagnostic::error(
            span,
            format!("`{}` calls itself", def.name.name),
            "recursive call",
        )
        .with_context(def.name.span, "defined here")
        .with_note(format!("the calls: {}", chain.join(" -> ")))
        .with_note("help: blocks cannot be recursive; repeat layers with `for` instead");
        Some(error)
    }

    /// The error for a call of `def` at `span` with [`MAX_CALL_DEPTH`]
    /// block calls open around it, naming the first and the last of them.
    fn too_deep(&self, def: &ast::Definition, span: Span) -> Diagnostic {
        let names: Vec<&str> = self
            .stack
            .iter()
            .map(|(d, _)| d.name.name.as_str())
            .collect();
        // MAX_CALL_DEPTH calls are open, far more than six.
        let (first, last) = (&names[..3], &names[names.len() - 3..]);
        Diagnostic::error(
            span,
            format!("block calls nested deeper than {MAX_CALL_DEPTH}"),
            format!("`{}` called here", def.name.name),
        )
        .with_note(format!(
            "the calls: {} -> ... -> {} -> {}",
            first.join(" -> "),
            last.join(" -> "),
            def.name.name
        ))
        .with_note(format!(
            "help: cnnc expands at most {MAX_CALL_DEPTH} nested block calls; \
             repeat layers with `for` instead of chaining blocks"
        ))
    }

    /// Binds a block's parameters from the call's arguments and defaults;
    /// false if any argument was wrong or missing.
    fn bind_block_args(
        &mut self,
        inner: &mut Scope,
        def: &ast::Definition,
        values: EvaluatedArgs,
        span: Span,
    ) -> bool {
        let (given, mut ok) = self.match_block_args(def, values);
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

    /// Assigns a call's arguments to the parameters of `def`, positional
    /// ones in order and named ones by name; reports extra, unknown and
    /// repeated arguments, returning false with the assignment if there were any.
    fn match_block_args(
        &mut self,
        def: &ast::Definition,
        values: EvaluatedArgs,
    ) -> (Vec<Option<Value>>, bool) {
        let params: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        let mut given: Vec<Option<Value>> = vec![None; params.len()];
        let mut ok = true;
        let mut positional = 0;
        for (name, value) in values {
            let slot = match &name {
                None => {
                    positional += 1;
                    positional_slot(def, positional, value.span)
                }
                Some(n) => named_slot(def, &params, n),
            };
            let error = match slot {
                Ok(slot) if given[slot].is_none() => {
                    given[slot] = Some(value.value);
                    continue;
                }
                Ok(slot) => Diagnostic::error(
                    value.span,
                    format!("parameter `{}` is given twice", params[slot]),
                    "duplicate argument",
                ),
                Err(error) => error,
            };
            self.error(error);
            ok = false;
        }
        (given, ok)
    }
}

/// The parameter slot of the `nth` positional argument (counted from 1) of
/// a call of `def`, at `span`.
fn positional_slot(def: &ast::Definition, nth: usize, span: Span) -> Result<usize, Diagnostic> {
    if nth <= def.params.len() {
        return Ok(nth - 1);
    }
    Err(Diagnostic::error(
        span,
        format!(
            "too many arguments: `{}` takes {}",
            def.name.name,
            def.params.len()
        ),
        "extra argument",
    )
    .with_context(def.name.span, "defined here"))
}

/// The parameter slot of the argument named `name` in a call of `def`.
fn named_slot(def: &ast::Definition, params: &[&str], name: &Ident) -> Result<usize, Diagnostic> {
    if let Some(slot) = params.iter().position(|p| *p == name.name) {
        return Ok(slot);
    }
    let error = Diagnostic::error(
        name.span,
        format!("`{}` has no parameter `{}`", def.name.name, name.name),
        "unknown argument",
    )
    .with_context(def.name.span, "defined here")
    .with_note(format!("its parameters: {}", list_or_none(params)));
    Err(suggest(error, &name.name, params.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::MAX_WORK;
    use crate::graph::Graph;

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    /// The shape of the kernel of node `name`.
    fn kernel(graph: &Graph, name: &str) -> Vec<u64> {
        fixture::node(graph, name).params[0].shape.clone()
    }

    #[test]
    fn arguments_bind_by_position_then_by_name_and_defaults_see_earlier_parameters() {
        let graph = fixture::graph(
            r#"
block widen(filters, kernel = filters // 4, stride = 1) { conv(filters, kernel, stride: stride) }
model m : [8, 8, 1] {
    widen(8) as a
    widen(4, stride: 2, kernel: 3) as b
}
"#,
        );
        assert_eq!(kernel(&graph, "a.conv1"), [2, 2, 1, 8]);
        assert_eq!(kernel(&graph, "b.conv1"), [3, 3, 8, 4]);
    }

    #[test]
    fn wrong_block_arguments_are_each_reported_where_they_are() {
        let errors = fixture::errors(
            r#"
block b(filters) { conv(filters, 1) }
model m : [8, 8, 1] {
    b(1, 2)
    b(fliters: 1)
    b(1, filters: 2)
    b
}
"#,
        );
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.message.as_str(), e.at.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("too many arguments: `b` takes 1", "2"),
                ("`b` has no parameter `fliters`", "fliters"),
                ("missing argument `filters` of `b`", "b(fliters: 1)"),
                ("parameter `filters` is given twice", "2"),
                ("missing argument `filters` of `b`", "b"),
            ]
        );
        assert_eq!(
            errors[1].notes,
            ["its parameters: filters", "help: did you mean `filters`?"]
        );
        assert_eq!(
            errors[4].context,
            [pair("filters", "parameter declared here")]
        );
    }

    /// Blocks `b1` to `b{levels}`, each calling the one before ten times,
    /// `b0` running `body`; the model calls the last.
    fn tenfold(levels: usize, body: &str) -> String {
        let mut text = format!("block b0 {{ {body} }}\n");
        for i in 1..=levels {
            let calls = vec![format!("b{}", i - 1); 10].join(" ");
            text += &format!("block b{i} {{ {calls} }}\n");
        }
        text + &format!("model m : [8, 8, 1] {{ b{levels}\n relu }}\n")
    }

    #[test]
    fn block_calls_and_iterations_share_one_budget() {
        // 10 + 100 + ... + 10^4 calls, each of one iteration: within it.
        let ok = fixture::errors(&tenfold(4, "for i in 0..1 { }"));
        assert_eq!(ok, []);
        // 10^8 calls of empty blocks ran for minutes.
        let error = fixture::error(&tenfold(8, ""));
        assert_eq!(
            error.message,
            format!("elaborating the model takes more than {MAX_WORK} steps")
        );
        assert_eq!(
            (error.at.as_str(), error.label.as_str()),
            ("b0", "while expanding this call")
        );
        // Every use of a list copies it: a loop over a long list that reads
        // it at each turn did work of the order of the square of its length.
        let error = fixture::error(
            "model m : [8, 8, 1] {\n let xs = 0..50000\n for x in xs { let y = xs[0] }\n relu\n}\n",
        );
        assert_eq!((error.at.as_str(), error.line), ("xs", 3));
        assert_eq!(error.label, "while evaluating this");
    }

    #[test]
    fn a_loop_stops_at_its_first_iteration_with_an_error() {
        // Each iteration's error differs (its integer), so that only the
        // loop's stopping, not the removal of repeats, leaves one.
        let error =
            fixture::error("model m : [8, 8, 1] {\n for i in 1..50 { conv(0 - i, 3) }\n}\n");
        assert_eq!(error.label, "this is the integer -1");
        // A fault repeated by a loop inside a loop (found by fuzzing: a
        // million suggestions for the unknown name took seconds).
        let error = fixture::error(
            "model m : [8, 8, 1] {\n for i in 0..1000 { for j in 0..1000 { let k = i * nope } }\n relu\n}\n",
        );
        assert_eq!(error.message, "unknown layer or block `nope`");
    }

    #[test]
    fn elaboration_stops_after_max_errors() {
        // 10^5 calls of a block with a fault: within the work budget, but
        // the fault would be reported 10^5 times; the first MAX_ERRORS
        // stop it, and they are one error once repeats are removed.
        let error = fixture::error(&tenfold(5, "nope"));
        assert_eq!(error.message, "unknown layer or block `nope`");
    }

    #[test]
    fn a_recursive_call_names_the_chain_and_the_calls_that_led_there() {
        let error = fixture::error(
            r#"
block a { b }
block b { a }
model m : [8, 8, 1] { a }
"#,
        );
        assert_eq!(error.message, "`a` calls itself");
        assert_eq!((error.at.as_str(), error.line), ("a", 3));
        assert_eq!(
            error.notes,
            [
                "the calls: a -> b -> a",
                "help: blocks cannot be recursive; repeat layers with `for` instead"
            ]
        );
        assert_eq!(
            error.context,
            [
                pair("a", "defined here"),
                pair("b", "while expanding `b` called here"),
                pair("a", "while expanding `a` called here"),
            ]
        );
    }

    #[test]
    fn a_for_loop_runs_its_body_per_element_with_an_index() {
        let graph = fixture::graph(
            r#"
model m : [8, 8, 1] {
    for i, f in [2, 4] {
        conv(f + i, 1)
    }
}
"#,
        );
        assert_eq!(fixture::node_names(&graph), ["input", "conv1", "conv2"]);
        assert_eq!(kernel(&graph, "conv1"), [1, 1, 1, 2]);
        assert_eq!(kernel(&graph, "conv2"), [1, 1, 2, 5]);
    }

    #[test]
    fn a_for_loop_unpacks_each_element_with_or_without_the_index() {
        let graph = fixture::graph(
            r#"
model m : [8, 8, 1] {
    for (k, f) in [[1, 2], [3, 4]] {
        conv(f, k, padding: same)
    }
    let specs = [[1, 2], [3, 4]]
    for i, (k, f) in specs {
        conv(f + i, k, padding: same)
    }
    for i in 1..=2 {
        conv(i, 1)
    }
}
"#,
        );
        let kernels: Vec<Vec<u64>> = ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"]
            .iter()
            .map(|name| kernel(&graph, name))
            .collect();
        assert_eq!(
            kernels,
            [
                [1, 1, 1, 2],
                [3, 3, 2, 4],
                [1, 1, 4, 2],
                [3, 3, 2, 5],
                [1, 1, 5, 1],
                [1, 1, 1, 2]
            ]
        );
    }

    #[test]
    fn an_element_that_does_not_unpack_is_named_with_its_index() {
        // In a list written out, the element itself is pointed at.
        let long = fixture::error(
            "model m : [8, 8, 1] {\n    for (k, f) in [[1, 2], [3, 4, 5]] { conv(f, k) }\n}\n",
        );
        assert_eq!(
            long.message,
            "cannot unpack the element at index 1 into `(k, f)`"
        );
        assert_eq!(
            (long.at.as_str(), long.label.as_str()),
            (
                "[3, 4, 5]",
                "the element at index 1 is a list of 3 elements"
            )
        );
        assert_eq!(long.context, [pair("(k, f)", "2 names")]);
        assert_eq!(
            long.notes,
            ["help: each element must be a list of 2 elements, one per name"]
        );
        // Through a name, the name.
        let number = fixture::error(
            "model m : [8, 8, 1] {\n    let pairs = [[1, 2], 3]\n    for i, (k, f) in pairs { conv(f, k) }\n}\n",
        );
        assert_eq!(
            (number.at.as_str(), number.label.as_str()),
            ("pairs", "the element at index 1 is the integer 3")
        );
    }

    #[test]
    fn a_for_loop_binds_each_name_once() {
        let error =
            fixture::error("model m : [8, 8, 1] {\n    for i, (a, i) in [[1, 2]] { relu }\n}\n");
        assert_eq!(error.message, "`i` is bound twice by this `for`");
        assert_eq!((error.at.as_str(), error.line), ("i", 2));
        assert_eq!(error.context, [pair("i", "first binding")]);
    }

    #[test]
    fn a_for_loop_needs_a_list() {
        let error = fixture::error("model m : [8, 8, 1] {\n    for x in 3 { relu }\n}\n");
        assert_eq!(error.message, "`for` needs a list or a range");
        assert_eq!(
            (error.at.as_str(), error.label.as_str()),
            ("3", "this is the integer 3")
        );
    }

    #[test]
    fn an_if_runs_one_branch_in_a_frame_of_its_own() {
        let graph = fixture::graph(
            r#"
model m : [8, 8, 1] {
    if in.channels > 1 { conv(1, 1) } else { relu }
    let size = if current.height > 4 { 3 } else { 1 }
    conv(2, size)
    if false { tanh }
}
"#,
        );
        assert_eq!(fixture::node_names(&graph), ["input", "relu1", "conv1"]);
        assert_eq!(kernel(&graph, "conv1"), [3, 3, 1, 2]);
        let error = fixture::error(
            "model m : [8, 8, 1] {\n    if true { let hidden = 1 }\n    conv(hidden, 1)\n}\n",
        );
        assert_eq!(error.at, "hidden");
        assert_eq!(error.label, "this is the name `hidden`");
    }

    #[test]
    fn an_if_condition_must_be_a_boolean() {
        let error = fixture::error("model m : [8, 8, 1] {\n    if 1 { relu }\n}\n");
        assert_eq!(error.message, "an `if` condition must be a boolean");
        assert_eq!(error.at, "1");
    }

    #[test]
    fn a_statement_must_produce_a_tensor() {
        let error = fixture::error("model m : [8, 8, 1] {\n    relu\n    3\n}\n");
        assert_eq!(error.message, "a statement must produce a tensor");
        assert_eq!((error.at.as_str(), error.line), ("3", 3));
    }

    #[test]
    fn outputs_are_declared_once_and_only_in_models() {
        let twice =
            fixture::error("model m : [8, 8, 1] {\n    output a = relu\n    output a = tanh\n}\n");
        assert_eq!(twice.message, "output `a` is declared twice");
        assert_eq!((twice.at.as_str(), twice.line), ("a", 3));
        assert_eq!(twice.context, [pair("a", "first declaration")]);
        let in_block = fixture::error("block b { output a = relu }\nmodel m : [8, 8, 1] { b }\n");
        assert_eq!(in_block.message, "`output` can only be declared in a model");
        assert_eq!(
            in_block.context,
            [pair("b", "while expanding `b` called here")]
        );
    }

    #[test]
    fn a_model_called_as_a_block_contributes_its_main_result_only() {
        let program = fixture::program(
            r#"
model inner : [8, 8, 1] {
    output side = relu
    tanh
}
model outer : [8, 8, 1] { inner }
"#,
        );
        let graph = super::super::elaborate(&program, Some("outer")).expect("elaborates");
        let outputs: Vec<&str> = graph.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(outputs, ["output"]);
        assert_eq!(
            fixture::node_names(&graph),
            ["input", "inner1.relu1", "inner1.tanh1"]
        );
    }

    #[test]
    fn a_model_compiled_on_its_own_needs_defaults_for_its_parameters() {
        let error = fixture::error("model m(classes) : [8, 8, 1] { relu }\n");
        assert_eq!(error.message, "parameter `classes` has no default value");
        assert_eq!(error.at, "classes");
    }

    #[test]
    fn a_block_applies_to_a_tensor() {
        let error = fixture::error(
            "block b { let unused = 1 }\nmodel m : [8, 8, 1] {\n    let n = 3\n    n -> b\n}\n",
        );
        assert_eq!(error.message, "`b` must be applied to a tensor");
        assert_eq!(
            (error.at.as_str(), error.label.as_str()),
            ("b", "its input here is the integer 3")
        );
    }
}
