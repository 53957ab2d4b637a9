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
    /// Padding given explicitly, as TensorFlow's
    /// `tf.nn.conv2d(padding=[[0, 0], [top, bottom], [left, right], [0, 0]])`
    /// (PyTorch's `padding=` with `ceil_mode` for pooling). The elaborator
    /// writes zero amounts without `ceil` as [`Padding::Valid`], so that
    /// one padding has one form.
    Explicit {
        /// `[[top, bottom], [left, right]]`.
        pads: [[u64; 2]; 2],
        /// PyTorch's `ceil_mode` (pooling only): the output length is
        /// `ceil((input + pads - window) / stride) + 1` rather than the floor,
        /// less one if the last window would start past the input; a
        /// window hanging over the end sees only the cells that exist.
        ceil: bool,
    },
}

/// How one spatial axis is padded: [`Padding`] along height or width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AxisPadding {
    /// TensorFlow's `same`: the output is `ceil(input / stride)`.
    Same,
    /// Zeros `before` and `after` the input (`valid`: none), and whether
    /// the output length rounds up ([`Padding::Explicit`]'s `ceil`).
    Explicit {
        /// Zeros before the first position.
        before: u64,
        /// Zeros after the last position.
        after: u64,
        /// PyTorch's `ceil_mode`.
        ceil: bool,
    },
}

impl Padding {
    /// The padding along axis `axis`: 0 is the height, 1 the width.
    pub fn axis(self, axis: usize) -> AxisPadding {
        match self {
            Padding::Same => AxisPadding::Same,
            Padding::Valid => AxisPadding::Explicit {
                before: 0,
                after: 0,
                ceil: false,
            },
            Padding::Explicit { pads, ceil } => AxisPadding::Explicit {
                before: pads[axis][0],
                after: pads[axis][1],
                ceil,
            },
        }
    }

    /// The padding `pads` (`[[top, bottom], [left, right]]`), rounding the
    /// output down or up (`ceil`), in its one form: `valid` for no zeros
    /// rounded down.
    pub fn explicit(pads: [[u64; 2]; 2], ceil: bool) -> Padding {
        if pads == [[0, 0], [0, 0]] && !ceil {
            Padding::Valid
        } else {
            Padding::Explicit { pads, ceil }
        }
    }
}

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// The largest value of the window.
    Max,
    /// The mean of the window (padding excluded).
    Avg,
}

/// How upsampling fills the pixels between the input's (Keras's
/// `UpSampling2D(interpolation=...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interpolation {
    /// Each input pixel repeated over its block of `factor` pixels.
    Nearest,
    /// Linear in each axis between the two nearest input pixels, with
    /// half-pixel centres and the edges clamped, as `tf.image.resize`
    /// (`method="bilinear"`, no antialiasing).
    Bilinear,
}

