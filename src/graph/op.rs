//! The closed set of primitive operations.
//!
//! Everything that can be written in `.cnn` (residual units, inception
//! modules, SE-blocks, separable convolutions' two halves) is built from these
//! in the stdlib; the shape, weight and cost rules of each op live in
//! `src/ops/`, and `docs/adding-an-op.md` lists every file an op touches.
//!
//! Every rule over [`Op`] is an exhaustive `match` without a wildcard arm
//! (the lint below checks it), so that a new op does not compile until each
//! rule has decided what to do with it.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

use std::fmt;

/// Spatial padding, as TensorFlow defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Zero padding so that the output is `ceil(input / stride)`; the odd
    /// pixel goes to the bottom and right.
    Same,
    /// No padding.
    Valid,
}

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// The largest value of the window.
    Max,
    /// The mean of the window (padding excluded).
    Avg,
}

/// Element-wise (and softmax: last-axis) activation functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`
    Relu,
    /// `x` if positive, else `alpha * x`.
    LeakyRelu {
        /// The slope for negative inputs.
        alpha: f64,
    },
    /// `x` if positive, else `alpha * (exp(x) - 1)`.
    Elu {
        /// The saturation value for negative inputs.
        alpha: f64,
    },
    /// Scaled ELU with the self-normalising constants.
    Selu,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// `min(max(x, 0), 6)` (MobileNet).
    Relu6,
    /// `x * sigmoid(x)`, also called SiLU (EfficientNet).
    Swish,
    /// `x * P(X <= x)` for a standard normal `X`: `0.5 x (1 + erf(x / sqrt 2))`,
    /// or with `approximate` the tanh form
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    Gelu {
        /// Whether the tanh approximation is used.
        approximate: bool,
    },
    /// `relu6(x + 3) / 6`, as Keras 3 defines it (Keras 2's was `0.2 x + 0.5`).
    HardSigmoid,
    /// `x * relu6(x + 3) / 6`, also called hard SiLU (MobileNetV3).
    HardSwish,
    /// `x * tanh(softplus(x))`.
    Mish,
    /// Softmax over the last axis.
    Softmax,
}

impl Activation {
    /// The name as written in `.cnn`.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Elu { .. } => "elu",
            Activation::Selu => "selu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu6 => "relu6",
            Activation::Swish => "swish",
            Activation::Gelu { .. } => "gelu",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
            Activation::Mish => "mish",
            Activation::Softmax => "softmax",
        }
    }
}

