//! Checking a `train` section's evaluated entries and turning them into a
//! [`TrainConfig`]: every key, call and value against what Keras accepts,
//! with every problem reported at its place.

use super::value::{integer_help, NamedArg, Spanned, Value};
use crate::config::*;
use crate::diagnostics::{suggest, Diagnostic};
use crate::syntax::ast::Ident;

/// The keys a train section takes.
pub const TRAIN_KEYS: &[&str] = &[
    "optimizer",
    "loss",
    "loss_weights",
    "metrics",
    "batch",
    "epochs",
    "seed",
    "validation",
    "schedule",
    "early_stopping",
    "augment",
    "freeze",
    "precision",
];

/// Checks the evaluated entries of a train section; `outputs` are the
/// model's output names (for `loss_weights`). Reports every problem.
pub fn check(
    entries: &[(Ident, Spanned)],
    outputs: &[&str],
) -> Result<TrainConfig, Vec<Diagnostic>> {
    let mut c = Checker { errors: Vec::new() };
    let mut config = TrainConfig::default();
    let mut seen: Vec<&Ident> = Vec::new();
    for (key, value) in entries {
        if let Some(first) = seen.iter().find(|k| k.name == key.name) {
            c.errors.push(
                Diagnostic::error(
                    key.span,
                    format!("`{}` is set twice", key.name),
                    "second setting",
                )
                .with_context(first.span, "first setting"),
            );
            continue;
        }
        seen.push(key);
        if value.value == Value::Poison {
            continue;
        }
        match key.name.as_str() {
            "optimizer" => c.optimizer(value).map(|o| config.optimizer = o),
            "loss" => c.loss(value).map(|(loss, smoothing)| {
                config.loss = loss;
                config.label_smoothing = smoothing;
            }),
            "loss_weights" => c
                .loss_weights(value, outputs)
                .map(|w| config.loss_weights = w),
            "metrics" => c.metrics(value).map(|m| config.metrics = m),
            "batch" => c.positive(value, "batch").map(|b| config.batch = b),
            "epochs" => c.positive(value, "epochs").map(|e| config.epochs = e),
            "seed" => c.natural(value, "seed").map(|s| config.seed = s),
            "validation" => c
                .natural(value, "validation")
                .map(|v| config.validation = Some(v)),
            "schedule" => c.schedule(value).map(|s| config.schedule = Some(s)),
            "early_stopping" => c
                .early_stopping(value)
                .map(|e| config.early_stopping = Some(e)),
            "augment" => c.augment(value).map(|a| config.augment = Some(a)),
            "freeze" => c.freeze(value).map(|f| config.freeze = f),
            "precision" => c.precision(value).map(|p| config.precision = p),
            other => {
                let error = Diagnostic::error(
                    key.span,
                    format!("unknown training setting `{other}`"),
                    "unknown key",
                )
                .with_note(format!(
                    "the train section takes: {}",
                    TRAIN_KEYS.join(", ")
                ));
                c.errors
                    .push(suggest(error, other, TRAIN_KEYS.iter().copied()));
                None
            }
        };
    }
    if c.errors.is_empty() {
        Ok(config)
    } else {
        Err(c.errors)
    }
}

struct Checker {
    errors: Vec<Diagnostic>,
}

impl Checker {
    fn fail<T>(&mut self, value: &Spanned, message: impl Into<String>) -> Option<T> {
        self.errors.push(Diagnostic::error(
            value.span,
            message,
            format!("this is {}", value.value.describe()),
        ));
        None
    }

    fn positive(&mut self, value: &Spanned, what: &str) -> Option<u64> {
        match value.value {
            Value::Int(i) if i > 0 => Some(i as u64),
            _ => self.fail_integer(value, format!("`{what}` must be a positive integer")),
        }
    }

    fn natural(&mut self, value: &Spanned, what: &str) -> Option<u64> {
        match value.value {
            Value::Int(i) if i >= 0 => Some(i as u64),
            _ => self.fail_integer(value, format!("`{what}` must be a non-negative integer")),
        }
    }

