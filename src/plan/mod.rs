//! The kernel plan: a program as a list of kernel calls over named buffers,
//! before memory is placed and code is generated. `cnnc compile --emit
//! kernels` prints it.

mod verify;

use std::fmt::{self, Write};

use crate::codegen::axis::Axis;
use crate::codegen::contraction::winograd::{Direction, Tile};
use crate::codegen::contraction::{ConvShape, DenseShape};
use crate::codegen::elementwise::Elementwise;
use crate::codegen::grouped::{GroupedConv, GroupedPass};
use crate::codegen::native::{CopyRows, DropoutMask, EmbedRows, PadCopy};
use crate::codegen::reduce::Reduce;
use crate::codegen::resample::Resample;
use crate::codegen::window::Window;

pub use crate::codegen::Storage;
pub use crate::config::Precision;
pub use verify::{Access, Len, Param, PlanError};

/// Identifies a buffer of a plan.
pub type BufferId = usize;

/// What a buffer holds, which decides where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The model's input batch (given by the caller).
    Input,
    /// The labels of a training batch (given by the caller).
    Labels,
    /// A weight, by its full name (kept by the runtime between runs).
    Weight(String),
    /// A model output, by name (returned to the caller).
    Output(String),
    /// An output's per-example loss, by output name (returned to the caller).
    Loss(String),
    /// Optimizer state, by name (`conv1.kernel.m`: kept between steps).
    State(String),
    /// Per-step scalars, by name (`coefficients`, `step`: set by the caller).
    Scalars(String),
    /// The gradient of an output, by output name, that seeds a gradient
    /// program's backward pass (given by the caller).
    Upstream(String),
    /// The gradient with respect to the model's input (returned to the caller).
    InputGradient,
    /// The gradient of a trainable weight, by its full name, summed over
    /// the batch (returned to the caller).
    Gradient(String),
    /// Anything else: placed in the arena by liveness.
    Temporary,
}

/// A buffer: a name for dumps, its length in values, its role, and how its
/// values are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// A name for dumps and errors (the node it holds, usually).
    pub name: String,
    /// Its length in values (the batch included).
    pub len: usize,
    /// What it holds.
    pub role: Role,
    /// How its values are stored: f32, or bf16 for a temporary that only
    /// kernels reading bf16 read (an activation that feeds bf16 products).
    pub storage: Storage,
}

impl Buffer {
    /// The 32-bit slots its values take.
    pub fn slots(&self) -> usize {
        self.storage.slots(self.len)
    }

    /// The bytes its values take.
    pub fn bytes(&self) -> u64 {
        (self.slots() as u64).saturating_mul(4)
    }
}

/// The sizes of a contraction: a convolution or a dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geometry {
    /// A 2-D convolution.
    Conv(ConvShape),
    /// A dense layer.
    Dense(DenseShape),
}

/// Which computation of a contraction a kernel performs.
#[derive(Debug, Clone, PartialEq)]
pub enum ContractionPass {
    /// `y = x . W (+ b)`, then the epilogue on each finished block of rows.
    /// Buffers: `x`, `W`, `b` (if the layer has a bias), `y`, then the
    /// epilogue's extra inputs and outputs.
    Forward {
        /// An element-wise kernel whose input 0 and output 0 are `y`.
        epilogue: Option<Elementwise>,
    },
    /// `dx = dy . W^T` (col2im for convolutions), then, on Winograd's
    /// transforms only, the epilogue on each finished block of rows.
    /// Buffers: `dy`, `W`, `dx`, then the epilogue's extra inputs and
    /// outputs.
    BackwardData {
        /// An element-wise kernel whose input 0 and output 0 are `dx`.
        epilogue: Option<Elementwise>,
    },
    /// `dW = x^T . dy`, `db = sum dy`. Buffers: `x`, `dy`, `dW`, `db` (if
    /// the layer has a bias).
    BackwardFilter {
        /// `dW` holds only the weight rows of the taps that read some
        /// input, in order (a convolution's im2col columns, `[cols,
        /// out_channels]`): the rows of taps that only ever read padding
        /// are zeros, which are not stored (their readers take them as
        /// [`crate::codegen::elementwise::Operand::LiveTaps`];
        /// [`crate::passes::live_rows`]).
        live_rows: bool,
    },
}