/// One primitive operation. Shapes are per example; the batch is implicit.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The model's input.
    Input {
        /// Its per-example shape.
        shape: Vec<u64>,
    },
    /// 2-D convolution of `[h, w, c]` with a `[kh, kw, c / groups, filters]`
    /// kernel: output channel block `j` (of `filters / groups`) reads input
    /// channel block `j` (of `c / groups`), as Keras's `Conv2D(groups=g)`.
    Conv2d {
        /// Output channels.
        filters: u64,
        /// Kernel height and width.
        kernel: [u64; 2],
        /// Vertical and horizontal stride.
        stride: [u64; 2],
        /// Padding.
        padding: Padding,
        /// Dilation rate.
        dilation: [u64; 2],
        /// Whether a bias is added.
        bias: bool,
        /// Channel groups (1: an ordinary convolution).
        groups: u64,
    },
    /// Depthwise convolution: each channel with its own `multiplier` filters.
    DepthwiseConv2d {
        /// Filters per input channel.
        multiplier: u64,
        /// Kernel height and width.
        kernel: [u64; 2],
        /// Vertical and horizontal stride.
        stride: [u64; 2],
        /// Padding.
        padding: Padding,
        /// Dilation rate.
        dilation: [u64; 2],
        /// Whether a bias is added.
        bias: bool,
    },
    /// Fully connected layer over the last axis, kernel `[in, units]`.
    Dense {
        /// Output features.
        units: u64,
        /// Whether a bias is added.
        bias: bool,
    },
    /// Max or average pooling over windows of `[h, w, c]`.
    Pool2d {
        /// Max or average.
        kind: PoolKind,
        /// Window height and width.
        size: [u64; 2],
        /// Vertical and horizontal stride.
        stride: [u64; 2],
        /// Padding.
        padding: Padding,
    },
    /// Pooling of each whole feature map to one value: `[h, w, c] -> [c]`.
    GlobalPool {
        /// Max or average.
        kind: PoolKind,
    },
    /// Max pooling over groups of `size` channels (the seed's depthwise max pooling).
    DepthMaxPool {
        /// Channels per group.
        size: u64,
    },
    /// `[h, w, c] -> [h * w * c]`.
    Flatten,
    /// The same values in another per-example shape (Keras's `Reshape`);
    /// one entry may be -1, for what the others leave.
    Reshape {
        /// The target shape.
        shape: Vec<i64>,
    },
    /// Channels `start..end` of the last axis (Keras: a `Lambda` of
    /// `x[..., start:end]`); a negative index counts from the end.
    ChannelSlice {
        /// The first channel kept.
        start: i64,
        /// One past the last channel kept.
        end: i64,
    },
    /// Zeroes a fraction `rate` of the values while training.
    Dropout {
        /// The fraction dropped.
        rate: f64,
    },
    /// Batch normalization over the last axis.
    BatchNorm {
        /// Momentum of the moving averages.
        momentum: f64,
        /// Added to the variance.
        epsilon: f64,
        /// Whether a learned offset `beta` is added (Keras's `center`).
        center: bool,
        /// Whether a learned factor `gamma` multiplies (Keras's `scale`).
        scale: bool,
    },
    /// AlexNet's local response normalization across channels.
    Lrn {
        /// Neighbouring channels on each side.
        depth_radius: u64,
        /// `k` in the formula.
        bias: f64,
        /// Scale of the sum of squares.
        alpha: f64,
        /// Exponent.
        beta: f64,
    },
    /// `x * coefficient[c] + bias[c]`: LeNet-5's trainable subsampling.
    ScaleBias,
    /// LeNet-5's output: the squared distance of `[in]` to each of `units` centres.
    Rbf {
        /// Output units.
        units: u64,
    },
    /// An activation function.
    Activation(Activation),
    /// Element-wise sum of tensors of equal shape (the residual connection).
    Add,
    /// Concatenation along `axis` (the depth concatenation of inception modules).
    Concat {
        /// The axis, counted in the per-example shape.
        axis: usize,
    },
    /// `x[h, w, c] * s[c]`: channel-wise recalibration (the SE-block).
    Multiply,

    // The ops below appear only in training graphs, built by autodiff.
    /// The class labels of a training batch: one class index per example.
    Labels,
    /// The gradient of some function of the outputs with respect to output
    /// `output`, given by the caller of a gradient program: it seeds the
    /// backward pass where a training graph has a loss (a vector-Jacobian
    /// product, `crate::autodiff::vector_jacobian`).
    Upstream {
        /// The output it is the gradient of.
        output: String,
        /// The output's per-example shape.
        shape: Vec<u64>,
    },
    /// Sparse categorical cross-entropy of logits against labels, fused with
    /// softmax: each example's loss, times `weight` (the output's loss weight).
    CrossEntropy {
        /// Label smoothing in [0, 1).
        smoothing: f64,
        /// The loss weight of this output.
        weight: f64,
    },
    /// The gradient of the mean weighted cross-entropy with respect to the
    /// logits: `(softmax(z) - target) * weight / batch`.
    CrossEntropyGrad {
        /// Label smoothing in [0, 1).
        smoothing: f64,
        /// The loss weight of this output.
        weight: f64,
    },
    /// The gradient of the loss with respect to input `slot` of a forward
    /// op, from the inputs its gradient rule names (`crate::ops::gradient`).
    InputGrad {
        /// The forward op.
        forward: Box<Op>,
        /// Which of its inputs.
        slot: usize,
        /// The per-example shapes of all its inputs (the gradient has the
        /// shape of input `slot`; a concatenation's slice sits after the others).
        inputs: Vec<Vec<u64>>,
        /// The forward node's name, whose weights and saved statistics the
        /// gradient may use.
        node: String,
    },
    /// The gradient of the loss with respect to weight number `index` of a
    /// forward op, summed over the batch (so not per example).
    WeightGrad {
        /// The forward op.
        forward: Box<Op>,
        /// Which of its weights (in the order of `crate::ops::params`).
        index: usize,
        /// The weight's full name (`conv1.kernel`).
        weight: String,
        /// The weight's shape.
        shape: Vec<u64>,
    },
}

