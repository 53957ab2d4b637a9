//! The primitive layers of the language: their signatures (argument names,
//! kinds and defaults) and how each expands into graph ops.

use crate::graph::{Activation, Init, Op, Padding, PoolKind};

/// What an argument accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer >= 1.
    Positive,
    /// An integer >= 1, or a pair `[h, w]` of them.
    Pair,
    /// Any number.
    Number,
    /// A number in [0, 1).
    Rate,
    /// `true` or `false`.
    Bool,
    /// `same` or `valid`.
    Padding,
    /// An activation name or `none`.
    Activation,
    /// An initializer name, possibly with `where` entries.
    Init,
    /// An axis: an integer, negative counting from the end.
    Axis,
}

impl Kind {
    /// What the kind accepts, in words.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Positive => "a positive integer",
            Kind::Pair => "a positive integer or a pair [height, width]",
            Kind::Number => "a number",
            Kind::Rate => "a number from 0 up to (not including) 1",
            Kind::Bool => "`true` or `false`",
            Kind::Padding => "`same` or `valid`",
            Kind::Activation => {
                "an activation (relu, leaky_relu, elu, selu, tanh, sigmoid, softmax or none)"
            }
            Kind::Init => {
                "an initializer (glorot_uniform, he_normal, he_uniform, lecun_normal, zeros, ones)"
            }
            Kind::Axis => "an integer axis",
        }
    }
}

/// A default value of a layer argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    /// The argument must be given.
    Required,
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A symbol (`valid`, `none`, `glorot_uniform`).
    Symbol(&'static str),
    /// The value of another argument (a pool's stride defaults to its size).
    SameAs(&'static str),
}

/// One argument of a layer.
#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    /// Its name.
    pub name: &'static str,
    /// What it accepts.
    pub kind: Kind,
    /// Its default.
    pub default: DefaultValue,
}

const fn a(name: &'static str, kind: Kind, default: DefaultValue) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        default,
    }
}

use self::DefaultValue::*;
use Kind::*;

const CONV: &[ArgSpec] = &[
    a("filters", Positive, Required),
    a("kernel", Pair, Required),
    a("stride", Pair, Int(1)),
    a("padding", Kind::Padding, Symbol("valid")),
    a("dilation", Pair, Int(1)),
    a("use_bias", Kind::Bool, DefaultValue::Bool(true)),
    a("activation", Kind::Activation, Symbol("none")),
    a("init", Kind::Init, Symbol("glorot_uniform")),
    a("trainable", Kind::Bool, DefaultValue::Bool(true)),
];
const DEPTHWISE: &[ArgSpec] = &[
    a("kernel", Pair, Required),
    a("stride", Pair, Int(1)),
    a("padding", Kind::Padding, Symbol("valid")),
    a("dilation", Pair, Int(1)),
    a("multiplier", Positive, Int(1)),
    a("use_bias", Kind::Bool, DefaultValue::Bool(true)),
    a("activation", Kind::Activation, Symbol("none")),
    a("init", Kind::Init, Symbol("glorot_uniform")),
    a("trainable", Kind::Bool, DefaultValue::Bool(true)),
];
const SEPARABLE: &[ArgSpec] = &[
    a("filters", Positive, Required),
    a("kernel", Pair, Required),
    a("stride", Pair, Int(1)),
    a("padding", Kind::Padding, Symbol("valid")),
    a("dilation", Pair, Int(1)),
    a("multiplier", Positive, Int(1)),
    a("use_bias", Kind::Bool, DefaultValue::Bool(true)),
    a("activation", Kind::Activation, Symbol("none")),
    a("init", Kind::Init, Symbol("glorot_uniform")),
    a("trainable", Kind::Bool, DefaultValue::Bool(true)),
];
const DENSE: &[ArgSpec] = &[
    a("units", Positive, Required),
    a("activation", Kind::Activation, Symbol("none")),
    a("use_bias", Kind::Bool, DefaultValue::Bool(true)),
    a("init", Kind::Init, Symbol("glorot_uniform")),
    a("trainable", Kind::Bool, DefaultValue::Bool(true)),
];
const MAXPOOL: &[ArgSpec] = &[
    a("size", Pair, Required),
    a("stride", Pair, SameAs("size")),
    a("padding", Kind::Padding, Symbol("valid")),
];
const AVGPOOL: &[ArgSpec] = &[
    a("size", Pair, Required),
    a("stride", Pair, SameAs("size")),
    a("padding", Kind::Padding, Symbol("valid")),
    a("trainable", Kind::Bool, DefaultValue::Bool(false)),
    a("activation", Kind::Activation, Symbol("none")),
];
const DEPTH_MAXPOOL: &[ArgSpec] = &[a("size", Positive, Required)];
const DROPOUT: &[ArgSpec] = &[a("rate", Rate, Required)];
const BATCHNORM: &[ArgSpec] = &[
    a("momentum", Rate, Float(0.99)),
    a("epsilon", Number, Float(0.001)),
    a("trainable", Kind::Bool, DefaultValue::Bool(true)),
];
const LRN: &[ArgSpec] = &[
    a("depth_radius", Positive, Int(2)),
    a("bias", Number, Float(1.0)),
    a("alpha", Number, Float(0.00002)),
    a("beta", Number, Float(0.75)),
];
const RBF: &[ArgSpec] = &[
    a("units", Positive, Required),
    a("trainable", Kind::Bool, DefaultValue::Bool(true)),
];
const LEAKY: &[ArgSpec] = &[a("alpha", Number, Float(0.3))];
const ELU: &[ArgSpec] = &[a("alpha", Number, Float(1.0))];
const CONCAT: &[ArgSpec] = &[a("axis", Axis, Int(-1))];
const NONE: &[ArgSpec] = &[];