/// How a contraction computes its product, chosen for each layer by
/// [`crate::passes::algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// im2col and the GEMM (the GEMM alone for a 1x1 stride-1 convolution
    /// or a dense layer).
    Gemm,
    /// Winograd's minimal filtering with this tile, for a 3x3 stride-1
    /// convolution. For the forward pass and the input gradient, the
    /// step's kernel buffer is then the transformed kernel, which a
    /// [`KernelDesc::WinogradFilter`] step writes before it; for the kernel
    /// gradient, the step writes the transformed kernel's gradient instead
    /// of `dW`, which a [`KernelDesc::WinogradFilter`] step after it
    /// transforms into `dW`.
    Winograd(Tile),
    /// The product in bf16 ([`crate::codegen::contraction::bf16`]): both
    /// operands rounded to bf16, the products summed in f32, on the
    /// fastest backend the CPU runs. For the forward pass and the input
    /// gradient, the step's kernel buffer is then the weights packed by a
    /// [`KernelDesc::PackWeights`] step before it (transposed for the
    /// input gradient). `input` is how the layer's input is stored, which
    /// the forward pass and the kernel gradient read, and `output` how the
    /// forward pass stores its output (bf16 where the storage pass,
    /// [`crate::passes::storage`], stored them so; the other passes'
    /// outputs are f32).
    Bf16 {
        /// How the input is stored.
        input: Storage,
        /// How the forward pass's output is stored.
        output: Storage,
    },
}

/// What profiles say of the buffers of `parts` stored in bf16: `, input
/// bf16`, `, input bf16, output bf16`, or nothing (dumps drop the commas).
fn bf16_words(parts: [(&str, Storage); 2]) -> String {
    parts
        .iter()
        .filter(|(_, storage)| *storage == Storage::Bf16)
        .map(|(what, _)| format!(", {what} bf16"))
        .collect()
}

/// [`bf16_words`] of a kernel: a bf16 product's input and output, a
/// window kernel's `x` and `y`.
fn storage_words(kernel: &KernelDesc) -> String {
    match kernel {
        KernelDesc::Contraction {
            algorithm: Algorithm::Bf16 { input, output },
            ..
        } => bf16_words([("input", *input), ("output", *output)]),
        KernelDesc::Window { window, .. } => {
            bf16_words([("x", window.storage.x), ("y", window.storage.y)])
        }
        _ => String::new(),
    }
}

impl Algorithm {
    /// The bf16 product on f32 input and output.
    pub const BF16: Algorithm = Algorithm::Bf16 {
        input: Storage::F32,
        output: Storage::F32,
    };
}

