//! Lowering a shape-checked graph to a kernel plan: each node becomes a
//! kernel call over buffers of the batch (reshapes, inference dropout and a
//! sum's gradient become aliases). For training, batchnorm uses batch
//! statistics, dropout draws masks, the backward nodes get their kernels
//! (`train.rs`) and the optimizer's update closes the step. A gradient
//! program ([`gradients`]) has the same backward kernels, seeded by the
//! caller's upstream gradients, and returns the gradients instead of
//! applying them.
//!
//! Ops reach the lowering sorted by kernel family (`family.rs`), so no
//! function here matches on an op it does not handle.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

mod family;
mod train;

pub use train::COEFFICIENTS;

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;
use thiserror::Error;

use self::family::{
    family, Contraction, ConvTranspose, Family, Grouped, Pointwise, PointwiseActivation,
};
use crate::autodiff::{GradientGraph, TrainingGraph};
use crate::codegen::elementwise::{Binary, Elementwise, Expr, Operand, Unary};
use crate::codegen::grouped::{GroupedConv, GroupedPass};
use crate::codegen::native::{CopyRows, PadCopy};
use crate::codegen::reduce::{Reduce, ReduceKind};
use crate::codegen::resample::{Resample, ResamplePass};
use crate::codegen::window::{Pass, Role as WindowRole, Window, WindowKind, WindowStorage};
use crate::config::Optimizer;
use crate::graph::{Interpolation, Shape};
use crate::plan::{
    Algorithm, BufferId, ContractionPass, Geometry, KernelDesc, KernelPlan, Role, Step,
};
use crate::shapes::TypedGraph;

/// Why a graph could not be lowered.
#[derive(Debug, Error, PartialEq)]
pub enum LowerError {
    /// The batch size is zero.
    #[error("the batch size must be at least 1")]
    EmptyBatch,
    /// An op this lowering does not handle (training-graph ops in an inference plan).
    #[error("the back end has no kernel for `{node}` ({op})")]
    Unsupported {
        /// The node.
        node: String,
        /// Its op.
        op: String,
    },
    /// A kernel description was rejected.
    #[error("`{node}`: {message}")]
    Kernel {
        /// The node.
        node: String,
        /// Why.
        message: String,
    },
}

/// How a forward pass normalises and drops out: Keras's `training`
/// argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `training=False`: batchnorm on its moving statistics, dropout off.
    Inference,
    /// `training=True`: batchnorm on the batch's statistics (mean and
    /// biased variance over the batch and the pixels), the moving
    /// statistics left as they are; dropout draws a fresh mask from the
    /// runner's seed when `dropout` is true, and is the identity otherwise.
    Training {
        /// Whether dropout drops.
        dropout: bool,
    },
}

/// Lowers `model` for inference on batches of `batch` examples.
pub fn inference(model: &TypedGraph, batch: usize) -> Result<KernelPlan, LowerError> {
    forward(model, batch, Mode::Inference)
}

/// Lowers `model`'s forward pass in `mode` on batches of `batch` examples:
/// its outputs, nothing else (a training-mode forward does not move
/// batchnorm's moving statistics).
pub fn forward(model: &TypedGraph, batch: usize, mode: Mode) -> Result<KernelPlan, LowerError> {
    if batch == 0 {
        return Err(LowerError::EmptyBatch);
    }
    let mut lowering = Lowering::new(model, batch, Setup::of(mode));
    for &id in &model.order {
        lowering.node(id)?;
    }
    lowering.mark_outputs();
    Ok(lowering.plan)
}

/// Lowers a gradient graph (a vector-Jacobian product) for batches of
/// `batch` examples in `mode`: the forward pass, then the backward pass
/// seeded by the caller's upstream gradients. The outputs, the input's
/// gradient and every trainable weight's gradient are returned to the
/// caller; no step writes a weight, a moving statistic included.
pub fn gradients(
    graph: &GradientGraph,
    batch: usize,
    mode: Mode,
) -> Result<KernelPlan, LowerError> {
    if batch == 0 {
        return Err(LowerError::EmptyBatch);
    }
    let model = &graph.typed;
    let mut lowering = Lowering::new(model, batch, Setup::of(mode));
    for &id in &model.order {
        lowering.node(id)?;
    }
    lowering.mark_outputs();
    if let Some(id) = graph.input_gradient {
        lowering.expose(id, Role::InputGradient);
    }
    for (weight, id) in &graph.gradients {
        lowering.expose(*id, Role::Gradient(weight.clone()));
    }
    Ok(lowering.plan)
}