/// Every primitive layer, by name, with its signature.
pub const LAYERS: &[(&str, &[ArgSpec])] = &[
    ("conv", CONV),
    ("depthwise_conv", DEPTHWISE),
    ("separable_conv", SEPARABLE),
    ("dense", DENSE),
    ("maxpool", MAXPOOL),
    ("avgpool", AVGPOOL),
    ("global_avg_pool", NONE),
    ("global_max_pool", NONE),
    ("depth_maxpool", DEPTH_MAXPOOL),
    ("flatten", NONE),
    ("dropout", DROPOUT),
    ("batchnorm", BATCHNORM),
    ("lrn", LRN),
    ("rbf", RBF),
    ("relu", NONE),
    ("leaky_relu", LEAKY),
    ("elu", ELU),
    ("selu", NONE),
    ("tanh", NONE),
    ("sigmoid", NONE),
    ("softmax", NONE),
    ("concat", CONCAT),
];

/// The signature of primitive layer `name`.
pub fn signature(name: &str) -> Option<&'static [ArgSpec]> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A checked argument value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// An integer.
    Int(i64),
    /// A pair of positive integers.
    Pair([u64; 2]),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A padding.
    Padding(Padding),
    /// An activation, or none.
    Activation(Option<Activation>),
    /// An initializer.
    Init(Init),
}

/// The checked arguments of one call, in signature order.
pub struct Args(pub Vec<(&'static str, Arg)>);

impl Args {
    fn get(&self, name: &str) -> &Arg {
        // Every name asked for below is in the layer's signature, and binding
        // fills every signature entry (given or defaulted).
        &self
            .0
            .iter()
            .find(|(n, _)| *n == name)
            .expect("argument bound")
            .1
    }
    /// A positive-integer argument.
    pub fn int(&self, name: &str) -> u64 {
        match self.get(name) {
            Arg::Int(i) => *i as u64,
            Arg::Pair(p) => p[0],
            _ => 0,
        }
    }
    /// A signed integer argument.
    pub fn signed(&self, name: &str) -> i64 {
        match self.get(name) {
            Arg::Int(i) => *i,
            _ => 0,
        }
    }
    /// A pair argument.
    pub fn pair(&self, name: &str) -> [u64; 2] {
        match self.get(name) {
            Arg::Pair(p) => *p,
            Arg::Int(i) => [*i as u64; 2],
            _ => [1, 1],
        }
    }
    /// A number argument.
    pub fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Arg::Float(x) => *x,
            Arg::Int(i) => *i as f64,
            _ => 0.0,
        }
    }
    /// A boolean argument.
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Arg::Bool(true))
    }
    /// The padding argument.
    pub fn padding(&self) -> Padding {
        match self.get("padding") {
            Arg::Padding(p) => *p,
            _ => Padding::Valid,
        }
    }
    /// The activation argument.
    pub fn activation(&self) -> Option<Activation> {
        match self.get("activation") {
            Arg::Activation(a) => *a,
            _ => None,
        }
    }
    /// The initializer argument.
    pub fn init(&self) -> Init {
        match self.get("init") {
            Arg::Init(i) => i.clone(),
            _ => Init::GlorotUniform,
        }
    }
}

/// One op a layer call expands into: its name suffix within the layer
/// (`""` for the main op, `"relu"` for its activation...), the op, and the
/// initializer of its kernel-like weight.
pub struct Part {
    /// Appended to the layer's path with a dot, when not empty.
    pub suffix: &'static str,
    /// The op.
    pub op: Op,
    /// The initializer of the op's main weight (`kernel`, `centers`).
    pub init: Init,
}

