//! The spanned abstract syntax tree of a `.cnn` file.
//!
//! Every node carries the [`Span`] it was parsed from, so that later stages
//! can point at the exact source of a problem.

use crate::diagnostics::Span;

/// A parsed file: its items in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// `use`, `block`, `model` and `train` items.
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `use resnet` or `use "path.cnn"`.
    Use(Use),
    /// `block name(params) { ... }`.
    Block(Definition),
    /// `model name(params) : [h, w, c] { ... }`.
    Model(Definition),
    /// `train [model] { key: value ... }`.
    Train(Train),
}

/// An import.
#[derive(Debug, Clone, PartialEq)]
pub struct Use {
    /// What is imported.
    pub target: UseTarget,
    /// The whole item.
    pub span: Span,
}

/// The two forms of import.
#[derive(Debug, Clone, PartialEq)]
pub enum UseTarget {
    /// `use blocks.se`: a module, next to the file or in the stdlib.
    Module(String),
    /// `use "dir/file.cnn"`: a path relative to the importing file.
    Path(String),
}

/// A block or a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Its name.
    pub name: Ident,
    /// Formal parameters.
    pub params: Vec<Param>,
    /// A model's declared input shape (a list expression); `None` for blocks.
    pub input: Option<Expr>,
    /// The statements of the body.
    pub body: Vec<Stmt>,
    /// The whole item.
    pub span: Span,
}

/// A formal parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: Ident,
    /// Its default value, if it has one.
    pub default: Option<Expr>,
}

/// A training section.
#[derive(Debug, Clone, PartialEq)]
pub struct Train {
    /// The model it configures, when named.
    pub model: Option<Ident>,
    /// `key: value` entries in source order.
    pub entries: Vec<(Ident, Expr)>,
    /// The whole item.
    pub span: Span,
}

/// A name with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// A statement of a block or model body.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `let name = value`.
    Let(Ident, Expr),
    /// `output name = value`.
    Output(Ident, Expr),
    /// `for [index,] var in iter { body }`, where `var` may unpack: `(a, b)`.
    For {
        /// The optional index variable.
        index: Option<Ident>,
        /// What each element is bound to.
        var: ForVar,
        /// A list or a range.
        iter: Expr,
        /// The repeated statements.
        body: Vec<Stmt>,
    },
    /// An expression whose value becomes the current tensor.
    Expr(Expr),
}

/// What a `for` loop binds each element to.
#[derive(Debug, Clone, PartialEq)]
pub enum ForVar {
    /// `for x in ...`: the element itself.
    Name(Ident),
    /// `for (a, b) in ...`: the element, a list, unpacked into one name per
    /// item (at least two names); the span covers the parentheses.
    Unpack(Vec<Ident>, Span),
}

impl ForVar {
    /// The names it binds, in order.
    pub fn names(&self) -> &[Ident] {
        match self {
            ForVar::Name(name) => std::slice::from_ref(name),
            ForVar::Unpack(names, _) => names,
        }
    }
}

/// An expression with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

impl Drop for Expr {
    /// Drops the expressions below this one from a stack on the heap rather
    /// than by recursion: `1 + 1 + ... + 1` is left-nested, one level per
    /// operator, and a long line of them would overflow the stack when the
    /// parser drops it (after rejecting it as nested too deeply).
    fn drop(&mut self) {
        let mut below = Vec::new();
        take_children(&mut self.kind, &mut below);
        while let Some(mut expr) = below.pop() {
            // Emptied, `expr` then drops without recursing.
            take_children(&mut expr.kind, &mut below);
        }
    }
}

/// Moves the expressions directly below `kind` that have expressions
/// below them in turn onto `below`, leaving leaves in their place.
fn take_children(kind: &mut ExprKind, below: &mut Vec<Expr>) {
    let mut take = |expr: &mut Expr| {
        if !expr.is_leaf() {
            let leaf = Expr {
                kind: ExprKind::Input,
                span: expr.span,
            };
            below.push(std::mem::replace(expr, leaf));
        }
    };
    match kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Input
        | ExprKind::Name(..) => {}
        ExprKind::List(items) => items.iter_mut().for_each(take),
        ExprKind::Record(fields) => fields.iter_mut().for_each(|(_, e)| take(e)),
        ExprKind::Call(call) => call.args.iter_mut().for_each(|a| take(&mut a.value)),
        ExprKind::Pipe(head, stages) => {
            take(head);
            stages.iter_mut().for_each(take);
        }
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) | ExprKind::Range(a, b, _) => {
            take(a);
            take(b);
        }
        ExprKind::Unary(_, a) | ExprKind::Field(a, _) => take(a),
        ExprKind::If(cond, then, otherwise) => {
            take(cond);
            for stmt in then.iter_mut().chain(otherwise.iter_mut().flatten()) {
                stmt.exprs_mut(&mut take);
            }
        }
        ExprKind::Where(init, assigns) => {
            take(init);
            for (index, value) in assigns {
                take(index);
                take(value);
            }
        }
    }
}

