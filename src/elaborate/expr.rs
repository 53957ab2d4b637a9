//! Expression evaluation: an expression of the AST to a [`Value`].
//!
//! The same syntax means different things in different places, which the
//! [`Ctx`] says: a bare unbound name is a layer applied to the current
//! tensor in a statement (`relu`), a symbol in an argument
//! (`padding: same`), and in the train section calls are configuration
//! (`nadam(lr: 0.1)`) rather than layers. A call of a built-in function
//! (`int(x)`, `max(a, b)`; see `functions.rs`) means the same everywhere.

use crate::diagnostics::{suggest, Diagnostic, Span};
use crate::graph::{Init, Shape};
use crate::syntax::ast::{self, BinOp, Expr, ExprKind, Ident, RangeEnd, UnOp};

use super::calls::{CallSite, Expected};
use super::definitions::Scope;
use super::functions::{self, FunctionError, Place};
use super::value::{self, Spanned, Value};
use super::{args, layers, Elaborator};

/// How unbound names and calls are read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ctx {
    /// A statement: unbound names and calls apply layers to the current tensor.
    Statement,
    /// The value of a `let`: read as a statement, but it may be any value
    /// (`let t = conv(8, 1)`, `let n = len(sizes)`), which an unknown
    /// call's suggestion takes into account.
    Let,
    /// An argument: unbound names are symbols (`same`, `relu`); calls still apply layers.
    Argument,
    /// Where only a value makes sense (an operand of `-` or `<`, an index,
    /// an argument of a layer or of a built-in function): read as an
    /// argument, but an unknown call is taken for a misspelt function.
    Value,
    /// The train section: unbound names are symbols and calls are configuration (`nadam(lr: 0.1)`).
    Train,
}

impl Ctx {
    /// Whether an unbound bare name applies a layer or block.
    fn applies_layers(self) -> bool {
        matches!(self, Ctx::Statement | Ctx::Let)
    }

    /// The context of a part that must be a value (a number, a list...),
    /// within an expression in this context. Statements keep theirs, so
    /// that a bare name there still applies a layer (`relu - 1` says that
    /// a tensor cannot be subtracted from).
    pub(super) fn for_value(self) -> Ctx {
        match self {
            Ctx::Argument | Ctx::Value => Ctx::Value,
            Ctx::Statement | Ctx::Let | Ctx::Train => self,
        }
    }

    /// What an unknown name called with arguments here may have been meant as.
    fn expected(self) -> Expected {
        match self {
            Ctx::Statement => Expected::LayerOrBlock,
            Ctx::Value => Expected::Function,
            Ctx::Let | Ctx::Argument | Ctx::Train => Expected::Any,
        }
    }
}

/// The fields of a tensor, for `in.channels` and its messages.
const TENSOR_FIELDS: [&str; 5] = ["shape", "rank", "height", "width", "channels"];

impl<'p> Elaborator<'p> {
    /// Evaluates `expr` in `scope`; errors are reported and yield [`Value::Poison`].
    pub(super) fn eval(&mut self, scope: &mut Scope, expr: &Expr, ctx: Ctx) -> Value {
        // Every recursion of elaboration (nested expressions, block calls,
        // bodies of `if`) passes through here.
        let value = super::with_stack(|| self.eval_here(scope, expr, ctx));
        // Lists are copied whole wherever they are used (`sizes[i]` copies
        // `sizes`): their length is work.
        match value {
            Value::List(ref items)
                if !self.spend(items.len(), expr.span, "while evaluating this") =>
            {
                Value::Poison
            }
            value => value,
        }
    }

