//! Window kernels: the ops that slide a window over NHWC tensors (max and
//! average pooling, global pooling, depth max pooling, LRN and depthwise
//! convolution), forward and backward.
//!
//! Tensors are f32, row-major `[N, H, W, C]` (batch first, channels
//! contiguous); 2-D pooling may read `x` and write `y` stored in bf16
//! ([`WindowStorage`]), widening each value as it loads it and rounding
//! as it stores, so that it computes in f32 throughout. Shapes, strides and paddings are constants of the generated
//! code; loops run over output positions and are vectorised over channels
//! with `f32x4` and a scalar tail. Positions near the border, whose windows
//! reach into the padding, get code specialised for the taps that fall
//! inside the input, so no load is ever bounds-checked.
//!
//! # ABI and domains
//!
//! Every kernel is a [`super::DomainKernel`], `fn(args, start, end)`: `args` holds
//! one pointer per buffer, in the order [`Window::buffers`] lists, and the
//! call runs work items `start..end` of the kernel's *domain*
//! ([`Window::domain`]). No two work items write the same element, and every
//! element is computed inside one work item in a fixed order, so any split of
//! the domain into ranges (over any number of threads) gives bitwise the same
//! result as running it whole. Every output element is written (the kernels
//! never accumulate into what the buffer held before).
//!
//! | kernel | buffers | domain: one work item is |
//! |---|---|---|
//! | pool forward | `x, y` | `(n, oy)`: one output row, `N * OH` items |
//! | max pool backward | `x, dy, dx` | `(n, iy)`: one input row of `dx`, `N * H` items |
//! | avg pool backward | `dy, dx` | `(n, iy)`, `N * H` items |
//! | global pool forward | `x, y` | `(n, chunk)`: 16 channels of one example, `N * ceil(C / 16)` items |
//! | global max pool backward | `x, dy, dx` | `(n, chunk)`, as forward |
//! | global avg pool backward | `dy, dx` | `(n, chunk)`, as forward |
//! | depth max pool forward | `x, y` | one pixel `(n, h, w)`, `N * H * W` items |
//! | depth max pool backward | `x, dy, dx` | one pixel, `N * H * W` items |
//! | LRN forward | `x, y` | one pixel, `N * H * W` items |
//! | LRN backward | `x, dy, dx` | one pixel, `N * H * W` items |
//! | depthwise forward | `x, filter, [bias,] y` | `(n, oy)`: one output row, `N * OH` items |
//! | depthwise backward-data | `dy, filter, dx` | `(n, iy)`: one input row of `dx`, `N * H` items |
//! | depthwise backward-filter | `x, dy, dfilter, [dbias]` | a block of output channels, summed over `N, OH, OW` |
//!
//! The backward kernels compute each `dx` row as a sum, in a fixed order, of
//! the `dy` cells whose windows cover it (overlapping windows accumulate
//! inside the one work item that owns the row), and max pooling recomputes
//! its maxima from `x` instead of storing indices (2-D max pooling gives
//! each window's gradient to its first maximum; global and depth max
//! pooling split it among tied maxima, as TensorFlow does). The depthwise
//! backward-filter kernel's work items are blocks of `lcm(4, multiplier)`
//! output channels (the last, partial block is one more item): each sums its
//! `dfilter` and `dbias` entries over the whole batch in `(n, oy, ox)` order.

mod depthwise;
mod emit;
mod lrn;
mod pool;

use std::ops::Range;

use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilderContext;

use super::axis::{Axis, Segment};
use super::{CodegenError, Storage};
use crate::graph::{Padding, PoolKind};

/// Which computation of a window op a kernel performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// `y` from `x` (and the filter and bias).
    Forward,
    /// `dx` from `dy` (and `x` where the gradient depends on it, or the filter).
    BackwardData,
    /// `dfilter` and `dbias` from `x` and `dy`: depthwise convolution only.
    BackwardFilter,
}