/// How many inputs an op takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// At least this many.
    AtLeast(usize),
}

impl Arity {
    /// Whether `n` inputs are acceptable.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl Op {
    /// A short name (`conv2d`, `maxpool`...), used in dumps and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::DepthwiseConv2d { .. } => "depthwise_conv2d",
            Op::Dense { .. } => "dense",
            Op::Pool2d {
                kind: PoolKind::Max,
                ..
            } => "maxpool",
            Op::Pool2d {
                kind: PoolKind::Avg,
                ..
            } => "avgpool",
            Op::GlobalPool {
                kind: PoolKind::Max,
            } => "global_max_pool",
            Op::GlobalPool {
                kind: PoolKind::Avg,
            } => "global_avg_pool",
            Op::DepthMaxPool { .. } => "depth_maxpool",
            Op::Flatten => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::ChannelSlice { .. } => "channels",
            Op::Dropout { .. } => "dropout",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Lrn { .. } => "lrn",
            Op::ScaleBias => "scale_bias",
            Op::Rbf { .. } => "rbf",
            Op::Activation(a) => a.name(),
            Op::Add => "add",
            Op::Concat { .. } => "concat",
            Op::Multiply => "multiply",
            Op::Labels => "labels",
            Op::Upstream { .. } => "upstream",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::CrossEntropyGrad { .. } => "cross_entropy_grad",
            Op::InputGrad { .. } => "input_grad",
            Op::WeightGrad { .. } => "weight_grad",
        }
    }

    /// Whether the op's output has a batch dimension (weight gradients, summed
    /// over the batch, do not).
    pub fn is_batched(&self) -> bool {
        match self {
            Op::WeightGrad { .. } => false,
            Op::Input { .. }
            | Op::Conv2d { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::Dense { .. }
            | Op::Pool2d { .. }
            | Op::GlobalPool { .. }
            | Op::DepthMaxPool { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::ChannelSlice { .. }
            | Op::Dropout { .. }
            | Op::BatchNorm { .. }
            | Op::Lrn { .. }
            | Op::ScaleBias
            | Op::Rbf { .. }
            | Op::Activation(_)
            | Op::Add
            | Op::Concat { .. }
            | Op::Multiply
            | Op::Labels
            | Op::Upstream { .. }
            | Op::CrossEntropy { .. }
            | Op::CrossEntropyGrad { .. }
            | Op::InputGrad { .. } => true,
        }
    }

    /// The number of inputs the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input { .. } | Op::Labels | Op::Upstream { .. } => Arity::Exactly(0),
            Op::Conv2d { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::Dense { .. }
            | Op::Pool2d { .. }
            | Op::GlobalPool { .. }
            | Op::DepthMaxPool { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::ChannelSlice { .. }
            | Op::Dropout { .. }
            | Op::BatchNorm { .. }
            | Op::Lrn { .. }
            | Op::ScaleBias
            | Op::Rbf { .. }
            | Op::Activation(_) => Arity::Exactly(1),
            Op::Add | Op::Concat { .. } => Arity::AtLeast(2),
            Op::Multiply | Op::CrossEntropy { .. } | Op::CrossEntropyGrad { .. } => {
                Arity::Exactly(2)
            }
            // A gradient node reads dY and, by its rule, a forward input or output.
            Op::InputGrad { .. } | Op::WeightGrad { .. } => Arity::AtLeast(1),
        }
    }
}

fn pair(p: [u64; 2]) -> String {
    if p[0] == p[1] {
        p[0].to_string()
    } else {
        format!("{}x{}", p[0], p[1])
    }
}

fn padding(p: Padding) -> &'static str {
    match p {
        Padding::Same => "same",
        Padding::Valid => "valid",
    }
}

