//! Structure-aware fuzzing of the front end: `arbitrary` builds a
//! [`Program`] from the fuzzer's bytes (its `use` items, blocks `b0`…`b3`,
//! one model and perhaps a train section, with statements, layer calls,
//! operators and nesting), and its `Display` prints it as `.cnn` source.
//!
//! Random text rarely gets past the parser; these programs parse by
//! construction (brackets nesting too deeply apart), and their names are
//! few and shared (`v0`…`v5` for every variable and parameter, the real
//! layers with their real argument names, the standard library's blocks),
//! so that most of them reach elaboration and shape inference, where the
//! values and shapes go wrong in interesting ways. Every enum lists a leaf
//! first: when the bytes run out, `arbitrary` picks the first variant, so
//! generation always ends.

use std::fmt::{self, Display, Formatter};

use arbitrary::Arbitrary;
use cnnc::elaborate::layers::{ACTIVATIONS, INITS, LAYERS};
use cnnc::elaborate::TRAIN_KEYS;

/// A generated `.cnn` file.
#[derive(Debug, Arbitrary)]
pub struct Program {
    uses: Vec<Module>,
    blocks: Vec<Block>,
    model: Model,
    train: Option<Vec<TrainEntry>>,
}

/// A standard library module, or one that does not exist.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Module {
    Se,
    Resnet,
    Inception,
    Xception,
    Vgg,
    Lenet,
    Alexnet,
    Missing,
}

/// `block bN(params) { body }`, N its position in the file.
#[derive(Debug, Arbitrary)]
struct Block {
    params: Vec<Param>,
    body: Vec<Stmt>,
}

/// `model m(params) : [h, w, c] { body }`.
#[derive(Debug, Arbitrary)]
struct Model {
    params: Vec<Param>,
    input: [Num; 3],
    body: Vec<Stmt>,
}

#[derive(Debug, Arbitrary)]
struct Param {
    name: Var,
    default: Option<Expr>,
}

/// `key: value` of the train section, its key mostly a real one.
#[derive(Debug, Arbitrary)]
struct TrainEntry {
    key: u8,
    value: Value,
}

/// A variable or parameter name, `v0` to `v5`.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Var(u8);

#[derive(Debug, Arbitrary)]
enum Stmt {
    Call(Call),
    Pipe(Call, Vec<Call>),
    Let(Var, Expr),
    Output(Var, Expr),
    For {
        index: Option<Var>,
        var: Var,
        iter: Iter,
        body: Vec<Stmt>,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Option<Vec<Stmt>>,
    },
    Expr(Expr),
    Residual(Vec<Call>),
}

/// What a `for` loop runs over.
#[derive(Debug, Arbitrary)]
enum Iter {
    Range(Num, Num),
    List(Vec<Value>),
    Expr(Expr),
}

/// `callee(args) as alias`, or a bare `callee` without arguments.
#[derive(Debug, Arbitrary)]
struct Call {
    callee: Callee,
    args: Vec<Arg>,
    bare: bool,
    alias: Option<Var>,
}

#[derive(Debug, Arbitrary)]
enum Callee {
    /// One of cnnc's primitive layers, by its index in `LAYERS`.
    Layer(u8),
    /// `b0` to `b3`: one of this file's blocks, or a block it lacks.
    Block(u8),
    /// A block or model of the standard library.
    Stdlib(u8),
    /// A variable called as a layer.
    Var(Var),
}

/// The standard library's blocks and models with their parameters.
const STDLIB: &[(&str, &[&str])] = &[
    ("se_block", &["ratio"]),
    ("residual_unit", &["filters", "stride"]),
    ("bottleneck_unit", &["filters", "stride", "project"]),
    ("inception", &["f1", "f3r", "f3", "f5r", "f5", "fp"]),
    ("vgg_block", &["filters", "convs"]),
    ("separable_bn", &["filters"]),
    ("aux_classifier", &["classes"]),
    ("lenet5", &["classes"]),
    ("fashion_cnn", &[]),
];

/// An argument; named ones mostly take one of the callee's own names.
#[derive(Debug, Arbitrary)]
enum Arg {
    Positional(Value),
    Named(u8, Value),
}

/// An argument's or an entry's value: mostly a plain number or symbol, so
/// that calls often succeed.
#[derive(Debug, Arbitrary)]
enum Value {
    Num(Num),
    Symbol(Symbol),
    List(Vec<Num>),
    Expr(Expr),
}

