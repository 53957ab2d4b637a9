//! Values of the elaboration-time language: numbers, lists, tensors...

use petgraph::stable_graph::NodeIndex;

use crate::diagnostics::Span;
use crate::graph::{Init, Shape};
use crate::syntax::ast::BinOp;

/// The most elements a list built by `..`, `+` or `*` may have; a larger one
/// is almost certainly a mistake, and would exceed the work a model may take
/// to elaborate anyway (`MAX_WORK`, which counts the elements of lists).
pub const MAX_LIST: usize = 100_000;

/// An argument of a configuration call: its optional name and its value.
pub type NamedArg = (Option<String>, Spanned);

/// A value computed while elaborating.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A string.
    Str(String),
    /// An unbound bare name used as an argument: `same`, `relu`, `he_normal`.
    Symbol(String),
    /// A list.
    List(Vec<Value>),
    /// `(key: value, ...)`.
    Record(Vec<(String, Spanned)>),
    /// A tensor: a node of the graph with its shape.
    Tensor(NodeIndex, Shape),
    /// A configuration call of the train section: `nadam(lr: 0.001)`.
    Config(String, Vec<NamedArg>),
    /// An initializer with entries set (`zeros where [...] = 1`).
    Init(Init),
    /// The result of an expression that already had an error: it is
    /// accepted everywhere and makes no further errors.
    Poison,
}

/// A value with the span of the expression that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    /// The value.
    pub value: Value,
    /// Where it came from.
    pub span: Span,
}

impl Value {
    /// What kind of value this is, for messages ("a number", "a tensor of shape [..]").
    pub fn describe(&self) -> String {
        match self {
            Value::Int(i) => format!("the integer {i}"),
            Value::Float(x) => format!("the number {}", float(*x)),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Str(s) => format!("the string \"{s}\""),
            Value::Symbol(s) => format!("the name `{s}`"),
            Value::List(l) => format!("a list of {} elements", l.len()),
            Value::Record(_) => "a record".to_string(),
            Value::Tensor(_, shape) => format!("a tensor of shape {shape}"),
            Value::Config(name, _) => format!("`{name}(...)`"),
            Value::Init(_) => "an initializer".to_string(),
            Value::Poison => "an erroneous value".to_string(),
        }
    }

    /// The value as an f64, for integers and floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }
}

