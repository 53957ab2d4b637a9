//! Checking the arguments of primitive layer calls against their signatures.

use crate::diagnostics::{suggest, Diagnostic, Span};
use crate::graph::{Padding, Slice};
use crate::ops::MAX_PAD;
use crate::syntax::ast::{Expr, ExprKind, Ident};

use super::layers::{self, Arg, ArgSpec, Args, DefaultValue, Kind};
use super::value::{self, Spanned, Value};

/// Binds the evaluated arguments of a call of layer `layer` to its
/// signature, checking each value's kind; reports every problem found.
pub fn bind_layer(
    layer: &str,
    signature: &'static [ArgSpec],
    values: &[(Option<Ident>, Spanned)],
    call: Span,
) -> Result<Args, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut given: Vec<Option<&Spanned>> = vec![None; signature.len()];
    let mut positional = 0;
    for (name, value) in values {
        let slot = match name {
            None => {
                positional += 1;
                if positional > signature.len() {
                    errors.push(
                        Diagnostic::error(
                            value.span,
                            format!(
                                "too many arguments: `{layer}` takes at most {}",
                                signature.len()
                            ),
                            "extra argument",
                        )
                        .with_note(format!(
                            "signature: {}",
                            layers::render_signature(layer, signature)
                        )),
                    );
                    continue;
                }
                positional - 1
            }
            Some(n) => match signature.iter().position(|s| s.name == n.name) {
                Some(i) => i,
                None => {
                    let error = Diagnostic::error(
                        n.span,
                        format!("`{layer}` has no argument `{}`", n.name),
                        "unknown argument",
                    )
                    .with_note(format!(
                        "signature: {}",
                        layers::render_signature(layer, signature)
                    ));
                    errors.push(suggest(error, &n.name, signature.iter().map(|s| s.name)));
                    continue;
                }
            },
        };
        if given[slot].is_some() {
            errors.push(Diagnostic::error(
                value.span,
                format!(
                    "argument `{}` of `{layer}` is given twice",
                    signature[slot].name
                ),
                "duplicate argument",
            ));
            continue;
        }
        given[slot] = Some(value);
    }
    let mut bound: Vec<(&'static str, Arg)> = Vec::new();
    let mut poisoned = false;
    for (spec, value) in signature.iter().zip(&given) {
        let arg = match (value, spec.default) {
            (Some(v), _) if v.value == Value::Poison => {
                poisoned = true;
                continue;
            }
            (Some(v), _) => match convert(spec.kind, &v.value) {
                Ok(arg) => arg,
                Err(note) => {
                    let mut error = Diagnostic::error(
                        v.span,
                        format!(
                            "argument `{}` of `{layer}` must be {}",
                            spec.name,
                            spec.kind.expected()
                        ),
                        format!("this is {}", v.value.describe()),
                    );
                    if let Some(note) = note {
                        error = error.with_note(note);
                    }
                    errors.push(error);
                    continue;
                }
            },
            (None, DefaultValue::Required) => {
                errors.push(
                    Diagnostic::error(
                        call,
                        format!("`{layer}` needs the argument `{}`", spec.name),
                        "in this call",
                    )
                    .with_note(format!(
                        "signature: {}",
                        layers::render_signature(layer, signature)
                    )),
                );
                continue;
            }
            (None, DefaultValue::SameAs(other)) => match bound.iter().find(|(n, _)| *n == other) {
                Some((_, arg)) => arg.clone(),
                None => continue,
            },
            (None, default) => default_arg(spec.kind, default),
        };
        bound.push((spec.name, arg));
    }
    if !errors.is_empty() || poisoned || bound.len() != signature.len() {
        return Err(errors);
    }
    let args = Args(bound);
    match layers::conflict(&args) {
        None => Ok(args),
        Some(conflict) => {
            // The argument at fault was given (a default never conflicts).
            let at = signature.iter().position(|s| s.name == conflict.argument);
            let span = at.and_then(|i| given[i]).map_or(call, |v| v.span);
            let label = format!("in this call of `{layer}`");
            Err(vec![
                Diagnostic::error(span, conflict.message, label).with_note(conflict.help)
            ])
        }
    }
}

fn default_arg(kind: Kind, default: DefaultValue) -> Arg {
    let value = match default {
        DefaultValue::Int(i) => Value::Int(i),
        DefaultValue::Float(x) => Value::Float(x),
        DefaultValue::Bool(b) => Value::Bool(b),
        DefaultValue::Symbol(s) => Value::Symbol(s.to_string()),
        DefaultValue::Required | DefaultValue::SameAs(_) => Value::Poison,
    };
    // The defaults in the layer table are all valid for their kinds.
    convert(kind, &value).unwrap_or(Arg::Int(1))
}