/// The op a window kernel computes, with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowKind {
    /// Max or average pooling (`tf.nn.max_pool2d` / `avg_pool2d`): max
    /// ignores padded cells, average divides by the in-bounds cells.
    Pool {
        /// Max or average.
        kind: PoolKind,
        /// Window height and width.
        size: [usize; 2],
        /// Vertical and horizontal stride.
        stride: [usize; 2],
        /// Padding.
        padding: Padding,
    },
    /// Pooling of each whole feature map: `[N, H, W, C] -> [N, C]`.
    GlobalPool {
        /// Max or average.
        kind: PoolKind,
    },
    /// The max of each group of `size` consecutive channels:
    /// `[N, H, W, C] -> [N, H, W, C / size]`.
    DepthMaxPool {
        /// Channels per group.
        size: usize,
    },
    /// `tf.nn.local_response_normalization` over channels:
    /// `y = x / (bias + alpha * sqr_sum)^beta`, `sqr_sum` over
    /// `[c - depth_radius, c + depth_radius]` within `[0, C)`.
    Lrn {
        /// Neighbouring channels on each side.
        depth_radius: usize,
        /// `bias` in the formula (TensorFlow's `k`).
        bias: f64,
        /// Scale of the sum of squares.
        alpha: f64,
        /// Exponent.
        beta: f64,
    },
    /// `tf.nn.depthwise_conv2d` with a `[kh, kw, C, multiplier]` filter:
    /// input channel `c` filtered by its `m`-th filter gives output channel
    /// `c * multiplier + m`; plus a `[C * multiplier]` bias if `bias`.
    DepthwiseConv {
        /// Filters per input channel.
        multiplier: usize,
        /// Filter height and width.
        kernel: [usize; 2],
        /// Vertical and horizontal stride.
        stride: [usize; 2],
        /// Vertical and horizontal dilation.
        dilation: [usize; 2],
        /// Padding.
        padding: Padding,
        /// Whether a bias is added (forward) or its gradient computed
        /// (backward-filter).
        bias: bool,
    },
}

/// A window kernel to compile: one op, one pass, one input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// A name for dumps and errors.
    pub name: String,
    /// The op and its attributes.
    pub kind: WindowKind,
    /// Forward or backward.
    pub pass: Pass,
    /// The shape of the forward input `x`: `[N, H, W, C]`.
    pub input: [usize; 4],
    /// How `x` and `y` are stored.
    pub storage: WindowStorage,
}

/// How a window kernel's forward input `x` and output `y` are stored: f32,
/// or bf16 (two values to an f32 slot) for 2-D pooling's `x` (forward
/// pass, and max pooling's gradient, which recomputes its maxima from it)
/// and its forward `y`. Gradients are f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStorage {
    /// How `x` is stored.
    pub x: Storage,
    /// How `y` is stored.
    pub y: Storage,
}

impl WindowStorage {
    /// Both f32.
    pub const F32: WindowStorage = WindowStorage {
        x: Storage::F32,
        y: Storage::F32,
    };
}

/// What a kernel argument holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The forward input `x`.
    Input,
    /// The depthwise filter, `[kh, kw, C, multiplier]`.
    Filter,
    /// The depthwise bias, `[C * multiplier]`.
    Bias,
    /// The forward output `y` (written).
    Output,
    /// The gradient of the loss with respect to `y`.
    OutputGrad,
    /// The gradient with respect to `x` (written).
    InputGrad,
    /// The gradient with respect to the filter (written).
    FilterGrad,
    /// The gradient with respect to the bias (written).
    BiasGrad,
}

impl Role {
    /// Whether the kernel writes this buffer (all of it) rather than reads it.
    pub fn is_written(self) -> bool {
        matches!(
            self,
            Role::Output | Role::InputGrad | Role::FilterGrad | Role::BiasGrad
        )
    }
}

/// One argument of a window kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// What it holds.
    pub role: Role,
    /// Its shape (row-major).
    pub shape: Vec<usize>,
    /// How its values are stored.
    pub storage: Storage,
}