/// Lowers a training graph for batches of `batch` examples: forward, loss,
/// backward, and `optimizer`'s update of every trainable weight.
pub fn training(
    training: &TrainingGraph,
    batch: usize,
    optimizer: &Optimizer,
) -> Result<KernelPlan, LowerError> {
    if batch == 0 {
        return Err(LowerError::EmptyBatch);
    }
    let model = &training.typed;
    let mut lowering = Lowering::new(model, batch, Setup::TRAINING_STEP);
    for &id in &model.order {
        lowering.node(id)?;
    }
    lowering.mark_outputs();
    for (output, id) in &training.losses {
        let buffer = lowering.values[id];
        lowering.plan.buffers[buffer].role = Role::Loss(output.clone());
    }
    lowering.updates(training, optimizer);
    Ok(lowering.plan)
}

/// What the forward kernels of a plan do while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Setup {
    /// Batchnorm normalises with the batch's statistics.
    batch_statistics: bool,
    /// Batchnorm moves its moving statistics (a training step only).
    move_statistics: bool,
    /// Dropout draws masks.
    dropout: bool,
}

impl Setup {
    /// A training step: everything Keras's `fit` does.
    const TRAINING_STEP: Setup = Setup {
        batch_statistics: true,
        move_statistics: true,
        dropout: true,
    };

    /// A forward pass (and its gradients) in `mode`, which never writes a
    /// weight.
    fn of(mode: Mode) -> Setup {
        match mode {
            Mode::Inference => Setup {
                batch_statistics: false,
                move_statistics: false,
                dropout: false,
            },
            Mode::Training { dropout } => Setup {
                batch_statistics: true,
                move_statistics: false,
                dropout,
            },
        }
    }
}

struct Lowering<'m> {
    model: &'m TypedGraph,
    batch: usize,
    setup: Setup,
    plan: KernelPlan,
    /// The buffer holding each node's output.
    values: HashMap<NodeIndex, BufferId>,
    /// Each weight's buffer, by full name.
    weight_ids: HashMap<String, BufferId>,
    /// Each dropout node's mask.
    masks: HashMap<NodeIndex, BufferId>,
    /// Buffers computed once per forward layer for several gradient nodes
    /// (batchnorm's sums, a convolution's weight and bias gradients), by the
    /// layer's name.
    shared: HashMap<String, Vec<BufferId>>,
}