/// The description of one kernel call.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelDesc {
    /// A fused element-wise kernel over `rows` rows of `channels` values.
    Elementwise {
        /// The kernel.
        kernel: Elementwise,
        /// Rows.
        rows: usize,
        /// Values per row.
        channels: usize,
    },
    /// A reduction.
    Reduce(Reduce),
    /// A window kernel (pooling, LRN, depthwise convolution), then the
    /// epilogue on each finished chunk of its rows. Buffers: the window's
    /// ([`Window::buffers`]), then the epilogue's extra inputs and outputs.
    Window {
        /// The kernel.
        window: Window,
        /// An element-wise kernel whose input 0 and output 0 are the
        /// window's last buffer, which its work items write a row each
        /// ([`Window::row_items`]).
        epilogue: Option<Elementwise>,
    },
    /// A convolution or dense layer on the GEMM.
    Contraction {
        /// A name for errors and profiles.
        name: String,
        /// The sizes.
        geometry: Geometry,
        /// Which pass.
        pass: ContractionPass,
        /// How the product is computed.
        algorithm: Algorithm,
    },
    /// The Winograd transform of a 3x3 stride-1 convolution's kernel, for
    /// its forward pass or its input gradient (buffers: `W`, the
    /// transformed kernel), or of its kernel gradient (`direction`
    /// `BackwardFilter`; buffers: the transformed kernel's gradient,
    /// `dW`).
    WinogradFilter {
        /// A name for errors and profiles.
        name: String,
        /// The layer's sizes.
        shape: ConvShape,
        /// The tile of the convolution that uses the transform.
        tile: Tile,
        /// Which of the layer's convolutions uses it.
        direction: Direction,
        /// Whether the transform of frozen weights is worth keeping from
        /// run to run ([`KernelPlan::prepared`]): its cost against its
        /// convolution's, weighed by the algorithm pass.
        keep: bool,
    },
    /// A layer's weights packed for its bf16 products (buffers: `W`, the
    /// packed weights, [`crate::codegen::contraction::bf16::packed_weights_len`]
    /// f32 slots of two bf16 values each).
    PackWeights {
        /// A name for errors and profiles.
        name: String,
        /// The layer's sizes.
        geometry: Geometry,
        /// Packed for the input gradient's product `dy · Wᵀ` rather than
        /// the forward one.
        transposed: bool,
    },
    /// A grouped convolution's pass (`conv(groups: g)`, `g > 1`).
    Grouped(GroupedConv),
    /// Strided row copies (concatenation, a channel slice).
    Copy(CopyRows),
    /// A slice embedded in rows of zeros (a channel slice's gradient).
    Embed(EmbedRows),
    /// Upsampling or its gradient.
    Resample(Resample),
    /// Images copied at an offset, zeros around (zero padding, cropping).
    Pad(PadCopy),
    /// Dropout's random mask.
    Mask(DropoutMask),
}

/// One kernel call: what it computes and on which buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The kernel.
    pub kernel: KernelDesc,
    /// Its arguments, in the kernel's order.
    pub args: Vec<BufferId>,
    /// The graph nodes it computes (several after fusion).
    pub nodes: Vec<String>,
}

/// The node-name prefix of an optimizer's update of a weight
/// (`update:conv1.kernel`), which [`Step::is_update`] recognises.
pub const UPDATE_PREFIX: &str = "update:";

impl Step {
    /// Each argument and how the step uses it, as its kernel's signature
    /// states. A kernel whose description is inconsistent reports nothing
    /// here; the plan's verification names it.
    pub fn accesses(&self) -> Vec<(BufferId, Access)> {
        let signature = self.kernel.signature().unwrap_or_default();
        self.args
            .iter()
            .zip(signature)
            .map(|(&b, param)| (b, param.access))
            .collect()
    }

    /// Whether the step is an optimizer's update of a weight, in place.
    pub fn is_update(&self) -> bool {
        self.nodes.iter().any(|n| n.starts_with(UPDATE_PREFIX))
    }
}

/// A program: steps over buffers, for one batch size.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KernelPlan {
    /// The model's name.
    pub name: String,
    /// The batch size it was planned for.
    pub batch: usize,
    /// The shape of one example of the input (empty for a model without one).
    pub input_shape: Vec<u64>,
    /// Every buffer.
    pub buffers: Vec<Buffer>,
    /// The steps, in execution order.
    pub steps: Vec<Step>,
    /// Whether the weights stay the same from run to run (an inference
    /// program): then a step that reads nothing but weights computes the
    /// same every time, and runs only once ([`KernelPlan::prepared`]).
    pub frozen_weights: bool,
}

impl KernelPlan {
    /// For each step, whether it prepares a buffer from the weights alone in
    /// a plan whose weights are frozen: it reads only weights and writes
    /// only temporaries (a Winograd kernel transform at inference, where
    /// the algorithm pass found it worth keeping). Its outputs keep their
    /// memory for the whole program, and the runtime runs it once, not on
    /// every run.
    pub fn prepared(&self) -> Vec<bool> {
        self.steps
            .iter()
            .map(|step| {
                let Ok(signature) = step.kernel.signature() else {
                    return false;
                };
                let roles = || {
                    step.args
                        .iter()
                        .zip(&signature)
                        .map(|(&b, param)| (param.access, &self.buffers[b].role))
                };
                let kept = !matches!(step.kernel, KernelDesc::WinogradFilter { keep: false, .. });
                self.frozen_weights
                    && kept
                    && step.args.len() == signature.len()
                    && roles().any(|(access, _)| access == Access::Read)
                    && roles().all(|(access, role)| match access {
                        Access::Read => matches!(role, Role::Weight(_)),
                        Access::Write => *role == Role::Temporary,
                    })
            })
            .collect()
    }