impl Window {
    /// Checks that the description is consistent: no zero sizes, a window
    /// that fits (`valid` padding), channels that split into groups, a pass
    /// the op has, and sizes the generated code can address.
    pub fn validate(&self) -> Result<(), CodegenError> {
        self.plan().map(|_| ())
    }

    /// The shape of the forward output `y`.
    pub fn output_shape(&self) -> Result<Vec<usize>, CodegenError> {
        Ok(self.plan()?.output)
    }

    /// The number of work items of the kernel (see the module documentation).
    pub fn domain(&self) -> Result<usize, CodegenError> {
        Ok(self.plan()?.domain)
    }

    /// The kernel's arguments, in order.
    pub fn buffers(&self) -> Result<Vec<Buffer>, CodegenError> {
        Ok(self.plan()?.buffers)
    }

    /// Where work item `i` writes image row `i` of the kernel's last
    /// buffer, `[N, H, W, C]` (2-D pooling and depthwise convolution,
    /// forward and backward-data): that buffer's pixels per row and
    /// channels, `(W, C)`, so that an epilogue may run on each finished
    /// row (`passes::fuse`). `None` for the other kernels, and for a
    /// description that does not validate.
    pub fn row_items(&self) -> Option<(usize, usize)> {
        let rows = matches!(
            self.kind,
            WindowKind::Pool { .. } | WindowKind::DepthwiseConv { .. }
        ) && matches!(self.pass, Pass::Forward | Pass::BackwardData);
        let plan = self.plan().ok().filter(|_| rows)?;
        match plan.buffers.last()?.shape[..] {
            [n, h, w, c] if n * h == plan.domain => Some((w, c)),
            _ => None,
        }
    }

    /// Validates the description and resolves everything the translators
    /// need.
    pub(super) fn plan(&self) -> Result<Plan, CodegenError> {
        let malformed = |message: String| CodegenError::Malformed {
            kernel: self.name.clone(),
            message,
        };
        let image = Image::new(self.input).map_err(malformed)?;
        let spec = self.spec(image).map_err(malformed)?;
        let output = spec.output_shape();
        check_addressable(&spec, &output).map_err(malformed)?;
        self.check_storage(&spec).map_err(malformed)?;
        Ok(Plan {
            domain: spec.domain(),
            buffers: spec.buffers(&self.input, &output, self.storage),
            output,
            spec,
            storage: self.storage,
        })
    }

    /// Refuses bf16 where the kernel does not read or write it: on any
    /// kernel but 2-D pooling, on `y` outside its forward pass, on `x` of
    /// average pooling's gradient (which does not read it).
    fn check_storage(&self, spec: &Spec) -> Result<(), String> {
        let WindowStorage { x, y } = self.storage;
        if self.storage == WindowStorage::F32 {
            return Ok(());
        }
        let fits = match spec {
            Spec::Pool {
                pass: Pass::Forward,
                ..
            } => true,
            Spec::Pool { kind, .. } => {
                y == Storage::F32 && (x == Storage::F32 || *kind == PoolKind::Max)
            }
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(format!(
                "the {:?} pass of a {} kernel with x stored as {x:?} and y as {y:?}: only 2-D \
                 pooling's x, and its forward y, may be bf16",
                self.pass,
                kind_name(&self.kind)
            ))
        }
    }