impl<'m> Lowering<'m> {
    fn new(model: &'m TypedGraph, batch: usize, setup: Setup) -> Lowering<'m> {
        Lowering {
            model,
            batch,
            setup,
            plan: KernelPlan {
                name: model.graph.name.clone(),
                batch,
                input_shape: model.input_shape().map(|s| s.0.clone()).unwrap_or_default(),
                ..KernelPlan::default()
            },
            values: HashMap::new(),
            weight_ids: HashMap::new(),
            masks: HashMap::new(),
            shared: HashMap::new(),
        }
    }

    fn mark_outputs(&mut self) {
        for (name, id) in &self.model.graph.outputs {
            self.expose(*id, Role::Output(name.clone()));
        }
    }

    /// Gives node `id`'s value to the caller as `role`: its buffer takes
    /// the role, or, when that buffer is already the caller's (an output
    /// that is a view of the input, an input gradient that is a view of an
    /// upstream gradient, one node exposed twice), a copy of it does.
    fn expose(&mut self, id: NodeIndex, role: Role) {
        let buffer = self.values[&id];
        if self.plan.buffers[buffer].role == Role::Temporary {
            self.plan.buffers[buffer].role = role;
            return;
        }
        let len = self.plan.buffers[buffer].len;
        let name = format!("copy:{}", self.plan.buffers[buffer].name);
        let copy = self.plan.buffer(name.clone(), len, role);
        let rows = CopyRows {
            name: name.clone(),
            rows: 1,
            len,
            from: (len, 0),
            to: (len, 0),
        };
        self.plan.steps.push(Step {
            kernel: KernelDesc::Copy(rows),
            args: vec![buffer, copy],
            nodes: vec![name],
        });
    }

    /// The buffer of weight `name` (created on first use).
    fn weight(&mut self, name: &str, len: usize) -> BufferId {
        if let Some(&id) = self.weight_ids.get(name) {
            return id;
        }
        let id = self.plan.buffer(name, len, Role::Weight(name.to_string()));
        self.weight_ids.insert(name.to_string(), id);
        id
    }

    /// A temporary buffer of `len` values, named `name`.
    fn scratch(&mut self, name: String, len: usize) -> BufferId {
        self.plan.buffer(name, len, Role::Temporary)
    }

    /// The per-example shape of node `id`.
    fn shape(&self, id: NodeIndex) -> Vec<usize> {
        self.model
            .info(id)
            .shape
            .0
            .iter()
            .map(|&d| d as usize)
            .collect()
    }

    /// Rows and channels of node `id`'s output over the batch.
    fn matrix(&self, id: NodeIndex) -> (usize, usize) {
        let shape = self.shape(id);
        let channels = shape.last().copied().unwrap_or(1);
        (
            self.batch * shape.iter().product::<usize>() / channels.max(1),
            channels,
        )
    }

    fn temporary(&mut self, id: NodeIndex) -> BufferId {
        let name = self.model.graph.nodes[id].name.clone();
        let len = self.batch * self.shape(id).iter().product::<usize>();
        self.plan.buffer(name, len, Role::Temporary)
    }

    /// A batchnorm's weights by name: `gamma` and `beta` only where the
    /// layer has them (`scale`, `center`).
    fn norm_weights(&mut self, id: NodeIndex) -> NormWeights {
        let names: Vec<String> = self.model.graph.nodes[id]
            .params
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let buffers = self.weights(id);
        let find = |name: &str| names.iter().position(|n| n == name).map(|i| buffers[i]);
        NormWeights {
            gamma: find("gamma"),
            beta: find("beta"),
            // `ops::params` lists both moving statistics for every batchnorm.
            mean: find("moving_mean").expect("a batchnorm has a moving mean"),
            variance: find("moving_variance").expect("a batchnorm has a moving variance"),
        }
    }

    fn weights(&mut self, id: NodeIndex) -> Vec<BufferId> {
        let node = &self.model.graph.nodes[id];
        let weights: Vec<(String, usize)> = node
            .params
            .iter()
            .map(|p| {
                (
                    format!("{}.{}", node.name, p.name),
                    p.shape.iter().product::<u64>() as usize,
                )
            })
            .collect();
        weights
            .into_iter()
            .map(|(name, len)| self.weight(&name, len))
            .collect()
    }

    fn step(&mut self, id: NodeIndex, kernel: KernelDesc, args: Vec<BufferId>) {
        let name = self.model.graph.nodes[id].name.clone();
        self.plan.steps.push(Step {
            kernel,
            args,
            nodes: vec![name],
        });
    }

    /// Whether batchnorm node `id` normalises with the batch's statistics:
    /// in a training pass, unless its layer is frozen (Keras 3 runs a
    /// batchnorm with `trainable = False` in inference mode).
    fn batch_statistics(&self, id: NodeIndex) -> bool {
        self.setup.batch_statistics && self.model.graph.nodes[id].trainable
    }

    fn node(&mut self, id: NodeIndex) -> Result<(), LowerError> {
        let node = &self.model.graph.nodes[id];
        let inputs: Vec<BufferId> = self
            .model
            .graph
            .inputs_of(id)
            .iter()
            .map(|i| self.values[i])
            .collect();
        let input_ids = self.model.graph.inputs_of(id);
        let output = match family(&node.op) {
            Family::Input => {
                let len = self.batch * self.shape(id).iter().product::<usize>();
                self.plan.buffer("input", len, Role::Input)
            }
            // A reshape, and dropout at inference, change nothing in memory.
            Family::Reshape => inputs[0],
            Family::ChannelSlice { start, end } => {
                self.channel_slice(id, [start, end], inputs[0], input_ids[0])?
            }
            Family::Dropout { rate } if self.setup.dropout => self.dropout(id, rate, inputs[0]),
            Family::Dropout { .. } => inputs[0],
            Family::Pointwise(Pointwise::BatchNorm {
                momentum, epsilon, ..
            }) if self.batch_statistics(id) => {
                self.batchnorm_training(id, momentum, epsilon, inputs[0])
            }
            Family::Softmax => {
                let (rows, n) = self.matrix(id);
                let out = self.temporary(id);
                let reduce = Reduce {
                    name: node.name.clone(),
                    kind: ReduceKind::Softmax,
                    rows,
                    n,
                    loads: Vec::new(),
                };
                self.step(id, KernelDesc::Reduce(reduce), vec![inputs[0], out]);
                out
            }
            Family::Pointwise(pointwise) => self.elementwise(id, pointwise, &inputs, &input_ids)?,
            Family::Concat { axis } => self.concat(id, axis, &inputs, &input_ids)?,
            Family::Pad { amounts } => {
                let out = self.temporary(id);
                let offset = [amounts[0], amounts[2]];
                self.pad_copy(id, (inputs[0], input_ids[0]), (out, id), offset);
                out
            }
            Family::Window(kind) => self.window(id, kind, inputs[0], input_ids[0])?,
            Family::Contraction(contraction) => {
                self.contraction_forward(id, contraction, inputs[0], input_ids[0])
            }
            Family::ConvTranspose(transpose) => {
                self.conv_transpose_forward(id, transpose, inputs[0], input_ids[0])
            }
            Family::Resample { factor, mode } => {
                let small = self.shape(input_ids[0]);
                self.resample(id, ResamplePass::Forward, (factor, mode), inputs[0], &small)
            }
            Family::Grouped(conv) => self.grouped_forward(id, conv, inputs[0], input_ids[0]),
            Family::Rbf { units } => {
                let (rows, n) = self.matrix(input_ids[0]);
                let centers = self.weights(id)[0];
                let y = self.temporary(id);
                let reduce = Reduce {
                    name: node.name.clone(),
                    kind: ReduceKind::Rbf { units },
                    rows,
                    n,
                    loads: Vec::new(),
                };
                self.step(id, KernelDesc::Reduce(reduce), vec![inputs[0], centers, y]);
                y
            }
            Family::Labels => {
                let len = self.batch * self.shape(id).iter().product::<usize>();
                self.plan.buffer("labels", len, Role::Labels)
            }
            Family::Upstream { output } => {
                let len = self.batch * self.shape(id).iter().product::<usize>();
                let role = Role::Upstream(output.to_string());
                self.plan.buffer(format!("upstream:{output}"), len, role)
            }
            Family::CrossEntropy { smoothing, weight } => {
                self.cross_entropy(id, smoothing, weight, &inputs, &input_ids)
            }
            Family::CrossEntropyGrad => self.loss_grad(input_ids[0]),
            Family::InputGrad(gradient) => self.input_grad(id, gradient, &input_ids)?,
            Family::WeightGrad(gradient) => self.weight_grad(id, gradient, &input_ids)?,
        };
        self.values.insert(id, output);
        Ok(())
    }

    /// One element-wise kernel for node `id`, which computes `op`.
    fn elementwise(
        &mut self,
        id: NodeIndex,
        op: Pointwise,
        inputs: &[BufferId],
        input_ids: &[NodeIndex],
    ) -> Result<BufferId, LowerError> {
        let node = &self.model.graph.nodes[id];
        let (rows, channels) = self.matrix(id);
        let mut k = Builder::default();
        let mut args: Vec<BufferId> = Vec::new();
        let result = match op {
            Pointwise::Activation(a) => {
                args.push(inputs[0]);
                let x = k.load(Operand::Tensor);
                k.activation(a, x)
            }
            // gamma (x - mean) / sqrt(var + eps) + beta
            Pointwise::BatchNorm { epsilon, .. } => {
                let weights = self.norm_weights(id);
                // Its gradients (in inference mode) normalise with the
                // same, moving, statistics.
                let statistics = vec![weights.mean, weights.variance];
                self.shared.insert(format!("bn:{}", node.name), statistics);
                args.push(inputs[0]);
                let x = k.load(Operand::Tensor);
                let gamma = k.per_channel_or(weights.gamma, 1.0, &mut args);
                let beta = k.per_channel_or(weights.beta, 0.0, &mut args);
                let mean = k.per_channel_or(Some(weights.mean), 0.0, &mut args);
                let variance = k.per_channel_or(Some(weights.variance), 1.0, &mut args);
                let eps = k.push(Expr::Const(epsilon as f32));
                let shifted = k.binary(Binary::Sub, x, mean);
                let v = k.binary(Binary::Add, variance, eps);
                let root = k.push(Expr::Unary(Unary::Sqrt, v));
                let scale = k.binary(Binary::Div, gamma, root);
                k.push(Expr::Fma(shifted, scale, beta))
            }
            // x * coefficient + bias
            Pointwise::ScaleBias => {
                let weights = self.weights(id);
                args.push(inputs[0]);
                args.extend(&weights);
                let x = k.load(Operand::Tensor);
                let coefficient = k.load(Operand::PerChannel);
                let bias = k.load(Operand::PerChannel);
                k.push(Expr::Fma(x, coefficient, bias))
            }
            Pointwise::Add => {
                args.extend(inputs);
                let mut sum = k.load(Operand::Tensor);
                for _ in 1..inputs.len() {
                    let next = k.load(Operand::Tensor);
                    sum = k.binary(Binary::Add, sum, next);
                }
                sum
            }
            // x * s, s per channel of each image (the SE-block) or of x's shape
            Pointwise::Multiply => {
                args.extend(inputs);
                let x = k.load(Operand::Tensor);
                let s_shape = self.shape(input_ids[1]);
                let operand = if s_shape == self.shape(input_ids[0]) {
                    Operand::Tensor
                } else {
                    Operand::PerItem {
                        rows_per_item: rows / self.batch,
                    }
                };
                let s = k.load(operand);
                k.binary(Binary::Mul, x, s)
            }
        };
        let out = self.temporary(id);
        args.push(out);
        let kernel = k.finish(&node.name, result);
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel,
                rows,
                channels,
            },
            args,
        );
        Ok(out)
    }

    /// A concatenation: one strided copy per input into its channel slice
    /// (along the last axis; other axes are rows of the same copy).
    fn concat(
        &mut self,
        id: NodeIndex,
        axis: usize,
        inputs: &[BufferId],
        input_ids: &[NodeIndex],
    ) -> Result<BufferId, LowerError> {
        let shape = self.shape(id);
        let inner: usize = shape[axis + 1..].iter().product();
        let rows = self.batch * shape[..axis].iter().product::<usize>();
        let width = shape[axis] * inner;
        let out = self.temporary(id);
        let mut offset = 0;
        for (&buffer, &input) in inputs.iter().zip(input_ids) {
            let len = self.shape(input)[axis] * inner;
            let name = format!(
                "{}/{}",
                self.model.graph.nodes[id].name, self.model.graph.nodes[input].name
            );
            let copy = CopyRows {
                name,
                rows,
                len,
                from: (len, 0),
                to: (width, offset),
            };
            self.step(id, KernelDesc::Copy(copy), vec![buffer, out]);
            offset += len;
        }
        Ok(out)
    }

    /// A step of node `id` copying `from`, the value of node `from_node`,
    /// into `to`, of the shape of node `to_node`'s value, moved by `offset`
    /// (rows down, columns right), zeros around: zero padding, cropping
    /// and their gradients.
    fn pad_copy(
        &mut self,
        id: NodeIndex,
        (from, from_node): (BufferId, NodeIndex),
        (to, to_node): (BufferId, NodeIndex),
        offset: [i64; 2],
    ) {
        let (source, target) = (self.shape(from_node), self.shape(to_node));
        let copy = PadCopy {
            name: self.model.graph.nodes[id].name.clone(),
            batch: self.batch,
            from: [source[0], source[1], source[2]],
            to: [target[0], target[1]],
            offset,
        };
        self.step(id, KernelDesc::Pad(copy), vec![from, to]);
    }

    /// Channels `start..end` of the last axis of `x`: one strided copy, or
    /// `x` itself when the slice keeps every channel.
    fn channel_slice(
        &mut self,
        id: NodeIndex,
        [start, end]: [i64; 2],
        x: BufferId,
        x_id: NodeIndex,
    ) -> Result<BufferId, LowerError> {
        let shape = self.model.info(x_id).shape.clone();
        let (first, len, channels, rows) = self.slice_geometry(id, [start, end], &shape)?;
        if len == channels {
            return Ok(x);
        }
        let out = self.temporary(id);
        let copy = CopyRows {
            name: self.model.graph.nodes[id].name.clone(),
            rows,
            len,
            from: (channels, first),
            to: (len, 0),
        };
        self.step(id, KernelDesc::Copy(copy), vec![x, out]);
        Ok(out)
    }

    /// A channel slice, for node `id`, of an input of per-example shape
    /// `shape`: its first channel, its length, the input's channels and its
    /// rows over the batch.
    fn slice_geometry(
        &self,
        id: NodeIndex,
        [start, end]: [i64; 2],
        shape: &Shape,
    ) -> Result<(usize, usize, usize, usize), LowerError> {
        let (first, last) =
            crate::ops::channel_range(start, end, shape).map_err(|e| LowerError::Kernel {
                node: self.model.graph.nodes[id].name.clone(),
                message: e.to_string(),
            })?;
        let channels = shape.channels() as usize;
        let rows = self.batch * (shape.elements() as usize / channels.max(1));
        Ok((first as usize, (last - first) as usize, channels, rows))
    }

    /// `y = x . W (+ b)` on the GEMM.
    fn contraction_forward(
        &mut self,
        id: NodeIndex,
        contraction: Contraction,
        x: BufferId,
        x_id: NodeIndex,
    ) -> BufferId {
        let name = self.model.graph.nodes[id].name.clone();
        let geometry = contraction.geometry(self.batch, &self.shape(x_id));
        let mut args = vec![x];
        args.extend(self.weights(id));
        let y = self.temporary(id);
        args.push(y);
        self.step(
            id,
            KernelDesc::Contraction {
                name,
                geometry,
                pass: ContractionPass::Forward { epilogue: None },
                algorithm: Algorithm::Gemm,
            },
            args,
        );
        y
    }

    /// `y = conv_W^T(x) (+ b)`: the backward-data pass of the convolution
    /// the transposed convolution transposes, then the bias, per channel,
    /// in an element-wise kernel (which fusion joins to an activation
    /// after it).
    fn conv_transpose_forward(
        &mut self,
        id: NodeIndex,
        transpose: ConvTranspose,
        x: BufferId,
        x_id: NodeIndex,
    ) -> BufferId {
        let name = self.model.graph.nodes[id].name.clone();
        let geometry = transpose.geometry(self.batch, &self.shape(id), self.shape(x_id)[2]);
        let weights = self.weights(id);
        let (rows, channels) = self.matrix(id);
        let product = if transpose.bias {
            self.scratch(format!("{name}.product"), rows * channels)
        } else {
            self.temporary(id)
        };
        let desc = KernelDesc::Contraction {
            name: name.clone(),
            geometry: Geometry::Conv(geometry),
            pass: ContractionPass::BackwardData { epilogue: None },
            algorithm: Algorithm::Gemm,
        };
        self.step(id, desc, vec![x, weights[0], product]);
        if !transpose.bias {
            return product;
        }
        let mut k = Builder::default();
        let value = k.load(Operand::Tensor);
        let bias = k.load(Operand::PerChannel);
        let sum = k.binary(Binary::Add, value, bias);
        let y = self.temporary(id);
        let kernel = KernelDesc::Elementwise {
            kernel: k.finish(&name, sum),
            rows,
            channels,
        };
        self.step(id, kernel, vec![product, weights[1], y]);
        y
    }

    /// An upsampling (`pass` forward) or its gradient (backward) by
    /// `factor` in `mode`, from `source` to node `id`'s buffer; `small` is
    /// the per-example shape of the upsampling's input.
    fn resample(
        &mut self,
        id: NodeIndex,
        pass: ResamplePass,
        (factor, mode): ([usize; 2], Interpolation),
        source: BufferId,
        small: &[usize],
    ) -> BufferId {
        let resample = Resample {
            name: self.model.graph.nodes[id].name.clone(),
            mode,
            factor,
            input: [self.batch, small[0], small[1], small[2]],
            pass,
        };
        let target = self.temporary(id);
        self.step(id, KernelDesc::Resample(resample), vec![source, target]);
        target
    }

    /// A grouped convolution's forward pass: `x, kernel, [bias,] y`.
    fn grouped_forward(
        &mut self,
        id: NodeIndex,
        conv: Grouped,
        x: BufferId,
        x_id: NodeIndex,
    ) -> BufferId {
        let desc = GroupedConv {
            name: self.model.graph.nodes[id].name.clone(),
            shape: conv.shape(self.batch, &self.shape(x_id)),
            groups: conv.groups,
            pass: GroupedPass::Forward,
        };
        let mut args = vec![x];
        args.extend(self.weights(id));
        let y = self.temporary(id);
        args.push(y);
        self.step(id, KernelDesc::Grouped(desc), args);
        y
    }

    /// A forward window kernel, its buffers bound by role.
    fn window(
        &mut self,
        id: NodeIndex,
        kind: WindowKind,
        input: BufferId,
        input_id: NodeIndex,
    ) -> Result<BufferId, LowerError> {
        let name = self.model.graph.nodes[id].name.clone();
        let weights = self.weights(id);
        let out = self.temporary(id);
        let shape = self.shape(input_id);
        // The forward pass reads the input and the filter and bias (which
        // only depthwise convolution has), and writes the output.
        self.window_call(id, &name, kind, Pass::Forward, &shape, |role| match role {
            WindowRole::Input => input,
            WindowRole::Filter => weights[0],
            WindowRole::Bias => weights[1],
            WindowRole::Output
            | WindowRole::OutputGrad
            | WindowRole::InputGrad
            | WindowRole::FilterGrad
            | WindowRole::BiasGrad => out,
        })?;
        Ok(out)
    }

    /// A window kernel of kind `kind` for pass `pass` on inputs of
    /// per-example shape `input`, its buffers bound by `bind`.
    fn window_call(
        &mut self,
        id: NodeIndex,
        name: &str,
        kind: WindowKind,
        pass: Pass,
        input: &[usize],
        bind: impl Fn(WindowRole) -> BufferId,
    ) -> Result<(), LowerError> {
        let window = Window {
            name: name.to_string(),
            kind,
            pass,
            input: [self.batch, input[0], input[1], input[2]],
            storage: WindowStorage::F32,
        };
        let roles = window.buffers().map_err(|e| LowerError::Kernel {
            node: name.to_string(),
            message: e.to_string(),
        })?;
        let args = roles.iter().map(|b| bind(b.role)).collect();
        let kernel = KernelDesc::Window {
            window,
            epilogue: None,
        };
        self.step(id, kernel, args);
        Ok(())
    }
}