    /// [`Checker::fail`] where an integer is needed, with a hint for a float.
    fn fail_integer<T>(&mut self, value: &Spanned, message: impl Into<String>) -> Option<T> {
        let mut error = Diagnostic::error(
            value.span,
            message,
            format!("this is {}", value.value.describe()),
        );
        if let Some(help) = integer_help(&value.value) {
            error = error.with_note(help);
        }
        self.errors.push(error);
        None
    }

    fn number(&mut self, value: &Spanned, what: &str, positive: bool) -> Option<f64> {
        match value.value.as_f64() {
            Some(x) if x.is_finite() && (!positive || x > 0.0) && x >= 0.0 => Some(x),
            _ => {
                let kind = if positive {
                    "a positive number"
                } else {
                    "a non-negative number"
                };
                self.fail(value, format!("`{what}` must be {kind}"))
            }
        }
    }

    /// A non-negative number at most `max`.
    fn bounded(&mut self, value: &Spanned, what: &str, max: f64, unit: &str) -> Option<f64> {
        let x = self.number(value, what, false)?;
        if x > max {
            return self.fail(value, format!("`{what}` must be at most {max} {unit}"));
        }
        Some(x)
    }

    fn flag(&mut self, value: &Spanned, what: &str) -> Option<bool> {
        match value.value {
            Value::Bool(b) => Some(b),
            _ => self.fail(value, format!("`{what}` must be `true` or `false`")),
        }
    }