impl Interpolation {
    /// The name as written in `.cnn`.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
        }
    }
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
    /// Transposed 2-D convolution (Keras's `Conv2DTranspose`): the gradient
    /// of a convolution with respect to its input, of `[h, w, c]` with a
    /// `[kh, kw, filters, c]` kernel (Keras's layout: the filters before the
    /// input channels).
    ConvTranspose2d {
        /// Output channels.
        filters: u64,
        /// Kernel height and width.
        kernel: [u64; 2],
        /// Vertical and horizontal stride (the upsampling factor).
        stride: [u64; 2],
        /// Padding of the convolution it transposes.
        padding: Padding,
        /// Extra rows and columns at the bottom and right of the output
        /// (each smaller than the stride), or `None` for Keras's default
        /// output size.
        output_padding: Option<[u64; 2]>,
        /// Dilation rate.
        dilation: [u64; 2],
        /// Whether a bias is added.
        bias: bool,
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
    /// Upsampling of `[h, w, c]` to `[h * factor[0], w * factor[1], c]`
    /// (Keras's `UpSampling2D`).
    Upsample {
        /// Vertical and horizontal factor.
        factor: [u64; 2],
        /// How the new pixels are filled.
        mode: Interpolation,
    },
    /// Zero padding (positive amounts, Keras's `ZeroPadding2D`) or cropping
    /// (negative amounts, Keras's `Cropping2D`) of the spatial axes:
    /// `y[i, j, c] = x[i - top, j - left, c]`, zero where that is outside
    /// `x`. Its gradient is the same op with the amounts negated.
    Pad {
        /// Rows added above (removed, if negative).
        top: i64,
        /// Rows added below.
        bottom: i64,
        /// Columns added on the left.
        left: i64,
        /// Columns added on the right.
        right: i64,
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
    /// The class labels of a training batch: one class index per row of
    /// scores, so per example for a classifier's `[classes]` output and per
    /// pixel for a segmentation's `[h, w, classes]`.
    Labels {
        /// The per-example shape: the scored output's, with one label in
        /// place of its last axis (`[1]`, or `[h, w, 1]`).
        shape: Vec<u64>,
    },
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
    /// softmax: each row's loss (an example's, or a pixel's), times `weight` (the output's loss weight).
    CrossEntropy {
        /// Label smoothing in [0, 1).
        smoothing: f64,
        /// The loss weight of this output.
        weight: f64,
    },
    /// The gradient of the mean weighted cross-entropy with respect to the
    /// logits: `(softmax(z) - target) * weight / rows`, rows being the examples, or
    /// all their pixels for per-pixel scores.
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
            Op::ConvTranspose2d { .. } => "conv_transpose2d",
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
            Op::Upsample { .. } => "upsample",
            Op::Pad { .. } if self.pad_amounts().iter().all(|&a| a >= 0) => "zero_padding",
            Op::Pad { .. } => "cropping",
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
            Op::Labels { .. } => "labels",
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
            | Op::ConvTranspose2d { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::Dense { .. }
            | Op::Pool2d { .. }
            | Op::Upsample { .. }
            | Op::Pad { .. }
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
            | Op::Labels { .. }
            | Op::Upstream { .. }
            | Op::CrossEntropy { .. }
            | Op::CrossEntropyGrad { .. }
            | Op::InputGrad { .. } => true,
        }
    }

    /// The number of inputs the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input { .. } | Op::Labels { .. } | Op::Upstream { .. } => Arity::Exactly(0),
            Op::Conv2d { .. }
            | Op::ConvTranspose2d { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::Dense { .. }
            | Op::Pool2d { .. }
            | Op::Upsample { .. }
            | Op::Pad { .. }
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

    /// A zero padding's or cropping's signed amounts, `[top, bottom, left,
    /// right]` (positive: zeros added); all zero for the other ops.
    pub fn pad_amounts(&self) -> [i64; 4] {
        match self {
            Op::Pad {
                top,
                bottom,
                left,
                right,
            } => [*top, *bottom, *left, *right],
            Op::Input { .. }
            | Op::Conv2d { .. }
            | Op::ConvTranspose2d { .. }
            | Op::Upsample { .. }
            | Op::ChannelSlice { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::Dense { .. }
            | Op::Pool2d { .. }
            | Op::GlobalPool { .. }
            | Op::DepthMaxPool { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::Dropout { .. }
            | Op::BatchNorm { .. }
            | Op::Lrn { .. }
            | Op::ScaleBias
            | Op::Rbf { .. }
            | Op::Activation(_)
            | Op::Add
            | Op::Concat { .. }
            | Op::Multiply
            | Op::Labels { .. }
            | Op::Upstream { .. }
            | Op::CrossEntropy { .. }
            | Op::CrossEntropyGrad { .. }
            | Op::InputGrad { .. }
            | Op::WeightGrad { .. } => [0; 4],
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

fn padding(p: Padding) -> String {
    match p {
        Padding::Same => "same".into(),
        Padding::Valid => "valid".into(),
        Padding::Explicit {
            pads: [[top, bottom], [left, right]],
            ceil,
        } => {
            let ceil = if ceil { ", ceil_mode=true" } else { "" };
            format!("[{top}, {bottom}, {left}, {right}]{ceil}")
        }
    }
}

/// A stable, readable rendering of the op and its attributes, used by
/// `--emit graph` and the snapshot tests.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Input { .. }
            | Op::Flatten
            | Op::ScaleBias
            | Op::Add
            | Op::Multiply
            | Op::Labels { .. } => {
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
            Op::ConvTranspose2d { filters, kernel, stride, padding: p, output_padding, dilation, bias } => {
                write!(
                    f,
                    "conv_transpose2d(filters={filters}, kernel={}, stride={}, padding={}, ",
                    pair(*kernel),
                    pair(*stride),
                    padding(*p)
                )?;
                match output_padding {
                    Some(extra) => write!(f, "output_padding={}, ", pair(*extra))?,
                    None => write!(f, "output_padding=none, ")?,
                }
                write!(f, "dilation={}, bias={bias})", pair(*dilation))
            }
            Op::Upsample { factor, mode } => write!(f, "upsample(factor={}, mode={})", pair(*factor), mode.name()),
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
            Op::Pad { .. } => {
                // In the sense of the name: the zeros added, or the rows
                // and columns removed.
                let sign = if self.name() == "cropping" { -1 } else { 1 };
                let [top, bottom, left, right] = self.pad_amounts().map(|a| sign * a);
                write!(f, "{}(top={top}, bottom={bottom}, left={left}, right={right})", self.name())
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