    /// Adds a buffer and returns its id.
    pub fn buffer(&mut self, name: impl Into<String>, len: usize, role: Role) -> BufferId {
        self.buffers.push(Buffer {
            name: name.into(),
            len,
            role,
            storage: Storage::F32,
        });
        self.buffers.len() - 1
    }

    /// The buffers with role `role`.
    pub fn with_role(&self, role: &Role) -> Vec<BufferId> {
        (0..self.buffers.len())
            .filter(|&b| self.buffers[b].role == *role)
            .collect()
    }
}

/// The arithmetic of a contraction, for profiles: 2 FLOPs per
/// multiply-add of the direct convolution, whatever algorithm computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flops {
    /// Every tap of every output position, as a dense im2col product
    /// computes them.
    pub nominal: u64,
    /// Only the taps that read the image, not its padding.
    pub useful: u64,
}

impl KernelDesc {
    /// The arithmetic of a contraction step (any pass: the gradients do
    /// as many multiply-adds as the forward pass), `None` for other kernels.
    pub fn flops(&self) -> Option<Flops> {
        let KernelDesc::Contraction { geometry, .. } = self else {
            return None;
        };
        match geometry {
            Geometry::Dense(s) => {
                let flops = 2 * (s.rows * s.inputs * s.units) as u64;
                Some(Flops {
                    nominal: flops,
                    useful: flops,
                })
            }
            Geometry::Conv(s) => {
                let (y, x) = (s.axis(0)?, s.axis(1)?);
                let read = |a: &Axis| (0..a.output).map(|o| a.taps(o).len() as u64).sum::<u64>();
                let pairs = 2 * (s.batch * s.in_channels * s.out_channels) as u64;
                let taps = (s.kernel[0] * s.kernel[1]) as u64;
                Some(Flops {
                    nominal: pairs * (y.output * x.output) as u64 * taps,
                    useful: pairs * read(&y) * read(&x),
                })
            }
        }
    }

    /// Whether each batch item's rows of every buffer the kernel writes
    /// depend only on the same item's rows of the batch buffers it reads
    /// (and on buffers without a batch: weights, statistics, scalars). Such
    /// a kernel may run on some items' rows while the other items' rows
    /// hold anything ([`crate::runtime::parallel`]); the others (a weight
    /// gradient, batchnorm's moments) sum over the batch and need all of
    /// it. Such a kernel also never addresses memory by a value it reads
    /// (a label is clamped into its row), so whatever the other rows hold,
    /// it stays inside its buffers.
    pub fn per_example(&self) -> bool {
        use crate::codegen::reduce::ReduceKind;
        use crate::codegen::window::Pass;
        match self {
            // Rows are batch items' positions; a broadcast operand has no batch.
            KernelDesc::Elementwise { .. } => true,
            KernelDesc::Reduce(r) => match r.kind {
                ReduceKind::Softmax
                | ReduceKind::SoftmaxBackward
                | ReduceKind::CrossEntropy { .. }
                | ReduceKind::ItemSums { .. }
                | ReduceKind::Rbf { .. }
                | ReduceKind::RbfBackwardData { .. } => true,
                ReduceKind::ColumnMoments
                | ReduceKind::ColumnSums
                | ReduceKind::RbfBackwardCenters { .. } => false,
            },
            KernelDesc::Window { window, .. } => match window.pass {
                Pass::Forward | Pass::BackwardData => true,
                Pass::BackwardFilter => false,
            },
            KernelDesc::Contraction { pass, .. } => match pass {
                ContractionPass::Forward { .. } | ContractionPass::BackwardData { .. } => true,
                ContractionPass::BackwardFilter { .. } => false,
            },
            KernelDesc::Grouped(g) => match g.pass {
                GroupedPass::Forward | GroupedPass::BackwardData => true,
                GroupedPass::BackwardFilter => false,
            },
            KernelDesc::Copy(_) | KernelDesc::Embed(_) | KernelDesc::Pad(_) => true,
            KernelDesc::Resample(_) => true,
            // Weights in, weights out; a mask drawn for the whole batch
            // from the step's seed, the same on every rank.
            KernelDesc::WinogradFilter { .. }
            | KernelDesc::PackWeights { .. }
            | KernelDesc::Mask(_) => false,
        }
    }

