//! The training half of the lowering: batch statistics, dropout masks, the
//! loss, each backward node's kernel, and the optimizer's updates.

use petgraph::stable_graph::NodeIndex;

use super::family::{
    family, Contraction, ConvTranspose, Family, Grouped, InputGradient, Pointwise,
    PointwiseActivation, WeightGradient,
};
use super::{Builder, GeluTanh, LowerError, Lowering, GELU_CUBIC, GELU_TANH_SCALE};
use crate::autodiff::TrainingGraph;
use crate::codegen::elementwise::{Binary, Expr, Operand, Unary};
use crate::codegen::grouped::{GroupedConv, GroupedPass};
use crate::codegen::native::{CopyRows, DropoutMask, EmbedRows};
use crate::codegen::reduce::{Reduce, ReduceKind};
use crate::codegen::resample::ResamplePass;
use crate::codegen::window::{Pass, Role as WindowRole, WindowKind};
use crate::config::Optimizer;
use crate::graph::Shape;
use crate::ops::{self, GradInputs, Need};
use crate::optimizer::state_count;
use crate::plan::{
    Algorithm, BufferId, ContractionPass, Geometry, KernelDesc, Role, UPDATE_PREFIX,
};

/// Values the optimizer's coefficient buffer holds (the most any optimizer reads).
pub const COEFFICIENTS: usize = crate::optimizer::MAX_COEFFICIENTS;

