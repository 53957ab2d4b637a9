//! The built-in functions of expressions: `int`, `round`, `floor`, `ceil`,
//! `min`, `max`, `len` and `sum`, which compute a value from values
//! (`conv(int(in.channels * 0.5), 1)`).
//!
//! They hold no elaborator state: the elaborator evaluates the arguments,
//! calls [`call`], and reports a [`FunctionError`] at the place it names.
//! Their names are reserved: a block cannot take one, so that a call of
//! `max(...)` always means the same thing.

use super::value::{float, Value};

/// The built-in functions, in the order the documentation lists them.
pub const FUNCTIONS: [&str; 8] = ["int", "round", "floor", "ceil", "min", "max", "len", "sum"];

/// Whether `name` is a built-in function.
pub fn is_function(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

/// What function `name` computes, in one line, for notes.
pub fn usage(name: &str) -> &'static str {
    match name {
        "int" => "`int(x)` is the number `x` truncated toward zero: `int(2.7)` is 2, `int(-2.7)` is -2",
        "round" => {
            "`round(x)` is the integer nearest to `x`, a half going to the even one \
             as in Python: `round(2.5)` is 2, `round(3.5)` is 4"
        }
        "floor" => "`floor(x)` is the largest integer not above `x`",
        "ceil" => "`ceil(x)` is the smallest integer not below `x`",
        "min" => {
            "`min(a, b, ...)` is the smallest of its arguments; `min(list)` the smallest element of a list"
        }
        "max" => {
            "`max(a, b, ...)` is the largest of its arguments; `max(list)` the largest element of a list"
        }
        "len" => "`len(list)` is the number of elements of a list",
        "sum" => "`sum(list)` adds the numbers of a list (0 for an empty list)",
        _ => "built-in functions: int, round, floor, ceil, min, max, len, sum",
    }
}

/// Where a [`FunctionError`] lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The call as a whole.
    Call,
    /// The positional argument at this index.
    Arg(usize),
    /// Element `.1` of the list given as positional argument `.0`.
    Element(usize, usize),
}

/// Why a call of a built-in function has no value.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionError {
    /// Where the fault is.
    pub place: Place,
    /// The one-line message.
    pub message: String,
    /// The label at the fault.
    pub label: String,
    /// Notes and hints.
    pub notes: Vec<String>,
}

impl FunctionError {
    fn new(place: Place, message: impl Into<String>, label: impl Into<String>) -> FunctionError {
        FunctionError {
            place,
            message: message.into(),
            label: label.into(),
            notes: Vec::new(),
        }
    }

    fn with_note(mut self, note: impl Into<String>) -> FunctionError {
        self.notes.push(note.into());
        self
    }
}

/// Calls built-in function `name` on the positional arguments `args`. An
/// argument, or an element of a list argument, that is [`Value::Poison`]
/// (an error reported already) makes the result poison, without an error.
pub fn call(name: &str, args: &[Value]) -> Result<Value, FunctionError> {
    if args.iter().any(is_poisoned) {
        return Ok(Value::Poison);
    }
    match name {
        "int" | "round" | "floor" | "ceil" => to_integer(name, one(name, args)?),
        "min" | "max" => extremum(name, args),
        "len" => length(one(name, args)?),
        "sum" => total(one(name, args)?),
        _ => Err(FunctionError::new(
            Place::Call,
            format!("`{name}` is not a built-in function"),
            "here",
        )
        .with_note(usage(""))),
    }
}

/// Whether `value` is poison, or a list with a poisoned element.
fn is_poisoned(value: &Value) -> bool {
    match value {
        Value::Poison => true,
        Value::List(items) => items.contains(&Value::Poison),
        _ => false,
    }
}

/// The only argument of a call of `name`, which takes one.
fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FunctionError> {
    match args {
        [only] => Ok(only),
        [] => Err(FunctionError::new(
            Place::Call,
            format!("`{name}` needs an argument"),
            "no argument given",
        )
        .with_note(usage(name))),
        [_, ..] => Err(FunctionError::new(
            Place::Arg(1),
            format!("too many arguments: `{name}` takes one"),
            "extra argument",
        )
        .with_note(usage(name))),
    }
}