    fn eval_here(&mut self, scope: &mut Scope, expr: &Expr, ctx: Ctx) -> Value {
        let span = expr.span;
        // Inside brackets and operators, names are symbols again (except
        // in the train section, where everything is configuration).
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
            ExprKind::Record(fields) => self.record(scope, fields, inner),
            ExprKind::Input => self.input_of(scope, span),
            ExprKind::Name(name, alias) => self.name(scope, name, alias.as_ref(), ctx),
            ExprKind::Call(call) if functions::is_function(&call.callee.name) => {
                self.function(scope, call, span, ctx)
            }
            ExprKind::Call(call) if ctx == Ctx::Train => self.config_call(scope, call),
            ExprKind::Call(call) => {
                let input = scope.current.clone();
                let site = CallSite::of(call, span).expecting(ctx.expected());
                self.call(scope, site, input)
            }
            ExprKind::Pipe(head, stages) => self.pipe(scope, head, stages, ctx),
            ExprKind::Binary(op, lhs, rhs) => self.binary(scope, *op, lhs, rhs, ctx, span),
            ExprKind::Unary(op, operand) => {
                let value = self.eval(scope, operand, inner.for_value());
                self.unary(*op, value, span)
            }
            ExprKind::Field(base, field) => {
                let value = self.eval(scope, base, ctx);
                self.field(value, field)
            }
            ExprKind::Index(base, index) => {
                let list = self.eval(scope, base, ctx);
                let index_value = self.eval(scope, index, inner.for_value());
                self.index(list, index_value, index.span)
            }
            ExprKind::Range(start, end, included) => {
                let start = self.eval(scope, start, inner.for_value());
                let end = self.eval(scope, end, inner.for_value());
                self.range(start, end, *included, span)
            }
            ExprKind::If(cond, then, otherwise) => {
                self.if_expr(scope, cond, then, otherwise.as_deref())
            }
            ExprKind::Where(init, assigns) => self.init_where(scope, init, assigns),
        }
    }

    /// `(key: value, ...)`, each value with its span.
    fn record(&mut self, scope: &mut Scope, fields: &[(Ident, Expr)], ctx: Ctx) -> Value {
        let fields = fields
            .iter()
            .map(|(key, value)| (key.name.clone(), self.spanned(scope, value, ctx)))
            .collect();
        Value::Record(fields)
    }

    /// A call of built-in function `call.callee` (`int(x)`, `max(a, b)`):
    /// its arguments are values, given by position.
    fn function(&mut self, scope: &mut Scope, call: &ast::Call, span: Span, ctx: Ctx) -> Value {
        let name = call.callee.name.as_str();
        // Bare names in the arguments are symbols, even in a statement.
        let arg_ctx = if ctx == Ctx::Train {
            Ctx::Train
        } else {
            Ctx::Value
        };
        let args: Vec<Value> = call
            .args
            .iter()
            .map(|a| self.eval(scope, &a.value, arg_ctx))
            .collect();
        if let Some(alias) = &call.alias {
            self.error(Diagnostic::error(
                alias.span,
                "`as` names a layer or block call",
                format!("`{name}` is a built-in function"),
            ));
            return Value::Poison;
        }
        if let Some(named) = call.args.iter().find_map(|a| a.name.as_ref()) {
            self.error(
                Diagnostic::error(
                    named.span,
                    format!("`{name}` takes no named arguments"),
                    "named argument",
                )
                .with_note(functions::usage(name)),
            );
            return Value::Poison;
        }
        match functions::call(name, &args) {
            Ok(value) => value,
            Err(fault) => {
                self.error(function_error(call, span, fault));
                Value::Poison
            }
        }
    }

    /// A call in the train section: `nadam(lr: 0.1)`, kept as a
    /// configuration value for the train section's checker to read.
    fn config_call(&mut self, scope: &mut Scope, call: &ast::Call) -> Value {
        let args = call
            .args
            .iter()
            .map(|a| {
                let name = a.name.as_ref().map(|n| n.name.clone());
                (name, self.spanned(scope, &a.value, Ctx::Train))
            })
            .collect();
        Value::Config(call.callee.name.clone(), args)
    }

    /// Evaluates `expr` and keeps its span with the value.
    pub(super) fn spanned(&mut self, scope: &mut Scope, expr: &Expr, ctx: Ctx) -> Spanned {
        Spanned {
            value: self.eval(scope, expr, ctx),
            span: expr.span,
        }
    }

    /// A bare name: a bound value, else a layer or block call (in a
    /// statement, or with `as`), else a symbol.
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
        if name.name == CURRENT && alias.is_none() && ctx != Ctx::Train {
            return scope.current.clone();
        }
        if ctx.applies_layers() || alias.is_some() {
            let input = scope.current.clone();
            self.call(scope, CallSite::bare(name, alias, name.span), input)
        } else {
            Value::Symbol(name.name.clone())
        }
    }

    /// `in` at `span`: the block's input. In a model's body, once a
    /// statement has moved the current tensor on, `in` is an error: it
    /// would wire the model's input where the current tensor was meant
    /// (`current`), and the input can be named at the start instead.
    fn input_of(&mut self, scope: &Scope, span: Span) -> Value {
        let (Value::Tensor(input, shape), Value::Tensor(current, current_shape)) =
            (&scope.input, &scope.current)
        else {
            return scope.input.clone();
        };
        if !scope.is_model || input == current {
            return scope.input.clone();
        }
        let node = &self.graph.nodes[*current].layer;
        self.error(
            Diagnostic::error(
                span,
                "`in` in a model's body is the model's input, not the current tensor",
                format!("the model's input, {shape}"),
            )
            .with_note(format!(
                "the current tensor here is `{node}`'s output, {current_shape}"
            ))
            .with_note(format!(
                "help: write `{CURRENT}` for the current tensor; to use the model's input after its first statement, name it before: `let image = in`"
            )),
        );
        Value::Poison
    }

    /// `head -> f -> g(...)`: applies each stage to the previous result.
    fn pipe(&mut self, scope: &mut Scope, head: &Expr, stages: &[Expr], ctx: Ctx) -> Value {
        let head_ctx = if ctx == Ctx::Train {
            Ctx::Train
        } else {
            Ctx::Statement
        };
        let mut value = self.eval(scope, head, head_ctx);
        for stage in stages {
            value = match &stage.kind {
                ExprKind::Call(call) => self.call(scope, CallSite::of(call, stage.span), value),
                ExprKind::Name(name, alias) if scope.lookup(&name.name).is_none() => {
                    let site = CallSite::bare(name, alias.as_ref(), stage.span);
                    self.call(scope, site, value)
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

    /// `lhs op rhs`: `+` and `*` of two tensors add a node; anything else
    /// is arithmetic, comparison or logic on values.
    fn binary(
        &mut self,
        scope: &mut Scope,
        op: BinOp,
        lhs: &Expr,
        rhs: &Expr,
        ctx: Ctx,
        span: Span,
    ) -> Value {
        // Only `+` and `*` apply to tensors; after a number, they too
        // compute with numbers.
        let tensors = matches!(op, BinOp::Add | BinOp::Mul);
        let left_ctx = if tensors { ctx } else { ctx.for_value() };
        let left = self.eval(scope, lhs, left_ctx);
        if let (BinOp::And | BinOp::Or, Value::Bool(b)) = (op, &left) {
            // Short-circuit, so that `i > 0 and sizes[i - 1] > 1` is safe.
            if (op == BinOp::And && !b) || (op == BinOp::Or && *b) {
                return Value::Bool(*b);
            }
        }
        let right_ctx = match left {
            Value::Int(_) | Value::Float(_) => ctx.for_value(),
            _ => left_ctx,
        };
        let right = self.eval(scope, rhs, right_ctx);
        match (&left, &right) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::Tensor(a, sa), Value::Tensor(b, sb))
                if matches!(op, BinOp::Add | BinOp::Mul) =>
            {
                let inputs = [(*a, sa.clone()), (*b, sb.clone())];
                self.elementwise(scope, op, &inputs, span)
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

    /// `-x` and `not x`.
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

    /// `tensor.field`: the shape, rank or one of the dimensions of an image.
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
        if !TENSOR_FIELDS.contains(&field.name.as_str()) {
            let error = Diagnostic::error(
                field.span,
                format!("tensors have no field `{}`", field.name),
                "unknown field",
            )
            .with_note(format!("tensors have: {}", TENSOR_FIELDS.join(", ")));
            self.error(suggest(error, &field.name, TENSOR_FIELDS));
            return Value::Poison;
        }
        tensor_field(shape, &field.name).unwrap_or_else(|| {
            self.error(Diagnostic::error(
                field.span,
                format!("`.{}` needs an image [height, width, channels]", field.name),
                format!("the tensor has shape {shape}"),
            ));
            Value::Poison
        })
    }

    /// `list[index]`, counting from the end for negative indices.
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
                let help = match (&list, value::integer_help(&index)) {
                    (Value::List(_), Some(help)) => help,
                    _ => "help: lists are indexed with integers: `sizes[0]`, `sizes[-1]`".into(),
                };
                self.error(
                    Diagnostic::error(
                        span,
                        format!("cannot index {} with {}", list.describe(), index.describe()),
                        "here",
                    )
                    .with_note(help),
                );
                Value::Poison
            }
        }
    }

    /// `start..end`: the list of integers from `start` up to `end`,
    /// excluded; `start..=end`: up to `end`, included.
    fn range(&mut self, start: Value, end: Value, included: RangeEnd, span: Span) -> Value {
        match (&start, &end) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::Int(a), Value::Int(b)) => {
                // In i128, so that `0..=9223372036854775807` cannot overflow.
                let last = i128::from(*b) - i128::from(included == RangeEnd::Excluded);
                let len = (last - i128::from(*a) + 1).max(0);
                if len > value::MAX_LIST as i128 {
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
                // At most MAX_LIST elements from `a`, so `a + len - 1` is `last`.
                Value::List((0..len as i64).map(|i| Value::Int(a + i)).collect())
            }
            _ => {
                let mut error = Diagnostic::error(
                    span,
                    "a range needs integer bounds",
                    format!(
                        "{}{}{}",
                        start.describe(),
                        included.symbol(),
                        end.describe()
                    ),
                );
                if let Some(help) =
                    value::integer_help(&start).or_else(|| value::integer_help(&end))
                {
                    error = error.with_note(help);
                }
                self.error(error);
                Value::Poison
            }
        }
    }

    /// `init where [axes] = value, ...`: an initializer with entries set.
    fn init_where(&mut self, scope: &mut Scope, init: &Expr, assigns: &[(Expr, Expr)]) -> Value {
        let Some(base) = self.init_name(scope, init) else {
            return Value::Poison;
        };
        let mut entries = Vec::new();
        for (pattern, value) in assigns {
            let value_span = value.span;
            let number = self.eval(scope, value, Ctx::Value);
            // The grammar makes every pattern a list of axes.
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

    /// The initializer that a `where` follows: a name such as `zeros`.
    fn init_name(&mut self, scope: &mut Scope, init: &Expr) -> Option<Init> {
        match self.eval(scope, init, Ctx::Argument) {
            Value::Symbol(name) => {
                let found = layers::init_symbol(&name);
                if found.is_none() {
                    let error = Diagnostic::error(
                        init.span,
                        format!("unknown initializer `{name}`"),
                        "here",
                    );
                    self.error(suggest(error, &name, layers::INITS.iter().copied()));
                }
                found
            }
            Value::Poison => None,
            other => {
                self.error(Diagnostic::error(
                    init.span,
                    "`where` follows an initializer name",
                    format!("this is {}", other.describe()),
                ));
                None
            }
        }
    }
}

/// The diagnostic for `fault` in `call` (written at `span`), at the place
/// the fault names.
fn function_error(call: &ast::Call, span: Span, fault: FunctionError) -> Diagnostic {
    let arg = |i: usize| call.args.get(i).map(|a| &a.value);
    let at = match fault.place {
        Place::Call => span,
        Place::Arg(i) => arg(i).map_or(span, |e| e.span),
        Place::Element(i, j) => arg(i).map_or(span, |e| element_span(e, j)),
    };
    let mut error = Diagnostic::error(at, fault.message, fault.label);
    for note in fault.notes {
        error = error.with_note(note);
    }
    error
}

/// The span of element `index` of `list` where the list is written out
/// (`[a, b]`), else of the whole expression (a name bound to a list).
pub(super) fn element_span(list: &Expr, index: usize) -> Span {
    match &list.kind {
        ExprKind::List(items) => items.get(index).map_or(list.span, |e| e.span),
        _ => list.span,
    }
}

/// The name of the current tensor in a block or model body, unless a
/// parameter or `let` binds it.
pub(super) const CURRENT: &str = "current";

/// Field `name` (one of [`TENSOR_FIELDS`]) of a tensor of `shape`; `None`
/// for a dimension of an image when the tensor is not an image.
fn tensor_field(shape: &Shape, name: &str) -> Option<Value> {
    let dims: Vec<i64> = shape.0.iter().map(|&d| d as i64).collect();
    let image = |i: usize| (dims.len() == 3).then(|| Value::Int(dims[i]));
    match name {
        "shape" => Some(Value::List(dims.iter().map(|&d| Value::Int(d)).collect())),
        "rank" => Some(Value::Int(dims.len() as i64)),
        "channels" => dims.last().map(|&c| Value::Int(c)),
        "height" => image(0),
        "width" => image(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{self, Reported};
    use super::*;
    use crate::graph::Slice;

    /// The value of `expr` as an argument, with no other bindings.
    fn value(expr: &str) -> Value {
        let (value, errors) = fixture::eval("", expr, Ctx::Argument);
        assert_eq!(errors, [], "{expr}");
        value
    }

    /// The only error of evaluating `expr` as an argument after `lets`.
    fn error(lets: &str, expr: &str) -> Reported {
        let (value, errors) = fixture::eval(lets, expr, Ctx::Argument);
        assert_eq!(value, Value::Poison, "{expr}");
        match errors.as_slice() {
            [one] => one.clone(),
            other => panic!("{expr}: expected one error, found {other:#?}"),
        }
    }

    fn ints(values: &[i64]) -> Value {
        Value::List(values.iter().map(|&i| Value::Int(i)).collect())
    }

    #[test]
    fn a_bare_name_is_a_symbol_in_an_argument_and_a_layer_in_a_statement() {
        assert_eq!(value("same"), Value::Symbol("same".into()));
        let (applied, errors) = fixture::eval("", "relu", Ctx::Statement);
        assert_eq!(errors, []);
        assert!(
            matches!(&applied, Value::Tensor(_, shape) if shape.0 == [8, 6, 3]),
            "{applied:?}"
        );
    }

    #[test]
    fn current_names_the_current_tensor_and_in_the_input() {
        // The SE-style recalibration of the current tensor, in a model.
        let graph = fixture::graph(
            "model m : [8, 8, 3] {\n    let image = in\n    conv(4, 3, padding: same)\n    let w = global_avg_pool -> dense(4, activation: sigmoid)\n    current * w\n    let skip = current\n    conv(4, 1) + skip\n    concat(current, image)\n}\n",
        );
        let inputs_of = |name: &str| -> Vec<&str> {
            let id = graph
                .nodes
                .node_indices()
                .find(|&i| graph.nodes[i].name == name)
                .expect("node");
            let inputs = graph.inputs_of(id);
            inputs
                .iter()
                .map(|&i| graph.nodes[i].name.as_str())
                .collect()
        };
        assert_eq!(inputs_of("multiply1"), ["conv1", "dense1.sigmoid"]);
        assert_eq!(inputs_of("add1"), ["conv2", "multiply1"]);
        assert_eq!(inputs_of("concat1"), ["add1", "input"]);
    }

    #[test]
    fn a_call_in_the_train_section_is_configuration() {
        let (config, errors) = fixture::eval("", "nadam(lr: 0.5, 2)", Ctx::Train);
        assert_eq!(errors, []);
        let Value::Config(name, args) = config else {
            panic!("{config:?}");
        };
        assert_eq!(name, "nadam");
        let args: Vec<(Option<&str>, &Value)> =
            args.iter().map(|(n, v)| (n.as_deref(), &v.value)).collect();
        assert_eq!(
            args,
            [(Some("lr"), &Value::Float(0.5)), (None, &Value::Int(2))]
        );
        let outside = error("", "nadam(lr: 0.5)");
        assert_eq!(outside.message, "unknown layer, block or function `nadam`");
    }

    #[test]
    fn and_and_or_skip_their_right_side_once_the_left_decides() {
        assert_eq!(value("false and [1][5] > 0"), Value::Bool(false));
        assert_eq!(value("true or [1][5] > 0"), Value::Bool(true));
        let checked = error("", "true and [1][5] > 0");
        assert_eq!(checked.message, "index 5 is out of range");
        assert_eq!(
            (checked.at.as_str(), checked.label.as_str()),
            ("5", "the list has 1 elements")
        );
    }

    #[test]
    fn tensors_have_a_shape_rank_and_image_dimensions() {
        assert_eq!(value("in.shape"), ints(&[8, 6, 3]));
        assert_eq!(value("in.rank"), Value::Int(3));
        assert_eq!(
            value("[in.height, in.width, in.channels]"),
            ints(&[8, 6, 3])
        );
        let flat = error("let flat = in -> flatten", "flat.height");
        assert_eq!(
            flat.message,
            "`.height` needs an image [height, width, channels]"
        );
        assert_eq!(
            (flat.at.as_str(), flat.label.as_str()),
            ("height", "the tensor has shape [144]")
        );
    }

    #[test]
    fn an_unknown_field_lists_the_fields_and_suggests_one() {
        let unknown = error("", "in.chanels");
        assert_eq!(unknown.message, "tensors have no field `chanels`");
        assert_eq!(
            unknown.notes,
            [
                "tensors have: shape, rank, height, width, channels",
                "help: did you mean `channels`?"
            ]
        );
        let not_a_tensor = error("let n = 3", "n.channels");
        assert_eq!(not_a_tensor.message, "`.channels` needs a tensor");
        assert_eq!(not_a_tensor.label, "the value is the integer 3");
    }

    #[test]
    fn negative_indices_count_from_the_end() {
        assert_eq!(value("[1, 2, 3][-1]"), Value::Int(3));
        assert_eq!(value("[1, 2, 3][0]"), Value::Int(1));
        assert_eq!(
            error("", "[1, 2, 3][-4]").message,
            "index -4 is out of range"
        );
        let by_name = error("", "[1, 2][same]");
        assert_eq!(
            by_name.message,
            "cannot index a list of 2 elements with the name `same`"
        );
    }

    #[test]
    fn a_range_runs_from_its_start_to_before_its_end() {
        assert_eq!(value("2..5"), ints(&[2, 3, 4]));
        assert_eq!(value("5..2"), ints(&[]));
        let real = error("", "1.5..3");
        assert_eq!(real.message, "a range needs integer bounds");
        assert_eq!(real.label, "the number 1.5..the integer 3");
        let long = error("", "0..200000");
        assert_eq!(
            long.message,
            "the range has 200000 elements, more than 100000"
        );
    }

    #[test]
    fn negation_checks_for_overflow_and_not_needs_a_boolean() {
        assert_eq!(value("-(2 - 5)"), Value::Int(3));
        assert_eq!(value("not (1 > 2)"), Value::Bool(true));
        let overflow = error("", "-(-9223372036854775807 - 1)");
        assert_eq!(overflow.message, "integer overflow");
        assert_eq!(
            overflow.label,
            "-(-9223372036854775808) does not fit in 64 bits"
        );
        assert_eq!(
            error("", "not 3").message,
            "cannot apply `not` to the integer 3"
        );
        assert_eq!(error("", "-same").message, "cannot negate the name `same`");
    }

    #[test]
    fn adding_or_multiplying_two_tensors_adds_a_node_and_other_mixes_are_errors() {
        let sum = value("in + in");
        assert!(
            matches!(&sum, Value::Tensor(_, s) if s.0 == [8, 6, 3]),
            "{sum:?}"
        );
        let scaled = error("", "in * 2");
        assert_eq!(
            scaled.message,
            "cannot apply `*` to a tensor of shape [8, 6, 3] and the integer 2"
        );
        assert_eq!(scaled.at, "in * 2");
        assert_eq!(scaled.label, "a tensor of shape [8, 6, 3] * the integer 2");
    }

    #[test]
    fn as_names_calls_not_values() {
        let (value, errors) = fixture::eval("let x = 3", "x as y", Ctx::Argument);
        assert_eq!(value, Value::Int(3));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "`as` names a layer or block call");
        assert_eq!(
            (errors[0].at.as_str(), errors[0].label.as_str()),
            ("y", "`x` is a value, not a call")
        );
    }

    #[test]
    fn a_pipeline_applies_each_stage_and_rejects_values() {
        let (piped, errors) = fixture::eval("", "in -> flatten -> dense(5)", Ctx::Statement);
        assert_eq!(errors, []);
        assert!(
            matches!(&piped, Value::Tensor(_, s) if s.0 == [5]),
            "{piped:?}"
        );
        let stage = error("let k = 3", "in -> k");
        assert_eq!(stage.message, "a pipeline stage must be a layer or block");
        assert_eq!(stage.at, "k");
    }

    #[test]
    fn where_sets_entries_of_an_initializer() {
        let expected = Init::Set(
            Box::new(Init::Zeros),
            vec![
                (vec![Slice::All, Slice::At(1)], 1.0),
                (vec![Slice::Range(0, 2), Slice::At(0)], -0.5),
            ],
        );
        assert_eq!(
            value("zeros where [_, 1] = 1, [0..2, 0] = -0.5"),
            Value::Init(expected)
        );
        let unknown = error("", "zeroes where [0] = 1");
        assert_eq!(unknown.message, "unknown initializer `zeroes`");
        assert_eq!(unknown.notes, ["help: did you mean `zeros`?"]);
        let (_, errors) = fixture::eval("", "zeros where [0] = true", Ctx::Argument);
        assert_eq!(errors[0].message, "an entry's value must be a number");
        assert_eq!(errors[0].at, "true");
    }

    #[test]
    fn built_in_functions_make_integers_of_numbers() {
        // The input is [8, 6, 3].
        assert_eq!(value("int(in.channels * 0.5)"), Value::Int(1));
        assert_eq!(value("int(-2.7)"), Value::Int(-2));
        assert_eq!(value("round(2.5)"), Value::Int(2));
        assert_eq!(value("round(in.height * 0.3125)"), Value::Int(2));
        assert_eq!(value("floor(in.width / 4)"), Value::Int(1));
        assert_eq!(value("ceil(in.width / 4)"), Value::Int(2));
        assert_eq!(value("int(16)"), Value::Int(16));
    }

    #[test]
    fn min_max_len_and_sum_read_numbers_and_lists() {
        assert_eq!(value("min(in.height, in.width)"), Value::Int(6));
        assert_eq!(value("max(in.shape)"), Value::Int(8));
        assert_eq!(value("max(1, 2.5, 2)"), Value::Float(2.5));
        assert_eq!(value("len(in.shape)"), Value::Int(3));
        assert_eq!(value("sum(in.shape)"), Value::Int(17));
        assert_eq!(value("sum([0.5, 1])"), Value::Float(1.5));
        // They nest, and compute with the operators.
        assert_eq!(
            value("max(1, min(len([1, 2, 3]) * 2, sum([4, 4])))"),
            Value::Int(6)
        );
    }

    #[test]
    fn a_built_in_function_reports_its_argument_where_it_is() {
        let string = error("", "int(\"a\")");
        assert_eq!(string.message, "`int` needs a number");
        assert_eq!(
            (string.at.as_str(), string.label.as_str()),
            ("\"a\"", "this is the string \"a\"")
        );
        let none = error("", "min()");
        assert_eq!(none.message, "`min` needs at least one argument");
        assert_eq!(
            (none.at.as_str(), none.label.as_str()),
            ("min()", "no argument given")
        );
        let number = error("", "len(3)");
        assert_eq!(
            (number.message.as_str(), number.at.as_str()),
            ("`len` needs a list", "3")
        );
        // In a list written out, the element itself; else the whole list.
        let element = error("", "max([1, same])");
        assert_eq!(
            (element.at.as_str(), element.label.as_str()),
            ("same", "element 1 of the list is the name `same`")
        );
        let named = error("let xs = [1, true]", "sum(xs)");
        assert_eq!(
            (named.at.as_str(), named.label.as_str()),
            ("xs", "element 1 of the list is the boolean true")
        );
    }

    #[test]
    fn a_name_bound_like_a_function_is_a_value_and_a_call_is_still_the_function() {
        let (value, errors) = fixture::eval("let sum = 3", "sum + sum([1, 2])", Ctx::Argument);
        assert_eq!(errors, []);
        assert_eq!(value, Value::Int(6));
    }

    #[test]
    fn a_built_in_function_takes_no_names_and_no_as() {
        let named = error("", "int(x: 1.5)");
        assert_eq!(named.message, "`int` takes no named arguments");
        assert_eq!(named.at, "x");
        let alias = error("", "len([1]) as n");
        assert_eq!(alias.message, "`as` names a layer or block call");
        assert_eq!(
            (alias.at.as_str(), alias.label.as_str()),
            ("n", "`len` is a built-in function")
        );
    }

    #[test]
    fn a_float_that_holds_a_whole_number_shows_its_fraction_and_the_way_out() {
        let index = error("", "[1, 2, 3][in.channels / 1.5]");
        assert_eq!(
            index.message,
            "cannot index a list of 3 elements with the number 2.0"
        );
        assert_eq!(
            index.notes,
            ["help: 2.0 is a float, not an integer; `int(...)` makes it one"]
        );
        let errors = fixture::errors("model m : [8, 8, 4] {\n    conv(in.channels * 0.5, 1)\n}\n");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].label, "this is the number 2.0");
        assert_eq!(
            errors[0].notes,
            ["help: 2.0 is a float, not an integer; `int(...)` makes it one"]
        );
        let graph =
            fixture::graph("model m : [8, 8, 4] {\n    conv(int(in.channels * 0.5), 1)\n}\n");
        assert_eq!(fixture::node(&graph, "conv1").params[0].shape, [1, 1, 4, 2]);
    }

    #[test]
    fn an_inclusive_range_runs_to_its_end() {
        assert_eq!(value("2..=5"), ints(&[2, 3, 4, 5]));
        assert_eq!(value("3..=3"), ints(&[3]));
        assert_eq!(value("5..=4"), ints(&[]));
        assert_eq!(value("0..=len(in.shape) - 1"), ints(&[0, 1, 2]));
        assert_eq!(
            value("9223372036854775807..=9223372036854775807"),
            ints(&[i64::MAX])
        );
        let real = error("", "0..=in.channels / 1.5");
        assert_eq!(real.message, "a range needs integer bounds");
        assert_eq!(real.label, "the integer 0..=the number 2.0");
        assert_eq!(
            real.notes,
            ["help: 2.0 is a float, not an integer; `int(...)` makes it one"]
        );
        let long = error("", "0..=100000");
        assert_eq!(
            long.message,
            "the range has 100001 elements, more than 100000"
        );
        let longest = error("", "-9223372036854775807 - 1..=9223372036854775807");
        assert_eq!(
            longest.message,
            "the range has 18446744073709551616 elements, more than 100000"
        );
    }

    #[test]
    fn an_unknown_call_where_a_value_is_needed_is_taken_for_a_function() {
        // `lan` is one edit from `len` and from the layer `lrn`.
        for expr in [
            "in.channels - lan(in.shape)",
            "max(1, lan(in.shape))",
            "[1][lan(in.shape)]",
        ] {
            let unknown = error("", expr);
            assert_eq!(unknown.message, "unknown function `lan`", "{expr}");
            assert_eq!(unknown.label, "not a built-in function");
            assert_eq!(
                unknown.notes,
                [
                    "built-in functions: int, round, floor, ceil, min, max, len, sum",
                    "help: did you mean `len`?"
                ]
            );
        }
        // After a number, `*` multiplies numbers.
        let after_number = error("", "in.channels * flor(0.5)");
        assert_eq!(after_number.message, "unknown function `flor`");
        assert_eq!(after_number.notes[1], "help: did you mean `floor`?");
    }
}