/// A float as messages write it: with a fraction always, so that a float
/// that holds a whole number (`128.0`) is not taken for an integer (`128`).
pub fn float(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// A hint for `value`, given where an integer is needed, when it is a
/// float: one that holds a whole number (`in.channels * 0.5` is `64.0`)
/// still needs `int(...)`; a fraction needs rounding one way or another.
pub fn integer_help(value: &Value) -> Option<String> {
    match value {
        Value::Float(x) if x.is_finite() && x.fract() == 0.0 => Some(format!(
            "help: {} is a float, not an integer; `int(...)` makes it one",
            float(*x)
        )),
        Value::Float(_) => {
            Some("help: `int(...)` truncates a number to an integer, `round(...)` rounds it".into())
        }
        _ => None,
    }
}

/// Arithmetic, comparison and list operations on non-tensor values; the
/// error is a one-line message.
pub fn binary(op: BinOp, lhs: &Value, rhs: &Value) -> Result<Value, String> {
    use Value::{Bool, Int, List};
    let overflow = || format!("integer overflow in `{}`", op.symbol());
    match (op, lhs, rhs) {
        (BinOp::And, Bool(a), Bool(b)) => Ok(Bool(*a && *b)),
        (BinOp::Or, Bool(a), Bool(b)) => Ok(Bool(*a || *b)),
        (BinOp::Eq, a, b) => Ok(Bool(equal(a, b))),
        (BinOp::Ne, a, b) => Ok(Bool(!equal(a, b))),
        (BinOp::Add, List(a), List(b)) => {
            if a.len() + b.len() > MAX_LIST {
                return Err(format!("the list would have more than {MAX_LIST} elements"));
            }
            Ok(List(a.iter().chain(b).cloned().collect()))
        }
        (BinOp::Mul, List(items), Int(n)) | (BinOp::Mul, Int(n), List(items)) => {
            let n = usize::try_from(*n).map_err(|_| {
                "a list can only be repeated a non-negative number of times".to_string()
            })?;
            if items.len().saturating_mul(n) > MAX_LIST {
                return Err(format!("the list would have more than {MAX_LIST} elements"));
            }
            Ok(List(
                items
                    .iter()
                    .cloned()
                    .cycle()
                    .take(items.len() * n)
                    .collect(),
            ))
        }
        (_, Int(a), Int(b)) => {
            int_op(op, *a, *b).map_err(|e| if e.is_empty() { overflow() } else { e })
        }
        (_, a, b) if a.as_f64().is_some() && b.as_f64().is_some() => {
            // Both are numbers, checked just above.
            float_op(
                op,
                a.as_f64().unwrap_or_default(),
                b.as_f64().unwrap_or_default(),
            )
        }
        _ => Err(format!(
            "cannot apply `{}` to {} and {}",
            op.symbol(),
            lhs.describe(),
            rhs.describe()
        )),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Integer arithmetic; an empty error string means overflow.
fn int_op(op: BinOp, a: i64, b: i64) -> Result<Value, String> {
    let zero = || Err("division by zero".to_string());
    let v = match op {
        BinOp::Add => a.checked_add(b),
        BinOp::Sub => a.checked_sub(b),
        BinOp::Mul => a.checked_mul(b),
        BinOp::Div if b == 0 => return zero(),
        BinOp::Div => {
            // Exact divisions stay integers (`channels / ratio`); others become real.
            return match a.checked_rem(b) {
                Some(0) => a.checked_div(b).map(Value::Int).ok_or_default(),
                Some(_) => Ok(Value::Float(a as f64 / b as f64)),
                None => Err(String::new()),
            };
        }
        BinOp::FloorDiv if b == 0 => return zero(),
        // Floor division rounds towards negative infinity, as in Python.
        BinOp::FloorDiv => a.checked_div(b).map(|q| {
            if a % b != 0 && ((a < 0) != (b < 0)) {
                q - 1
            } else {
                q
            }
        }),
        BinOp::Rem if b == 0 => return zero(),
        BinOp::Rem => a.checked_rem_euclid(b),
        BinOp::Lt => return Ok(Value::Bool(a < b)),
        BinOp::Le => return Ok(Value::Bool(a <= b)),
        BinOp::Gt => return Ok(Value::Bool(a > b)),
        BinOp::Ge => return Ok(Value::Bool(a >= b)),
        BinOp::And | BinOp::Or | BinOp::Eq | BinOp::Ne => {
            return Err(format!("cannot apply `{}` to integers", op.symbol()))
        }
    };
    v.map(Value::Int).ok_or_default()
}

fn float_op(op: BinOp, a: f64, b: f64) -> Result<Value, String> {
    let v = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div | BinOp::FloorDiv | BinOp::Rem if b == 0.0 => {
            return Err("division by zero".into())
        }
        BinOp::Div => a / b,
        BinOp::FloorDiv => (a / b).floor(),
        BinOp::Rem => a.rem_euclid(b),
        BinOp::Lt => return Ok(Value::Bool(a < b)),
        BinOp::Le => return Ok(Value::Bool(a <= b)),
        BinOp::Gt => return Ok(Value::Bool(a > b)),
        BinOp::Ge => return Ok(Value::Bool(a >= b)),
        BinOp::And | BinOp::Or | BinOp::Eq | BinOp::Ne => {
            return Err(format!("cannot apply `{}` to numbers", op.symbol()))
        }
    };
    if v.is_finite() {
        Ok(Value::Float(v))
    } else {
        Err(format!(
            "the result of `{}` is not a finite number",
            op.symbol()
        ))
    }
}

trait OkOrDefault<T> {
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OkOrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_always_shows_a_fraction() {
        assert_eq!(Value::Float(128.0).describe(), "the number 128.0");
        assert_eq!(Value::Float(-3.0).describe(), "the number -3.0");
        assert_eq!(Value::Float(0.25).describe(), "the number 0.25");
        assert_eq!(Value::Int(128).describe(), "the integer 128");
        assert_eq!(float(1e20), "100000000000000000000.0");
        assert_eq!(float(f64::INFINITY), "inf");
    }

    #[test]
    fn a_float_where_an_integer_is_needed_gets_a_hint() {
        assert_eq!(
            integer_help(&Value::Float(64.0)).as_deref(),
            Some("help: 64.0 is a float, not an integer; `int(...)` makes it one")
        );
        assert_eq!(
            integer_help(&Value::Float(2.5)).as_deref(),
            Some("help: `int(...)` truncates a number to an integer, `round(...)` rounds it")
        );
        assert_eq!(integer_help(&Value::Int(3)), None);
        assert_eq!(integer_help(&Value::Symbol("same".into())), None);
    }
}