/// A stable, readable rendering of the op and its attributes, used by
/// `--emit graph` and the snapshot tests.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Input { .. } | Op::Flatten | Op::ScaleBias | Op::Add | Op::Multiply | Op::Labels => {
                write!(f, "{}", self.name())
            }
            Op::CrossEntropy { smoothing, weight } | Op::CrossEntropyGrad { smoothing, weight } => {
                write!(f, "{}(smoothing={smoothing}, weight={weight})", self.name())
            }
            Op::Upstream { output, .. } => write!(f, "upstream(output={output})"),
            Op::InputGrad { forward, slot, .. } => write!(f, "input_grad[{slot}]({forward})"),
            Op::WeightGrad { forward, weight, .. } => write!(f, "weight_grad[{weight}]({forward})"),
            Op::Conv2d { filters, kernel, stride, padding: p, dilation, bias, groups } => {
                write!(
                    f,
                    "conv2d(filters={filters}, kernel={}, stride={}, padding={}, dilation={}, bias={bias}",
                    pair(*kernel),
                    pair(*stride),
                    padding(*p),
                    pair(*dilation)
                )?;
                // Only a grouped convolution says so, so that the text of
                // every model written before groups stays the same.
                if *groups != 1 {
                    write!(f, ", groups={groups}")?;
                }
                write!(f, ")")
            }
            Op::DepthwiseConv2d { multiplier, kernel, stride, padding: p, dilation, bias } => write!(
                f,
                "depthwise_conv2d(multiplier={multiplier}, kernel={}, stride={}, padding={}, dilation={}, bias={bias})",
                pair(*kernel),
                pair(*stride),
                padding(*p),
                pair(*dilation)
            ),
            Op::Dense { units, bias } => write!(f, "dense(units={units}, bias={bias})"),
            Op::Pool2d { size, stride, padding: p, .. } => {
                write!(f, "{}(size={}, stride={}, padding={})", self.name(), pair(*size), pair(*stride), padding(*p))
            }
            Op::GlobalPool { .. } => write!(f, "{}", self.name()),
            Op::DepthMaxPool { size } => write!(f, "depth_maxpool(size={size})"),
            Op::Reshape { shape } => {
                let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
                write!(f, "reshape(shape=[{}])", dims.join(", "))
            }
            Op::ChannelSlice { start, end } => write!(f, "channels(start={start}, end={end})"),
            Op::Dropout { rate } => write!(f, "dropout(rate={rate})"),
            Op::BatchNorm { momentum, epsilon, center, scale } => {
                write!(f, "batchnorm(momentum={momentum}, epsilon={epsilon}")?;
                // Only what differs from Keras's defaults, so that the text
                // of every model written before them stays the same.
                if !center {
                    write!(f, ", center=false")?;
                }
                if !scale {
                    write!(f, ", scale=false")?;
                }
                write!(f, ")")
            }
            Op::Lrn { depth_radius, bias, alpha, beta } => {
                write!(f, "lrn(depth_radius={depth_radius}, bias={bias}, alpha={alpha}, beta={beta})")
            }
            Op::Rbf { units } => write!(f, "rbf(units={units})"),
            Op::Activation(Activation::LeakyRelu { alpha }) => write!(f, "leaky_relu(alpha={alpha})"),
            Op::Activation(Activation::Elu { alpha }) => write!(f, "elu(alpha={alpha})"),
            Op::Activation(Activation::Gelu { approximate: true }) => write!(f, "gelu(approximate=true)"),
            Op::Activation(a) => write!(f, "{}", a.name()),
            Op::Concat { axis } => write!(f, "concat(axis={axis})"),
        }
    }
}