    /// The fields of `name(args)` or of a record, checked against `allowed`
    /// (positional arguments fill `allowed` in order).
    fn fields<'v>(
        &mut self,
        what: &str,
        args: &'v [(Option<String>, Spanned)],
        allowed: &[&str],
    ) -> Vec<(String, &'v Spanned)> {
        let mut out: Vec<(String, &Spanned)> = Vec::new();
        for (i, (name, value)) in args.iter().enumerate() {
            let name = match name {
                Some(n) => n.clone(),
                None => match allowed.get(i) {
                    Some(n) => n.to_string(),
                    None => {
                        self.fail::<()>(value, format!("too many arguments for `{what}`"));
                        continue;
                    }
                },
            };
            if !allowed.contains(&name.as_str()) {
                let error = Diagnostic::error(
                    value.span,
                    format!("`{what}` has no setting `{name}`"),
                    "unknown setting",
                )
                .with_note(format!("`{what}` takes: {}", allowed.join(", ")));
                self.errors
                    .push(suggest(error, &name, allowed.iter().copied()));
                continue;
            }
            if out.iter().any(|(n, _)| *n == name) {
                self.fail::<()>(value, format!("`{name}` is given twice"));
                continue;
            }
            out.push((name, value));
        }
        out
    }

    fn optimizer(&mut self, value: &Spanned) -> Option<Optimizer> {
        const NAMES: &[&str] = &["sgd", "momentum", "nesterov", "adam", "nadam", "rmsprop"];
        let Some((name, args)) = call_parts(&value.value) else {
            return self.fail(
                value,
                "`optimizer` must name an optimizer, e.g. nadam(lr: 0.001)",
            );
        };
        let kind = match name {
            "sgd" => OptimizerKind::Sgd,
            "momentum" => OptimizerKind::Momentum,
            "nesterov" => OptimizerKind::Nesterov,
            "adam" => OptimizerKind::Adam,
            "nadam" => OptimizerKind::Nadam,
            "rmsprop" => OptimizerKind::RmsProp,
            other => {
                let error =
                    Diagnostic::error(value.span, format!("unknown optimizer `{other}`"), "here")
                        .with_note(format!("the optimizers: {}", NAMES.join(", ")));
                self.errors
                    .push(suggest(error, other, NAMES.iter().copied()));
                return None;
            }
        };
        let allowed: &[&str] = match kind {
            OptimizerKind::Sgd => &["lr", "weight_decay"],
            OptimizerKind::Momentum | OptimizerKind::Nesterov => {
                &["lr", "momentum", "weight_decay"]
            }
            OptimizerKind::Adam | OptimizerKind::Nadam => {
                &["lr", "beta1", "beta2", "epsilon", "weight_decay"]
            }
            OptimizerKind::RmsProp => &["lr", "rho", "momentum", "epsilon", "weight_decay"],
        };
        let mut o = Optimizer {
            kind,
            ..TrainConfig::default().optimizer
        };
        if matches!(kind, OptimizerKind::Momentum | OptimizerKind::Nesterov) {
            o.momentum = 0.9;
        }
        if matches!(
            kind,
            OptimizerKind::Sgd | OptimizerKind::Momentum | OptimizerKind::Nesterov
        ) {
            o.lr = 0.01;
        }
        for (field, v) in self.fields(name, args, allowed) {
            let x = self.number(v, &field, field == "lr" || field == "epsilon")?;
            match field.as_str() {
                "lr" => o.lr = x,
                "beta1" => o.beta1 = x,
                "beta2" => o.beta2 = x,
                "epsilon" => o.epsilon = x,
                "momentum" => o.momentum = x,
                "weight_decay" => o.weight_decay = x,
                _ => o.rho = x,
            }
        }
        Some(o)
    }

    fn loss(&mut self, value: &Spanned) -> Option<(Loss, f64)> {
        let Some((name, args)) = call_parts(&value.value) else {
            return self.fail(
                value,
                "`loss` must name a loss, e.g. sparse_categorical_crossentropy",
            );
        };
        const NAMES: [&str; 2] = ["sparse_categorical_crossentropy", "binary_crossentropy"];
        let loss = match name {
            "sparse_categorical_crossentropy" => Loss::SparseCategorical,
            "binary_crossentropy" => Loss::Binary,
            _ => {
                let error = Diagnostic::error(value.span, format!("unknown loss `{name}`"), "here")
                    .with_note("cnnc trains with `sparse_categorical_crossentropy` (a class index per example, or per pixel) or `binary_crossentropy` (labels 0 and 1, one sigmoid score per example or per pixel)");
                self.errors.push(suggest(error, name, NAMES));
                return None;
            }
        };
        let mut smoothing = 0.0;
        for (_, v) in self.fields(name, args, &["label_smoothing"]) {
            smoothing = self.number(v, "label_smoothing", false)?;
            if smoothing >= 1.0 {
                return self.fail(v, "`label_smoothing` must be below 1");
            }
        }
        Some((loss, smoothing))
    }

    /// `precision: f32` or `precision: bf16`.
    fn precision(&mut self, value: &Spanned) -> Option<Precision> {
        const NAMES: [&str; 2] = ["f32", "bf16"];
        let name = match &value.value {
            Value::Symbol(name) => name.as_str(),
            _ => return self.fail(value, "`precision` must be `f32` or `bf16`"),
        };
        if let Some(precision) = Precision::from_name(name) {
            return Some(precision);
        }
        let error = Diagnostic::error(value.span, format!("unknown precision `{name}`"), "here")
            .with_note("`f32` (the default) or `bf16`: convolutions and dense layers multiply in bfloat16 and sum in f32, on CPUs with AMX-BF16 or AVX512-BF16");
        self.errors.push(suggest(error, name, NAMES));
        None
    }

    fn loss_weights(&mut self, value: &Spanned, outputs: &[&str]) -> Option<Vec<(String, f64)>> {
        let Value::Record(fields) = &value.value else {
            return self.fail(
                value,
                "`loss_weights` must be a record naming outputs, e.g. (main: 1.0, aux1: 0.3)",
            );
        };
        let mut weights = Vec::new();
        for (name, v) in fields {
            if !outputs.contains(&name.as_str()) {
                let error = Diagnostic::error(
                    v.span,
                    format!("the model has no output `{name}`"),
                    "in loss_weights",
                )
                .with_note(format!("its outputs: {}", outputs.join(", ")));
                self.errors
                    .push(suggest(error, name, outputs.iter().copied()));
                continue;
            }
            weights.push((name.clone(), self.number(v, name, false)?));
        }
        Some(weights)
    }

    /// `freeze`: a list of layer patterns, checked against the model by
    /// the train section (`super::freeze`).
    fn freeze(&mut self, value: &Spanned) -> Option<Vec<String>> {
        let example = "e.g. [\"stage1\", \"conv1\"]";
        let Value::List(items) = &value.value else {
            return self.fail(
                value,
                format!("`freeze` must be a list of layer patterns, {example}"),
            );
        };
        let mut patterns = Vec::new();
        for item in items {
            match item {
                Value::Str(pattern) if !pattern.is_empty() => patterns.push(pattern.clone()),
                Value::Symbol(name) => {
                    let error = Diagnostic::error(
                        value.span,
                        format!("each entry of `freeze` is a layer pattern in quotes, {example}"),
                        format!("`{name}` is a bare name"),
                    )
                    .with_note(format!("help: write \"{name}\""));
                    self.errors.push(error);
                    return None;
                }
                other => {
                    let spanned = Spanned {
                        value: other.clone(),
                        span: value.span,
                    };
                    return self.fail(
                        &spanned,
                        format!("each entry of `freeze` is a layer pattern in quotes, {example}"),
                    );
                }
            }
        }
        Some(patterns)
    }

    fn metrics(&mut self, value: &Spanned) -> Option<Vec<Metric>> {
        let Value::List(items) = &value.value else {
            return self.fail(
                value,
                "`metrics` must be a list, e.g. [accuracy, top_k(k: 5)]",
            );
        };
        let mut metrics = Vec::new();
        for item in items {
            let spanned = Spanned {
                value: item.clone(),
                span: value.span,
            };
            match call_parts(item) {
                Some(("accuracy", [])) => metrics.push(Metric::Accuracy),
                Some(("top_k", args)) => {
                    let mut k = 5;
                    for (_, v) in self.fields("top_k", args, &["k"]) {
                        k = self.positive(v, "k")?;
                    }
                    metrics.push(Metric::TopK(k));
                }
                Some((other, _)) => {
                    let error = Diagnostic::error(
                        value.span,
                        format!("unknown metric `{other}`"),
                        "in this list",
                    )
                    .with_note("the metrics: accuracy, top_k(k: N)");
                    self.errors
                        .push(suggest(error, other, ["accuracy", "top_k"]));
                }
                None => {
                    self.fail::<()>(&spanned, "a metric is `accuracy` or `top_k(k: N)`");
                }
            }
        }
        Some(metrics)
    }

    fn schedule(&mut self, value: &Spanned) -> Option<Schedule> {
        const NAMES: &[&str] = &["exponential", "piecewise", "one_cycle"];
        let Some((name, args)) = call_parts(&value.value) else {
            return self.fail(value, "`schedule` must name a schedule, e.g. exponential(decay_rate: 0.1, decay_steps: 10000)");
        };
        match name {
            "exponential" => {
                let (mut rate, mut steps) = (None, None);
                for (field, v) in self.fields(name, args, &["decay_rate", "decay_steps"]) {
                    if field == "decay_rate" {
                        rate = Some(self.number(v, &field, true)?);
                    } else {
                        steps = Some(self.positive(v, &field)?);
                    }
                }
                match (rate, steps) {
                    (Some(decay_rate), Some(decay_steps)) => Some(Schedule::Exponential {
                        decay_rate,
                        decay_steps,
                    }),
                    _ => self.fail(value, "`exponential` needs `decay_rate` and `decay_steps`"),
                }
            }
            "piecewise" => {
                let (mut boundaries, mut values) = (None, None);
                for (field, v) in self.fields(name, args, &["boundaries", "values"]) {
                    let Value::List(items) = &v.value else {
                        return self.fail(v, format!("`{field}` must be a list"));
                    };
                    if field == "boundaries" {
                        let b: Option<Vec<u64>> = items
                            .iter()
                            .map(|i| {
                                if let Value::Int(i) = i {
                                    u64::try_from(*i).ok()
                                } else {
                                    None
                                }
                            })
                            .collect();
                        boundaries =
                            Some(b.filter(|b| b.windows(2).all(|w| w[0] < w[1])).or_else(
                                || self.fail(v, "`boundaries` must be increasing step numbers"),
                            )?);
                    } else {
                        let x: Option<Vec<f64>> = items.iter().map(Value::as_f64).collect();
                        values = Some(x.or_else(|| self.fail(v, "`values` must be numbers"))?);
                    }
                }
                match (boundaries, values) {
                    (Some(b), Some(v)) if v.len() == b.len() + 1 => Some(Schedule::Piecewise {
                        boundaries: b,
                        values: v,
                    }),
                    _ => self.fail(
                        value,
                        "`piecewise` needs `boundaries` and one more `values` than boundaries",
                    ),
                }
            }
            "one_cycle" => {
                let mut max_lr = None;
                for (field, v) in self.fields(name, args, &["max_lr"]) {
                    max_lr = Some(self.number(v, &field, true)?);
                }
                max_lr
                    .map(|max_lr| Schedule::OneCycle { max_lr })
                    .or_else(|| self.fail(value, "`one_cycle` needs `max_lr`"))
            }
            other => {
                let error =
                    Diagnostic::error(value.span, format!("unknown schedule `{other}`"), "here")
                        .with_note(format!("the schedules: {}", NAMES.join(", ")));
                self.errors
                    .push(suggest(error, other, NAMES.iter().copied()));
                None
            }
        }
    }

    fn early_stopping(&mut self, value: &Spanned) -> Option<EarlyStopping> {
        let args = record_args(&value.value).or_else(|| {
            self.fail(
                value,
                "`early_stopping` must be a record, e.g. (patience: 5, restore_best: true)",
            )
        })?;
        let mut e = EarlyStopping {
            patience: 5,
            restore_best: true,
        };
        for (field, v) in self.fields("early_stopping", &args, &["patience", "restore_best"]) {
            if field == "patience" {
                e.patience = self.positive(v, &field)?;
            } else {
                e.restore_best = self.flag(v, &field)?;
            }
        }
        Some(e)
    }

    fn augment(&mut self, value: &Spanned) -> Option<Augment> {
        let args = record_args(&value.value).or_else(|| {
            self.fail(
                value,
                "`augment` must be a record, e.g. (shift: 2, flip: true)",
            )
        })?;
        let mut a = Augment::default();
        let mut valid = true;
        for (field, v) in self.fields(
            "augment",
            &args,
            &[
                "shift",
                "flip",
                "rotation",
                "brightness",
                "contrast",
                "erase",
            ],
        ) {
            // Every field is checked, so that one run reports every mistake.
            let fits = match field.as_str() {
                "shift" => self.natural(v, &field).map(|x| a.shift = x),
                "flip" => self.flag(v, &field).map(|x| a.flip = x),
                "rotation" => self
                    .bounded(v, &field, 180.0, "degrees")
                    .map(|x| a.rotation = x),
                "brightness" => self
                    .bounded(v, &field, 1.0, "of the [0, 1] range")
                    .map(|x| a.brightness = x),
                "erase" => self
                    .bounded(v, &field, 1.0, "(a probability)")
                    .map(|x| a.erase = x),
                _ => self
                    .bounded(v, &field, 0.99, "(a factor in 1 ± contrast)")
                    .map(|x| a.contrast = x),
            };
            valid &= fits.is_some();
        }
        valid.then_some(a)
    }
}

/// `name` or `name(args)` as (name, args).
fn call_parts(value: &Value) -> Option<(&str, &[NamedArg])> {
    match value {
        Value::Symbol(name) => Some((name.as_str(), &[])),
        Value::Config(name, args) => Some((name.as_str(), args.as_slice())),
        _ => None,
    }
}

/// A record's fields as named arguments.
fn record_args(value: &Value) -> Option<Vec<(Option<String>, Spanned)>> {
    match value {
        Value::Record(fields) => Some(
            fields
                .iter()
                .map(|(k, v)| (Some(k.clone()), v.clone()))
                .collect(),
        ),
        _ => None,
    }
}