#[derive(Debug, Arbitrary)]
enum Expr {
    Num(Num),
    Bool(bool),
    Var(Var),
    Symbol(Symbol),
    Input,
    Field(Box<Expr>, Field),
    Index(Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Range(Box<Expr>, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Paren(Box<Expr>),
    If(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
    Record(Vec<(Var, Expr)>),
    Where(u8, Vec<(Vec<Option<Num>>, Num)>),
    Pipe(Box<Expr>, Vec<Call>),
    Call(Call),
    Str(bool),
}

/// A number: mostly a plausible size, sometimes any integer or float.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Num {
    Small(u8),
    Int(i64),
    Float(f64),
}

const SMALL: [i64; 16] = [1, 2, 3, 0, 4, 5, 7, 8, 16, 28, 32, 64, 10, 1, 2, 3];

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Field {
    Channels,
    Height,
    Width,
    Shape,
    Missing,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Symbol {
    Same,
    Valid,
    Activation(u8),
    Init(u8),
    Accuracy,
    Missing,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

/// A train section's key: one of those it takes, or one that it does not.
fn train_key(i: u8) -> &'static str {
    TRAIN_KEYS
        .get(usize::from(i) % (TRAIN_KEYS.len() + 1))
        .copied()
        .unwrap_or("colour")
}

fn pick<T: Copy>(items: &[T], i: u8) -> T {
    items[usize::from(i) % items.len()]
}

impl Display for Program {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for module in &self.uses {
            writeln!(f, "use {module}")?;
        }
        for (i, block) in self.blocks.iter().enumerate() {
            write!(f, "block b{i}")?;
            if !block.params.is_empty() {
                write!(f, "(")?;
                comma_separated(f, &block.params)?;
                write!(f, ")")?;
            }
            body(f, &block.body, 0)?;
            writeln!(f)?;
        }
        let model = &self.model;
        write!(f, "model m")?;
        if !model.params.is_empty() {
            write!(f, "(")?;
            comma_separated(f, &model.params)?;
            write!(f, ")")?;
        }
        let [h, w, c] = &model.input;
        write!(f, " : [{h}, {w}, {c}]")?;
        body(f, &model.body, 0)?;
        writeln!(f)?;
        if let Some(entries) = &self.train {
            writeln!(f, "train {{")?;
            for entry in entries {
                writeln!(f, "    {}: {}", train_key(entry.key), entry.value)?;
            }
            writeln!(f, "}}")?;
        }
        Ok(())
    }
}

/// `{`, the statements one per line at `depth + 1`, `}`.
fn body(f: &mut Formatter<'_>, stmts: &[Stmt], depth: usize) -> fmt::Result {
    writeln!(f, " {{")?;
    for stmt in stmts {
        write!(f, "{:1$}", "", (depth + 1) * 4)?;
        stmt.write(f, depth + 1)?;
        writeln!(f)?;
    }
    write!(f, "{:1$}}}", "", depth * 4)
}

fn comma_separated<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Stmt {
    fn write(&self, f: &mut Formatter<'_>, depth: usize) -> fmt::Result {
        match self {
            Stmt::Call(call) => write!(f, "{call}"),
            Stmt::Pipe(first, rest) => {
                write!(f, "{first}")?;
                rest.iter().try_for_each(|call| write!(f, " -> {call}"))
            }
            Stmt::Let(var, value) => write!(f, "let {var} = {value}"),
            Stmt::Output(var, value) => write!(f, "output {var} = {value}"),
            Stmt::For {
                index,
                var,
                iter,
                body: stmts,
            } => {
                write!(f, "for ")?;
                if let Some(index) = index {
                    write!(f, "{index}, ")?;
                }
                write!(f, "{var} in {iter}")?;
                body(f, stmts, depth)
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                write!(f, "if {cond}")?;
                body(f, then, depth)?;
                if let Some(otherwise) = otherwise {
                    write!(f, " else")?;
                    body(f, otherwise, depth)?;
                }
                Ok(())
            }
            Stmt::Expr(expr) => write!(f, "{expr}"),
            // `in + (in -> calls)`: a residual connection.
            Stmt::Residual(calls) => {
                write!(f, "in + (in")?;
                calls.iter().try_for_each(|call| write!(f, " -> {call}"))?;
                write!(f, ")")
            }
        }
    }
}

impl Display for Module {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Module::Se => "se",
            Module::Resnet => "resnet",
            Module::Inception => "inception",
            Module::Xception => "xception",
            Module::Vgg => "vgg",
            Module::Lenet => "lenet",
            Module::Alexnet => "alexnet",
            Module::Missing => "missing.module",
        })
    }
}

impl Display for Param {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.default {
            Some(default) => write!(f, "{} = {default}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

impl Display for Var {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0 % 6)
    }
}

impl Display for Iter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Iter::Range(from, to) => write!(f, "{from}..{to}"),
            Iter::List(values) => {
                write!(f, "[")?;
                comma_separated(f, values)?;
                write!(f, "]")
            }
            Iter::Expr(expr) => write!(f, "{expr}"),
        }
    }
}