    fn spec(&self, image: Image) -> Result<Spec, String> {
        let pass = self.pass;
        let not_filter = || match pass {
            Pass::BackwardFilter => Err(format!(
                "a {} kernel has no filter to differentiate",
                kind_name(&self.kind)
            )),
            _ => Ok(pass),
        };
        match self.kind {
            WindowKind::Pool {
                kind,
                size,
                stride,
                padding,
            } => {
                let pass = not_filter()?;
                let [rows, cols] = window_axes(image, size, stride, [1, 1], padding)?;
                let whole = rows
                    .segments()
                    .iter()
                    .chain(&cols.segments())
                    .all(|s| !s.taps.is_empty());
                if !whole {
                    return Err("a pooling window lies entirely on padding".into());
                }
                if kind == PoolKind::Max && size[0].saturating_mul(size[1]) > MAX_INDEX {
                    return Err(format!(
                        "a {}x{} max-pooling window is too large",
                        size[0], size[1]
                    ));
                }
                Ok(Spec::Pool {
                    kind,
                    pass,
                    image,
                    rows,
                    cols,
                })
            }
            WindowKind::GlobalPool { kind } => {
                let pass = not_filter()?;
                if kind == PoolKind::Max && image.h * image.w > MAX_INDEX {
                    return Err(format!(
                        "{}x{} is too large to max-pool globally",
                        image.h, image.w
                    ));
                }
                Ok(Spec::GlobalPool { kind, pass, image })
            }
            WindowKind::DepthMaxPool { size } => {
                let pass = not_filter()?;
                if size == 0 || !image.c.is_multiple_of(size) {
                    return Err(format!(
                        "{} channels do not split into groups of {size}",
                        image.c
                    ));
                }
                Ok(Spec::DepthMaxPool { pass, image, size })
            }
            WindowKind::Lrn {
                depth_radius,
                bias,
                alpha,
                beta,
            } => {
                let pass = not_filter()?;
                if ![bias, alpha, beta].iter().all(|v| v.is_finite()) {
                    return Err(format!(
                        "LRN constants must be finite: bias {bias}, alpha {alpha}, beta {beta}"
                    ));
                }
                if image.c > MAX_LRN_CHANNELS {
                    return Err(format!(
                        "LRN over {} channels: at most {MAX_LRN_CHANNELS} are supported",
                        image.c
                    ));
                }
                // A radius past the last channel sums the same channels.
                let radius = depth_radius.min(image.c - 1);
                Ok(Spec::Lrn {
                    pass,
                    image,
                    lrn: Lrn {
                        radius,
                        bias,
                        alpha,
                        beta,
                    },
                })
            }
            WindowKind::DepthwiseConv {
                multiplier,
                kernel,
                stride,
                dilation,
                padding,
                bias,
            } => {
                check_size("multiplier", multiplier)?;
                let [rows, cols] = window_axes(image, kernel, stride, dilation, padding)?;
                Ok(Spec::Depthwise(Depthwise {
                    pass,
                    image,
                    multiplier,
                    rows,
                    cols,
                    bias,
                }))
            }
        }
    }
}

/// Writes the kernel's code into `func`, whose signature is
/// `(args: ptr, start: i64, end: i64)`.
pub(super) fn translate(
    plan: &Plan,
    func: &mut Function,
    context: &mut FunctionBuilderContext,
    target: TargetFrontendConfig,
) {
    let storage: Vec<Storage> = plan.buffers.iter().map(|b| b.storage).collect();
    let mut e = emit::Emitter::new(func, context, target, &storage);
    match &plan.spec {
        Spec::Pool {
            kind,
            pass: Pass::Forward,
            image,
            rows,
            cols,
        } => pool::window_forward(&mut e, *kind, (*image, plan.storage), rows, cols),
        Spec::Pool {
            kind,
            image,
            rows,
            cols,
            ..
        } => pool::window_backward(&mut e, *kind, (*image, plan.storage.x), rows, cols),
        Spec::GlobalPool {
            kind,
            pass: Pass::Forward,
            image,
        } => pool::global_forward(&mut e, *kind, *image),
        Spec::GlobalPool { kind, image, .. } => pool::global_backward(&mut e, *kind, *image),
        Spec::DepthMaxPool {
            pass: Pass::Forward,
            image,
            size,
        } => pool::depth_forward(&mut e, *image, *size),
        Spec::DepthMaxPool { image, size, .. } => pool::depth_backward(&mut e, *image, *size),
        Spec::Lrn {
            pass: Pass::Forward,
            image,
            lrn,
        } => lrn::forward(&mut e, *image, lrn),
        Spec::Lrn { image, lrn, .. } => lrn::backward(&mut e, *image, lrn),
        Spec::Depthwise(conv) => match conv.pass {
            Pass::Forward => depthwise::forward(&mut e, conv),
            Pass::BackwardData => depthwise::backward_data(&mut e, conv),
            Pass::BackwardFilter => depthwise::backward_filter(&mut e, conv),
        },
    }
    e.finish(target);
}