/// GELU's tanh form: `sqrt(2 / pi)`.
const GELU_TANH_SCALE: f32 = 0.797_884_6;
/// GELU's tanh form: the cubic term's coefficient.
const GELU_CUBIC: f32 = 0.044_715;

/// GELU's tanh term and the square of its input, as expression indices.
struct GeluTanh {
    tanh: usize,
    x2: usize,
}

/// The steps of Mish's gate that its gradient reuses.
struct MishGate {
    /// `exp(min(x, 20))`
    e: usize,
    /// `n + 2`
    denominator: usize,
    /// `n / (n + 2)`, which is `tanh(softplus(x))`.
    gate: usize,
}

/// A batchnorm's weight buffers.
struct NormWeights {
    /// The learned factor, without `scale: false`.
    gamma: Option<BufferId>,
    /// The learned offset, without `center: false`.
    beta: Option<BufferId>,
    mean: BufferId,
    variance: BufferId,
}

/// Builds an element-wise kernel's SSA steps, loading inputs in order.
#[derive(Default)]
struct Builder {
    inputs: Vec<Operand>,
    exprs: Vec<Expr>,
}

impl Builder {
    fn push(&mut self, expr: Expr) -> usize {
        self.exprs.push(expr);
        self.exprs.len() - 1
    }

