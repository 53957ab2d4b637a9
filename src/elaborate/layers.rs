//! The primitive layers of the language: their signatures (argument names,
//! kinds and defaults) and how each expands into graph ops; and, for every
//! op, how the language writes it ([`written_as`]).
//!
//! The matches over [`Op`] and [`Layer`] here have no wildcard arms (the
//! lint below checks it), so that a new op does not compile until the
//! language has a way to write it and its layer an expansion.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

use crate::graph::{Activation, Init, Interpolation, Op, Padding, PoolKind};

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
    /// `same`, `valid`, or explicit amounts as [`Kind::Sides`] takes them.
    Padding,
    /// Amounts for the four sides of an image: a non-negative integer (all
    /// four), a pair `[h, w]` (top and bottom, left and right), a pair of
    /// pairs `[[top, bottom], [left, right]]` or four `[top, bottom, left,
    /// right]`.
    Sides,
    /// An activation name or `none`.
    Activation,
    /// An initializer name, possibly with `where` entries.
    Init,
    /// An axis: an integer, negative counting from the end.
    Axis,
    /// A position along an axis: an integer, negative counting from the end.
    Index,
    /// A per-example shape: a list of positive integers, one of which may
    /// be -1.
    Shape,
    /// `nearest` or `bilinear`.
    Interpolation,
    /// `none`, or an integer >= 0, or a pair `[h, w]` of them.
    OutputPadding,
    /// `same` or `valid` only: Keras's `Conv2DTranspose` takes no explicit
    /// amounts.
    SameOrValid,
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
            Kind::Padding => {
                "`same`, `valid`, or explicit amounts: one integer, [height, width] or \
                 [top, bottom, left, right]"
            }
            Kind::Sides => {
                "a non-negative integer, a pair [height, width] or four [top, bottom, left, right]"
            }
            Kind::Activation => {
                "an activation (relu, leaky_relu, elu, selu, tanh, sigmoid, relu6, swish, silu, \
                 gelu, hard_sigmoid, hard_swish, hard_silu, mish, softmax or none)"
            }
            Kind::Init => {
                "an initializer (glorot_uniform, he_normal, he_uniform, lecun_normal, zeros, ones)"
            }
            Kind::Axis => "an integer axis",
            Kind::Index => "an integer index (negative counts from the end)",
            Kind::Shape => "a shape: a list of positive integers, one of which may be -1",
            Kind::Interpolation => "`nearest` or `bilinear`",
            Kind::OutputPadding => {
                "`none`, a non-negative integer or a pair [height, width] of them"
            }
            Kind::SameOrValid => "`same` or `valid`",
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
    a("groups", Positive, Int(1)),
];
const CONV_TRANSPOSE: &[ArgSpec] = &[
    a("filters", Positive, Required),
    a("kernel", Pair, Required),
    a("stride", Pair, Int(1)),
    a("padding", Kind::SameOrValid, Symbol("valid")),
    a("output_padding", Kind::OutputPadding, Symbol("none")),
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
    a("ceil_mode", Kind::Bool, DefaultValue::Bool(false)),
];
const AVGPOOL: &[ArgSpec] = &[
    a("size", Pair, Required),
    a("stride", Pair, SameAs("size")),
    a("padding", Kind::Padding, Symbol("valid")),
    a("ceil_mode", Kind::Bool, DefaultValue::Bool(false)),
    a("trainable", Kind::Bool, DefaultValue::Bool(false)),
    a("activation", Kind::Activation, Symbol("none")),
];
const UPSAMPLE: &[ArgSpec] = &[
    a("factor", Pair, Int(2)),
    a("mode", Kind::Interpolation, Symbol("nearest")),
];
// Keras's defaults: `ZeroPadding2D(padding=(1, 1))`, `Cropping2D(cropping=((0, 0), (0, 0)))`.
const ZERO_PADDING: &[ArgSpec] = &[a("padding", Sides, Int(1))];
const CROPPING: &[ArgSpec] = &[a("cropping", Sides, Int(0))];
const DEPTH_MAXPOOL: &[ArgSpec] = &[a("size", Positive, Required)];
const DROPOUT: &[ArgSpec] = &[a("rate", Rate, Required)];
const BATCHNORM: &[ArgSpec] = &[
    a("momentum", Rate, Float(0.99)),
    a("epsilon", Number, Float(0.001)),
    a("trainable", Kind::Bool, DefaultValue::Bool(true)),
    a("center", Kind::Bool, DefaultValue::Bool(true)),
    a("scale", Kind::Bool, DefaultValue::Bool(true)),
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
const GELU: &[ArgSpec] = &[a("approximate", Kind::Bool, DefaultValue::Bool(false))];
const CONCAT: &[ArgSpec] = &[a("axis", Axis, Int(-1))];
const RESHAPE: &[ArgSpec] = &[a("shape", Kind::Shape, Required)];
const CHANNELS: &[ArgSpec] = &[a("start", Index, Required), a("end", Index, Required)];
const NONE: &[ArgSpec] = &[];

/// Every primitive layer, by name, with its signature.
pub const LAYERS: &[(&str, &[ArgSpec])] = &[
    ("conv", CONV),
    ("conv_transpose", CONV_TRANSPOSE),
    ("depthwise_conv", DEPTHWISE),
    ("separable_conv", SEPARABLE),
    ("dense", DENSE),
    ("maxpool", MAXPOOL),
    ("avgpool", AVGPOOL),
    ("upsample", UPSAMPLE),
    ("zero_padding", ZERO_PADDING),
    ("cropping", CROPPING),
    ("global_avg_pool", NONE),
    ("global_max_pool", NONE),
    ("depth_maxpool", DEPTH_MAXPOOL),
    ("flatten", NONE),
    ("reshape", RESHAPE),
    ("channels", CHANNELS),
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
    ("relu6", NONE),
    ("swish", NONE),
    ("silu", NONE),
    ("gelu", GELU),
    ("hard_sigmoid", NONE),
    ("hard_swish", NONE),
    ("hard_silu", NONE),
    ("mish", NONE),
    ("softmax", NONE),
    ("concat", CONCAT),
];

/// A layer's signature as the user writes a call: `name(arg, arg = default, ...)`.
pub fn render_signature(layer: &str, signature: &[ArgSpec]) -> String {
    let args: Vec<String> = signature
        .iter()
        .map(|s| match default_text(s.default) {
            Some(default) => format!("{} = {default}", s.name),
            None => s.name.to_string(),
        })
        .collect();
    format!("{layer}({})", args.join(", "))
}

/// A default as it is written (`1`, `0.5`, `valid`, or the other argument
/// it copies), or `None` for an argument that must be given.
pub fn default_text(default: DefaultValue) -> Option<String> {
    Some(match default {
        DefaultValue::Required => return None,
        DefaultValue::Int(i) => i.to_string(),
        DefaultValue::Float(x) => super::value::float(x),
        DefaultValue::Bool(b) => b.to_string(),
        DefaultValue::Symbol(sym) | DefaultValue::SameAs(sym) => sym.to_string(),
    })
}

/// The Keras layer each primitive layer matches (for its documentation).
pub const KERAS: &[(&str, &str)] = &[
    ("conv", "Conv2D"),
    ("conv_transpose", "Conv2DTranspose"),
    ("depthwise_conv", "DepthwiseConv2D"),
    ("separable_conv", "SeparableConv2D"),
    ("dense", "Dense"),
    ("maxpool", "MaxPooling2D"),
    ("avgpool", "AveragePooling2D"),
    ("upsample", "UpSampling2D"),
    ("zero_padding", "ZeroPadding2D"),
    ("cropping", "Cropping2D"),
    ("global_avg_pool", "GlobalAveragePooling2D"),
    ("global_max_pool", "GlobalMaxPooling2D"),
    (
        "depth_maxpool",
        "none: tf.nn.max_pool over the channels (Hands-On ML's DepthPool)",
    ),
    ("flatten", "Flatten"),
    ("reshape", "Reshape"),
    ("channels", "Lambda of x[..., start:end]"),
    ("dropout", "Dropout"),
    ("batchnorm", "BatchNormalization"),
    ("lrn", "none: tf.nn.local_response_normalization"),
    ("rbf", "none: LeNet-5's radial basis output"),
    ("relu", "ReLU, or activation=\"relu\""),
    ("leaky_relu", "LeakyReLU"),
    ("elu", "ELU"),
    ("selu", "activation=\"selu\""),
    ("tanh", "activation=\"tanh\""),
    ("sigmoid", "activation=\"sigmoid\""),
    ("relu6", "ReLU(max_value=6)"),
    ("swish", "activation=\"swish\""),
    ("silu", "activation=\"silu\""),
    ("gelu", "activation=\"gelu\""),
    ("hard_sigmoid", "activation=\"hard_sigmoid\""),
    ("hard_swish", "activation=\"hard_swish\""),
    ("hard_silu", "activation=\"hard_silu\""),
    ("mish", "activation=\"mish\""),
    ("softmax", "Softmax, or activation=\"softmax\""),
    ("concat", "Concatenate"),
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
    /// Amounts for `[top, bottom, left, right]`.
    Sides([u64; 4]),
    /// An activation, or none.
    Activation(Option<Activation>),
    /// An initializer.
    Init(Init),
    /// A shape, -1 where it is inferred.
    Shape(Vec<i64>),
    /// An interpolation.
    Interpolation(Interpolation),
    /// A transposed convolution's output padding, or `none`.
    OutputPadding(Option<[u64; 2]>),
}

/// The checked arguments of one call, in signature order.
pub struct Args(pub Vec<(&'static str, Arg)>);

#[allow(
    clippy::wildcard_enum_match_arm,
    reason = "binding checked each argument against its kind, so the fallbacks are never taken"
)]
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
    /// A shape argument.
    pub fn shape(&self, name: &str) -> Vec<i64> {
        match self.get(name) {
            Arg::Shape(s) => s.clone(),
            _ => Vec::new(),
        }
    }
    /// A boolean argument.
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Arg::Bool(true))
    }
    /// The padding argument, with pooling's `ceil_mode` where the layer
    /// has one (which [`conflict`] checked is not given with `same`).
    pub fn padding(&self) -> Padding {
        let padding = match self.get("padding") {
            Arg::Padding(p) => *p,
            _ => Padding::Valid,
        };
        let ceil = self
            .0
            .iter()
            .any(|(n, a)| *n == "ceil_mode" && *a == Arg::Bool(true));
        match padding {
            Padding::Same => Padding::Same,
            Padding::Valid => Padding::explicit([[0, 0], [0, 0]], ceil),
            Padding::Explicit { pads, .. } => Padding::explicit(pads, ceil),
        }
    }
    /// A sides argument: `[top, bottom, left, right]`.
    pub fn sides(&self, name: &str) -> [u64; 4] {
        match self.get(name) {
            Arg::Sides(s) => *s,
            Arg::Int(i) => [*i as u64; 4],
            _ => [0; 4],
        }
    }
    /// The activation argument.
    pub fn activation(&self) -> Option<Activation> {
        match self.get("activation") {
            Arg::Activation(a) => *a,
            _ => None,
        }
    }
    /// The interpolation argument.
    pub fn interpolation(&self) -> Interpolation {
        match self.get("mode") {
            Arg::Interpolation(i) => *i,
            _ => Interpolation::Nearest,
        }
    }
    /// The output-padding argument.
    pub fn output_padding(&self) -> Option<[u64; 2]> {
        match self.get("output_padding") {
            Arg::OutputPadding(p) => *p,
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
/// A name outside [`LAYERS`], or `concat`, which the elaborator builds itself
/// from its inputs, expands into nothing.
pub fn expand(name: &str, args: &Args) -> Vec<Part> {
    let Some(layer) = Layer::named(name) else {
        return Vec::new();
    };
    let mut parts = layer.expand(args);
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

/// A primitive layer that expands into a chain of ops: every entry of
/// [`LAYERS`] but `concat`, which the elaborator builds from several tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// `conv`
    Conv,
    /// `conv_transpose`
    ConvTranspose,
    /// `depthwise_conv`
    DepthwiseConv,
    /// `separable_conv`: a depthwise then a pointwise convolution.
    SeparableConv,
    /// `dense`
    Dense,
    /// `maxpool`
    MaxPool,
    /// `avgpool`, with a trainable scale and bias if asked (LeNet-5).
    AvgPool,
    /// `upsample`
    Upsample,
    /// `zero_padding`
    ZeroPadding,
    /// `cropping`
    Cropping,
    /// `global_avg_pool`
    GlobalAvgPool,
    /// `global_max_pool`
    GlobalMaxPool,
    /// `depth_maxpool`
    DepthMaxPool,
    /// `flatten`
    Flatten,
    /// `reshape`
    Reshape,
    /// `channels`: a slice of the last axis.
    Channels,
    /// `dropout`
    Dropout,
    /// `batchnorm`
    BatchNorm,
    /// `lrn`
    Lrn,
    /// `rbf`
    Rbf,
    /// `relu`
    Relu,
    /// `leaky_relu`
    LeakyRelu,
    /// `elu`
    Elu,
    /// `selu`
    Selu,
    /// `tanh`
    Tanh,
    /// `sigmoid`
    Sigmoid,
    /// `relu6`
    Relu6,
    /// `swish`, or `silu`
    Swish,
    /// `gelu`
    Gelu,
    /// `hard_sigmoid`
    HardSigmoid,
    /// `hard_swish`, or `hard_silu`
    HardSwish,
    /// `mish`
    Mish,
    /// `softmax`
    Softmax,
}

impl Layer {
    /// The layer called `name` in `.cnn`, or `None` for a name that is not
    /// one (and for `concat`).
    pub fn named(name: &str) -> Option<Layer> {
        Some(match name {
            "conv" => Layer::Conv,
            "conv_transpose" => Layer::ConvTranspose,
            "depthwise_conv" => Layer::DepthwiseConv,
            "separable_conv" => Layer::SeparableConv,
            "dense" => Layer::Dense,
            "maxpool" => Layer::MaxPool,
            "avgpool" => Layer::AvgPool,
            "upsample" => Layer::Upsample,
            "zero_padding" => Layer::ZeroPadding,
            "cropping" => Layer::Cropping,
            "global_avg_pool" => Layer::GlobalAvgPool,
            "global_max_pool" => Layer::GlobalMaxPool,
            "depth_maxpool" => Layer::DepthMaxPool,
            "flatten" => Layer::Flatten,
            "reshape" => Layer::Reshape,
            "channels" => Layer::Channels,
            "dropout" => Layer::Dropout,
            "batchnorm" => Layer::BatchNorm,
            "lrn" => Layer::Lrn,
            "rbf" => Layer::Rbf,
            "relu" => Layer::Relu,
            "leaky_relu" => Layer::LeakyRelu,
            "elu" => Layer::Elu,
            "selu" => Layer::Selu,
            "tanh" => Layer::Tanh,
            "sigmoid" => Layer::Sigmoid,
            "relu6" => Layer::Relu6,
            "swish" | "silu" => Layer::Swish,
            "gelu" => Layer::Gelu,
            "hard_sigmoid" => Layer::HardSigmoid,
            "hard_swish" | "hard_silu" => Layer::HardSwish,
            "mish" => Layer::Mish,
            "softmax" => Layer::Softmax,
            _ => return None,
        })
    }

    /// The ops the layer expands into with `args` (bound against its
    /// signature), in order, without the activation that an `activation:`
    /// argument appends ([`expand`] adds it).
    pub fn expand(self, args: &Args) -> Vec<Part> {
        let part = |suffix, op| Part {
            suffix,
            op,
            init: Init::GlorotUniform,
        };
        let pool = |kind| Op::Pool2d {
            kind,
            size: args.pair("size"),
            stride: args.pair("stride"),
            padding: args.padding(),
        };
        let activation = |activation| vec![part("", Op::Activation(activation))];
        match self {
            Layer::Conv => vec![Part {
                suffix: "",
                op: Op::Conv2d {
                    filters: args.int("filters"),
                    kernel: args.pair("kernel"),
                    stride: args.pair("stride"),
                    padding: args.padding(),
                    dilation: args.pair("dilation"),
                    bias: args.bool("use_bias"),
                    groups: args.int("groups"),
                },
                init: args.init(),
            }],
            Layer::ConvTranspose => vec![Part {
                suffix: "",
                op: Op::ConvTranspose2d {
                    filters: args.int("filters"),
                    kernel: args.pair("kernel"),
                    stride: args.pair("stride"),
                    padding: args.padding(),
                    output_padding: args.output_padding(),
                    dilation: args.pair("dilation"),
                    bias: args.bool("use_bias"),
                },
                init: args.init(),
            }],
            Layer::DepthwiseConv => vec![Part {
                suffix: "",
                op: depthwise(args, args.bool("use_bias")),
                init: args.init(),
            }],
            Layer::SeparableConv => vec![
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
                        groups: 1,
                    },
                    init: args.init(),
                },
            ],
            Layer::Dense => vec![Part {
                suffix: "",
                op: Op::Dense {
                    units: args.int("units"),
                    bias: args.bool("use_bias"),
                },
                init: args.init(),
            }],
            Layer::MaxPool => vec![part("", pool(PoolKind::Max))],
            Layer::AvgPool => {
                let mut parts = vec![part("", pool(PoolKind::Avg))];
                if args.bool("trainable") {
                    parts.push(part("scale", Op::ScaleBias));
                }
                parts
            }
            Layer::Upsample => vec![part(
                "",
                Op::Upsample {
                    factor: args.pair("factor"),
                    mode: args.interpolation(),
                },
            )],
            Layer::ZeroPadding => vec![part("", pad(args.sides("padding"), 1))],
            Layer::Cropping => vec![part("", pad(args.sides("cropping"), -1))],
            Layer::GlobalAvgPool => vec![part(
                "",
                Op::GlobalPool {
                    kind: PoolKind::Avg,
                },
            )],
            Layer::GlobalMaxPool => vec![part(
                "",
                Op::GlobalPool {
                    kind: PoolKind::Max,
                },
            )],
            Layer::DepthMaxPool => vec![part(
                "",
                Op::DepthMaxPool {
                    size: args.int("size"),
                },
            )],
            Layer::Flatten => vec![part("", Op::Flatten)],
            Layer::Reshape => vec![part(
                "",
                Op::Reshape {
                    shape: args.shape("shape"),
                },
            )],
            Layer::Channels => vec![part(
                "",
                Op::ChannelSlice {
                    start: args.signed("start"),
                    end: args.signed("end"),
                },
            )],
            Layer::Dropout => vec![part(
                "",
                Op::Dropout {
                    rate: args.float("rate"),
                },
            )],
            Layer::BatchNorm => vec![part(
                "",
                Op::BatchNorm {
                    momentum: args.float("momentum"),
                    epsilon: args.float("epsilon"),
                    center: args.bool("center"),
                    scale: args.bool("scale"),
                },
            )],
            Layer::Lrn => vec![part(
                "",
                Op::Lrn {
                    depth_radius: args.int("depth_radius"),
                    bias: args.float("bias"),
                    alpha: args.float("alpha"),
                    beta: args.float("beta"),
                },
            )],
            Layer::Rbf => vec![part(
                "",
                Op::Rbf {
                    units: args.int("units"),
                },
            )],
            Layer::Relu => activation(Activation::Relu),
            Layer::LeakyRelu => activation(Activation::LeakyRelu {
                alpha: args.float("alpha"),
            }),
            Layer::Elu => activation(Activation::Elu {
                alpha: args.float("alpha"),
            }),
            Layer::Selu => activation(Activation::Selu),
            Layer::Tanh => activation(Activation::Tanh),
            Layer::Sigmoid => activation(Activation::Sigmoid),
            Layer::Relu6 => activation(Activation::Relu6),
            Layer::Swish => activation(Activation::Swish),
            Layer::Gelu => activation(Activation::Gelu {
                approximate: args.bool("approximate"),
            }),
            Layer::HardSigmoid => activation(Activation::HardSigmoid),
            Layer::HardSwish => activation(Activation::HardSwish),
            Layer::Mish => activation(Activation::Mish),
            Layer::Softmax => activation(Activation::Softmax),
        }
    }
}