/// `int`, `round`, `floor` and `ceil`: an integer from a number.
fn to_integer(name: &str, x: &Value) -> Result<Value, FunctionError> {
    let x = match x {
        Value::Int(i) => return Ok(Value::Int(*i)),
        Value::Float(x) => *x,
        other => {
            return Err(FunctionError::new(
                Place::Arg(0),
                format!("`{name}` needs a number"),
                format!("this is {}", other.describe()),
            )
            .with_note(usage(name)))
        }
    };
    let whole = match name {
        "round" => x.round_ties_even(),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        _ => x.trunc(),
    };
    // i64's range is [-2^63, 2^63); both bounds are exact in f64, and the
    // comparisons are false for NaN.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if (-LIMIT..LIMIT).contains(&whole) {
        // In range and whole, so the conversion is exact.
        Ok(Value::Int(whole as i64))
    } else {
        Err(FunctionError::new(
            Place::Call,
            "integer overflow",
            format!("`{name}` of {} does not fit in 64 bits", float(x)),
        ))
    }
}

/// `min` and `max`: of several numbers, or of the numbers of one list.
/// Of equal numbers the first is kept, as in Python (`max(2, 2.0)` is 2).
fn extremum(name: &str, args: &[Value]) -> Result<Value, FunctionError> {
    let (items, of_list) = match args {
        [] => {
            return Err(FunctionError::new(
                Place::Call,
                format!("`{name}` needs at least one argument"),
                "no argument given",
            )
            .with_note(usage(name)))
        }
        [Value::List(items)] => (items.as_slice(), true),
        [other] => {
            return Err(FunctionError::new(
                Place::Arg(0),
                format!("`{name}` of one argument needs a list"),
                format!("this is {}", other.describe()),
            )
            .with_note(usage(name)))
        }
        several => (several, false),
    };
    if items.is_empty() {
        return Err(FunctionError::new(
            Place::Arg(0),
            format!("`{name}` of an empty list"),
            "this list has no elements",
        )
        .with_note(usage(name)));
    }
    let place = |i| {
        if of_list {
            Place::Element(0, i)
        } else {
            Place::Arg(i)
        }
    };
    let mut best = &items[0];
    for (i, item) in items.iter().enumerate() {
        if !matches!(item, Value::Int(_) | Value::Float(_)) {
            return Err(not_a_number(name, "compares numbers", place(i), item));
        }
        let better = if name == "min" {
            less(item, best)
        } else {
            less(best, item)
        };
        if better {
            best = item;
        }
    }
    Ok(best.clone())
}

/// Whether number `a` is less than number `b`; integers are compared
/// exactly, not as f64.
fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => a < b,
        _ => a.as_f64() < b.as_f64(),
    }
}

/// `len`: the number of elements of a list.
fn length(x: &Value) -> Result<Value, FunctionError> {
    match x {
        Value::List(items) => Ok(Value::Int(items.len() as i64)),
        other => {
            let error = FunctionError::new(
                Place::Arg(0),
                "`len` needs a list",
                format!("this is {}", other.describe()),
            );
            Err(match other {
                Value::Tensor(..) => error.with_note(
                    "help: a tensor's dimensions are the list `x.shape`; their number is `x.rank`",
                ),
                _ => error.with_note(usage("len")),
            })
        }
    }
}