    /// Whether the kernel, which sums over the batch, may run split across
    /// the ranks of a data-parallel run ([`crate::runtime::parallel`]):
    /// each rank runs a share of its work items on the whole batch, and the
    /// ranks then merge what they wrote. Its items write disjoint values
    /// (every kernel's contract) and, together, every value of the buffers
    /// it writes, none of which it reads first: a kernel gradient.
    pub fn splits_across_ranks(&self) -> bool {
        match self {
            KernelDesc::Contraction { pass, .. } => match pass {
                ContractionPass::BackwardFilter { .. } => true,
                ContractionPass::Forward { .. } | ContractionPass::BackwardData { .. } => false,
            },
            _ => false,
        }
    }

    /// How the kernel computes, in a few words for profiles:
    /// `forward, winograd F(4x4,3x3)`, `backward-filter, gemm`, `window`.
    pub fn method(&self) -> String {
        match self {
            KernelDesc::Contraction {
                pass, algorithm, ..
            } => {
                let (pass, rows) = match pass {
                    ContractionPass::Forward { .. } => ("forward", ""),
                    ContractionPass::BackwardData { .. } => ("backward-data", ""),
                    ContractionPass::BackwardFilter { live_rows: false } => ("backward-filter", ""),
                    ContractionPass::BackwardFilter { live_rows: true } => {
                        ("backward-filter", ", live rows")
                    }
                };
                let how = match algorithm {
                    Algorithm::Gemm => "gemm".to_string(),
                    Algorithm::Winograd(tile) => format!("winograd {}", tile.label()),
                    Algorithm::Bf16 { .. } => format!("bf16{}", storage_words(self)),
                };
                format!("{pass}, {how}{rows}")
            }
            KernelDesc::WinogradFilter { tile, .. } => {
                format!("kernel transform, winograd {}", tile.label())
            }
            KernelDesc::PackWeights { .. } => "weights to bf16".to_string(),
            KernelDesc::Elementwise { .. } => "element-wise".to_string(),
            KernelDesc::Reduce(_) => "reduction".to_string(),
            KernelDesc::Window { .. } => format!("window{}", storage_words(self)),
            KernelDesc::Grouped(g) => format!("{}, grouped", grouped_pass(g.pass)),
            KernelDesc::Copy(_) | KernelDesc::Pad(_) => "copy".to_string(),
            KernelDesc::Embed(_) => "embed".to_string(),
            KernelDesc::Resample(_) => "resample".to_string(),
            KernelDesc::Mask(_) => "dropout mask".to_string(),
        }
    }