/// How `.cnn` source writes an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// By calling this primitive layer, which expands into the op (among
    /// others, perhaps: `avgpool(trainable: true)` adds a `scale_bias`).
    Layer(Layer),
    /// By combining several tensors: the operator or call given (`+`, `*`,
    /// `concat`), which the elaborator builds from its operands.
    Combination(&'static str),
    /// By the model's header, `model m : [height, width, channels]`.
    ModelInput,
    /// Not at all: autodiff adds it to the training graph.
    Training,
}

/// How the language writes `op`: every op of the IR either has a way in
/// from `.cnn` source or says why not, so that a new op does not compile
/// until it has one (and, through [`Layer::expand`], an expansion).
pub fn written_as(op: &Op) -> Written {
    match op {
        Op::Input { .. } => Written::ModelInput,
        Op::Conv2d { .. } => Written::Layer(Layer::Conv),
        Op::ConvTranspose2d { .. } => Written::Layer(Layer::ConvTranspose),
        Op::DepthwiseConv2d { .. } => Written::Layer(Layer::DepthwiseConv),
        Op::Dense { .. } => Written::Layer(Layer::Dense),
        Op::Pool2d {
            kind: PoolKind::Max,
            ..
        } => Written::Layer(Layer::MaxPool),
        Op::Pool2d {
            kind: PoolKind::Avg,
            ..
        }
        | Op::ScaleBias => Written::Layer(Layer::AvgPool),
        Op::Upsample { .. } => Written::Layer(Layer::Upsample),
        // By the sign of the amounts: a mixed op (never written) is a
        // cropping's, as its name says.
        Op::Pad { .. } if op.pad_amounts().iter().all(|&a| a >= 0) => {
            Written::Layer(Layer::ZeroPadding)
        }
        Op::Pad { .. } => Written::Layer(Layer::Cropping),
        Op::GlobalPool {
            kind: PoolKind::Max,
        } => Written::Layer(Layer::GlobalMaxPool),
        Op::GlobalPool {
            kind: PoolKind::Avg,
        } => Written::Layer(Layer::GlobalAvgPool),
        Op::DepthMaxPool { .. } => Written::Layer(Layer::DepthMaxPool),
        Op::Flatten => Written::Layer(Layer::Flatten),
        Op::Reshape { .. } => Written::Layer(Layer::Reshape),
        Op::ChannelSlice { .. } => Written::Layer(Layer::Channels),
        Op::Dropout { .. } => Written::Layer(Layer::Dropout),
        Op::BatchNorm { .. } => Written::Layer(Layer::BatchNorm),
        Op::Lrn { .. } => Written::Layer(Layer::Lrn),
        Op::Rbf { .. } => Written::Layer(Layer::Rbf),
        Op::Activation(activation) => Written::Layer(activation_layer(*activation)),
        Op::Add => Written::Combination("+"),
        Op::Multiply => Written::Combination("*"),
        Op::Concat { .. } => Written::Combination("concat"),
        Op::Labels { .. }
        | Op::Upstream { .. }
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. }
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => Written::Training,
    }
}