    fn load(&mut self, operand: Operand) -> usize {
        self.inputs.push(operand);
        self.push(Expr::Load(self.inputs.len() - 1))
    }

    /// Loads the per-channel buffer `weight`, appending it to `args`, or
    /// is the constant `absent` where the layer has no such weight.
    fn per_channel_or(
        &mut self,
        weight: Option<BufferId>,
        absent: f32,
        args: &mut Vec<BufferId>,
    ) -> usize {
        match weight {
            Some(buffer) => {
                args.push(buffer);
                self.load(Operand::PerChannel)
            }
            None => self.push(Expr::Const(absent)),
        }
    }

    fn binary(&mut self, op: Binary, a: usize, b: usize) -> usize {
        self.push(Expr::Binary(op, a, b))
    }

    /// An element-wise activation applied to step `x`.
    fn activation(&mut self, activation: PointwiseActivation, x: usize) -> usize {
        let zero = self.push(Expr::Const(0.0));
        match activation {
            PointwiseActivation::Relu => self.binary(Binary::Max, x, zero),
            PointwiseActivation::LeakyRelu { alpha } => {
                let a = self.push(Expr::Const(alpha as f32));
                let negative = self.binary(Binary::Mul, a, x);
                self.push(Expr::IfPositive {
                    cond: x,
                    then: x,
                    otherwise: negative,
                })
            }
            PointwiseActivation::Elu { alpha } => self.elu(x, alpha),
            PointwiseActivation::Selu => {
                // scale * elu(x, alpha) with the self-normalising constants.
                let elu = self.elu(x, 1.673_263_2);
                let scale = self.push(Expr::Const(1.050_701));
                self.binary(Binary::Mul, scale, elu)
            }
            PointwiseActivation::Tanh => self.push(Expr::Unary(Unary::Tanh, x)),
            PointwiseActivation::Sigmoid => self.push(Expr::Unary(Unary::Sigmoid, x)),
            PointwiseActivation::Relu6 => {
                let six = self.push(Expr::Const(6.0));
                let positive = self.binary(Binary::Max, x, zero);
                self.binary(Binary::Min, positive, six)
            }
            PointwiseActivation::Swish => {
                let gate = self.push(Expr::Unary(Unary::Sigmoid, x));
                self.binary(Binary::Mul, x, gate)
            }
            PointwiseActivation::Gelu { approximate } => {
                // 0.5 x (1 + erf(x / sqrt 2)), or with tanh(sqrt(2 / pi)
                // (x + 0.044715 x^3)) in place of the erf.
                let half = self.push(Expr::Const(0.5));
                let half_x = self.binary(Binary::Mul, half, x);
                let odd = if approximate {
                    self.gelu_tanh(x).tanh
                } else {
                    let scale = self.push(Expr::Const(std::f32::consts::FRAC_1_SQRT_2));
                    let z = self.binary(Binary::Mul, x, scale);
                    self.push(Expr::Unary(Unary::Erf, z))
                };
                self.push(Expr::Fma(half_x, odd, half_x))
            }
            PointwiseActivation::HardSigmoid => self.hard_sigmoid(x),
            PointwiseActivation::HardSwish => {
                let gate = self.hard_sigmoid(x);
                self.binary(Binary::Mul, x, gate)
            }
            PointwiseActivation::Mish => {
                let t = self.mish_gate(x).gate;
                self.binary(Binary::Mul, x, t)
            }
        }
    }