/// The ops that layer `name` with `args` expands into, in order; each
/// consumes the previous one's output (the first consumes the layer's input).
pub fn expand(name: &str, args: &Args) -> Vec<Part> {
    let part = |suffix, op| Part {
        suffix,
        op,
        init: Init::GlorotUniform,
    };
    let mut parts = match name {
        "conv" => vec![Part {
            suffix: "",
            op: Op::Conv2d {
                filters: args.int("filters"),
                kernel: args.pair("kernel"),
                stride: args.pair("stride"),
                padding: args.padding(),
                dilation: args.pair("dilation"),
                bias: args.bool("use_bias"),
            },
            init: args.init(),
        }],
        "depthwise_conv" => vec![Part {
            suffix: "",
            op: depthwise(args, args.bool("use_bias")),
            init: args.init(),
        }],
        "separable_conv" => vec![
            Part {
                suffix: "depthwise",
                op: depthwise(args, false),
                init: args.init(),
            },
            Part {
                suffix: "pointwise",
                op: Op::Conv2d {
                    filters: args.int("filters"),
                    kernel: [1, 1],
                    stride: [1, 1],
                    padding: Padding::Valid,
                    dilation: [1, 1],
                    bias: args.bool("use_bias"),
                },
                init: args.init(),
            },
        ],
        "dense" => vec![Part {
            suffix: "",
            op: Op::Dense {
                units: args.int("units"),
                bias: args.bool("use_bias"),
            },
            init: args.init(),
        }],
        "maxpool" | "avgpool" => {
            let kind = if name == "maxpool" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let pool = Op::Pool2d {
                kind,
                size: args.pair("size"),
                stride: args.pair("stride"),
                padding: args.padding(),
            };
            let mut parts = vec![part("", pool)];
            if name == "avgpool" && args.bool("trainable") {
                parts.push(part("scale", Op::ScaleBias));
            }
            parts
        }
        "global_avg_pool" => vec![part(
            "",
            Op::GlobalPool {
                kind: PoolKind::Avg,
            },
        )],
        "global_max_pool" => vec![part(
            "",
            Op::GlobalPool {
                kind: PoolKind::Max,
            },
        )],
        "depth_maxpool" => vec![part(
            "",
            Op::DepthMaxPool {
                size: args.int("size"),
            },
        )],
        "flatten" => vec![part("", Op::Flatten)],
        "dropout" => vec![part(
            "",
            Op::Dropout {
                rate: args.float("rate"),
            },
        )],
        "batchnorm" => vec![part(
            "",
            Op::BatchNorm {
                momentum: args.float("momentum"),
                epsilon: args.float("epsilon"),
            },
        )],
        "lrn" => vec![part(
            "",
            Op::Lrn {
                depth_radius: args.int("depth_radius"),
                bias: args.float("bias"),
                alpha: args.float("alpha"),
                beta: args.float("beta"),
            },
        )],
        "rbf" => vec![part(
            "",
            Op::Rbf {
                units: args.int("units"),
            },
        )],
        other => match activation(other, args) {
            Some(act) => vec![part("", Op::Activation(act))],
            // `concat` is built by the elaborator, which gathers its inputs.
            None => unreachable!("layer table and expand disagree on `{other}`"),
        },
    };
    if let Some(act) = signature(name)
        .filter(|sig| sig.iter().any(|s| s.name == "activation"))
        .and_then(|_| args.activation())
    {
        parts.push(Part {
            suffix: act.name(),
            op: Op::Activation(act),
            init: Init::GlorotUniform,
        });
    }
    parts
}

fn depthwise(args: &Args, bias: bool) -> Op {
    Op::DepthwiseConv2d {
        multiplier: args.int("multiplier"),
        kernel: args.pair("kernel"),
        stride: args.pair("stride"),
        padding: args.padding(),
        dilation: args.pair("dilation"),
        bias,
    }
}

/// The activation called `name` (as a layer), with its arguments.
fn activation(name: &str, args: &Args) -> Option<Activation> {
    Some(match name {
        "relu" => Activation::Relu,
        "leaky_relu" => Activation::LeakyRelu {
            alpha: args.float("alpha"),
        },
        "elu" => Activation::Elu {
            alpha: args.float("alpha"),
        },
        "selu" => Activation::Selu,
        "tanh" => Activation::Tanh,
        "sigmoid" => Activation::Sigmoid,
        "softmax" => Activation::Softmax,
        _ => return None,
    })
}

/// The activation named by a symbol argument (`activation: relu`); the
/// outer `None` means the name is unknown, the inner one means `none`.
pub fn activation_symbol(name: &str) -> Option<Option<Activation>> {
    Some(Some(match name {
        "none" | "linear" => return Some(None),
        "relu" => Activation::Relu,
        "leaky_relu" => Activation::LeakyRelu { alpha: 0.3 },
        "elu" => Activation::Elu { alpha: 1.0 },
        "selu" => Activation::Selu,
        "tanh" => Activation::Tanh,
        "sigmoid" => Activation::Sigmoid,
        "softmax" => Activation::Softmax,
        _ => return None,
    }))
}

/// The activation names accepted by `activation:`.
pub const ACTIVATIONS: &[&str] = &[
    "none",
    "linear",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "tanh",
    "sigmoid",
    "softmax",
];

/// The initializer named by a symbol.
pub fn init_symbol(name: &str) -> Option<Init> {
    Some(match name {
        "glorot_uniform" => Init::GlorotUniform,
        "he_normal" => Init::HeNormal,
        "he_uniform" => Init::HeUniform,
        "lecun_normal" => Init::LecunNormal,
        "zeros" => Init::Zeros,
        "ones" => Init::Ones,
        _ => return None,
    })
}

/// The initializer names.
pub const INITS: &[&str] = &[
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "zeros",
    "ones",
];