/// `sum`: the numbers of a list added: an integer if they all are.
fn total(x: &Value) -> Result<Value, FunctionError> {
    let Value::List(items) = x else {
        let error = FunctionError::new(
            Place::Arg(0),
            "`sum` needs a list",
            format!("this is {}", x.describe()),
        );
        return Err(
            error.with_note("help: `a + b` adds two values; `sum(list)` the elements of a list")
        );
    };
    if let Some((i, item)) = items
        .iter()
        .enumerate()
        .find(|(_, v)| !matches!(v, Value::Int(_) | Value::Float(_)))
    {
        return Err(not_a_number(
            "sum",
            "adds numbers",
            Place::Element(0, i),
            item,
        ));
    }
    let ints: Option<Vec<i64>> = items
        .iter()
        .map(|v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
        .collect();
    match ints {
        Some(ints) => ints
            .into_iter()
            .try_fold(0i64, i64::checked_add)
            .map(Value::Int)
            .ok_or_else(|| {
                FunctionError::new(
                    Place::Call,
                    "integer overflow in `sum`",
                    "the sum does not fit in 64 bits",
                )
            }),
        None => {
            let sum: f64 = items.iter().filter_map(Value::as_f64).sum();
            if sum.is_finite() {
                Ok(Value::Float(sum))
            } else {
                Err(FunctionError::new(
                    Place::Call,
                    "the result of `sum` is not a finite number",
                    "here",
                ))
            }
        }
    }
}

/// The error for `item`, at `place`, which is not a number: "`sum` adds numbers".
fn not_a_number(name: &str, does: &str, place: Place, item: &Value) -> FunctionError {
    let label = match place {
        Place::Element(_, i) => format!("element {i} of the list is {}", item.describe()),
        Place::Call | Place::Arg(_) => format!("this is {}", item.describe()),
    };
    FunctionError::new(place, format!("`{name}` {does}"), label).with_note(usage(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(values: &[i64]) -> Value {
        Value::List(values.iter().map(|&i| Value::Int(i)).collect())
    }

    fn ok(name: &str, args: &[Value]) -> Value {
        call(name, args).unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    fn err(name: &str, args: &[Value]) -> FunctionError {
        match call(name, args) {
            Err(e) => e,
            Ok(v) => panic!("{name}: expected an error, got {v:?}"),
        }
    }

    #[test]
    fn int_truncates_toward_zero_as_in_python() {
        let int = |x| ok("int", &[Value::Float(x)]);
        assert_eq!(int(2.7), Value::Int(2));
        assert_eq!(int(-2.7), Value::Int(-2));
        assert_eq!(int(128.0), Value::Int(128));
        assert_eq!(ok("int", &[Value::Int(-5)]), Value::Int(-5));
    }

    #[test]
    fn round_takes_halves_to_the_even_integer_as_in_python() {
        let round = |x| ok("round", &[Value::Float(x)]);
        let rounded: Vec<Value> = [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001]
            .map(round)
            .into();
        assert_eq!(rounded, [0, 2, 2, 0, -2, 2, 3].map(Value::Int));
    }

    #[test]
    fn floor_and_ceil_go_down_and_up() {
        let of = |name, x| ok(name, &[Value::Float(x)]);
        assert_eq!(
            [
                of("floor", 2.5),
                of("floor", -2.5),
                of("ceil", 2.5),
                of("ceil", -2.5)
            ],
            [2, -3, 3, -2].map(Value::Int)
        );
        assert_eq!(ok("ceil", &[Value::Int(7)]), Value::Int(7));
    }

    #[test]
    fn an_integer_of_a_huge_float_overflows() {
        let error = err("int", &[Value::Float(1e19)]);
        assert_eq!(error.place, Place::Call);
        assert_eq!(error.message, "integer overflow");
        assert_eq!(
            error.label,
            "`int` of 10000000000000000000.0 does not fit in 64 bits"
        );
        assert_eq!(
            ok("floor", &[Value::Float(-9_223_372_036_854_775_808.0)]),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            err("ceil", &[Value::Float(f64::INFINITY)]).message,
            "integer overflow"
        );
    }

    #[test]
    fn int_needs_one_number() {
        let string = err("int", &[Value::Str("a".into())]);
        assert_eq!(
            (string.place, string.message.as_str(), string.label.as_str()),
            (
                Place::Arg(0),
                "`int` needs a number",
                "this is the string \"a\""
            )
        );
        let none = err("round", &[]);
        assert_eq!(
            (none.place, none.label.as_str()),
            (Place::Call, "no argument given")
        );
        let two = err("floor", &[Value::Int(1), Value::Int(2)]);
        assert_eq!(
            (two.place, two.message.as_str()),
            (Place::Arg(1), "too many arguments: `floor` takes one")
        );
    }

    #[test]
    fn min_and_max_take_several_numbers_or_one_list() {
        let mixed = [Value::Int(3), Value::Float(1.5), Value::Int(7)];
        assert_eq!(ok("min", &mixed), Value::Float(1.5));
        assert_eq!(ok("max", &mixed), Value::Int(7));
        assert_eq!(ok("max", &[ints(&[4, 9, 2])]), Value::Int(9));
        assert_eq!(ok("min", &[ints(&[5])]), Value::Int(5));
        // Of equal numbers, the first.
        assert_eq!(
            ok("max", &[Value::Int(2), Value::Float(2.0)]),
            Value::Int(2)
        );
        // Integers beyond 2^53 compare exactly.
        let big = [Value::Int((1 << 53) + 1), Value::Int(1 << 53)];
        assert_eq!(ok("max", &big), Value::Int((1 << 53) + 1));
    }

    #[test]
    fn min_and_max_name_what_is_not_a_number() {
        let none = err("min", &[]);
        assert_eq!(
            (none.place, none.message.as_str()),
            (Place::Call, "`min` needs at least one argument")
        );
        let one = err("max", &[Value::Int(3)]);
        assert_eq!(
            (one.place, one.message.as_str()),
            (Place::Arg(0), "`max` of one argument needs a list")
        );
        let empty = err("max", &[ints(&[])]);
        assert_eq!(empty.message, "`max` of an empty list");
        let symbol = err("min", &[Value::Int(1), Value::Symbol("same".into())]);
        assert_eq!(
            (symbol.place, symbol.label.as_str()),
            (Place::Arg(1), "this is the name `same`")
        );
        let element = err(
            "max",
            &[Value::List(vec![Value::Int(1), Value::Bool(true)])],
        );
        assert_eq!(
            (element.place, element.label.as_str()),
            (
                Place::Element(0, 1),
                "element 1 of the list is the boolean true"
            )
        );
    }

    #[test]
    fn len_counts_a_lists_elements() {
        assert_eq!(ok("len", &[ints(&[1, 2, 3])]), Value::Int(3));
        assert_eq!(ok("len", &[ints(&[])]), Value::Int(0));
        let number = err("len", &[Value::Int(3)]);
        assert_eq!(
            (number.message.as_str(), number.label.as_str()),
            ("`len` needs a list", "this is the integer 3")
        );
    }

    #[test]
    fn sum_adds_integers_exactly_and_floats_as_floats() {
        assert_eq!(ok("sum", &[ints(&[1, 2, 3])]), Value::Int(6));
        assert_eq!(ok("sum", &[ints(&[])]), Value::Int(0));
        let mixed = Value::List(vec![Value::Int(1), Value::Float(0.5)]);
        assert_eq!(ok("sum", &[mixed]), Value::Float(1.5));
        let overflow = err("sum", &[ints(&[i64::MAX, 1])]);
        assert_eq!(overflow.message, "integer overflow in `sum`");
        let element = err(
            "sum",
            &[Value::List(vec![Value::Int(1), Value::Str("x".into())])],
        );
        assert_eq!(element.place, Place::Element(0, 1));
        assert_eq!(
            err("sum", &[Value::Int(1), Value::Int(2)]).place,
            Place::Arg(1)
        );
    }

    #[test]
    fn no_function_is_named_like_a_layer() {
        for name in FUNCTIONS {
            assert!(super::super::layers::signature(name).is_none(), "{name}");
        }
    }

    #[test]
    fn a_poisoned_argument_makes_poison_without_an_error() {
        assert_eq!(ok("int", &[Value::Poison]), Value::Poison);
        let list = Value::List(vec![Value::Int(1), Value::Poison]);
        assert_eq!(ok("sum", &[list]), Value::Poison);
        assert_eq!(
            ok("min", &[Value::Poison, Value::Str("x".into())]),
            Value::Poison
        );
    }
}