    /// `tanh(sqrt(2 / pi) x (1 + 0.044715 x^2))`, GELU's tanh form, with
    /// the `x^2` it computes on the way, which its gradient needs again.
    fn gelu_tanh(&mut self, x: usize) -> GeluTanh {
        let x2 = self.binary(Binary::Mul, x, x);
        let a = self.push(Expr::Const(GELU_CUBIC));
        let one = self.push(Expr::Const(1.0));
        let poly = self.push(Expr::Fma(a, x2, one));
        let c = self.push(Expr::Const(GELU_TANH_SCALE));
        let cx = self.binary(Binary::Mul, c, x);
        let u = self.binary(Binary::Mul, cx, poly);
        let tanh = self.push(Expr::Unary(Unary::Tanh, u));
        GeluTanh { tanh, x2 }
    }

    /// `min(max(x / 6 + 1 / 2, 0), 1)`, which is `relu6(x + 3) / 6`.
    fn hard_sigmoid(&mut self, x: usize) -> usize {
        let sixth = self.push(Expr::Const(1.0 / 6.0));
        let half = self.push(Expr::Const(0.5));
        let line = self.push(Expr::Fma(x, sixth, half));
        let zero = self.push(Expr::Const(0.0));
        let one = self.push(Expr::Const(1.0));
        let positive = self.binary(Binary::Max, line, zero);
        self.binary(Binary::Min, positive, one)
    }

