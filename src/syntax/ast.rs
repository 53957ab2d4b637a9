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
    /// `for [index,] var in iter { body }`.
    For {
        /// The optional index variable.
        index: Option<Ident>,
        /// The element variable.
        var: Ident,
        /// A list or a range.
        iter: Expr,
        /// The repeated statements.
        body: Vec<Stmt>,
    },
    /// An expression whose value becomes the current tensor.
    Expr(Expr),
}

/// An expression with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
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
    /// `start..end`.
    Range(Box<Expr>, Box<Expr>),
    /// `if cond { then } else { otherwise }`.
    If(Box<Expr>, Vec<Stmt>, Option<Vec<Stmt>>),
    /// `init where [i, j] = v, ...`: an initializer with entries set.
    Where(Box<Expr>, Vec<(Expr, Expr)>),
}

/// A call of a layer or a block.
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