impl Callee {
    /// The name called, and the names its arguments may have.
    fn name_and_params(&self) -> (String, Vec<String>) {
        match self {
            Callee::Layer(i) => {
                let (name, args) = pick(LAYERS, *i);
                let params = args.iter().map(|a| a.name.to_string()).collect();
                (name.to_string(), params)
            }
            Callee::Block(i) => {
                let params = (0..6).map(|v| Var(v).to_string()).collect();
                (format!("b{}", i % 5), params)
            }
            Callee::Stdlib(i) => {
                let (name, params) = pick(STDLIB, *i);
                (
                    name.to_string(),
                    params.iter().map(|p| p.to_string()).collect(),
                )
            }
            Callee::Var(var) => (var.to_string(), Vec::new()),
        }
    }
}

impl Display for Call {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (name, params) = self.callee.name_and_params();
        write!(f, "{name}")?;
        if !(self.bare && self.args.is_empty()) {
            write!(f, "(")?;
            for (i, arg) in self.args.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                match arg {
                    Arg::Positional(value) => write!(f, "{value}")?,
                    Arg::Named(n, value) => {
                        // One name in eight is none of the callee's.
                        let name = match params.len() {
                            len if len > 0 && n % 8 != 7 => &params[usize::from(*n) % len],
                            _ => "colour",
                        };
                        write!(f, "{name}: {value}")?
                    }
                }
            }
            write!(f, ")")?;
        }
        if let Some(alias) = self.alias {
            write!(f, " as {alias}")?;
        }
        Ok(())
    }
}

impl Display for Value {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Symbol(s) => write!(f, "{s}"),
            Value::List(items) => {
                write!(f, "[")?;
                comma_separated(f, items)?;
                write!(f, "]")
            }
            Value::Expr(e) => write!(f, "{e}"),
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Var(v) => write!(f, "{v}"),
            Expr::Symbol(s) => write!(f, "{s}"),
            Expr::Input => write!(f, "in"),
            Expr::Field(e, field) => write!(f, "{e}.{field}"),
            Expr::Index(e, i) => write!(f, "{e}[{i}]"),
            Expr::List(items) => {
                write!(f, "[")?;
                comma_separated(f, items)?;
                write!(f, "]")
            }
            Expr::Range(a, b) => write!(f, "{a}..{b}"),
            Expr::Binary(op, a, b) => write!(f, "{a} {op} {b}"),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Paren(e) => write!(f, "({e})"),
            Expr::If(cond, then, otherwise) => {
                write!(f, "if {cond} {{ {then} }}")?;
                match otherwise {
                    Some(otherwise) => write!(f, " else {{ {otherwise} }}"),
                    None => Ok(()),
                }
            }
            Expr::Record(fields) => {
                write!(f, "(")?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    write!(f, "{sep}{key}: {value}")?;
                }
                // `()` is no record: an empty one prints as one field.
                if fields.is_empty() {
                    write!(f, "v0: 1")?;
                }
                write!(f, ")")
            }
            Expr::Where(init, entries) => where_clause(f, *init, entries),
            Expr::Pipe(head, calls) => {
                write!(f, "{head}")?;
                calls.iter().try_for_each(|call| write!(f, " -> {call}"))
            }
            Expr::Call(call) => write!(f, "{call}"),
            Expr::Str(known) => f.write_str(if *known { "\"se\"" } else { "\"x.cnn\"" }),
        }
    }
}

/// `init where [i, _, ...] = v, ...`; a clause without entries prints as
/// the bare initializer.
fn where_clause(
    f: &mut Formatter<'_>,
    init: u8,
    entries: &[(Vec<Option<Num>>, Num)],
) -> fmt::Result {
    write!(f, "{}", pick(INITS, init))?;
    for (i, (index, value)) in entries.iter().enumerate() {
        write!(f, "{}[", if i == 0 { " where " } else { ", " })?;
        for (j, slot) in index.iter().enumerate() {
            let sep = if j > 0 { ", " } else { "" };
            match slot {
                Some(n) => write!(f, "{sep}{n}")?,
                None => write!(f, "{sep}_")?,
            }
        }
        write!(f, "] = {value}")?;
    }
    Ok(())
}

impl Display for Num {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match *self {
            Num::Small(i) => write!(f, "{}", pick(&SMALL, i)),
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            Num::Float(_) => write!(f, "1e999"),
        }
    }
}

impl Display for Field {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Channels => "channels",
            Field::Height => "height",
            Field::Width => "width",
            Field::Shape => "shape",
            Field::Missing => "depth",
        })
    }
}

impl Display for Symbol {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match *self {
            Symbol::Same => f.write_str("same"),
            Symbol::Valid => f.write_str("valid"),
            Symbol::Activation(i) => f.write_str(pick(ACTIVATIONS, i)),
            Symbol::Init(i) => f.write_str(pick(INITS, i)),
            Symbol::Accuracy => f.write_str("accuracy"),
            Symbol::Missing => f.write_str("smae"),
        }
    }
}

impl Display for BinOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
        })
    }
}