/// The layer that applies `activation` on its own.
fn activation_layer(activation: Activation) -> Layer {
    match activation {
        Activation::Relu => Layer::Relu,
        Activation::LeakyRelu { .. } => Layer::LeakyRelu,
        Activation::Elu { .. } => Layer::Elu,
        Activation::Selu => Layer::Selu,
        Activation::Tanh => Layer::Tanh,
        Activation::Sigmoid => Layer::Sigmoid,
        Activation::Relu6 => Layer::Relu6,
        Activation::Swish => Layer::Swish,
        Activation::Gelu { .. } => Layer::Gelu,
        Activation::HardSigmoid => Layer::HardSigmoid,
        Activation::HardSwish => Layer::HardSwish,
        Activation::Mish => Layer::Mish,
        Activation::Softmax => Layer::Softmax,
    }
}

/// A zero padding (`sign` 1) or cropping (`sign` -1) by `sides`, which
/// the argument's check bounds by [`crate::ops::MAX_PAD`].
fn pad(sides: [u64; 4], sign: i64) -> Op {
    let [top, bottom, left, right] = sides.map(|s| sign * s as i64);
    Op::Pad {
        top,
        bottom,
        left,
        right,
    }
}

/// Arguments of a call, each valid on its own, that do not go together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The argument at fault.
    pub argument: &'static str,
    /// What is wrong.
    pub message: &'static str,
    /// How to fix it.
    pub help: &'static str,
}

