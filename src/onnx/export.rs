//! `cnnc export`: a typed model and its weights as an ONNX model.
//!
//! One walk over the graph in topological order; each cnnc node becomes
//! one ONNX node named by its layer path, or a short chain of them (the
//! chain's extra nodes are named `path/what`) where ONNX has no single
//! operator for it. A per-example tensor of rank 3 is NCHW inside the
//! ONNX graph; every other rank keeps cnnc's layout behind the batch axis.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

use std::collections::HashSet;

use onnx_protobuf::{GraphProto, Message, ModelProto, OperatorSetIdProto};
use petgraph::stable_graph::NodeIndex;
use thiserror::Error;

use super::permute;
use super::proto::{self, Attr};
use crate::graph::{Activation, AxisPadding, Interpolation, Node, Op, Padding, PoolKind, Shape};
use crate::ops::same_padding;
use crate::runtime::weights::TensorStore;
use crate::shapes::TypedGraph;

/// The ONNX opset the exported models declare.
pub const OPSET: i64 = 17;

/// The ONNX IR version written (the one that goes with opset 17).
const IR_VERSION: i64 = 8;

/// The name of the symbolic batch dimension of the input and outputs.
const BATCH: &str = "batch";

/// What goes into the model's metadata besides the graph.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions<'a> {
    /// The `.cnn` file the model was read from, as the user named it.
    pub source: &'a str,
}

/// Why a model could not be written.
#[derive(Debug, Error, PartialEq)]
pub enum ExportError {
    /// An op on a tensor of a rank ONNX's operator for it does not take.
    #[error("layer `{node}` ({op}) on a tensor of shape {shape}: {reason}")]
    Unsupported {
        /// The node's path.
        node: String,
        /// The op, as `cnnc compile --emit graph` writes it.
        op: String,
        /// Its input's per-example shape.
        shape: String,
        /// What ONNX lacks.
        reason: String,
    },
    /// A weight the model needs is not in the weights given.
    #[error("the weights have no tensor `{0}`")]
    MissingWeight(String),
    /// The model has no input.
    #[error("the model has no input")]
    NoInput,
    /// Protobuf could not encode the model (over 2 GiB).
    #[error("the ONNX model cannot be encoded: {0}")]
    Encode(String),
}

/// The ONNX model (serialized protobuf) of `model` with `weights`, which
/// must hold every weight of the model in cnnc's layouts (as
/// [`crate::runtime::weights::load_for`] returns them).
pub fn export(
    model: &TypedGraph,
    weights: &TensorStore,
    options: ExportOptions,
) -> Result<Vec<u8>, ExportError> {
    let mut writer = Writer::new(model, weights);
    writer.input()?;
    for &id in &model.order {
        if Some(id) != model.graph.input {
            writer.node(id)?;
        }
    }
    writer.outputs();
    let mut onnx = ModelProto::new();
    onnx.ir_version = IR_VERSION;
    let mut opset = OperatorSetIdProto::new();
    opset.version = OPSET;
    onnx.opset_import.push(opset);
    onnx.producer_name = "cnnc".into();
    onnx.producer_version = env!("CARGO_PKG_VERSION").into();
    onnx.metadata_props = vec![
        proto::entry("source", options.source),
        proto::entry("model", &model.graph.name),
        proto::entry("cnnc_version", env!("CARGO_PKG_VERSION")),
    ];
    onnx.graph = Some(writer.graph).into();
    // Writing a message into memory fails only on sizes protobuf cannot
    // encode (over 2 GiB), which `write_to_bytes` reports.
    onnx.write_to_bytes()
        .map_err(|e| ExportError::Encode(e.to_string()))
}

/// The graph being written, and where each cnnc node's output lives.
struct Writer<'a> {
    model: &'a TypedGraph,
    weights: &'a TensorStore,
    graph: GraphProto,
    /// The ONNX value holding each node's output, by node index.
    values: Vec<Option<String>>,
    /// Names the graph's input and outputs take, which no inner value may.
    reserved: HashSet<String>,
}

/// One cnnc node as it is being lowered: its path, the ONNX values of its
/// inputs with their per-example shapes, and its output shape.
struct At<'n> {
    node: &'n Node,
    inputs: Vec<(String, Shape)>,
    output: Shape,
}