    /// Mish's gate `tanh(softplus(x))` written as `n / (n + 2)` with
    /// `n = e (e + 2)`, `e = exp(x)`: no logarithm, no cancellation for
    /// negative `x`. `e` is taken at `min(x, 20)`, where the gate is 1 to
    /// f32 precision and `n` still fits.
    fn mish_gate(&mut self, x: usize) -> MishGate {
        let limit = self.push(Expr::Const(20.0));
        let clamped = self.binary(Binary::Min, x, limit);
        let e = self.push(Expr::Unary(Unary::Exp, clamped));
        let two = self.push(Expr::Const(2.0));
        let e_plus_2 = self.binary(Binary::Add, e, two);
        let n = self.binary(Binary::Mul, e, e_plus_2);
        let denominator = self.binary(Binary::Add, n, two);
        let gate = self.binary(Binary::Div, n, denominator);
        MishGate {
            e,
            denominator,
            gate,
        }
    }

    fn elu(&mut self, x: usize, alpha: f64) -> usize {
        let e = self.push(Expr::Unary(Unary::Expm1, x));
        let a = self.push(Expr::Const(alpha as f32));
        let negative = self.binary(Binary::Mul, a, e);
        self.push(Expr::IfPositive {
            cond: x,
            then: x,
            otherwise: negative,
        })
    }

    fn finish(self, name: &str, result: usize) -> Elementwise {
        Elementwise {
            name: name.to_string(),
            inputs: self.inputs,
            exprs: self.exprs,
            outputs: vec![result],
            stores: Vec::new(),
        }
    }
}