/// Converts a value to an argument of `kind`; the error is an optional hint.
fn convert(kind: Kind, value: &Value) -> Result<Arg, Option<String>> {
    let positive = |v: &Value| match v {
        Value::Int(i) if *i > 0 => Some(*i as u64),
        _ => None,
    };
    match (kind, value) {
        (Kind::Positive, v) => positive(v)
            .map(|i| Arg::Int(i as i64))
            .ok_or_else(|| integer_hint(v)),
        (Kind::Pair, Value::List(items)) if items.len() == 2 => {
            match (positive(&items[0]), positive(&items[1])) {
                (Some(h), Some(w)) => Ok(Arg::Pair([h, w])),
                _ => Err(items
                    .iter()
                    .find(|v| positive(v).is_none())
                    .and_then(integer_hint)),
            }
        }
        (Kind::Pair, v) => positive(v)
            .map(|i| Arg::Pair([i, i]))
            .ok_or_else(|| integer_hint(v)),
        (Kind::Number, v) => v.as_f64().map(Arg::Float).ok_or(None),
        (Kind::Rate, v) => v
            .as_f64()
            .filter(|x| (0.0..1.0).contains(x))
            .map(Arg::Float)
            .ok_or(None),
        (Kind::Bool, Value::Bool(b)) => Ok(Arg::Bool(*b)),
        (Kind::Padding | Kind::SameOrValid, Value::Symbol(s)) => match s.as_str() {
            "same" => Ok(Arg::Padding(Padding::Same)),
            "valid" => Ok(Arg::Padding(Padding::Valid)),
            other => Err(crate::diagnostics::did_you_mean(other, ["same", "valid"])
                .map(crate::diagnostics::did_you_mean_note)),
        },
        (Kind::Padding, v) => {
            let [top, bottom, left, right] = sides(v)?;
            Ok(Arg::Padding(Padding::explicit(
                [[top, bottom], [left, right]],
                false,
            )))
        }
        (Kind::Sides, v) => sides(v).map(Arg::Sides),
        (Kind::Activation, Value::Symbol(s)) => match layers::activation_symbol(s) {
            Some(act) => Ok(Arg::Activation(act)),
            None => Err(
                crate::diagnostics::did_you_mean(s, layers::ACTIVATIONS.iter().copied())
                    .map(crate::diagnostics::did_you_mean_note),
            ),
        },
        (Kind::Init, Value::Symbol(s)) => match layers::init_symbol(s) {
            Some(init) => Ok(Arg::Init(init)),
            None => Err(
                crate::diagnostics::did_you_mean(s, layers::INITS.iter().copied())
                    .map(crate::diagnostics::did_you_mean_note),
            ),
        },
        (Kind::Init, Value::Init(init)) => Ok(Arg::Init(init.clone())),
        (Kind::Axis | Kind::Index, Value::Int(i)) => Ok(Arg::Int(*i)),
        (Kind::Axis | Kind::Index, v) => Err(value::integer_help(v)),
        (Kind::Shape, Value::List(items)) => shape(items),
        (Kind::Interpolation, Value::Symbol(s)) => match layers::interpolation_symbol(s) {
            Some(mode) => Ok(Arg::Interpolation(mode)),
            None => Err(crate::diagnostics::did_you_mean(
                s,
                layers::INTERPOLATIONS.iter().copied(),
            )
            .map(crate::diagnostics::did_you_mean_note)),
        },
        (Kind::OutputPadding, v) => output_padding(v),
        _ => Err(None),
    }
}

/// A transposed convolution's output padding: `none`, or a non-negative
/// integer or pair of them (whether each is below the stride is the shape
/// rule's to check, where the stride is known).
fn output_padding(value: &Value) -> Result<Arg, Option<String>> {
    let extra = |v: &Value| match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        Value::Int(_) => Err(Some(
            "help: output padding adds rows and columns, at least 0".to_string(),
        )),
        other => Err(value::integer_help(other)),
    };
    match value {
        Value::Symbol(s) if s == "none" => Ok(Arg::OutputPadding(None)),
        Value::List(items) if items.len() == 2 => Ok(Arg::OutputPadding(Some([
            extra(&items[0])?,
            extra(&items[1])?,
        ]))),
        Value::Int(_) => extra(value).map(|p| Arg::OutputPadding(Some([p, p]))),
        Value::Symbol(s) => Err(crate::diagnostics::did_you_mean(s, ["none"])
            .map(crate::diagnostics::did_you_mean_note)),
        _ => Err(None),
    }
}