impl At<'_> {
    fn unsupported(&self, reason: &str) -> ExportError {
        ExportError::Unsupported {
            node: self.node.name.clone(),
            op: self.node.op.to_string(),
            shape: format!("{:?}", self.inputs[0].1 .0),
            reason: reason.into(),
        }
    }

    fn x(&self) -> &str {
        &self.inputs[0].0
    }

    fn rank(&self) -> usize {
        self.inputs[0].1.rank()
    }
}

impl<'a> Writer<'a> {
    fn new(model: &'a TypedGraph, weights: &'a TensorStore) -> Self {
        let mut graph = GraphProto::new();
        graph.name = model.graph.name.clone();
        let mut reserved: HashSet<String> =
            model.graph.outputs.iter().map(|(n, _)| n.clone()).collect();
        if let Some(input) = model.graph.input {
            reserved.insert(model.graph.nodes[input].name.clone());
        }
        Writer {
            model,
            weights,
            graph,
            values: vec![None; model.info.len()],
            reserved,
        }
    }

    /// The graph input, `[batch, h, w, c]`, and its NCHW transpose.
    fn input(&mut self) -> Result<(), ExportError> {
        let id = self.model.graph.input.ok_or(ExportError::NoInput)?;
        let node = &self.model.graph.nodes[id];
        let shape = &self.model.info(id).shape;
        self.graph
            .input
            .push(proto::batched_value(&node.name, BATCH, &shape.0));
        let value = if shape.rank() == 3 {
            let to = format!("{}/nchw", node.name);
            self.push(
                "Transpose",
                &to,
                &[&node.name],
                &[("perm", ints(&[0, 3, 1, 2]))],
            );
            to
        } else {
            node.name.clone()
        };
        self.values[id.index()] = Some(value);
        Ok(())
    }

    /// Each output under its name, NHWC again for feature maps.
    fn outputs(&mut self) {
        for (name, id) in &self.model.graph.outputs {
            let value = self.values[id.index()]
                .clone()
                .expect("outputs are lowered before this");
            let shape = &self.model.info(*id).shape;
            if shape.rank() == 3 {
                self.push_named(
                    "Transpose",
                    name,
                    &value,
                    name,
                    &[("perm", ints(&[0, 2, 3, 1]))],
                );
            } else {
                self.push_named("Identity", name, &value, name, &[]);
            }
            self.graph
                .output
                .push(proto::batched_value(name, BATCH, &shape.0));
        }
    }

    /// Lowers node `id`, recording the value holding its output.
    fn node(&mut self, id: NodeIndex) -> Result<(), ExportError> {
        let model = self.model;
        let node = &model.graph.nodes[id];
        let inputs = model
            .graph
            .inputs_of(id)
            .into_iter()
            .map(|i| {
                let value = self.values[i.index()].clone().expect("topological order");
                (value, model.info(i).shape.clone())
            })
            .collect();
        let at = At {
            node,
            inputs,
            output: model.info(id).shape.clone(),
        };
        let value = self.lower(&at)?;
        self.values[id.index()] = Some(value);
        Ok(())
    }