impl Expr {
    /// Whether no expression lies below this one.
    fn is_leaf(&self) -> bool {
        matches!(
            self.kind,
            ExprKind::Int(_)
                | ExprKind::Float(_)
                | ExprKind::Str(_)
                | ExprKind::Bool(_)
                | ExprKind::Input
                | ExprKind::Name(..)
        )
    }
}

impl Stmt {
    /// Calls `f` on each expression of this statement, those of a `for`
    /// body included (bodies nest only inside brackets, which the parser
    /// bounds, so this recursion is shallow).
    fn exprs_mut(&mut self, f: &mut impl FnMut(&mut Expr)) {
        match self {
            Stmt::Let(_, e) | Stmt::Output(_, e) | Stmt::Expr(e) => f(e),
            Stmt::For { iter, body, .. } => {
                f(iter);
                body.iter_mut().for_each(|stmt| stmt.exprs_mut(f));
            }
        }
    }
}

/// The kinds of expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// An integer literal.
    Int(i64),
    /// A literal with a fraction or an exponent.
    Float(f64),
    /// A string literal (without the quotes).
    Str(String),
    /// `true` or `false`.
    Bool(bool),
    /// `[a, b, c]`.
    List(Vec<Expr>),
    /// `(key: value, ...)`.
    Record(Vec<(Ident, Expr)>),
    /// `in`: the block's input tensor.
    Input,
    /// A bare name: a bound value, or else a call without arguments.
    Name(Ident, Option<Ident>),
    /// `f(args) [as name]`.
    Call(Call),
    /// `head -> stage -> stage`; each stage is a `Name` or a `Call`.
    Pipe(Box<Expr>, Vec<Expr>),
    /// `lhs op rhs`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `-x` or `not x`.
    Unary(UnOp, Box<Expr>),
    /// `x.field`.
    Field(Box<Expr>, Ident),
    /// `x[index]`.
    Index(Box<Expr>, Box<Expr>),
    /// `start..end`, or `start..=end` when the flag is [`RangeEnd::Included`].
    Range(Box<Expr>, Box<Expr>, RangeEnd),
    /// `if cond { then } else { otherwise }`.
    If(Box<Expr>, Vec<Stmt>, Option<Vec<Stmt>>),
    /// `init where [i, j] = v, ...`: an initializer with entries set.
    Where(Box<Expr>, Vec<(Expr, Expr)>),
}

/// Whether a range includes its end: `0..n` or `0..=n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeEnd {
    /// `a..b`: up to `b`, excluded.
    Excluded,
    /// `a..=b`: up to `b`, included.
    Included,
}

impl RangeEnd {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            RangeEnd::Excluded => "..",
            RangeEnd::Included => "..=",
        }
    }
}

/// A call of a layer, a block or a built-in function.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// What is called.
    pub callee: Ident,
    /// Its arguments.
    pub args: Vec<Arg>,
    /// `as name`.
    pub alias: Option<Ident>,
}

/// An actual argument, positional or named.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// `name:` when given by name.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `//`
    FloorDiv,
    /// `%`
    Rem,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
        }
    }
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `not x`
    Not,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `- - - ... 1`, `depth` negations deep.
    fn negations(depth: usize) -> Expr {
        let mut expr = Expr {
            kind: ExprKind::Int(1),
            span: Span::default(),
        };
        for _ in 0..depth {
            expr = Expr {
                kind: ExprKind::Unary(UnOp::Neg, Box::new(expr)),
                span: Span::default(),
            };
        }
        expr
    }

    #[test]
    fn a_deep_expression_drops_on_a_small_stack() {
        // Dropped by recursion, a million levels take far more than 2 MiB.
        let dropped = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| drop(negations(1_000_000)))
            .expect("a thread")
            .join();
        assert!(dropped.is_ok());
    }

    fn name(name: &str) -> Ident {
        Ident {
            name: name.into(),
            span: Span::default(),
        }
    }

    fn expr(kind: ExprKind) -> Expr {
        Expr {
            kind,
            span: Span::default(),
        }
    }

    #[test]
    fn every_expression_below_is_taken_for_dropping() {
        // f([if -1 { for x in -1 { -1 } } else { -1 }, -1, 2]): seven
        // expressions below the call have expressions below them in turn.
        let body = vec![Stmt::For {
            index: None,
            var: ForVar::Name(name("x")),
            iter: negations(1),
            body: vec![Stmt::Expr(negations(1))],
        }];
        let conditional = ExprKind::If(
            Box::new(negations(1)),
            body,
            Some(vec![Stmt::Expr(negations(1))]),
        );
        let list = ExprKind::List(vec![
            expr(conditional),
            negations(1),
            expr(ExprKind::Int(2)),
        ]);
        let mut call = expr(ExprKind::Call(Call {
            callee: name("f"),
            args: vec![Arg {
                name: None,
                value: expr(list),
            }],
            alias: None,
        }));
        let mut below = Vec::new();
        let mut taken = 0;
        take_children(&mut call.kind, &mut below);
        while let Some(mut next) = below.pop() {
            taken += 1;
            take_children(&mut next.kind, &mut below);
        }
        assert_eq!(taken, 7);
    }
}