/// Global max pooling and max-pooling gradients track positions as f32
/// lanes, exact up to 2^24.
const MAX_INDEX: usize = 1 << 24;

/// LRN keeps two zero-padded copies of a pixel's channels (at most `3 C`
/// f32s each) on the stack: 384 KiB at this bound.
const MAX_LRN_CHANNELS: usize = 16384;

/// The largest size (of an axis, window, stride...) a description may have,
/// so that position arithmetic in the generated code cannot overflow.
const MAX_SIZE: usize = i32::MAX as usize;

/// A validated kernel, with the geometry its translator needs.
pub(super) struct Plan {
    spec: Spec,
    output: Vec<usize>,
    buffers: Vec<Buffer>,
    domain: usize,
    storage: WindowStorage,
}

impl Plan {
    /// The number of work items.
    pub(super) fn domain(&self) -> usize {
        self.domain
    }
}

/// The shape of an NHWC tensor.
#[derive(Debug, Clone, Copy)]
struct Image {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl Image {
    fn new([n, h, w, c]: [usize; 4]) -> Result<Image, String> {
        for (value, what) in [(n, "batch"), (h, "height"), (w, "width"), (c, "channels")] {
            check_size(what, value)?;
        }
        Ok(Image { n, h, w, c })
    }

    /// Bytes of one pixel (`C` channels), one row, one example.
    fn pixel_bytes(&self) -> i64 {
        self.c as i64 * 4
    }

    fn row_bytes(&self) -> i64 {
        self.w as i64 * self.pixel_bytes()
    }

    fn image_bytes(&self) -> i64 {
        self.h as i64 * self.row_bytes()
    }

    fn pixels(&self) -> usize {
        self.h * self.w
    }
}

/// LRN's constants; `radius` no larger than `C - 1`.
#[derive(Debug, Clone, Copy)]
struct Lrn {
    radius: usize,
    bias: f64,
    alpha: f64,
    beta: f64,
}

/// A depthwise convolution, resolved.
#[derive(Debug, Clone)]
struct Depthwise {
    pass: Pass,
    image: Image,
    multiplier: usize,
    rows: Axis,
    cols: Axis,
    bias: bool,
}

impl Depthwise {
    fn output_channels(&self) -> usize {
        self.image.c * self.multiplier
    }

    /// Output channels per block: whole vectors, and whole input channels.
    fn block(&self) -> usize {
        lcm(4, self.multiplier)
    }

    /// Output image of one example.
    fn output(&self) -> Image {
        Image {
            n: self.image.n,
            h: self.rows.output,
            w: self.cols.output,
            c: self.output_channels(),
        }
    }
}

enum Spec {
    Pool {
        kind: PoolKind,
        pass: Pass,
        image: Image,
        rows: Axis,
        cols: Axis,
    },
    GlobalPool {
        kind: PoolKind,
        pass: Pass,
        image: Image,
    },
    DepthMaxPool {
        pass: Pass,
        image: Image,
        size: usize,
    },
    Lrn {
        pass: Pass,
        image: Image,
        lrn: Lrn,
    },
    Depthwise(Depthwise),
}

/// Channels per work item of global pooling: four vectors, kept in
/// registers while the loop runs over the pixels.
const GLOBAL_CHUNK: usize = 16;

impl Spec {
    fn output_shape(&self) -> Vec<usize> {
        match self {
            Spec::Pool {
                image, rows, cols, ..
            } => vec![image.n, rows.output, cols.output, image.c],
            Spec::GlobalPool { image, .. } => vec![image.n, image.c],
            Spec::DepthMaxPool { image, size, .. } => {
                vec![image.n, image.h, image.w, image.c / size]
            }
            Spec::Lrn { image, .. } => vec![image.n, image.h, image.w, image.c],
            Spec::Depthwise(conv) => {
                let out = conv.output();
                vec![out.n, out.h, out.w, out.c]
            }
        }
    }