    /// The ONNX nodes of one cnnc node; returns the value of its output.
    fn lower(&mut self, at: &At) -> Result<String, ExportError> {
        match &at.node.op {
            Op::Conv2d {
                stride,
                padding,
                dilation,
                bias,
                groups,
                kernel,
                ..
            } => {
                let pads = window_pads(&at.inputs[0].1, *kernel, *stride, *dilation, *padding);
                let w = self.conv_kernel(at, [3, 2, 0, 1], None)?;
                let attrs = conv_attrs(*kernel, *stride, *dilation, pads, *groups);
                self.conv_like("Conv", at, w, *bias, attrs)
            }
            Op::DepthwiseConv2d {
                multiplier,
                stride,
                padding,
                dilation,
                bias,
                kernel,
            } => {
                let channels = at.inputs[0].1.channels();
                let pads = window_pads(&at.inputs[0].1, *kernel, *stride, *dilation, *padding);
                // [kh, kw, c, m] -> [c, m, kh, kw] -> [c * m, 1, kh, kw]:
                // output channel c * m + j, as Keras orders them.
                let w = self.conv_kernel(at, [2, 3, 0, 1], Some(channels * multiplier))?;
                let attrs = conv_attrs(*kernel, *stride, *dilation, pads, channels);
                self.conv_like("Conv", at, w, *bias, attrs)
            }
            Op::ConvTranspose2d {
                kernel,
                stride,
                padding,
                dilation,
                bias,
                ..
            } => {
                let (pads, extra) = transposed_pads(at, *kernel, *stride, *dilation, *padding);
                let w = self.conv_kernel(at, [3, 2, 0, 1], None)?;
                let mut attrs = conv_attrs(*kernel, *stride, *dilation, pads, 1);
                attrs.push(("output_padding", ints(&extra)));
                self.conv_like("ConvTranspose", at, w, *bias, attrs)
            }
            Op::Dense { bias, .. } => self.dense(at, *bias),
            Op::Pool2d {
                kind,
                size,
                stride,
                padding,
            } => Ok(self.pool(at, *kind, *size, *stride, *padding)),
            Op::GlobalPool { kind } => {
                let op = match kind {
                    PoolKind::Max => "GlobalMaxPool",
                    PoolKind::Avg => "GlobalAveragePool",
                };
                let pooled = self.step(at, op, "pool", &[at.x()], &[]);
                Ok(self.last(at, "Flatten", &[&pooled], &[("axis", Attr::Int(1))]))
            }
            Op::DepthMaxPool { size } => Ok(self.depth_max_pool(at, *size)),
            Op::Upsample { factor, mode } => Ok(self.upsample(at, *factor, *mode)),
            Op::Pad { .. } => Ok(self.pad(at)),
            Op::Flatten => Ok(self.flatten(at)),
            Op::Reshape { .. } => Ok(self.reshape(at)),
            Op::ChannelSlice { start, end } => Ok(self.channel_slice(at, *start, *end)),
            Op::Dropout { .. } => Ok(self.last(at, "Identity", &[at.x()], &[])),
            Op::BatchNorm {
                momentum,
                epsilon,
                center,
                scale,
            } => self.batchnorm(at, [*momentum, *epsilon], *center, *scale),
            Op::Lrn {
                depth_radius,
                bias,
                alpha,
                beta,
            } => {
                // TensorFlow divides by (bias + alpha * sum)^beta; ONNX by
                // (bias + alpha / size * sum)^beta over `size` channels.
                let size = 2 * depth_radius + 1;
                let attrs = [
                    ("size", Attr::Int(size as i64)),
                    ("alpha", Attr::Float((alpha * size as f64) as f32)),
                    ("beta", Attr::Float(*beta as f32)),
                    ("bias", Attr::Float(*bias as f32)),
                ];
                Ok(self.last(at, "LRN", &[at.x()], &attrs))
            }
            Op::ScaleBias => self.scale_bias(at),
            Op::Rbf { .. } => self.rbf(at),
            Op::Activation(activation) => Ok(self.activation(at, *activation)),
            Op::Add => {
                let values: Vec<&str> = at.inputs.iter().map(|(v, _)| v.as_str()).collect();
                let op = if values.len() == 2 { "Add" } else { "Sum" };
                Ok(self.last(at, op, &values, &[]))
            }
            Op::Concat { axis } => {
                let values: Vec<&str> = at.inputs.iter().map(|(v, _)| v.as_str()).collect();
                let axis = onnx_axis(*axis, at.rank());
                Ok(self.last(at, "Concat", &values, &[("axis", Attr::Int(axis))]))
            }
            Op::Multiply => Ok(self.multiply(at)),
            Op::Input { .. }
            | Op::Labels { .. }
            | Op::Upstream { .. }
            | Op::CrossEntropy { .. }
            | Op::CrossEntropyGrad { .. }
            | Op::InputGrad { .. }
            | Op::WeightGrad { .. } => Err(at.unsupported("not part of an inference model")),
        }
    }