impl Lowering<'_> {
    /// The per-step scalar buffer named `name` (one per plan).
    fn scalars(&mut self, name: &str, len: usize) -> BufferId {
        let role = Role::Scalars(name.to_string());
        match self.plan.with_role(&role).first() {
            Some(&id) => id,
            None => self.plan.buffer(name, len, role),
        }
    }

    /// Dropout while training: a fresh mask each step, `y = x * mask`.
    pub(super) fn dropout(&mut self, id: NodeIndex, rate: f64, x: BufferId) -> BufferId {
        let name = self.model.graph.nodes[id].name.clone();
        let (rows, channels) = self.matrix(id);
        let step = self.scalars("step", 2);
        let mask = self.scratch(format!("{name}.mask"), rows * channels);
        let seed = fnv1a(&name);
        self.step(
            id,
            KernelDesc::Mask(DropoutMask {
                name: format!("{name}.mask"),
                len: rows * channels,
                rate: rate as f32,
                seed,
            }),
            vec![step, mask],
        );
        let y = self.product(id, &name, (rows, channels), x, (mask, Operand::Tensor));
        self.masks.insert(id, mask);
        y
    }

    /// `a * b` as one element-wise kernel, `b` indexed as `operand`.
    fn product(
        &mut self,
        id: NodeIndex,
        name: &str,
        (rows, channels): (usize, usize),
        a: BufferId,
        (b, operand): (BufferId, Operand),
    ) -> BufferId {
        let mut k = Builder::default();
        let x = k.load(Operand::Tensor);
        let y = k.load(operand);
        let result = k.binary(Binary::Mul, x, y);
        let out = self.scratch(name.to_string(), rows * channels);
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel: k.finish(name, result),
                rows,
                channels,
            },
            vec![a, b, out],
        );
        out
    }

    /// Batchnorm while training: normalise with the batch's mean and biased
    /// variance, and, in a training step, move the moving statistics
    /// towards them (Keras: `moving = moving * momentum + batch * (1 -
    /// momentum)`).
    pub(super) fn batchnorm_training(
        &mut self,
        id: NodeIndex,
        momentum: f64,
        epsilon: f64,
        x: BufferId,
    ) -> BufferId {
        let name = self.model.graph.nodes[id].name.clone();
        let (rows, c) = self.matrix(id);
        let weights = self.norm_weights(id);
        let (mean, variance) = (
            self.scratch(format!("{name}.mean"), c),
            self.scratch(format!("{name}.variance"), c),
        );
        let moments = Reduce {
            name: format!("{name}.moments"),
            kind: ReduceKind::ColumnMoments,
            rows,
            n: c,
            loads: Vec::new(),
        };
        self.step(id, KernelDesc::Reduce(moments), vec![x, mean, variance]);
        // y = gamma (x - mean) / sqrt(variance + eps) + beta
        let mut k = Builder::default();
        let mut args = vec![x];
        let xv = k.load(Operand::Tensor);
        let gamma = k.per_channel_or(weights.gamma, 1.0, &mut args);
        let beta = k.per_channel_or(weights.beta, 0.0, &mut args);
        let m = k.per_channel_or(Some(mean), 0.0, &mut args);
        let v = k.per_channel_or(Some(variance), 1.0, &mut args);
        let scale = inverse_deviation(&mut k, v, epsilon);
        let scale = k.binary(Binary::Mul, gamma, scale);
        let shifted = k.binary(Binary::Sub, xv, m);
        let result = k.push(Expr::Fma(shifted, scale, beta));
        let y = self.temporary(id);
        args.push(y);
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel: k.finish(&name, result),
                rows,
                channels: c,
            },
            args,
        );
        self.shared
            .insert(format!("bn:{name}"), vec![mean, variance]);
        if self.setup.move_statistics {
            self.move_statistics(
                id,
                momentum,
                [weights.mean, weights.variance],
                [mean, variance],
            );
        }
        y
    }

    /// moving = batch + (moving - batch) * momentum, in place, for the
    /// moving statistics `[moving_mean, moving_variance]` and the batch's
    /// `[mean, variance]`.
    fn move_statistics(
        &mut self,
        id: NodeIndex,
        momentum: f64,
        [moving_mean_buffer, moving_variance_buffer]: [BufferId; 2],
        [mean, variance]: [BufferId; 2],
    ) {
        let name = self.model.graph.nodes[id].name.clone();
        let c = self.plan.buffers[mean].len;
        let mut k = Builder::default();
        let [moving_mean, moving_variance, m, v] = [0; 4].map(|_| k.load(Operand::Tensor));
        let rate = k.push(Expr::Const(momentum as f32));
        let dm = k.binary(Binary::Sub, moving_mean, m);
        let new_mean = k.push(Expr::Fma(dm, rate, m));
        let dv = k.binary(Binary::Sub, moving_variance, v);
        let new_variance = k.push(Expr::Fma(dv, rate, v));
        let mut update = k.finish(&format!("{name}.moving"), new_mean);
        update.outputs.push(new_variance);
        let args = vec![
            moving_mean_buffer,
            moving_variance_buffer,
            mean,
            variance,
            moving_mean_buffer,
            moving_variance_buffer,
        ];
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel: update,
                rows: 1,
                channels: c,
            },
            args,
        );
    }

    /// Softmax cross-entropy of the logits: each row's loss (an example's,
    /// or a pixel's), and the gradient of the mean weighted loss over all
    /// rows of the batch (as Keras averages a per-pixel loss) in the same
    /// pass.
    pub(super) fn cross_entropy(
        &mut self,
        id: NodeIndex,
        smoothing: f64,
        weight: f64,
        inputs: &[BufferId],
        input_ids: &[NodeIndex],
    ) -> BufferId {
        let logits_name = self.model.graph.nodes[input_ids[0]].name.clone();
        let (rows, n) = self.matrix(input_ids[0]);
        let loss = self.temporary(id);
        let dz = self.scratch(format!("grad:{logits_name}"), rows * n);
        let kind = ReduceKind::CrossEntropy {
            smoothing: smoothing as f32,
            scale: (weight / rows as f64) as f32,
        };
        let name = self.model.graph.nodes[id].name.clone();
        self.step(
            id,
            KernelDesc::Reduce(Reduce {
                name,
                kind,
                rows,
                n,
                loads: Vec::new(),
            }),
            vec![inputs[0], inputs[1], loss, dz],
        );
        self.shared.insert(format!("ce:{logits_name}"), vec![dz]);
        loss
    }

    /// The logits' gradient, computed with their loss.
    pub(super) fn loss_grad(&mut self, logits: NodeIndex) -> BufferId {
        let name = &self.model.graph.nodes[logits].name;
        self.shared[&format!("ce:{name}")][0]
    }

    /// The kernel of an input gradient, by the forward op's family.
    /// `wired` are the gradient node's inputs, which its rule names.
    pub(super) fn input_grad(
        &mut self,
        id: NodeIndex,
        gradient: InputGradient<'_>,
        wired: &[NodeIndex],
    ) -> Result<BufferId, LowerError> {
        let rule = ops::gradient(gradient.forward, gradient.inputs.len());
        let needs = rule
            .inputs
            .get(gradient.slot)
            .map_or(&[][..], Vec::as_slice);
        let read = self.grad_inputs(id, needs, wired)?;
        let dy = self.values[&read.dy];
        let (rows, channels) = self.matrix(id);
        let name = self.model.graph.nodes[id].name.clone();
        let layer = gradient.layer;
        Ok(match family(gradient.forward) {
            // A sum passes dY through; a reshape's gradient is dY reshaped.
            Family::Pointwise(Pointwise::Add) | Family::Reshape => dy,
            Family::ChannelSlice { start, end } => {
                self.channel_slice_grad(id, [start, end], gradient, dy)?
            }
            Family::Softmax => {
                let y = self.promised(id, read.output, "output")?;
                self.softmax_grad(id, dy, y)
            }
            Family::Pointwise(Pointwise::Activation(activation)) => {
                let value = if activation.slope_reads_input() {
                    self.promised(id, read.input, "input")?
                } else {
                    self.promised(id, read.output, "output")?
                };
                self.activation_input_grad(id, activation, dy, value)
            }
            // dY times the forward pass's mask; without one (dropout off),
            // dropout is the identity and so is its gradient.
            Family::Dropout { .. } => {
                let y = self.promised(id, read.output, "output")?;
                match self.masks.get(&y) {
                    Some(&mask) => {
                        self.product(id, &name, (rows, channels), dy, (mask, Operand::Tensor))
                    }
                    None => dy,
                }
            }
            Family::Concat { axis } => self.concat_grad(id, axis, gradient, dy),
            // dY copied back at the opposite offset: the cells the forward
            // pass moved, and only those.
            Family::Pad { amounts } => {
                let dx = self.temporary(id);
                let offset = [-amounts[0], -amounts[2]];
                self.pad_copy(id, (dy, read.dy), (dx, id), offset);
                dx
            }
            Family::Pointwise(Pointwise::Multiply) => {
                let other = self.promised(id, read.input, "other operand")?;
                let other = self.values[&other];
                self.multiply_grad(id, gradient.slot, gradient.inputs, dy, other)
            }
            Family::Pointwise(Pointwise::ScaleBias) => {
                let coefficient = self.weight(&format!("{layer}.coefficient"), channels);
                let operand = (coefficient, Operand::PerChannel);
                self.product(id, &name, (rows, channels), dy, operand)
            }
            Family::Pointwise(Pointwise::BatchNorm { epsilon, scale, .. }) => {
                let x = self.promised(id, read.input, "input")?;
                let x = self.values[&x];
                self.batchnorm_grad(id, layer, (epsilon, scale), dy, x)
            }
            Family::Rbf { units } => {
                let x = self.promised(id, read.input, "input")?;
                self.rbf_grad(id, layer, units, dy, x)
            }
            Family::Contraction(contraction) => {
                self.contraction_grad(id, contraction, gradient, dy)
            }
            Family::ConvTranspose(transpose) => {
                self.conv_transpose_grad(id, transpose, gradient, (dy, read.dy))
            }
            Family::Resample { factor, mode } => {
                let small: Vec<usize> = gradient.inputs[0].iter().map(|&d| d as usize).collect();
                self.resample(id, ResamplePass::Backward, (factor, mode), dy, &small)
            }
            Family::Grouped(conv) => self.grouped_grad(id, conv, gradient, dy),
            Family::Window(kind) => {
                let x = read.input.map(|x| self.values[&x]);
                self.window_grad(id, kind, gradient, dy, x)?
            }
            // The training graph's own ops are not differentiated.
            Family::Input
            | Family::Labels
            | Family::Upstream { .. }
            | Family::CrossEntropy { .. }
            | Family::CrossEntropyGrad
            | Family::InputGrad(_)
            | Family::WeightGrad(_) => {
                return Err(LowerError::Unsupported {
                    node: name,
                    op: format!("the gradient of {}", gradient.forward.name()),
                })
            }
        })
    }

    /// The inputs of gradient node `id`, named by its rule's `needs`.
    fn grad_inputs(
        &self,
        id: NodeIndex,
        needs: &[Need],
        wired: &[NodeIndex],
    ) -> Result<GradInputs<NodeIndex>, LowerError> {
        GradInputs::named(needs, wired).ok_or_else(|| LowerError::Kernel {
            node: self.model.graph.nodes[id].name.clone(),
            message: format!(
                "its {} inputs do not match its gradient rule {needs:?}",
                wired.len()
            ),
        })
    }

    /// The forward value (`what`) that gradient node `id`'s rule reads: an
    /// error, not a panic, if a hand-built graph did not wire it.
    fn promised(
        &self,
        id: NodeIndex,
        value: Option<NodeIndex>,
        what: &str,
    ) -> Result<NodeIndex, LowerError> {
        value.ok_or_else(|| LowerError::Kernel {
            node: self.model.graph.nodes[id].name.clone(),
            message: format!("its gradient rule reads the forward {what}, which is not wired"),
        })
    }

    /// y * (dy - sum(dy * y)), row by row, from softmax's output `y`.
    fn softmax_grad(&mut self, id: NodeIndex, dy: BufferId, y: NodeIndex) -> BufferId {
        let dx = self.temporary(id);
        let (rows, n) = self.matrix(y);
        let reduce = Reduce {
            name: self.model.graph.nodes[id].name.clone(),
            kind: ReduceKind::SoftmaxBackward,
            rows,
            n,
            loads: Vec::new(),
        };
        let y = self.values[&y];
        self.step(id, KernelDesc::Reduce(reduce), vec![y, dy, dx]);
        dx
    }

    /// An element-wise activation's input gradient, from its output, or
    /// its input where [`PointwiseActivation::slope_reads_input`] (`value`).
    fn activation_input_grad(
        &mut self,
        id: NodeIndex,
        activation: PointwiseActivation,
        dy: BufferId,
        value: NodeIndex,
    ) -> BufferId {
        let (rows, channels) = self.matrix(id);
        let mut k = Builder::default();
        let g = k.load(Operand::Tensor);
        let v = k.load(Operand::Tensor);
        let result = activation_grad(&mut k, activation, g, v);
        let dx = self.temporary(id);
        let name = self.model.graph.nodes[id].name.clone();
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel: k.finish(&name, result),
                rows,
                channels,
            },
            vec![dy, self.values[&value], dx],
        );
        dx
    }

    /// A concatenation's input gradient: a copy of the input's slice of dY.
    fn concat_grad(
        &mut self,
        id: NodeIndex,
        axis: usize,
        gradient: InputGradient<'_>,
        dy: BufferId,
    ) -> BufferId {
        let (shapes, slot) = (gradient.inputs, gradient.slot);
        let inner: usize = shapes[slot][axis + 1..].iter().product::<u64>() as usize;
        let width: usize = shapes.iter().map(|s| s[axis] as usize).sum::<usize>() * inner;
        let offset: usize = shapes[..slot]
            .iter()
            .map(|s| s[axis] as usize)
            .sum::<usize>()
            * inner;
        let len = shapes[slot][axis] as usize * inner;
        let copy_rows = self.batch * shapes[slot][..axis].iter().product::<u64>() as usize;
        let dx = self.temporary(id);
        let copy = CopyRows {
            name: self.model.graph.nodes[id].name.clone(),
            rows: copy_rows,
            len,
            from: (width, offset),
            to: (len, 0),
        };
        self.step(id, KernelDesc::Copy(copy), vec![dy, dx]);
        dx
    }

    /// A channel slice's input gradient: dY embedded in zeros at the
    /// slice, or dY itself when the slice keeps every channel.
    fn channel_slice_grad(
        &mut self,
        id: NodeIndex,
        range: [i64; 2],
        gradient: InputGradient<'_>,
        dy: BufferId,
    ) -> Result<BufferId, LowerError> {
        let shape = Shape(gradient.inputs[0].clone());
        let (offset, len, width, rows) = self.slice_geometry(id, range, &shape)?;
        if len == width {
            return Ok(dy);
        }
        let dx = self.temporary(id);
        let embed = EmbedRows {
            name: self.model.graph.nodes[id].name.clone(),
            rows,
            len,
            width,
            offset,
        };
        self.step(id, KernelDesc::Embed(embed), vec![dy, dx]);
        Ok(dx)
    }

    /// dx_i = 2 sum_j dy_j (x_i - c_ij)
    fn rbf_grad(
        &mut self,
        id: NodeIndex,
        layer: &str,
        units: usize,
        dy: BufferId,
        x: NodeIndex,
    ) -> BufferId {
        let (rows, n) = self.matrix(x);
        let centers = self.weight(&format!("{layer}.centers"), n * units);
        let dx = self.temporary(id);
        let reduce = Reduce {
            name: self.model.graph.nodes[id].name.clone(),
            kind: ReduceKind::RbfBackwardData { units },
            rows,
            n,
            loads: Vec::new(),
        };
        let x = self.values[&x];
        self.step(id, KernelDesc::Reduce(reduce), vec![x, centers, dy, dx]);
        dx
    }

    /// dx = dy . W^T on the GEMM.
    fn contraction_grad(
        &mut self,
        id: NodeIndex,
        contraction: Contraction,
        gradient: InputGradient<'_>,
        dy: BufferId,
    ) -> BufferId {
        let input: Vec<usize> = gradient.inputs[0].iter().map(|&d| d as usize).collect();
        let geometry = contraction.geometry(self.batch, &input);
        let kernel_len = match geometry {
            Geometry::Conv(s) => s.kernel[0] * s.kernel[1] * s.in_channels * s.out_channels,
            Geometry::Dense(s) => s.inputs * s.units,
        };
        let kernel = self.weight(&format!("{}.kernel", gradient.layer), kernel_len);
        let dx = self.temporary(id);
        let name = self.model.graph.nodes[id].name.clone();
        let pass = ContractionPass::BackwardData { epilogue: None };
        let desc = KernelDesc::Contraction {
            name,
            geometry,
            pass,
            algorithm: Algorithm::Gemm,
        };
        self.step(id, desc, vec![dy, kernel, dx]);
        dx
    }

    /// A transposed convolution's input gradient, `dX = conv_W(dY)`: the
    /// forward pass of the convolution it transposes, without a bias.
    fn conv_transpose_grad(
        &mut self,
        id: NodeIndex,
        transpose: ConvTranspose,
        gradient: InputGradient<'_>,
        (dy, dy_id): (BufferId, NodeIndex),
    ) -> BufferId {
        let in_channels = gradient.inputs[0][2] as usize;
        let geometry = transpose.geometry(self.batch, &self.shape(dy_id), in_channels);
        let kernel_len =
            geometry.kernel[0] * geometry.kernel[1] * geometry.in_channels * in_channels;
        let kernel = self.weight(&format!("{}.kernel", gradient.layer), kernel_len);
        let dx = self.temporary(id);
        let desc = KernelDesc::Contraction {
            name: self.model.graph.nodes[id].name.clone(),
            geometry: Geometry::Conv(geometry),
            pass: ContractionPass::Forward { epilogue: None },
            algorithm: Algorithm::Gemm,
        };
        self.step(id, desc, vec![dy, kernel, dx]);
        dx
    }

    /// A transposed convolution's kernel and bias gradients. `Y =
    /// conv_W^T(X)`, so `<dY, Y> = <conv_W(dY), X>`: the kernel gradient is
    /// the kernel gradient of the convolution it transposes with dY as that
    /// convolution's input and X as its output's gradient; the bias
    /// gradient is the sum of dY over its rows (a column-sums reduction,
    /// whose sums of squares go unused).
    fn conv_transpose_filter_grad(
        &mut self,
        id: NodeIndex,
        layer: &str,
        transpose: ConvTranspose,
        (dy, dy_id): (BufferId, NodeIndex),
        x: NodeIndex,
    ) -> Vec<BufferId> {
        let geometry = transpose.geometry(self.batch, &self.shape(dy_id), self.shape(x)[2]);
        let kernel_len =
            geometry.kernel[0] * geometry.kernel[1] * geometry.in_channels * geometry.out_channels;
        let kernel_grad = self.scratch(format!("grad:{layer}.kernel"), kernel_len);
        let name = self.model.graph.nodes[id].name.clone();
        let desc = KernelDesc::Contraction {
            name: name.clone(),
            geometry: Geometry::Conv(geometry),
            pass: ContractionPass::BackwardFilter { live_rows: false },
            algorithm: Algorithm::Gemm,
        };
        self.step(id, desc, vec![dy, self.values[&x], kernel_grad]);
        let mut grads = vec![kernel_grad];
        if transpose.bias {
            let (rows, filters) = self.matrix(dy_id);
            let bias_grad = self.scratch(format!("grad:{layer}.bias"), filters);
            let squares = self.scratch(format!("{layer}.dy_squares"), filters);
            let reduce = Reduce {
                name,
                kind: ReduceKind::ColumnSums,
                rows,
                n: filters,
                loads: Vec::new(),
            };
            self.step(
                id,
                KernelDesc::Reduce(reduce),
                vec![dy, dy, bias_grad, squares],
            );
            grads.push(bias_grad);
        }
        grads
    }

    /// A grouped convolution's input gradient: `dy, kernel, dx`.
    fn grouped_grad(
        &mut self,
        id: NodeIndex,
        conv: Grouped,
        gradient: InputGradient<'_>,
        dy: BufferId,
    ) -> BufferId {
        let input: Vec<usize> = gradient.inputs[0].iter().map(|&d| d as usize).collect();
        let kernel_len = conv.kernel_len(input[2]);
        let kernel = self.weight(&format!("{}.kernel", gradient.layer), kernel_len);
        let dx = self.temporary(id);
        let desc = GroupedConv {
            name: self.model.graph.nodes[id].name.clone(),
            shape: conv.shape(self.batch, &input),
            groups: conv.groups,
            pass: GroupedPass::BackwardData,
        };
        self.step(id, KernelDesc::Grouped(desc), vec![dy, kernel, dx]);
        dx
    }

    /// A window op's input gradient: its backward-data pass, reading the
    /// forward input `x` when the rule needs it and a depthwise
    /// convolution's filter.
    fn window_grad(
        &mut self,
        id: NodeIndex,
        kind: WindowKind,
        gradient: InputGradient<'_>,
        dy: BufferId,
        x: Option<BufferId>,
    ) -> Result<BufferId, LowerError> {
        let input: Vec<usize> = gradient.inputs[0].iter().map(|&d| d as usize).collect();
        let filter = match kind {
            WindowKind::DepthwiseConv {
                kernel, multiplier, ..
            } => {
                let len = kernel[0] * kernel[1] * input[2] * multiplier;
                Some(self.weight(&format!("{}.kernel", gradient.layer), len))
            }
            WindowKind::Pool { .. }
            | WindowKind::GlobalPool { .. }
            | WindowKind::DepthMaxPool { .. }
            | WindowKind::Lrn { .. } => None,
        };
        let dx = self.temporary(id);
        let name = self.model.graph.nodes[id].name.clone();
        // The roles the pass does not use are never asked for.
        self.window_call(
            id,
            &name,
            kind,
            Pass::BackwardData,
            &input,
            |role| match role {
                WindowRole::Input => x.unwrap_or(dx),
                WindowRole::Filter => filter.unwrap_or(dx),
                WindowRole::OutputGrad => dy,
                WindowRole::InputGrad
                | WindowRole::Bias
                | WindowRole::Output
                | WindowRole::FilterGrad
                | WindowRole::BiasGrad => dx,
            },
        )?;
        Ok(dx)
    }

    /// dX = dY * s (s broadcast as in the forward pass); ds = the sum of
    /// dY * x over each image's pixels.
    fn multiply_grad(
        &mut self,
        id: NodeIndex,
        slot: usize,
        shapes: &[Vec<u64>],
        dy: BufferId,
        other: BufferId,
    ) -> BufferId {
        let name = self.model.graph.nodes[id].name.clone();
        let x_shape: Vec<usize> = shapes[0].iter().map(|&d| d as usize).collect();
        let channels = *x_shape.last().unwrap_or(&1);
        let rows = self.batch * x_shape.iter().product::<usize>() / channels;
        let same = shapes[0] == shapes[1];
        if slot == 0 || same {
            let operand = if same || slot == 1 {
                Operand::Tensor
            } else {
                Operand::PerItem {
                    rows_per_item: rows / self.batch,
                }
            };
            return self.product(id, &name, (rows, channels), dy, (other, operand));
        }
        let items = self.batch;
        let sums = self.scratch(format!("{name}.sums"), items * channels);
        let ds = self.temporary(id);
        let reduce = Reduce {
            name,
            kind: ReduceKind::ItemSums {
                rows_per_item: rows / items,
            },
            rows,
            n: channels,
            loads: Vec::new(),
        };
        self.step(id, KernelDesc::Reduce(reduce), vec![dy, other, sums, ds]);
        ds
    }

    /// x̂ = (x - mean) / sqrt(var + eps) and the sums of dY and dY x̂ over
    /// the batch, computed once for a batchnorm layer.
    fn batchnorm_sums(
        &mut self,
        id: NodeIndex,
        layer: &str,
        epsilon: f64,
        dy: BufferId,
        x: BufferId,
    ) -> [BufferId; 3] {
        if let Some(shared) = self.shared.get(&format!("bnsum:{layer}")) {
            return [shared[0], shared[1], shared[2]];
        }
        let stats = self.shared[&format!("bn:{layer}")].clone();
        let c = self.plan.buffers[stats[0]].len;
        let rows = self.plan.buffers[x].len / c;
        let mut k = Builder::default();
        let xv = k.load(Operand::Tensor);
        let m = k.load(Operand::PerChannel);
        let v = k.load(Operand::PerChannel);
        let inverse = inverse_deviation(&mut k, v, epsilon);
        let shifted = k.binary(Binary::Sub, xv, m);
        let normalised = k.binary(Binary::Mul, shifted, inverse);
        let x_hat = self.scratch(format!("{layer}.x_hat"), rows * c);
        let kernel = k.finish(&format!("{layer}.x_hat"), normalised);
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel,
                rows,
                channels: c,
            },
            vec![x, stats[0], stats[1], x_hat],
        );
        let (sum, dot) = (
            self.scratch(format!("{layer}.sum_dy"), c),
            self.scratch(format!("{layer}.sum_dy_x_hat"), c),
        );
        let reduce = Reduce {
            name: format!("{layer}.sums"),
            kind: ReduceKind::ColumnSums,
            rows,
            n: c,
            loads: Vec::new(),
        };
        self.step(id, KernelDesc::Reduce(reduce), vec![dy, x_hat, sum, dot]);
        self.shared
            .insert(format!("bnsum:{layer}"), vec![sum, dot, x_hat]);
        [sum, dot, x_hat]
    }

    /// dX = gamma / sqrt(var + eps) * (dY - (sum dY + x̂ sum dY x̂) / N)
    /// with the batch's statistics, which depend on X; with the moving
    /// statistics (inference mode), constants, dX = gamma / sqrt(var + eps) * dY.
    fn batchnorm_grad(
        &mut self,
        id: NodeIndex,
        layer: &str,
        (epsilon, scale): (f64, bool),
        dy: BufferId,
        x: BufferId,
    ) -> BufferId {
        if !self.batch_statistics(id) {
            return self.batchnorm_grad_inference(id, layer, (epsilon, scale), dy);
        }
        let [sum, dot, x_hat] = self.batchnorm_sums(id, layer, epsilon, dy, x);
        let stats = self.shared[&format!("bn:{layer}")].clone();
        let c = self.plan.buffers[stats[0]].len;
        let rows = self.plan.buffers[x].len / c;
        let gamma = scale.then(|| self.weight(&format!("{layer}.gamma"), c));
        let mut k = Builder::default();
        let mut args = vec![dy, x_hat];
        let g = k.load(Operand::Tensor);
        let xh = k.load(Operand::Tensor);
        let s = k.per_channel_or(Some(sum), 0.0, &mut args);
        let d = k.per_channel_or(Some(dot), 0.0, &mut args);
        let gm = k.per_channel_or(gamma, 1.0, &mut args);
        let v = k.per_channel_or(Some(stats[1]), 1.0, &mut args);
        let inverse = inverse_deviation(&mut k, v, epsilon);
        let factor = k.binary(Binary::Mul, gm, inverse);
        let correction = k.push(Expr::Fma(xh, d, s));
        let per_example = k.push(Expr::Const(1.0 / rows as f32));
        let mean_correction = k.binary(Binary::Mul, correction, per_example);
        let centred = k.binary(Binary::Sub, g, mean_correction);
        let result = k.binary(Binary::Mul, factor, centred);
        let dx = self.temporary(id);
        args.push(dx);
        let name = self.model.graph.nodes[id].name.clone();
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel: k.finish(&name, result),
                rows,
                channels: c,
            },
            args,
        );
        dx
    }

    /// dX = gamma / sqrt(moving_variance + eps) * dY.
    fn batchnorm_grad_inference(
        &mut self,
        id: NodeIndex,
        layer: &str,
        (epsilon, scale): (f64, bool),
        dy: BufferId,
    ) -> BufferId {
        let variance = self.shared[&format!("bn:{layer}")][1];
        let c = self.plan.buffers[variance].len;
        let rows = self.plan.buffers[dy].len / c;
        let gamma = scale.then(|| self.weight(&format!("{layer}.gamma"), c));
        let mut k = Builder::default();
        let mut args = vec![dy];
        let g = k.load(Operand::Tensor);
        let gm = k.per_channel_or(gamma, 1.0, &mut args);
        let v = k.per_channel_or(Some(variance), 1.0, &mut args);
        let inverse = inverse_deviation(&mut k, v, epsilon);
        let factor = k.binary(Binary::Mul, gm, inverse);
        let result = k.binary(Binary::Mul, factor, g);
        let dx = self.temporary(id);
        args.push(dx);
        let name = self.model.graph.nodes[id].name.clone();
        self.step(
            id,
            KernelDesc::Elementwise {
                kernel: k.finish(&name, result),
                rows,
                channels: c,
            },
            args,
        );
        dx
    }

    /// The kernel of a weight gradient, by the forward op's family.
    /// `wired` are the gradient node's inputs, which its rule names. The
    /// gradients of one layer's weights share one kernel, run for the
    /// first of them (autodiff adds them in weight order, kernel first).
    pub(super) fn weight_grad(
        &mut self,
        id: NodeIndex,
        gradient: WeightGradient<'_>,
        wired: &[NodeIndex],
    ) -> Result<BufferId, LowerError> {
        let WeightGradient {
            forward,
            index,
            weight,
        } = gradient;
        let layer = weight
            .rsplit_once('.')
            .map_or(weight, |(layer, _)| layer)
            .to_string();
        let needs = ops::weight_needs(forward, index).unwrap_or_default();
        let read = self.grad_inputs(id, &needs, wired)?;
        let dy = self.values[&read.dy];
        Ok(match family(forward) {
            Family::Pointwise(Pointwise::BatchNorm { epsilon, .. }) => {
                let sums = match read.input {
                    Some(x) => {
                        let x = self.values[&x];
                        self.batchnorm_sums(id, &layer, epsilon, dy, x)
                    }
                    None => {
                        let shared = &self.shared[&format!("bnsum:{layer}")];
                        [shared[0], shared[1], shared[2]]
                    }
                };
                // gamma: sum dY x̂; beta: sum dY (by name: a layer
                // without gamma has beta first)
                if weight.ends_with(".gamma") {
                    sums[1]
                } else {
                    sums[0]
                }
            }
            Family::Pointwise(Pointwise::ScaleBias) => {
                let [sum, dot] = self.scale_bias_sums(id, &layer, dy, read.input)?;
                // coefficient: sum dY x; bias: sum dY
                if index == 0 {
                    dot
                } else {
                    sum
                }
            }
            Family::Window(
                kind @ WindowKind::DepthwiseConv {
                    kernel,
                    multiplier,
                    bias,
                    ..
                },
            ) => {
                let key = format!("dw:{layer}");
                if !self.shared.contains_key(&key) {
                    let x = self.promised(id, read.input, "input")?;
                    let channels = self.shape(x)[2];
                    let lens = (
                        kernel[0] * kernel[1] * multiplier * channels,
                        channels * multiplier,
                    );
                    let [filter_grad, bias_grad] =
                        self.depthwise_filter_grad(id, &layer, kind, lens, dy, x)?;
                    let mut grads = vec![filter_grad];
                    if bias {
                        grads.push(bias_grad);
                    }
                    self.shared.insert(key.clone(), grads);
                }
                self.shared[&key][index]
            }
            Family::Rbf { units } => {
                let x = self.promised(id, read.input, "input")?;
                self.rbf_centers_grad(id, weight, units, dy, x)
            }
            Family::Grouped(conv) => {
                let key = format!("grouped:{layer}");
                if !self.shared.contains_key(&key) {
                    let x = self.promised(id, read.input, "input")?;
                    let grads = self.grouped_filter_grad(id, &layer, conv, dy, x);
                    self.shared.insert(key.clone(), grads);
                }
                self.shared[&key][index]
            }
            Family::Contraction(contraction) => {
                let key = format!("contraction:{layer}");
                if !self.shared.contains_key(&key) {
                    let x = self.promised(id, read.input, "input")?;
                    let grads = self.contraction_filter_grad(id, &layer, contraction, dy, x);
                    self.shared.insert(key.clone(), grads);
                }
                self.shared[&key][index]
            }
            Family::ConvTranspose(transpose) => {
                let key = format!("contraction:{layer}");
                if !self.shared.contains_key(&key) {
                    let x = self.promised(id, read.input, "input")?;
                    let grads =
                        self.conv_transpose_filter_grad(id, &layer, transpose, (dy, read.dy), x);
                    self.shared.insert(key.clone(), grads);
                }
                self.shared[&key][index]
            }
            // Ops without weights have no weight gradients.
            Family::Input
            | Family::Labels
            | Family::Upstream { .. }
            | Family::Reshape
            | Family::ChannelSlice { .. }
            | Family::Dropout { .. }
            | Family::Pointwise(Pointwise::Activation(_) | Pointwise::Add | Pointwise::Multiply)
            | Family::Softmax
            | Family::Concat { .. }
            | Family::Resample { .. }
            | Family::Pad { .. }
            | Family::Window(
                WindowKind::Pool { .. }
                | WindowKind::GlobalPool { .. }
                | WindowKind::DepthMaxPool { .. }
                | WindowKind::Lrn { .. },
            )
            | Family::CrossEntropy { .. }
            | Family::CrossEntropyGrad
            | Family::InputGrad(_)
            | Family::WeightGrad(_) => {
                return Err(LowerError::Unsupported {
                    node: self.model.graph.nodes[id].name.clone(),
                    op: format!("the weight gradient of {}", forward.name()),
                })
            }
        })
    }

    /// A scale-bias layer's `[sum dY, sum dY x]` per channel, computed once
    /// for both of its weights from the forward input `x`.
    fn scale_bias_sums(
        &mut self,
        id: NodeIndex,
        layer: &str,
        dy: BufferId,
        x: Option<NodeIndex>,
    ) -> Result<[BufferId; 2], LowerError> {
        let key = format!("sb:{layer}");
        if !self.shared.contains_key(&key) {
            let x = self.promised(id, x, "input")?;
            let (rows, c) = self.matrix(x);
            let (sum, dot) = (
                self.scratch(format!("{layer}.sum"), c),
                self.scratch(format!("{layer}.dot"), c),
            );
            let reduce = Reduce {
                name: self.model.graph.nodes[id].name.clone(),
                kind: ReduceKind::ColumnSums,
                rows,
                n: c,
                loads: Vec::new(),
            };
            let x = self.values[&x];
            self.step(id, KernelDesc::Reduce(reduce), vec![dy, x, sum, dot]);
            self.shared.insert(key.clone(), vec![sum, dot]);
        }
        let shared = &self.shared[&key];
        Ok([shared[0], shared[1]])
    }

    /// A depthwise convolution's filter and bias gradients, of lengths
    /// `lens`, in one backward-filter pass over the forward input `x`.
    fn depthwise_filter_grad(
        &mut self,
        id: NodeIndex,
        layer: &str,
        kind: WindowKind,
        (filter_len, bias_len): (usize, usize),
        dy: BufferId,
        x: NodeIndex,
    ) -> Result<[BufferId; 2], LowerError> {
        let shape = self.shape(x);
        let filter_grad = self.scratch(format!("grad:{layer}.kernel"), filter_len);
        let bias_grad = self.scratch(format!("grad:{layer}.bias"), bias_len);
        let name = self.model.graph.nodes[id].name.clone();
        let x = self.values[&x];
        // The pass reads x and dY and writes the filter's and the bias's
        // gradients; the roles it does not use are never asked for.
        self.window_call(
            id,
            &name,
            kind,
            Pass::BackwardFilter,
            &shape,
            |role| match role {
                WindowRole::Input => x,
                WindowRole::OutputGrad => dy,
                WindowRole::BiasGrad => bias_grad,
                WindowRole::FilterGrad
                | WindowRole::Filter
                | WindowRole::Bias
                | WindowRole::Output
                | WindowRole::InputGrad => filter_grad,
            },
        )?;
        Ok([filter_grad, bias_grad])
    }

    /// dc_ij = -2 sum_r dy_rj (x_ri - c_ij)
    fn rbf_centers_grad(
        &mut self,
        id: NodeIndex,
        weight: &str,
        units: usize,
        dy: BufferId,
        x: NodeIndex,
    ) -> BufferId {
        let (rows, n) = self.matrix(x);
        let centers = self.weight(weight, n * units);
        let dc = self.scratch(format!("grad:{weight}"), n * units);
        let reduce = Reduce {
            name: self.model.graph.nodes[id].name.clone(),
            kind: ReduceKind::RbfBackwardCenters { units },
            rows,
            n,
            loads: Vec::new(),
        };
        let x = self.values[&x];
        self.step(id, KernelDesc::Reduce(reduce), vec![x, centers, dy, dc]);
        dc
    }

    /// dW = x^T . dy and db = sum dy, in one kernel for both weights.
    fn contraction_filter_grad(
        &mut self,
        id: NodeIndex,
        layer: &str,
        contraction: Contraction,
        dy: BufferId,
        x: NodeIndex,
    ) -> Vec<BufferId> {
        let geometry = contraction.geometry(self.batch, &self.shape(x));
        let (kernel_len, units) = match geometry {
            Geometry::Conv(s) => (
                s.kernel[0] * s.kernel[1] * s.in_channels * s.out_channels,
                s.out_channels,
            ),
            Geometry::Dense(s) => (s.inputs * s.units, s.units),
        };
        let kernel_grad = self.scratch(format!("grad:{layer}.kernel"), kernel_len);
        let mut args = vec![self.values[&x], dy, kernel_grad];
        let mut grads = vec![kernel_grad];
        if contraction.bias() {
            let bias_grad = self.scratch(format!("grad:{layer}.bias"), units);
            args.push(bias_grad);
            grads.push(bias_grad);
        }
        let name = self.model.graph.nodes[id].name.clone();
        let pass = ContractionPass::BackwardFilter { live_rows: false };
        let desc = KernelDesc::Contraction {
            name,
            geometry,
            pass,
            algorithm: Algorithm::Gemm,
        };
        self.step(id, desc, args);
        grads
    }

    /// A grouped convolution's kernel and bias gradients, in one kernel:
    /// `x, dy, dkernel, [dbias]`.
    fn grouped_filter_grad(
        &mut self,
        id: NodeIndex,
        layer: &str,
        conv: Grouped,
        dy: BufferId,
        x: NodeIndex,
    ) -> Vec<BufferId> {
        let input = self.shape(x);
        let kernel_grad = self.scratch(format!("grad:{layer}.kernel"), conv.kernel_len(input[2]));
        let mut args = vec![self.values[&x], dy, kernel_grad];
        let mut grads = vec![kernel_grad];
        if conv.bias {
            let bias_grad = self.scratch(format!("grad:{layer}.bias"), conv.filters);
            args.push(bias_grad);
            grads.push(bias_grad);
        }
        let desc = GroupedConv {
            name: self.model.graph.nodes[id].name.clone(),
            shape: conv.shape(self.batch, &input),
            groups: conv.groups,
            pass: GroupedPass::BackwardFilter,
        };
        self.step(id, KernelDesc::Grouped(desc), args);
        grads
    }

    /// The optimizer's update of every trainable weight, in place, after the
    /// backward pass (the schedule pass moves each up to where its weight's
    /// last reader ran).
    pub(super) fn updates(&mut self, training: &TrainingGraph, optimizer: &Optimizer) {
        let coefficients = self.scalars("coefficients", COEFFICIENTS);
        let kernel = optimizer.update_kernel();
        for (weight, grad) in &training.gradients {
            let w = self.weight_ids[weight];
            let g = self.values[grad];
            let len = self.plan.buffers[w].len;
            let states: Vec<BufferId> = (0..state_count(optimizer))
                .map(|i| {
                    self.plan.buffer(
                        format!("{weight}.state{i}"),
                        len,
                        Role::State(format!("{weight}.state{i}")),
                    )
                })
                .collect();
            let channels = [1024, 256, 64, 16, 4, 1]
                .into_iter()
                .find(|c| len.is_multiple_of(*c))
                .unwrap_or(1);
            let mut args = vec![w, g];
            args.extend(&states);
            args.push(coefficients);
            args.push(w);
            args.extend(&states);
            let mut update = kernel.clone();
            update.name = format!("{UPDATE_PREFIX}{weight}");
            let nodes = vec![update.name.clone()];
            self.plan.steps.push(crate::plan::Step {
                kernel: KernelDesc::Elementwise {
                    kernel: update,
                    rows: len / channels,
                    channels,
                },
                args,
                nodes,
            });
        }
    }
}