/// Amounts for `[top, bottom, left, right]`, as Keras's `ZeroPadding2D`
/// takes them: one integer for all four sides, `[h, w]` for top and bottom
/// and for left and right, `[[top, bottom], [left, right]]`, or the four.
fn sides(value: &Value) -> Result<[u64; 4], Option<String>> {
    let amount = |v: &Value| match v {
        Value::Int(i) if (0..=MAX_PAD as i64).contains(i) => Ok(*i as u64),
        Value::Int(i) if *i < 0 => Err(Some(format!(
            "help: amounts cannot be negative ({i} is); `cropping` removes rows and columns"
        ))),
        Value::Int(i) => Err(Some(format!(
            "help: at most {MAX_PAD} on one side, not {i}"
        ))),
        other => Err(integer_hint(other)),
    };
    let pair = |v: &Value| match v {
        Value::List(items) if items.len() == 2 => Ok([amount(&items[0])?, amount(&items[1])?]),
        _ => Err(None),
    };
    let Value::List(items) = value else {
        return amount(value).map(|a| [a; 4]);
    };
    match items.len() {
        2 if items.iter().all(|v| matches!(v, Value::List(_))) => {
            let ([top, bottom], [left, right]) = (pair(&items[0])?, pair(&items[1])?);
            Ok([top, bottom, left, right])
        }
        2 => {
            let [h, w] = [amount(&items[0])?, amount(&items[1])?];
            Ok([h, h, w, w])
        }
        4 => {
            let mut sides = [0; 4];
            for (side, item) in sides.iter_mut().zip(items) {
                *side = amount(item)?;
            }
            Ok(sides)
        }
        n => Err(Some(format!(
            "help: give one integer, a pair [height, width] or four [top, bottom, left, right], \
             not a list of {n}"
        ))),
    }
}

/// A shape argument: positive integers, at most one -1.
fn shape(items: &[Value]) -> Result<Arg, Option<String>> {
    let dims: Vec<i64> = items
        .iter()
        .map(|v| match v {
            Value::Int(i) if *i > 0 || *i == -1 => Ok(*i),
            other => Err(integer_hint(other)),
        })
        .collect::<Result<_, _>>()?;
    if dims.is_empty() {
        return Err(Some("help: a shape has at least one dimension".into()));
    }
    if dims.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(Some(
            "help: only one dimension can be -1, inferred from the others".into(),
        ));
    }
    Ok(Arg::Shape(dims))
}

/// A hint for `v`, given where a positive integer is needed.
fn integer_hint(v: &Value) -> Option<String> {
    match v {
        Value::Float(x) if x.fract() != 0.0 => Some(
            "help: `/` gives a fraction when the division is not exact; `//` rounds down, \
             and `int(...)` truncates any number, `round(...)` rounds it"
                .into(),
        ),
        Value::Int(_) => Some("help: sizes and counts must be at least 1".into()),
        other => value::integer_help(other),
    }
}

/// Evaluates the axes of an index pattern `[_, 3, 0..2, 1]`.
pub fn slices(
    axes: &[Expr],
    mut eval: impl FnMut(&Expr) -> Value,
) -> Result<Vec<Slice>, Diagnostic> {
    axes.iter()
        .map(|axis| {
            if let ExprKind::Name(name, None) = &axis.kind {
                if name.name == "_" {
                    return Ok(Slice::All);
                }
            }
            if let ExprKind::Range(..) = &axis.kind {
                if let Value::List(items) = eval(axis) {
                    let ints: Vec<i64> = items
                        .iter()
                        .filter_map(|v| {
                            if let Value::Int(i) = v {
                                Some(*i)
                            } else {
                                None
                            }
                        })
                        .collect();
                    return match (ints.first(), ints.last()) {
                        (Some(&a), Some(&b)) if a >= 0 => Ok(Slice::Range(a as u64, b as u64 + 1)),
                        _ => Err(Diagnostic::error(
                            axis.span,
                            "an index range must be non-empty and non-negative",
                            "here",
                        )),
                    };
                }
            }
            match eval(axis) {
                Value::Int(i) if i >= 0 => Ok(Slice::At(i as u64)),
                other => Err(Diagnostic::error(
                    axis.span,
                    "an index must be `_`, a non-negative integer or a range `a..b`",
                    format!("this is {}", other.describe()),
                )),
            }
        })
        .collect()
}