/// Whether the arguments of a call conflict: pooling's `ceil_mode` with
/// `same` padding, which has no explicit amounts to round (PyTorch's
/// `ceil_mode` comes with explicit padding; TensorFlow's `same` already
/// rounds up).
pub fn conflict(args: &Args) -> Option<Conflict> {
    let given = |name: &str| args.0.iter().find(|(n, _)| *n == name).map(|(_, a)| a);
    match (given("padding"), given("ceil_mode")) {
        (Some(Arg::Padding(Padding::Same)), Some(Arg::Bool(true))) => Some(Conflict {
            argument: "ceil_mode",
            message: "`ceil_mode: true` does not go with `padding: same`",
            help: "help: `same` padding already gives ceil(input / stride) outputs; \
                   `ceil_mode` rounds up the output of `valid` or explicit padding",
        }),
        _ => None,
    }
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
        "relu6" => Activation::Relu6,
        "swish" | "silu" => Activation::Swish,
        "gelu" => Activation::Gelu { approximate: false },
        "hard_sigmoid" => Activation::HardSigmoid,
        "hard_swish" | "hard_silu" => Activation::HardSwish,
        "mish" => Activation::Mish,
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
    "relu6",
    "swish",
    "silu",
    "gelu",
    "hard_sigmoid",
    "hard_swish",
    "hard_silu",
    "mish",
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

/// The interpolation named by a symbol (`mode: bilinear`).
pub fn interpolation_symbol(name: &str) -> Option<Interpolation> {
    match name {
        "nearest" => Some(Interpolation::Nearest),
        "bilinear" => Some(Interpolation::Bilinear),
        _ => None,
    }
}

/// The interpolation names.
pub const INTERPOLATIONS: &[&str] = &["nearest", "bilinear"];

/// The initializer names.
pub const INITS: &[&str] = &[
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "zeros",
    "ones",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_has_its_keras_equivalent_in_order() {
        let layers: Vec<&str> = LAYERS.iter().map(|(n, _)| *n).collect();
        let keras: Vec<&str> = KERAS.iter().map(|(n, _)| *n).collect();
        assert_eq!(layers, keras);
    }

    #[test]
    fn a_signature_reads_as_a_call_with_its_defaults() {
        let dense = signature("dense").expect("dense");
        assert_eq!(
            render_signature("dense", dense),
            "dense(units, activation = none, use_bias = true, init = glorot_uniform, trainable = true)"
        );
    }

    #[test]
    fn every_layer_but_concat_is_a_layer_that_expands() {
        for (name, _) in LAYERS {
            assert_eq!(Layer::named(name).is_none(), *name == "concat", "{name}");
        }
    }

    #[test]
    fn names_that_are_not_chain_layers_expand_into_nothing() {
        assert!(expand("concat", &Args(vec![("axis", Arg::Int(-1))])).is_empty());
        assert!(expand("residual_unit", &Args(Vec::new())).is_empty());
    }

    #[test]
    fn an_activation_argument_appends_its_op() {
        let args = Args(vec![
            ("units", Arg::Int(3)),
            ("activation", Arg::Activation(Some(Activation::Relu))),
            ("use_bias", Arg::Bool(false)),
            ("init", Arg::Init(Init::HeNormal)),
            ("trainable", Arg::Bool(true)),
        ]);
        let parts = expand("dense", &args);
        let suffixes: Vec<&str> = parts.iter().map(|p| p.suffix).collect();
        assert_eq!(suffixes, ["", "relu"]);
        assert_eq!(
            parts[0].op,
            Op::Dense {
                units: 3,
                bias: false
            }
        );
        assert_eq!(parts[0].init, Init::HeNormal);
        assert_eq!(parts[1].op, Op::Activation(Activation::Relu));
    }

    #[test]
    fn ops_are_written_with_the_layer_that_makes_them() {
        let elu = Op::Activation(Activation::Elu { alpha: 1.0 });
        assert_eq!(written_as(&elu), Written::Layer(Layer::Elu));
        assert_eq!(written_as(&Op::ScaleBias), Written::Layer(Layer::AvgPool));
        assert_eq!(written_as(&Op::Multiply), Written::Combination("*"));
        assert_eq!(
            written_as(&Op::Labels { shape: vec![1] }),
            Written::Training
        );
    }
}