/// `1 / sqrt(variance + epsilon)`.
fn inverse_deviation(k: &mut Builder, variance: usize, epsilon: f64) -> usize {
    let eps = k.push(Expr::Const(epsilon as f32));
    let shifted = k.binary(Binary::Add, variance, eps);
    let root = k.push(Expr::Unary(Unary::Sqrt, shifted));
    k.push(Expr::Unary(Unary::Recip, root))
}

/// The gradient of an element-wise activation from `dy` and `value`: the
/// output `y`, or the input `x` where
/// [`PointwiseActivation::slope_reads_input`].
fn activation_grad(
    k: &mut Builder,
    activation: PointwiseActivation,
    dy: usize,
    value: usize,
) -> usize {
    let (y, x) = (value, value);
    let zero = k.push(Expr::Const(0.0));
    match activation {
        // dy * 1[y > 0]
        PointwiseActivation::Relu => k.push(Expr::IfPositive {
            cond: y,
            then: dy,
            otherwise: zero,
        }),
        // dy * (y > 0 ? 1 : alpha)
        PointwiseActivation::LeakyRelu { alpha } => {
            let a = k.push(Expr::Const(alpha as f32));
            let scaled = k.binary(Binary::Mul, a, dy);
            k.push(Expr::IfPositive {
                cond: y,
                then: dy,
                otherwise: scaled,
            })
        }
        // dy * (y > 0 ? 1 : y + alpha)
        PointwiseActivation::Elu { alpha } => {
            let a = k.push(Expr::Const(alpha as f32));
            let slope = k.binary(Binary::Add, y, a);
            let scaled = k.binary(Binary::Mul, slope, dy);
            k.push(Expr::IfPositive {
                cond: y,
                then: dy,
                otherwise: scaled,
            })
        }
        // dy * (y > 0 ? scale : y + scale * alpha)
        PointwiseActivation::Selu => {
            let scale = k.push(Expr::Const(1.050_701));
            let scale_alpha = k.push(Expr::Const(1.050_701 * 1.673_263_2));
            let positive = k.binary(Binary::Mul, scale, dy);
            let slope = k.binary(Binary::Add, y, scale_alpha);
            let negative = k.binary(Binary::Mul, slope, dy);
            k.push(Expr::IfPositive {
                cond: y,
                then: positive,
                otherwise: negative,
            })
        }
        // dy * (1 - y^2)
        PointwiseActivation::Tanh => {
            let one = k.push(Expr::Const(1.0));
            let y2 = k.binary(Binary::Mul, y, y);
            let slope = k.binary(Binary::Sub, one, y2);
            k.binary(Binary::Mul, dy, slope)
        }
        // dy * y * (1 - y)
        PointwiseActivation::Sigmoid => {
            let one = k.push(Expr::Const(1.0));
            let rest = k.binary(Binary::Sub, one, y);
            let slope = k.binary(Binary::Mul, y, rest);
            k.binary(Binary::Mul, dy, slope)
        }
        // dy * 1[0 < y < 6]
        PointwiseActivation::Relu6 => {
            let six = k.push(Expr::Const(6.0));
            between(k, y, six, dy)
        }
        // dy / 6 * 1[0 < y < 1]
        PointwiseActivation::HardSigmoid => {
            let one = k.push(Expr::Const(1.0));
            let sixth = k.push(Expr::Const(1.0 / 6.0));
            let scaled = k.binary(Binary::Mul, sixth, dy);
            between(k, y, one, scaled)
        }
        // dy * s (1 + x (1 - s)), s = sigmoid(x)
        PointwiseActivation::Swish => {
            let s = k.push(Expr::Unary(Unary::Sigmoid, x));
            let one = k.push(Expr::Const(1.0));
            let rest = k.binary(Binary::Sub, one, s);
            let inner = k.push(Expr::Fma(x, rest, one));
            let slope = k.binary(Binary::Mul, s, inner);
            k.binary(Binary::Mul, dy, slope)
        }
        // dy * (Phi(x) + x phi(x)), Phi(x) = (1 + erf(x / sqrt 2)) / 2,
        // phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        PointwiseActivation::Gelu { approximate: false } => {
            let half = k.push(Expr::Const(0.5));
            let scale = k.push(Expr::Const(std::f32::consts::FRAC_1_SQRT_2));
            let z = k.binary(Binary::Mul, x, scale);
            let erf = k.push(Expr::Unary(Unary::Erf, z));
            let cdf = k.push(Expr::Fma(half, erf, half));
            let minus_half = k.push(Expr::Const(-0.5));
            let x2 = k.binary(Binary::Mul, x, x);
            let exponent = k.binary(Binary::Mul, minus_half, x2);
            let gauss = k.push(Expr::Unary(Unary::Exp, exponent));
            let norm = k.push(Expr::Const(0.398_942_3));
            let pdf = k.binary(Binary::Mul, norm, gauss);
            let slope = k.push(Expr::Fma(x, pdf, cdf));
            k.binary(Binary::Mul, dy, slope)
        }
        // dy * ((1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2 / pi) (1 + 3 * 0.044715 x^2)),
        // t = tanh(sqrt(2 / pi) (x + 0.044715 x^3))
        PointwiseActivation::Gelu { approximate: true } => {
            let GeluTanh { tanh: t, x2 } = k.gelu_tanh(x);
            let half = k.push(Expr::Const(0.5));
            let left = k.push(Expr::Fma(half, t, half));
            let one = k.push(Expr::Const(1.0));
            let t2 = k.binary(Binary::Mul, t, t);
            let sech2 = k.binary(Binary::Sub, one, t2);
            let a3 = k.push(Expr::Const(3.0 * GELU_CUBIC));
            let poly = k.push(Expr::Fma(a3, x2, one));
            let c = k.push(Expr::Const(0.5 * GELU_TANH_SCALE));
            let du = k.binary(Binary::Mul, c, poly);
            let x_sech2 = k.binary(Binary::Mul, x, sech2);
            let slope = k.push(Expr::Fma(x_sech2, du, left));
            k.binary(Binary::Mul, dy, slope)
        }
        // dy * (x < -3 ? 0 : x > 3 ? 1 : (2 x + 3) / 6)
        PointwiseActivation::HardSwish => {
            let three = k.push(Expr::Const(3.0));
            let one = k.push(Expr::Const(1.0));
            let third = k.push(Expr::Const(1.0 / 3.0));
            let half = k.push(Expr::Const(0.5));
            let middle = k.push(Expr::Fma(x, third, half));
            let above = k.binary(Binary::Sub, x, three);
            let upper = k.push(Expr::IfPositive {
                cond: above,
                then: one,
                otherwise: middle,
            });
            let within = k.binary(Binary::Add, x, three);
            let slope = k.push(Expr::IfPositive {
                cond: within,
                then: upper,
                otherwise: zero,
            });
            k.binary(Binary::Mul, dy, slope)
        }
        // dy * (g + x g'), g = n / (n + 2), n = e (e + 2), e = exp(x):
        // g' = 2 n' / (n + 2)^2 with n' = 2 e (e + 1)
        PointwiseActivation::Mish => {
            let gate = k.mish_gate(x);
            let one = k.push(Expr::Const(1.0));
            let four = k.push(Expr::Const(4.0));
            let e_plus_1 = k.binary(Binary::Add, gate.e, one);
            let four_e = k.binary(Binary::Mul, four, gate.e);
            let numerator = k.binary(Binary::Mul, four_e, e_plus_1);
            let squared = k.binary(Binary::Mul, gate.denominator, gate.denominator);
            let derivative = k.binary(Binary::Div, numerator, squared);
            let slope = k.push(Expr::Fma(x, derivative, gate.gate));
            k.binary(Binary::Mul, dy, slope)
        }
    }
}

/// `value` where `0 < y < top`, else 0 (a clipped activation's gradient).
fn between(k: &mut Builder, y: usize, top: usize, value: usize) -> usize {
    let zero = k.push(Expr::Const(0.0));
    let room = k.binary(Binary::Sub, top, y);
    let below = k.push(Expr::IfPositive {
        cond: room,
        then: value,
        otherwise: zero,
    });
    k.push(Expr::IfPositive {
        cond: y,
        then: below,
        otherwise: zero,
    })
}

/// FNV-1a: a stable hash of a layer's name, to give each dropout layer its
/// own random stream.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