    fn domain(&self) -> usize {
        match self {
            Spec::Pool {
                pass: Pass::Forward,
                image,
                rows,
                ..
            } => image.n * rows.output,
            Spec::Pool { image, .. } => image.n * image.h,
            Spec::GlobalPool { image, .. } => image.n * image.c.div_ceil(GLOBAL_CHUNK),
            Spec::DepthMaxPool { image, .. } | Spec::Lrn { image, .. } => image.n * image.pixels(),
            Spec::Depthwise(conv) => match conv.pass {
                Pass::Forward => conv.image.n * conv.rows.output,
                Pass::BackwardData => conv.image.n * conv.image.h,
                Pass::BackwardFilter => conv.output_channels().div_ceil(conv.block()),
            },
        }
    }

    fn buffers(&self, input: &[usize; 4], output: &[usize], storage: WindowStorage) -> Vec<Buffer> {
        let buffer = |role, shape: &[usize], storage| Buffer {
            role,
            shape: shape.to_vec(),
            storage,
        };
        let x = buffer(Role::Input, input, storage.x);
        let dx = buffer(Role::InputGrad, input, Storage::F32);
        let y = buffer(Role::Output, output, storage.y);
        let dy = buffer(Role::OutputGrad, output, Storage::F32);
        let (pass, needs_x) = match self {
            Spec::Pool { kind, pass, .. } | Spec::GlobalPool { kind, pass, .. } => {
                (*pass, *kind == PoolKind::Max)
            }
            Spec::DepthMaxPool { pass, .. } | Spec::Lrn { pass, .. } => (*pass, true),
            Spec::Depthwise(conv) => return depthwise_buffers(conv, x, y, dx, dy),
        };
        match pass {
            Pass::Forward => vec![x, y],
            _ if needs_x => vec![x, dy, dx],
            _ => vec![dy, dx],
        }
    }
}

fn depthwise_buffers(
    conv: &Depthwise,
    x: Buffer,
    y: Buffer,
    dx: Buffer,
    dy: Buffer,
) -> Vec<Buffer> {
    let filter = vec![
        conv.rows.kernel,
        conv.cols.kernel,
        conv.image.c,
        conv.multiplier,
    ];
    let bias = vec![conv.output_channels()];
    let buffer = |role, shape: &Vec<usize>| Buffer {
        role,
        shape: shape.clone(),
        storage: Storage::F32,
    };
    match conv.pass {
        Pass::Forward if conv.bias => vec![
            x,
            buffer(Role::Filter, &filter),
            buffer(Role::Bias, &bias),
            y,
        ],
        Pass::Forward => vec![x, buffer(Role::Filter, &filter), y],
        Pass::BackwardData => vec![dy, buffer(Role::Filter, &filter), dx],
        Pass::BackwardFilter if conv.bias => {
            vec![
                x,
                dy,
                buffer(Role::FilterGrad, &filter),
                buffer(Role::BiasGrad, &bias),
            ]
        }
        Pass::BackwardFilter => vec![x, dy, buffer(Role::FilterGrad, &filter)],
    }
}

/// Every byte offset inside one example of a buffer, and inside a filter, is
/// an `i32` immediate of the generated code.
fn check_addressable(spec: &Spec, output: &[usize]) -> Result<(), String> {
    let bytes = |shape: &[usize]| {
        shape
            .iter()
            .skip(1)
            .try_fold(4usize, |acc, &d| acc.checked_mul(d))
    };
    let mut per_example = vec![bytes(output)];
    if let Spec::Depthwise(conv) = spec {
        let filter = [
            conv.rows.kernel,
            conv.cols.kernel,
            conv.image.c,
            conv.multiplier,
        ];
        per_example.push(bytes(&[[1].as_slice(), &filter].concat()));
    }
    let image = match spec {
        Spec::Pool { image, .. }
        | Spec::GlobalPool { image, .. }
        | Spec::DepthMaxPool { image, .. }
        | Spec::Lrn { image, .. } => *image,
        Spec::Depthwise(conv) => conv.image,
    };
    per_example.push(bytes(&[image.n, image.h, image.w, image.c]));
    if per_example.iter().all(|b| b.is_some_and(|b| b <= MAX_SIZE)) {
        Ok(())
    } else {
        Err("a buffer is too large: one example (or the filter) must fit in 2 GiB".into())
    }
}

fn check_size(what: &str, value: usize) -> Result<(), String> {
    match value {
        0 => Err(format!("the {what} is zero")),
        v if v > MAX_SIZE => Err(format!("the {what} ({v}) is too large")),
        _ => Ok(()),
    }
}

fn window_axes(
    image: Image,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<[Axis; 2], String> {
    for (value, what) in [
        (kernel, "window"),
        (stride, "stride"),
        (dilation, "dilation"),
    ] {
        check_size(what, value[0])?;
        check_size(what, value[1])?;
    }
    let axis = |i: usize, input: usize| {
        Axis::new(input, kernel[i], stride[i], dilation[i], padding.axis(i))
    };
    match (axis(0, image.h), axis(1, image.w)) {
        (Some(rows), Some(cols)) => Ok([rows, cols]),
        _ => Err(format!(
            "a {}x{} window (dilation {}x{}) does not fit a {}x{} input with valid padding",
            kernel[0], kernel[1], dilation[0], dilation[1], image.h, image.w
        )),
    }
}

fn kind_name(kind: &WindowKind) -> &'static str {
    match kind {
        WindowKind::Pool { .. } => "pooling",
        WindowKind::GlobalPool { .. } => "global pooling",
        WindowKind::DepthMaxPool { .. } => "depth max pooling",
        WindowKind::Lrn { .. } => "LRN",
        WindowKind::DepthwiseConv { .. } => "depthwise convolution",
    }
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut x: usize, mut y: usize| {
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    a / gcd(a, b) * b
}

/// One tap of a window that falls inside the input.
#[derive(Debug, Clone, Copy)]
struct Tap {
    /// Its index in the filter, `ky * kw + kx`.
    filter: usize,
    /// Its input pixel's byte offset from the window's first tap inside the input.
    offset: i64,
}

/// The taps inside the input of the windows of outputs in `row` x `col`,
/// rows then columns (the order max pooling scans for the first maximum).
fn taps(image: Image, rows: &Axis, cols: &Axis, row: &Segment, col: &Segment) -> Vec<Tap> {
    let mut taps = Vec::with_capacity(row.taps.len() * col.taps.len());
    for ky in row.taps.clone() {
        for kx in col.taps.clone() {
            let down = ((ky - row.taps.start) * rows.dilation) as i64 * image.row_bytes();
            let across = ((kx - col.taps.start) * cols.dilation) as i64 * image.pixel_bytes();
            taps.push(Tap {
                filter: ky * cols.kernel + kx,
                offset: down + across,
            });
        }
    }
    taps
}

/// Work items `0..full` for whole blocks, then one for a partial block if
/// there is one: ranges for [`emit::Emitter::dispatch`], the empty ones left
/// out.
fn block_ranges(full: usize, partial: bool) -> Vec<Range<usize>> {
    [0..full, full..full + usize::from(partial)]
        .into_iter()
        .filter(|range| !range.is_empty())
        .collect()
}

/// The output ranges of `segments`, for [`emit::Emitter::dispatch`].
fn ranges(segments: &[Segment]) -> Vec<Range<usize>> {
    segments.iter().map(|s| s.outputs.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcm_of_block_sizes() {
        assert_eq!(lcm(4, 1), 4);
        assert_eq!(lcm(4, 6), 12);
        assert_eq!(lcm(4, 8), 8);
    }
}