    /// A short description for dumps: the kernel kind and its sizes.
    pub fn summary(&self) -> String {
        match self {
            KernelDesc::Elementwise {
                kernel,
                rows,
                channels,
            } => {
                format!(
                    "elementwise {} [{rows} x {channels}] ({} steps)",
                    kernel.name,
                    kernel.exprs.len()
                )
            }
            KernelDesc::Reduce(r) => format!("reduce {:?} [{} x {}]", r.kind, r.rows, r.n),
            KernelDesc::Window {
                window: w,
                epilogue,
            } => {
                let epilogue = match epilogue {
                    Some(e) => format!(" + epilogue {} ({} steps)", e.name, e.exprs.len()),
                    None => String::new(),
                };
                format!(
                    "window {:?} {:?}{epilogue} input {:?}{}",
                    w.kind,
                    w.pass,
                    w.input,
                    storage_words(self).replace(',', "")
                )
            }
            KernelDesc::Contraction {
                geometry,
                pass,
                algorithm,
                ..
            } => {
                let pass = match pass {
                    ContractionPass::Forward { epilogue: Some(e) } => {
                        format!("forward + epilogue {} ({} steps)", e.name, e.exprs.len())
                    }
                    ContractionPass::Forward { epilogue: None } => "forward".to_string(),
                    ContractionPass::BackwardData { epilogue: Some(e) } => format!(
                        "backward-data + epilogue {} ({} steps)",
                        e.name,
                        e.exprs.len()
                    ),
                    ContractionPass::BackwardData { epilogue: None } => "backward-data".to_string(),
                    ContractionPass::BackwardFilter { live_rows: false } => {
                        "backward-filter".to_string()
                    }
                    ContractionPass::BackwardFilter { live_rows: true } => {
                        "backward-filter live-rows".to_string()
                    }
                };
                match algorithm {
                    Algorithm::Gemm => format!("contraction {pass} {geometry:?}"),
                    Algorithm::Winograd(tile) => {
                        format!("contraction {pass} winograd {} {geometry:?}", tile.label())
                    }
                    Algorithm::Bf16 { .. } => format!(
                        "contraction {pass} bf16{} {geometry:?}",
                        storage_words(self).replace(',', "")
                    ),
                }
            }
            KernelDesc::WinogradFilter {
                shape,
                tile,
                direction,
                ..
            } => format!("winograd filter {} {direction:?} {shape:?}", tile.label()),
            KernelDesc::PackWeights {
                geometry,
                transposed,
                ..
            } => {
                let how = if *transposed { " transposed" } else { "" };
                format!("pack bf16{how} {geometry:?}")
            }
            KernelDesc::Grouped(g) => format!(
                "grouped {} groups {} {:?}",
                grouped_pass(g.pass),
                g.groups,
                g.shape
            ),
            KernelDesc::Copy(c) => format!(
                "copy [{} x {}] from {:?} to {:?}",
                c.rows, c.len, c.from, c.to
            ),
            KernelDesc::Pad(p) => format!(
                "pad [{} x {:?}] to [{} x {:?}] moved by {:?}",
                p.batch, p.from, p.batch, p.to, p.offset
            ),
            KernelDesc::Embed(e) => format!(
                "embed [{} x {}] in zeros [{} x {}] at {}",
                e.rows, e.len, e.rows, e.width, e.offset
            ),
            KernelDesc::Mask(m) => format!("dropout mask [{}] rate {}", m.len, m.rate),
            KernelDesc::Resample(r) => format!(
                "resample {} {:?} x{:?} input {:?}",
                r.mode.name(),
                r.pass,
                r.factor,
                r.input
            ),
        }
    }
}

/// A grouped convolution's pass, as the other convolutions name theirs.
fn grouped_pass(pass: GroupedPass) -> &'static str {
    match pass {
        GroupedPass::Forward => "forward",
        GroupedPass::BackwardData => "backward-data",
        GroupedPass::BackwardFilter => "backward-filter",
    }
}

impl fmt::Display for KernelPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan {} (batch {})", self.name, self.batch)?;
        for (i, b) in self.buffers.iter().enumerate() {
            let role = match &b.role {
                Role::Input => "input".to_string(),
                Role::Labels => "labels".to_string(),
                Role::Weight(w) => format!("weight {w}"),
                Role::Output(o) => format!("output {o}"),
                Role::Loss(o) => format!("loss {o}"),
                Role::State(s) => format!("state {s}"),
                Role::Scalars(s) => format!("scalars {s}"),
                Role::Upstream(o) => format!("upstream {o}"),
                Role::InputGradient => "input gradient".to_string(),
                Role::Gradient(w) => format!("gradient {w}"),
                Role::Temporary => "temporary".to_string(),
            };
            let storage = match b.storage {
                Storage::F32 => "",
                Storage::Bf16 => " bf16",
            };
            writeln!(f, "buffer %{i} {} [{}]{storage} {role}", b.name, b.len)?;
        }
        let prepared = self.prepared();
        for (i, step) in self.steps.iter().enumerate() {
            let mut args = String::new();
            for (k, a) in step.args.iter().enumerate() {
                let _ = write!(args, "{}%{a}", if k > 0 { ", " } else { "" });
            }
            writeln!(
                f,
                "step {i}: {} ({args}) computes {}{}",
                step.kernel.summary(),
                step.nodes.join(", "),
                if prepared[i] {
                    ", once (frozen weights)"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}