    /// A convolution (or transposed one) over `w` and the node's bias.
    fn conv_like(
        &mut self,
        op: &str,
        at: &At,
        w: String,
        bias: bool,
        attrs: Vec<(&str, Attr)>,
    ) -> Result<String, ExportError> {
        let mut inputs = vec![at.x().to_string(), w];
        if bias {
            inputs.push(self.weight(at, "bias", |data, _| (data.to_vec(), None))?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.last(at, op, &inputs, &attrs))
    }

    /// The node's kernel, its axes permuted by `perm` (and reshaped to
    /// `[outputs, 1, kh, kw]` when `depthwise` gives the outputs).
    fn conv_kernel(
        &mut self,
        at: &At,
        perm: [usize; 4],
        depthwise: Option<u64>,
    ) -> Result<String, ExportError> {
        self.weight(at, "kernel", |data, shape| {
            let (permuted, mut dims) = permute(data, shape, &perm);
            if let Some(outputs) = depthwise {
                dims = vec![outputs as i64, 1, dims[2], dims[3]];
            }
            (permuted, Some(dims))
        })
    }

    /// Dense on a vector: `Gemm` with the `[in, units]` kernel as it is.
    fn dense(&mut self, at: &At, bias: bool) -> Result<String, ExportError> {
        if at.rank() != 1 {
            return Err(at.unsupported("dense is exported on vectors only"));
        }
        let w = self.weight(at, "kernel", |data, _| (data.to_vec(), None))?;
        let mut inputs = vec![at.x().to_string(), w];
        if bias {
            inputs.push(self.weight(at, "bias", |data, _| (data.to_vec(), None))?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.last(at, "Gemm", &inputs, &[]))
    }

    fn pool(
        &mut self,
        at: &At,
        kind: PoolKind,
        size: [u64; 2],
        stride: [u64; 2],
        padding: Padding,
    ) -> String {
        let pads = window_pads(&at.inputs[0].1, size, stride, [1, 1], padding);
        let ceil = matches!(padding, Padding::Explicit { ceil: true, .. });
        let mut attrs = vec![
            ("kernel_shape", ints_u(&size)),
            ("strides", ints_u(&stride)),
            ("pads", ints(&pads)),
            ("ceil_mode", Attr::Int(ceil as i64)),
        ];
        let op = match kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => {
                // TensorFlow's average leaves the padding out of the count.
                attrs.push(("count_include_pad", Attr::Int(0)));
                "AveragePool"
            }
        };
        self.last(at, op, &[at.x()], &attrs)
    }

    /// Max over groups of `size` consecutive channels: NCHW reshaped to
    /// `[n, c / size, size, h, w]`, reduced over the group axis.
    fn depth_max_pool(&mut self, at: &At, size: u64) -> String {
        let [h, w, c] = dims3(&at.inputs[0].1);
        let size = size as i64;
        let shape = self.constant(at, "shape", &[0, c / size, size, h, w]);
        let grouped = self.step(at, "Reshape", "groups", &[at.x(), &shape], &[]);
        let attrs = [("axes", ints(&[2])), ("keepdims", Attr::Int(0))];
        self.last(at, "ReduceMax", &[&grouped], &attrs)
    }

    fn upsample(&mut self, at: &At, factor: [u64; 2], mode: Interpolation) -> String {
        let scales = format!("{}/scales", at.node.name);
        let values = [1.0, 1.0, factor[0] as f32, factor[1] as f32];
        self.graph
            .initializer
            .push(proto::float_tensor(&scales, &[4], &values));
        let attrs = match mode {
            Interpolation::Nearest => vec![
                ("mode", Attr::Str("nearest")),
                ("coordinate_transformation_mode", Attr::Str("asymmetric")),
                ("nearest_mode", Attr::Str("floor")),
            ],
            Interpolation::Bilinear => vec![
                ("mode", Attr::Str("linear")),
                ("coordinate_transformation_mode", Attr::Str("half_pixel")),
            ],
        };
        self.last(at, "Resize", &[at.x(), "", &scales], &attrs)
    }

    /// Zero padding as `Pad`, cropping as `Slice`; both where some sides
    /// add and others remove.
    fn pad(&mut self, at: &At) -> String {
        let [top, bottom, left, right] = at.node.op.pad_amounts();
        let [h, w, _] = dims3(&at.inputs[0].1);
        let mut value = at.x().to_string();
        let adds = [top, left, bottom, right].map(|a| a.max(0));
        let removes = [top, bottom, left, right].map(|a| (-a).max(0));
        let cropping = removes.iter().any(|&r| r > 0);
        if adds.iter().any(|&a| a > 0) {
            let pads = self.constant(
                at,
                "pads",
                &[0, 0, adds[0], adds[1], 0, 0, adds[2], adds[3]],
            );
            value = if cropping {
                self.step(at, "Pad", "pad", &[&value, &pads], &[])
            } else {
                self.last(at, "Pad", &[&value, &pads], &[])
            };
        }
        if cropping {
            // Lengths after the zeros were added on the other sides.
            let (h, w) = (
                h + top.max(0) + bottom.max(0),
                w + left.max(0) + right.max(0),
            );
            let starts = self.constant(at, "starts", &[removes[0], removes[2]]);
            let ends = self.constant(at, "ends", &[h - removes[1], w - removes[3]]);
            let axes = self.constant(at, "axes", &[2, 3]);
            value = self.last(at, "Slice", &[&value, &starts, &ends, &axes], &[]);
        }
        if value == at.x() {
            value = self.last(at, "Identity", &[at.x()], &[]);
        }
        value
    }

    /// A feature map back to NHWC before it is flattened, so that the
    /// elements follow cnnc's order.
    fn flatten(&mut self, at: &At) -> String {
        let x = if at.rank() == 3 {
            let perm = [("perm", ints(&[0, 2, 3, 1]))];
            self.step(at, "Transpose", "nhwc", &[at.x()], &perm)
        } else {
            at.x().to_string()
        };
        self.last(at, "Flatten", &[&x], &[("axis", Attr::Int(1))])
    }

    /// The NHWC values reshaped, then NCHW again if the result is a
    /// feature map.
    fn reshape(&mut self, at: &At) -> String {
        let x = if at.rank() == 3 {
            let perm = [("perm", ints(&[0, 2, 3, 1]))];
            self.step(at, "Transpose", "nhwc", &[at.x()], &perm)
        } else {
            at.x().to_string()
        };
        let mut target = vec![0];
        target.extend(at.output.0.iter().map(|&d| d as i64));
        let shape = self.constant(at, "shape", &target);
        if at.output.rank() == 3 {
            let reshaped = self.step(at, "Reshape", "reshape", &[&x, &shape], &[]);
            let perm = [("perm", ints(&[0, 3, 1, 2]))];
            self.last(at, "Transpose", &[&reshaped], &perm)
        } else {
            self.last(at, "Reshape", &[&x, &shape], &[])
        }
    }

    /// Channels `start..end` (negative: from the end) of the last axis.
    fn channel_slice(&mut self, at: &At, start: i64, end: i64) -> String {
        // Shape inference resolved this range already; it cannot fail here.
        let (start, end) = crate::ops::channel_range(start, end, &at.inputs[0].1)
            .expect("shape inference checked the range");
        let axis = channel_axis(at.rank());
        let starts = self.constant(at, "starts", &[start as i64]);
        let ends = self.constant(at, "ends", &[end as i64]);
        let axes = self.constant(at, "axes", &[axis]);
        self.last(at, "Slice", &[at.x(), &starts, &ends, &axes], &[])
    }

    /// Inference-mode batchnorm; the momentum and epsilon go into the node's
    /// attributes (the momentum matters to a runtime that trains, and to
    /// `cnnc import`).
    fn batchnorm(
        &mut self,
        at: &At,
        [momentum, epsilon]: [f64; 2],
        center: bool,
        scale: bool,
    ) -> Result<String, ExportError> {
        if at.rank() != 1 && at.rank() != 3 {
            return Err(at.unsupported("batchnorm is exported on vectors and feature maps"));
        }
        let channels = at.inputs[0].1.channels() as usize;
        let same = |data: &[f32], _: &[usize]| (data.to_vec(), None);
        let gamma = if scale {
            self.weight(at, "gamma", same)?
        } else {
            self.filled(at, "gamma", channels, 1.0)
        };
        let beta = if center {
            self.weight(at, "beta", same)?
        } else {
            self.filled(at, "beta", channels, 0.0)
        };
        let mean = self.weight(at, "moving_mean", same)?;
        let variance = self.weight(at, "moving_variance", same)?;
        let attrs = [
            ("epsilon", Attr::Float(epsilon as f32)),
            ("momentum", Attr::Float(momentum as f32)),
        ];
        let inputs = [at.x(), &gamma, &beta, &mean, &variance];
        Ok(self.last(at, "BatchNormalization", &inputs, &attrs))
    }

    /// `x * coefficient[c] + bias[c]`, the factors broadcast over NCHW.
    fn scale_bias(&mut self, at: &At) -> Result<String, ExportError> {
        let rank = at.rank();
        let per_channel = |data: &[f32], _: &[usize]| {
            let dims = if rank == 3 {
                vec![data.len() as i64, 1, 1]
            } else {
                vec![data.len() as i64]
            };
            (data.to_vec(), Some(dims))
        };
        let coefficient = self.weight(at, "coefficient", per_channel)?;
        let bias = self.weight(at, "bias", per_channel)?;
        let scaled = self.step(at, "Mul", "scale", &[at.x(), &coefficient], &[]);
        Ok(self.last(at, "Add", &[&scaled, &bias], &[]))
    }

    /// `y[n, u] = sum_i (x[n, i] - centers[i, u])^2`, directly (no
    /// expansion of the square, which would cancel).
    fn rbf(&mut self, at: &At) -> Result<String, ExportError> {
        let centers = self.weight(at, "centers", |data, _| (data.to_vec(), None))?;
        let axes = self.constant(at, "axes", &[2]);
        let column = self.step(at, "Unsqueeze", "column", &[at.x(), &axes], &[]);
        let difference = self.step(at, "Sub", "difference", &[&column, &centers], &[]);
        let square = self.step(at, "Mul", "square", &[&difference, &difference], &[]);
        let sum_axes = self.constant(at, "sum_axes", &[1]);
        let attrs = [("keepdims", Attr::Int(0))];
        Ok(self.last(at, "ReduceSum", &[&square, &sum_axes], &attrs))
    }

    fn activation(&mut self, at: &At, activation: Activation) -> String {
        let x = at.x();
        match activation {
            Activation::Relu => self.last(at, "Relu", &[x], &[]),
            Activation::LeakyRelu { alpha } => self.last(
                at,
                "LeakyRelu",
                &[x],
                &[("alpha", Attr::Float(alpha as f32))],
            ),
            Activation::Elu { alpha } => {
                self.last(at, "Elu", &[x], &[("alpha", Attr::Float(alpha as f32))])
            }
            // ONNX's defaults are the self-normalising constants Keras uses.
            Activation::Selu => self.last(at, "Selu", &[x], &[]),
            Activation::Tanh => self.last(at, "Tanh", &[x], &[]),
            Activation::Sigmoid => self.last(at, "Sigmoid", &[x], &[]),
            Activation::Relu6 => {
                let low = self.scalar(at, "min", 0.0);
                let high = self.scalar(at, "max", 6.0);
                self.last(at, "Clip", &[x, &low, &high], &[])
            }
            Activation::Swish => {
                let gate = self.step(at, "Sigmoid", "sigmoid", &[x], &[]);
                self.last(at, "Mul", &[x, &gate], &[])
            }
            Activation::Gelu { approximate } => self.gelu(at, approximate),
            // ONNX's HardSigmoid is max(0, min(1, alpha x + beta)):
            // relu6(x + 3) / 6 with alpha 1/6, beta 1/2.
            Activation::HardSigmoid => {
                let attrs = [
                    ("alpha", Attr::Float(1.0 / 6.0)),
                    ("beta", Attr::Float(0.5)),
                ];
                self.last(at, "HardSigmoid", &[x], &attrs)
            }
            Activation::HardSwish => self.last(at, "HardSwish", &[x], &[]),
            Activation::Mish => {
                let softplus = self.step(at, "Softplus", "softplus", &[x], &[]);
                let tanh = self.step(at, "Tanh", "tanh", &[&softplus], &[]);
                self.last(at, "Mul", &[x, &tanh], &[])
            }
            Activation::Softmax => {
                let axis = channel_axis(at.rank());
                self.last(at, "Softmax", &[x], &[("axis", Attr::Int(axis))])
            }
        }
    }

    /// `0.5 x (1 + erf(x / sqrt 2))`, or the tanh form
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` (opset 17 has
    /// no `Gelu`).
    fn gelu(&mut self, at: &At, approximate: bool) -> String {
        let x = at.x();
        let inner = if approximate {
            let c = self.scalar(at, "cubic", 0.044715);
            let k = self.scalar(at, "sqrt_2_over_pi", (2.0 / std::f64::consts::PI).sqrt());
            let square = self.step(at, "Mul", "square", &[x, x], &[]);
            let cube = self.step(at, "Mul", "cube", &[&square, x], &[]);
            let scaled_cube = self.step(at, "Mul", "scaled_cube", &[&cube, &c], &[]);
            let sum = self.step(at, "Add", "sum", &[x, &scaled_cube], &[]);
            let scaled = self.step(at, "Mul", "scaled", &[&sum, &k], &[]);
            self.step(at, "Tanh", "tanh", &[&scaled], &[])
        } else {
            let root2 = self.scalar(at, "sqrt_2", std::f64::consts::SQRT_2);
            let scaled = self.step(at, "Div", "scaled", &[x, &root2], &[]);
            self.step(at, "Erf", "erf", &[&scaled], &[])
        };
        let one = self.scalar(at, "one", 1.0);
        let half = self.scalar(at, "half", 0.5);
        let plus_one = self.step(at, "Add", "plus_one", &[&inner, &one], &[]);
        let half_x = self.step(at, "Mul", "half_x", &[x, &half], &[]);
        self.last(at, "Mul", &[&half_x, &plus_one], &[])
    }

    /// `x * s`, a channel vector `s` first given the feature map's
    /// trailing unit axes.
    fn multiply(&mut self, at: &At) -> String {
        let (x, s) = (at.inputs[0].0.as_str(), at.inputs[1].0.as_str());
        if at.rank() == 3 && at.inputs[1].1.rank() == 1 {
            let axes = self.constant(at, "axes", &[2, 3]);
            let column = self.step(at, "Unsqueeze", "unsqueeze", &[s, &axes], &[]);
            self.last(at, "Mul", &[x, &column], &[])
        } else {
            self.last(at, "Mul", &[x, s], &[])
        }
    }

    /// Weight `local` of the node (`kernel`, `bias`...) as an initializer,
    /// its data and shape given by `transform` (a `None` shape keeps the
    /// tensor's); returns its name.
    fn weight(
        &mut self,
        at: &At,
        local: &str,
        transform: impl FnOnce(&[f32], &[usize]) -> (Vec<f32>, Option<Vec<i64>>),
    ) -> Result<String, ExportError> {
        let name = format!("{}.{local}", at.node.name);
        let tensor = self
            .weights
            .get(&name)
            .ok_or_else(|| ExportError::MissingWeight(name.clone()))?;
        let (data, dims) = transform(&tensor.data, &tensor.shape);
        let dims = dims.unwrap_or_else(|| tensor.shape.iter().map(|&d| d as i64).collect());
        self.graph
            .initializer
            .push(proto::float_tensor(&name, &dims, &data));
        Ok(name)
    }

    /// A constant vector of `n` copies of `value`, named `path/what`.
    fn filled(&mut self, at: &At, what: &str, n: usize, value: f32) -> String {
        let name = format!("{}/{what}", at.node.name);
        let data = vec![value; n];
        self.graph
            .initializer
            .push(proto::float_tensor(&name, &[n as i64], &data));
        name
    }

    /// A float scalar constant named `path/what`.
    fn scalar(&mut self, at: &At, what: &str, value: f64) -> String {
        let name = format!("{}/{what}", at.node.name);
        self.graph
            .initializer
            .push(proto::float_tensor(&name, &[], &[value as f32]));
        name
    }

    /// An int64 vector constant named `path/what` (shapes, axes, pads).
    fn constant(&mut self, at: &At, what: &str, data: &[i64]) -> String {
        let name = format!("{}/{what}", at.node.name);
        self.graph.initializer.push(proto::int_tensor(&name, data));
        name
    }

    /// An inner step of a node's chain: an ONNX node and value named
    /// `path/what`.
    fn step(
        &mut self,
        at: &At,
        op: &str,
        what: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        let name = format!("{}/{what}", at.node.name);
        self.push(op, &name, inputs, attrs);
        name
    }

    /// The last step of a node's chain: the ONNX node named by the layer
    /// path, its value by the path too (unless the graph's input or an
    /// output takes that name).
    fn last(&mut self, at: &At, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let path = &at.node.name;
        let value = if self.reserved.contains(path) {
            format!("{path}/y")
        } else {
            path.clone()
        };
        self.graph
            .node
            .push(proto::node(op, path, inputs, &[&value], attrs));
        value
    }

    fn push(&mut self, op: &str, name: &str, inputs: &[&str], attrs: &[(&str, Attr)]) {
        self.graph
            .node
            .push(proto::node(op, name, inputs, &[name], attrs));
    }

    fn push_named(
        &mut self,
        op: &str,
        name: &str,
        input: &str,
        output: &str,
        attrs: &[(&str, Attr)],
    ) {
        let node = format!("output {name}");
        self.graph
            .node
            .push(proto::node(op, &node, &[input], &[output], attrs));
    }
}

/// The ONNX axis of per-example axis `axis` of a rank-`rank` tensor: a
/// feature map's `[h, w, c]` are NCHW's 2, 3, 1; other ranks shift by the
/// batch.
fn onnx_axis(axis: usize, rank: usize) -> i64 {
    if rank == 3 {
        [2, 3, 1][axis]
    } else {
        axis as i64 + 1
    }
}

/// The ONNX axis of the channels (cnnc's last axis).
fn channel_axis(rank: usize) -> i64 {
    onnx_axis(rank - 1, rank)
}

/// `[top, left, bottom, right]` padding of a window over `input`, as ONNX's
/// `pads` orders them; `same` is TensorFlow's (the odd pixel last).
fn window_pads(
    input: &Shape,
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    padding: Padding,
) -> [i64; 4] {
    let mut pads = [0i64; 4];
    for axis in 0..2 {
        let (before, after) = match padding.axis(axis) {
            AxisPadding::Same => {
                same_padding(input.0[axis], kernel[axis], stride[axis], dilation[axis])
            }
            AxisPadding::Explicit { before, after, .. } => (before, after),
        };
        pads[axis] = before as i64;
        pads[axis + 2] = after as i64;
    }
    pads
}

/// A transposed convolution's `pads` and `output_padding`: the padding of
/// the convolution it transposes (from the output back to the input),
/// and what the output has beyond that convolution's reach.
fn transposed_pads(
    at: &At,
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    padding: Padding,
) -> ([i64; 4], [i64; 2]) {
    let (input, output) = (&at.inputs[0].1, &at.output);
    let mut pads = [0i64; 4];
    let mut extra = [0i64; 2];
    for axis in 0..2 {
        let (i, o) = (input.0[axis] as i64, output.0[axis] as i64);
        let before = match padding.axis(axis) {
            AxisPadding::Same => {
                same_padding(output.0[axis], kernel[axis], stride[axis], dilation[axis]).0 as i64
            }
            AxisPadding::Explicit { before, .. } => before as i64,
        };
        let effective = (kernel[axis] as i64 - 1) * dilation[axis] as i64 + 1;
        // ONNX: output = stride (in - 1) + output_padding + effective - pads.
        let after = stride[axis] as i64 * (i - 1) + effective - before - o;
        pads[axis] = before;
        pads[axis + 2] = after.max(0);
        extra[axis] = (-after).max(0);
    }
    (pads, extra)
}

fn conv_attrs(
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    pads: [i64; 4],
    groups: u64,
) -> Vec<(&'static str, Attr)> {
    vec![
        ("kernel_shape", ints_u(&kernel)),
        ("strides", ints_u(&stride)),
        ("dilations", ints_u(&dilation)),
        ("pads", ints(&pads)),
        ("group", Attr::Int(groups as i64)),
    ]
}

fn ints(values: &[i64]) -> Attr {
    Attr::Ints(values.to_vec())
}

fn ints_u(values: &[u64]) -> Attr {
    Attr::Ints(values.iter().map(|&v| v as i64).collect())
}

/// A feature map's `[h, w, c]` as ONNX integers.
fn dims3(shape: &Shape) -> [i64; 3] {
    [shape.0[0] as i64, shape.0[1] as i64, shape.0[2] as i64]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_moves_a_kernel_to_onnx_layout() {
        // [kh=1, kw=2, in=2, out=3] -> [out, in, kh, kw].
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let (out, dims) = permute(&data, &[1, 2, 2, 3], &[3, 2, 0, 1]);
        assert_eq!(dims, vec![3, 2, 1, 2]);
        // out[o, i, 0, x] = data[x * 6 + i * 3 + o].
        assert_eq!(&out[..4], &[0.0, 6.0, 3.0, 9.0]);
        assert_eq!(&out[4..8], &[1.0, 7.0, 4.0, 10.0]);
    }

    #[test]
    fn feature_map_axes_map_to_nchw() {
        assert_eq!(onnx_axis(2, 3), 1);
        assert_eq!(onnx_axis(0, 3), 2);
        assert_eq!(onnx_axis(0, 1), 1);
        assert_eq!(channel_axis(1), 1);
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_last_in_onnx_order() {
        let shape = Shape(vec![7, 8, 3]);
        let pads = window_pads(&shape, [3, 2], [2, 2], [1, 1], Padding::Same);
        // Height: out 4, (4-1)*2+3-7 = 2 -> 1, 1; width: out 4, 6+2-8 = 0.
        assert_eq!(pads, [1, 0, 1, 0]);
    }
}
