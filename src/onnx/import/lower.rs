//! ONNX nodes to cnnc layers: one walk over the nodes in file order (ONNX
//! requires topological order), tracking for every ONNX value which cnnc
//! tensor it is and how ONNX lays it out, so that transposes, flattens and
//! reshapes that only move axes become no layer at all.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

use std::collections::HashMap;

use onnx_protobuf::NodeProto;

use super::read::{self, Constant};
use super::{Layer, Source, Unsupported};
use crate::graph::{Activation, Interpolation, Op, Padding, PoolKind, Shape};
use crate::ops::{self, same_padding, transposed_output_size};
use crate::runtime::weights::Tensor;

/// How ONNX holds a cnnc tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// A feature map `[h, w, c]` as ONNX's `[n, c, h, w]`.
    Nchw,
    /// A feature map as `[n, h, w, c]` (a cnnc export's input and outputs).
    Nhwc,
    /// A vector `[f]` as `[n, f]` (or a tensor of another rank than a
    /// feature map's, in cnnc's order behind the batch); `chw` when it is
    /// an NCHW map `[c, h, w]` flattened in ONNX's order, which differs
    /// from cnnc's flatten.
    Vector {
        /// The map's `[c, h, w]`, for an NCHW flatten.
        chw: Option<[u64; 3]>,
    },
    /// A vector `[c]` as ONNX's `[n, c, 1, 1]` (a global pooling kept 4-D).
    Pooled,
}

/// One ONNX value in cnnc's terms.
#[derive(Debug, Clone)]
pub struct Value {
    /// The cnnc tensor: the input or a layer's output.
    pub source: Source,
    /// Its cnnc per-example shape.
    pub shape: Shape,
    /// How ONNX lays it out.
    pub layout: Layout,
}

/// The walk's state: the layers so far, and what each ONNX value is.
pub struct Lowering<'a> {
    /// Every constant of the graph by name.
    pub constants: &'a HashMap<String, Constant>,
    /// How many nodes (and graph outputs) read each value.
    pub readers: HashMap<String, usize>,
    /// The cnnc layers, in order.
    pub layers: Vec<Layer>,
    /// Each ONNX value that is a cnnc tensor.
    pub values: HashMap<String, Value>,
}

type Lowered = Result<(), String>;

impl Lowering<'_> {
    /// Lowers `node`, or says why the language cannot express it.
    pub fn node(&mut self, node: &NodeProto) -> Result<(), Unsupported> {
        let result = match node.op_type.as_str() {
            "Constant" => Ok(()),
            "Conv" => self.conv(node),
            "ConvTranspose" => self.conv_transpose(node),
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "BatchNormalization" => self.batchnorm(node),
            "MaxPool" => self.pool(node, PoolKind::Max),
            "AveragePool" => self.pool(node, PoolKind::Avg),
            "GlobalAveragePool" => self.global_pool(node, PoolKind::Avg),
            "GlobalMaxPool" => self.global_pool(node, PoolKind::Max),
            "ReduceMean" => self.reduce_mean(node),
            "Flatten" => self.flatten(node),
            "Reshape" | "Squeeze" | "Unsqueeze" => self.reshape(node),
            "Transpose" => self.transpose(node),
            "Dropout" | "Identity" => self.alias(node),
            "Add" | "Sum" => self.add(node),
            "Mul" => self.mul(node),
            "Concat" => self.concat(node),
            "Relu" | "Tanh" | "Sigmoid" | "Selu" | "HardSwish" | "LeakyRelu" | "Elu"
            | "HardSigmoid" | "Clip" | "Softmax" => self.activation(node),
            "LRN" => self.lrn(node),
            "Resize" | "Upsample" => self.resize(node),
            "Pad" => self.pad(node),
            "Slice" => self.slice(node),
            other => Err(format!("the language has no `{other}`")),
        };
        result.map_err(|reason| Unsupported {
            node: node.name.clone(),
            op_type: node.op_type.clone(),
            reason,
        })
    }

    /// The cnnc value of input `i` of `node`.
    fn input(&self, node: &NodeProto, i: usize) -> Result<Value, String> {
        let name = node.input.get(i).ok_or(format!("input {i} is missing"))?;
        match self.values.get(name) {
            Some(v) => Ok(v.clone()),
            None if self.constants.contains_key(name) => Err(format!(
                "input `{name}` is a constant where a tensor of the model is expected"
            )),
            None => Err(format!(
                "input `{name}` comes from a node cnnc could not read"
            )),
        }
    }

    /// The constant input `i` of `node`, if it is one.
    fn constant(&self, node: &NodeProto, i: usize) -> Option<&Constant> {
        node.input.get(i).and_then(|n| self.constants.get(n))
    }

    /// A feature map input, in NCHW.
    fn map(&self, node: &NodeProto, i: usize) -> Result<Value, String> {
        let value = self.input(node, i)?;
        match value.layout {
            Layout::Nchw => Ok(value),
            Layout::Nhwc | Layout::Vector { .. } | Layout::Pooled => Err(format!(
                "it reads a tensor of shape {:?} laid out as {:?}, where cnnc needs an NCHW feature map",
                value.shape.0, value.layout
            )),
        }
    }

    /// Adds layer `op` named after `node` on `inputs`, its output the
    /// node's output 0 in `layout`.
    fn push(
        &mut self,
        node: &NodeProto,
        op: Op,
        inputs: Vec<Value>,
        weights: Vec<(&'static str, Tensor)>,
        layout: Layout,
    ) -> Lowered {
        let shapes: Vec<&Shape> = inputs.iter().map(|v| &v.shape).collect();
        let shape = ops::infer(&op, &shapes).map_err(|e| e.to_string())?;
        let index = self.layers.len();
        self.layers.push(Layer {
            node: node.name.clone(),
            op,
            inputs: inputs.iter().map(|v| v.source).collect(),
            weights,
            rank: shape.rank(),
        });
        self.define(node, Source::Layer(index), shape, layout)
    }

    fn define(
        &mut self,
        node: &NodeProto,
        source: Source,
        shape: Shape,
        layout: Layout,
    ) -> Lowered {
        let output = node.output.first().ok_or("the node has no output")?;
        self.values.insert(
            output.clone(),
            Value {
                source,
                shape,
                layout,
            },
        );
        Ok(())
    }

    /// The node's output is its input 0, in `layout` (and `shape`).
    fn rename(&mut self, node: &NodeProto, value: Value, layout: Layout, shape: Shape) -> Lowered {
        self.define(node, value.source, shape, layout)
    }

    fn alias(&mut self, node: &NodeProto) -> Lowered {
        let value = self.input(node, 0)?;
        let (layout, shape) = (value.layout, value.shape.clone());
        self.rename(node, value, layout, shape)
    }

    fn conv(&mut self, node: &NodeProto) -> Lowered {
        let x = self.map(node, 0)?;
        let w = self
            .constant(node, 1)
            .ok_or("its kernel is not a constant")?;
        let (m, per_group, kh, kw) = kernel4(w)?;
        let [_, _, c] = hwc(&x.shape);
        let groups = positive(read::int(node, "group", 1), "group")?;
        if per_group * groups != c || m % groups != 0 {
            return Err(format!(
                "a kernel of {per_group} input channels per group in {groups} groups for {c} channels, {m} filters"
            ));
        }
        let window = Window::read(node, &x.shape, [kh, kw])?;
        let kernel_data = w.floats().ok_or("its kernel is not float")?;
        let bias = self.bias(node, 2, m)?;
        let (op, kernel) = if groups == c && groups > 1 && per_group == 1 && m % c == 0 {
            // [c * mult, 1, kh, kw] -> [kh, kw, c, mult].
            let multiplier = m / c;
            let data = permute(kernel_data, &[c, multiplier, kh, kw], &[2, 3, 0, 1]);
            let op = Op::DepthwiseConv2d {
                multiplier,
                kernel: [kh, kw],
                stride: window.stride,
                padding: window.padding,
                dilation: window.dilation,
                bias: bias.is_some(),
            };
            (op, tensor(&[kh, kw, c, multiplier], data))
        } else {
            // [m, c / groups, kh, kw] -> [kh, kw, c / groups, m].
            let data = permute(kernel_data, &[m, per_group, kh, kw], &[2, 3, 1, 0]);
            let op = Op::Conv2d {
                filters: m,
                kernel: [kh, kw],
                stride: window.stride,
                padding: window.padding,
                dilation: window.dilation,
                bias: bias.is_some(),
                groups,
            };
            (op, tensor(&[kh, kw, per_group, m], data))
        };
        if window.ceil {
            return Err("ceil_mode is for pooling".into());
        }
        let mut weights = vec![("kernel", kernel)];
        weights.extend(bias.map(|b| ("bias", b)));
        self.push(node, op, vec![x], weights, Layout::Nchw)
    }

    fn conv_transpose(&mut self, node: &NodeProto) -> Lowered {
        let x = self.map(node, 0)?;
        let w = self
            .constant(node, 1)
            .ok_or("its kernel is not a constant")?;
        let (c, m, kh, kw) = kernel4(w)?;
        if read::int(node, "group", 1) != 1 {
            return Err("a grouped transposed convolution".into());
        }
        if c != x.shape.channels() {
            return Err(format!(
                "a kernel for {c} input channels on {}",
                x.shape.channels()
            ));
        }
        let stride = pair(node, "strides", 1)?;
        let dilation = pair(node, "dilations", 1)?;
        let pads = read::ints(node, "pads").unwrap_or(vec![0; 4]);
        let extra = read::ints(node, "output_padding").unwrap_or(vec![0; 2]);
        let bounded = |p: &i64| (0..=MAX_WINDOW as i64).contains(p);
        if pads.len() != 4 || extra.len() != 2 || !pads.iter().chain(&extra).all(bounded) {
            return Err("pads or output_padding are not 4 and 2 non-negative numbers".into());
        }
        let [h, w_, _] = hwc(&x.shape);
        // The ONNX output, then the cnnc padding that gives it with the
        // same placement (the padding before).
        let mut out = [0u64; 2];
        for a in 0..2 {
            // In i128: a hostile input size times the stride fits.
            let effective = i128::from([kh, kw][a] - 1) * i128::from(dilation[a]) + 1;
            let size = i128::from(stride[a]) * (i128::from([h, w_][a]) - 1)
                + i128::from(extra[a])
                + effective
                - i128::from(pads[a])
                - i128::from(pads[a + 2]);
            out[a] = u64::try_from(size)
                .ok()
                .filter(|&s| s > 0 && s <= 1 << 40)
                .ok_or("an empty output, or one too large")?;
        }
        let (padding, output_padding) =
            transposed_padding([h, w_], out, [kh, kw], stride, dilation, [pads[0], pads[1]])
                .ok_or("its padding is neither `same` nor `valid` as Keras places them")?;
        let data = permute(
            w.floats().ok_or("its kernel is not float")?,
            &[c, m, kh, kw],
            &[2, 3, 1, 0],
        );
        let bias = self.bias(node, 2, m)?;
        let op = Op::ConvTranspose2d {
            filters: m,
            kernel: [kh, kw],
            stride,
            padding,
            output_padding,
            dilation,
            bias: bias.is_some(),
        };
        let mut weights = vec![("kernel", tensor(&[kh, kw, m, c], data))];
        weights.extend(bias.map(|b| ("bias", b)));
        self.push(node, op, vec![x], weights, Layout::Nchw)
    }

    /// The bias input `i` of `node`, `units` long, if present.
    fn bias(&self, node: &NodeProto, i: usize, units: u64) -> Result<Option<Tensor>, String> {
        if node.input.get(i).is_none_or(|n| n.is_empty()) {
            return Ok(None);
        }
        let b = self.constant(node, i).ok_or("its bias is not a constant")?;
        let data = b.floats().ok_or("its bias is not float")?;
        if data.len() as u64 != units {
            return Err(format!(
                "a bias of {} values for {units} outputs",
                data.len()
            ));
        }
        Ok(Some(tensor(&[units], data.to_vec())))
    }

    /// `Gemm`: `alpha * A * B' + beta * C` with A a vector per example.
    fn gemm(&mut self, node: &NodeProto) -> Lowered {
        if read::int(node, "transA", 0) != 0 {
            return Err("transA".into());
        }
        let (alpha, beta) = (
            read::float(node, "alpha", 1.0),
            read::float(node, "beta", 1.0),
        );
        let b = self.constant(node, 1).ok_or("its B is not a constant")?;
        let [rows, cols] = b.dims[..] else {
            return Err("its B is not a matrix".into());
        };
        let data = b.floats().ok_or("its B is not float")?;
        // The kernel as [in, units].
        let (inputs, units, kernel) = if read::int(node, "transB", 0) != 0 {
            (cols, rows, permute(data, &[rows, cols], &[1, 0]))
        } else {
            (rows, cols, data.to_vec())
        };
        let kernel: Vec<f32> = kernel.iter().map(|v| v * alpha).collect();
        let bias = self
            .bias(node, 2, units)?
            .map(|b| tensor(&[units], b.data.iter().map(|v| v * beta).collect()));
        self.dense(node, inputs, units, kernel, bias)
    }

    fn matmul(&mut self, node: &NodeProto) -> Lowered {
        let b = self.constant(node, 1).ok_or("its B is not a constant")?;
        let [inputs, units] = b.dims[..] else {
            return Err("its B is not a matrix".into());
        };
        let kernel = b.floats().ok_or("its B is not float")?.to_vec();
        self.dense(node, inputs, units, kernel, None)
    }

    /// A dense layer on input 0, a vector of `inputs` features (re-ordered
    /// from NCHW to cnnc's order if it is a flattened NCHW map).
    fn dense(
        &mut self,
        node: &NodeProto,
        inputs: u64,
        units: u64,
        mut kernel: Vec<f32>,
        bias: Option<Tensor>,
    ) -> Lowered {
        let x = self.input(node, 0)?;
        let chw = match x.layout {
            Layout::Vector { chw } => chw,
            Layout::Pooled => None,
            Layout::Nchw | Layout::Nhwc => {
                return Err("a product over a feature map's last axis".into())
            }
        };
        if x.shape.0 != [inputs] {
            return Err(format!("{inputs} inputs for a vector of {:?}", x.shape.0));
        }
        if let Some([c, h, w]) = chw {
            // Row (c, y, x) of ONNX's kernel is row (y, x, c) of cnnc's.
            kernel = permute(&kernel, &[c, h, w, units], &[1, 2, 0, 3]);
        }
        let op = Op::Dense {
            units,
            bias: bias.is_some(),
        };
        let mut weights = vec![("kernel", tensor(&[inputs, units], kernel))];
        weights.extend(bias.map(|b| ("bias", b)));
        let x = Value {
            layout: Layout::Vector { chw: None },
            ..x
        };
        self.push(node, op, vec![x], weights, Layout::Vector { chw: None })
    }

    fn batchnorm(&mut self, node: &NodeProto) -> Lowered {
        let x = self.input(node, 0)?;
        let layout = match x.layout {
            Layout::Nchw | Layout::Vector { chw: None } => x.layout,
            Layout::Nhwc | Layout::Vector { chw: Some(_) } | Layout::Pooled => {
                return Err("a batchnorm over an axis other than cnnc's channels".into())
            }
        };
        let channels = x.shape.channels();
        let mut weights = Vec::new();
        let (mut scale, mut center) = (true, true);
        for (i, name) in [
            (1, "gamma"),
            (2, "beta"),
            (3, "moving_mean"),
            (4, "moving_variance"),
        ] {
            let c = self
                .constant(node, i)
                .ok_or(format!("its {name} is not a constant"))?;
            let data = c.floats().ok_or(format!("its {name} is not float"))?;
            if data.len() as u64 != channels {
                return Err(format!(
                    "{name} has {} values for {channels} channels",
                    data.len()
                ));
            }
            // `cnnc export` fills a batchnorm without a factor or offset
            // (`scale: false`, `center: false`) with constants named
            // `PATH/gamma` and `PATH/beta`: ones and zeros, not weights.
            let filler = node.input[i].ends_with(&format!("/{name}"));
            match (name, filler) {
                ("gamma", true) if data.iter().all(|&v| v == 1.0) => scale = false,
                ("beta", true) if data.iter().all(|&v| v == 0.0) => center = false,
                _ => weights.push((name, tensor(&[channels], data.to_vec()))),
            }
        }
        let epsilon = read::number(node, "epsilon", 1e-5);
        let momentum = read::number(node, "momentum", 0.9);
        if !(epsilon.is_finite() && epsilon > 0.0 && (0.0..1.0).contains(&momentum)) {
            return Err(format!(
                "epsilon {epsilon} or momentum {momentum} out of range"
            ));
        }
        let op = Op::BatchNorm {
            momentum,
            epsilon,
            center,
            scale,
        };
        self.push(node, op, vec![x], weights, layout)
    }

    fn pool(&mut self, node: &NodeProto, kind: PoolKind) -> Lowered {
        let x = self.map(node, 0)?;
        let size = pair(node, "kernel_shape", 0)?;
        if size.contains(&0) {
            return Err("no kernel_shape".into());
        }
        if pair(node, "dilations", 1)? != [1, 1] {
            return Err("dilated pooling".into());
        }
        let window = Window::read(node, &x.shape, size)?;
        let padded = window.padding != Padding::Valid;
        if kind == PoolKind::Avg && padded && read::int(node, "count_include_pad", 0) != 0 {
            return Err(
                "an average that counts the padding (write zero_padding before avgpool)".into(),
            );
        }
        let padding = if window.ceil {
            match window.padding {
                Padding::Explicit { pads, .. } => Padding::Explicit { pads, ceil: true },
                Padding::Valid => Padding::Explicit {
                    pads: [[0, 0], [0, 0]],
                    ceil: true,
                },
                Padding::Same => return Err("ceil_mode with same padding".into()),
            }
        } else {
            window.padding
        };
        let op = Op::Pool2d {
            kind,
            size,
            stride: window.stride,
            padding,
        };
        self.push(node, op, vec![x], vec![], Layout::Nchw)
    }

    fn global_pool(&mut self, node: &NodeProto, kind: PoolKind) -> Lowered {
        let x = self.map(node, 0)?;
        self.push(
            node,
            Op::GlobalPool { kind },
            vec![x],
            vec![],
            Layout::Pooled,
        )
    }

    /// A mean over the spatial axes: a global average pool.
    fn reduce_mean(&mut self, node: &NodeProto) -> Lowered {
        let x = self.map(node, 0)?;
        let axes = read::ints(node, "axes")
            .or_else(|| {
                self.constant(node, 1)
                    .and_then(|c| c.ints().map(<[i64]>::to_vec))
            })
            .ok_or("no axes")?;
        let mut axes: Vec<i64> = axes
            .iter()
            .map(|&a| if a < 0 { a + 4 } else { a })
            .collect();
        axes.sort_unstable();
        if axes != [2, 3] {
            return Err(format!("a mean over axes {axes:?}, not the spatial ones"));
        }
        let layout = if read::int(node, "keepdims", 1) != 0 {
            Layout::Pooled
        } else {
            Layout::Vector { chw: None }
        };
        self.push(
            node,
            Op::GlobalPool {
                kind: PoolKind::Avg,
            },
            vec![x],
            vec![],
            layout,
        )
    }

    fn flatten(&mut self, node: &NodeProto) -> Lowered {
        if read::int(node, "axis", 1) != 1 {
            return Err("a flatten that keeps more than the batch axis".into());
        }
        let x = self.input(node, 0)?;
        match x.layout {
            Layout::Pooled | Layout::Vector { .. } if x.shape.rank() == 1 => {
                let shape = x.shape.clone();
                self.rename(node, x, Layout::Vector { chw: None }, shape)
            }
            Layout::Nhwc | Layout::Vector { chw: None } | Layout::Pooled => self.push(
                node,
                Op::Flatten,
                vec![x],
                vec![],
                Layout::Vector { chw: None },
            ),
            Layout::Vector { chw: Some(_) } => Err("a flatten of a flattened NCHW map".into()),
            Layout::Nchw => {
                let [h, w, c] = hwc(&x.shape);
                let chw = (h * w > 1).then_some([c, h, w]);
                self.push(node, Op::Flatten, vec![x], vec![], Layout::Vector { chw })
            }
        }
    }

    /// Reshapes that only add or drop unit axes around a vector (a pooled
    /// `[n, c, 1, 1]` to `[n, c]` and back), or that flatten.
    fn reshape(&mut self, node: &NodeProto) -> Lowered {
        let x = self.input(node, 0)?;
        let target = match node.op_type.as_str() {
            "Reshape" => {
                let shape = self
                    .constant(node, 1)
                    .and_then(Constant::ints)
                    .ok_or("its shape is not constant")?;
                shape.to_vec()
            }
            _ => vec![],
        };
        let flat = node.op_type == "Squeeze" || target.len() == 2 && target[1] != 1;
        let unit_axes = node.op_type == "Unsqueeze" || target.len() == 4 && target[2..] == [1, 1];
        match x.layout {
            Layout::Pooled | Layout::Vector { chw: None } if flat => {
                let shape = x.shape.clone();
                self.rename(node, x, Layout::Vector { chw: None }, shape)
            }
            Layout::Pooled | Layout::Vector { chw: None } if unit_axes => {
                let shape = x.shape.clone();
                self.rename(node, x, Layout::Pooled, shape)
            }
            Layout::Nchw | Layout::Nhwc if flat && target.len() == 2 => self.flatten(node),
            // Values in cnnc's order given another per-example shape (the
            // batch kept by a leading 0): cnnc's reshape.
            Layout::Nhwc | Layout::Vector { chw: None } if target.first() == Some(&0) => {
                let op = Op::Reshape {
                    shape: target[1..].to_vec(),
                };
                let layout = if target.len() == 4 {
                    Layout::Nhwc
                } else {
                    Layout::Vector { chw: None }
                };
                self.push(node, op, vec![x], vec![], layout)
            }
            Layout::Nchw | Layout::Nhwc | Layout::Pooled | Layout::Vector { .. } => Err(format!(
                "a reshape of {:?} ({:?}) to {target:?}",
                x.shape.0, x.layout
            )),
        }
    }

    fn transpose(&mut self, node: &NodeProto) -> Lowered {
        let x = self.input(node, 0)?;
        let perm = read::ints(node, "perm").unwrap_or_default();
        let layout = match (x.layout, perm.as_slice()) {
            (Layout::Nhwc, [0, 3, 1, 2]) => Layout::Nchw,
            (Layout::Nchw, [0, 2, 3, 1]) => Layout::Nhwc,
            _ => return Err(format!("a transpose {perm:?} of {:?}", x.layout)),
        };
        let shape = x.shape.clone();
        self.rename(node, x, layout, shape)
    }

    /// Element-wise sums of model tensors; a constant added to a dense
    /// layer or convolution without a bias becomes its bias.
    fn add(&mut self, node: &NodeProto) -> Lowered {
        if node.input.len() == 2 {
            if let Some(c) = self
                .constant(node, 1)
                .or_else(|| self.constant(node, 0))
                .cloned()
            {
                return self.add_bias(node, &c);
            }
        }
        let inputs = (0..node.input.len())
            .map(|i| self.input(node, i))
            .collect::<Result<Vec<_>, _>>()?;
        let layout = same_layout(&inputs)?;
        self.push(node, Op::Add, inputs, vec![], layout)
    }

    fn add_bias(&mut self, node: &NodeProto, c: &Constant) -> Lowered {
        let tensor_input = usize::from(self.constant(node, 0).is_some());
        let x = self.input(node, tensor_input)?;
        let data = c.floats().ok_or("it adds an integer constant")?;
        let units = x.shape.channels();
        let Source::Layer(index) = x.source else {
            return Err("a constant added to the input".into());
        };
        let layer = &mut self.layers[index];
        let sole = self.readers.get(&node.input[tensor_input]).copied() == Some(1);
        let fits = data.len() as u64 == units && c.dims.iter().filter(|&&d| d != 1).count() <= 1;
        let Some(bias) = bias_flag(&mut layer.op) else {
            return Err(
                "a constant added to a tensor that is not a dense layer or convolution".into(),
            );
        };
        if *bias || !sole || !fits {
            return Err(
                "a constant added to a layer that has a bias, or is read elsewhere too".into(),
            );
        }
        *bias = true;
        layer
            .weights
            .push(("bias", tensor(&[units], data.to_vec())));
        let (layout, shape) = (x.layout, x.shape.clone());
        self.rename(node, x, layout, shape)
    }

    /// `x * s` (SE-blocks), and `x * sigmoid(x)`: swish.
    fn mul(&mut self, node: &NodeProto) -> Lowered {
        let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
        for (x, gate, gate_name) in [(&a, &b, &node.input[1]), (&b, &a, &node.input[0])] {
            if let Source::Layer(g) = gate.source {
                let layer = &self.layers[g];
                let sole = self.readers.get(gate_name).copied() == Some(1);
                if layer.op == Op::Activation(Activation::Sigmoid)
                    && layer.inputs == [x.source]
                    && sole
                {
                    self.layers[g].op = Op::Activation(Activation::Swish);
                    let (layout, shape) = (gate.layout, gate.shape.clone());
                    return self.rename(node, gate.clone(), layout, shape);
                }
            }
        }
        let (map, scale) = if b.shape.rank() <= a.shape.rank() {
            (a, b)
        } else {
            (b, a)
        };
        match (map.layout, scale.layout) {
            (Layout::Nchw, Layout::Nchw | Layout::Pooled)
            | (Layout::Vector { chw: None }, Layout::Vector { chw: None }) => {
                let layout = map.layout;
                self.push(node, Op::Multiply, vec![map, scale], vec![], layout)
            }
            _ => Err(format!(
                "a product of {:?} and {:?}",
                map.layout, scale.layout
            )),
        }
    }

    fn concat(&mut self, node: &NodeProto) -> Lowered {
        let inputs = (0..node.input.len())
            .map(|i| self.input(node, i))
            .collect::<Result<Vec<_>, _>>()?;
        let layout = same_layout(&inputs)?;
        let onnx_axis = read::int(node, "axis", 1);
        let axis = match (layout, onnx_axis) {
            (Layout::Nchw, 1 | -3) => 2,
            (Layout::Nchw, 2 | -2) => 0,
            (Layout::Nchw, 3 | -1) => 1,
            (Layout::Nhwc, a) if (1..4).contains(&a) => (a - 1) as usize,
            (Layout::Vector { chw: None }, 1 | -1) => 0,
            _ => {
                return Err(format!(
                    "a concatenation along axis {onnx_axis} of {layout:?}"
                ))
            }
        };
        self.push(node, Op::Concat { axis }, inputs, vec![], layout)
    }

    fn activation(&mut self, node: &NodeProto) -> Lowered {
        let x = self.input(node, 0)?;
        let activation = match node.op_type.as_str() {
            "Relu" => Activation::Relu,
            "Tanh" => Activation::Tanh,
            "Sigmoid" => Activation::Sigmoid,
            "HardSwish" => Activation::HardSwish,
            "Selu" => selu(node)?,
            "LeakyRelu" => Activation::LeakyRelu {
                alpha: read::number(node, "alpha", 0.01),
            },
            "Elu" => Activation::Elu {
                alpha: read::number(node, "alpha", 1.0),
            },
            "HardSigmoid" => hard_sigmoid(node)?,
            "Clip" => self.clip(node)?,
            _ => self.softmax(node, &x)?,
        };
        if let Activation::LeakyRelu { alpha } | Activation::Elu { alpha } = activation {
            if !alpha.is_finite() {
                return Err(format!("alpha {alpha}"));
            }
        }
        let layout = x.layout;
        self.push(node, Op::Activation(activation), vec![x], vec![], layout)
    }

    /// `Clip(0, 6)` is relu6, `Clip(0, inf)` relu.
    fn clip(&self, node: &NodeProto) -> Result<Activation, String> {
        let bound = |i: usize, attr: &str, default: f32| match self.constant(node, i) {
            Some(c) => c
                .floats()
                .and_then(|v| v.first().copied())
                .ok_or("a bound that is not a float scalar"),
            None if node.input.get(i).is_some_and(|n| !n.is_empty()) => {
                Err("a bound that is not constant")
            }
            None => Ok(read::float(node, attr, default)),
        };
        match (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?) {
            (low, high) if low == 0.0 && high == 6.0 => Ok(Activation::Relu6),
            (low, high) if low == 0.0 && high >= f32::MAX => Ok(Activation::Relu),
            (low, high) => Err(format!("a clip to [{low}, {high}]")),
        }
    }

    /// Softmax over the channels.
    fn softmax(&self, node: &NodeProto, x: &Value) -> Result<Activation, String> {
        let axis = read::int(node, "axis", -1);
        let over_channels = match x.layout {
            Layout::Nchw => axis == 1 || axis == -3,
            Layout::Nhwc => axis == 3 || axis == -1,
            Layout::Vector { chw: None } => axis == 1 || axis == -1,
            Layout::Vector { chw: Some(_) } | Layout::Pooled => false,
        };
        if over_channels {
            Ok(Activation::Softmax)
        } else {
            Err(format!("a softmax over axis {axis}, not the channels"))
        }
    }

    fn lrn(&mut self, node: &NodeProto) -> Lowered {
        let x = self.map(node, 0)?;
        let size = read::int(node, "size", 0);
        if size < 3 || size % 2 == 0 {
            return Err(format!(
                "a window of {size} channels (cnnc's is odd, 3 or more)"
            ));
        }
        let (alpha, beta, bias) = (
            read::number(node, "alpha", 1e-4),
            read::number(node, "beta", 0.75),
            read::number(node, "bias", 1.0),
        );
        if ![alpha, beta, bias].iter().all(|v| v.is_finite()) {
            return Err("alpha, beta or bias is not finite".into());
        }
        let op = Op::Lrn {
            depth_radius: (size as u64 - 1) / 2,
            bias,
            // ONNX scales the sum by alpha / size, TensorFlow by alpha.
            alpha: alpha / size as f64,
            beta,
        };
        self.push(node, op, vec![x], vec![], Layout::Nchw)
    }

    fn resize(&mut self, node: &NodeProto) -> Lowered {
        let x = self.map(node, 0)?;
        let scales = (1..node.input.len())
            .filter_map(|i| self.constant(node, i))
            .find_map(|c| c.floats().filter(|v| v.len() == 4))
            .ok_or("its scales are not 4 constant numbers")?;
        let factor = [scales[2], scales[3]];
        if scales[..2] != [1.0, 1.0] || factor.iter().any(|f| f.fract() != 0.0 || *f < 1.0) {
            return Err(format!(
                "scales {scales:?}: cnnc upsamples by whole factors"
            ));
        }
        let mode = read::string(node, "mode", "nearest");
        let transform = read::string(node, "coordinate_transformation_mode", "half_pixel");
        let nearest = read::string(node, "nearest_mode", "round_prefer_floor");
        let mode = match (mode.as_str(), transform.as_str(), nearest.as_str()) {
            ("nearest", "asymmetric", "floor") => Interpolation::Nearest,
            ("linear", "half_pixel" | "pytorch_half_pixel", _) => Interpolation::Bilinear,
            _ => return Err(format!("mode {mode} with {transform} coordinates")),
        };
        let op = Op::Upsample {
            factor: factor.map(|f| f as u64),
            mode,
        };
        self.push(node, op, vec![x], vec![], Layout::Nchw)
    }

    fn pad(&mut self, node: &NodeProto) -> Lowered {
        let x = self.map(node, 0)?;
        if read::string(node, "mode", "constant") != "constant" {
            return Err("a padding that is not constant".into());
        }
        let value = self
            .constant(node, 2)
            .and_then(Constant::floats)
            .and_then(|v| v.first().copied());
        if value.is_some_and(|v| v != 0.0) {
            return Err("a padding with a value other than zero".into());
        }
        let pads = read::ints(node, "pads")
            .or_else(|| {
                self.constant(node, 1)
                    .and_then(|c| c.ints().map(<[i64]>::to_vec))
            })
            .ok_or("no pads")?;
        let [0, 0, top, left, 0, 0, bottom, right] = pads[..] else {
            return Err(format!("pads {pads:?} beyond the spatial axes"));
        };
        let op = Op::Pad {
            top,
            bottom,
            left,
            right,
        };
        if op.pad_amounts().iter().any(|&a| a < 0) {
            return Err("negative pads (write a slice)".into());
        }
        self.push(node, op, vec![x], vec![], Layout::Nchw)
    }

    /// Slices of the channels (`channels`) or of the spatial axes (`cropping`).
    fn slice(&mut self, node: &NodeProto) -> Lowered {
        let x = self.input(node, 0)?;
        let list = |i: usize| {
            self.constant(node, i)
                .and_then(Constant::ints)
                .map(<[i64]>::to_vec)
        };
        let (starts, ends) = (
            list(1).ok_or("no constant starts")?,
            list(2).ok_or("no constant ends")?,
        );
        let axes = list(3).unwrap_or_else(|| (0..starts.len() as i64).collect());
        if list(4).is_some_and(|s| s.iter().any(|&s| s != 1))
            || starts.len() != ends.len()
            || axes.len() != starts.len()
        {
            return Err("steps other than 1, or lists of different lengths".into());
        }
        let dims = onnx_dims(&x)?;
        let rank = dims.len() as i64;
        let mut kept: Vec<(u64, u64)> = dims.iter().map(|&d| (0, d)).collect();
        for ((&s, &e), &a) in starts.iter().zip(&ends).zip(&axes) {
            let a = if a < 0 { a + rank } else { a };
            let d = *dims
                .get(usize::try_from(a).map_err(|_| "an axis out of range")?)
                .ok_or("an axis out of range")? as i64;
            let clamp = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d) as u64;
            kept[a as usize] = (clamp(s), clamp(e));
        }
        if kept.iter().any(|(s, e)| s >= e) || kept[0] != (0, dims[0]) {
            return Err("an empty slice, or one of the batch".into());
        }
        let channel_axis = match x.layout {
            Layout::Nchw => 1,
            Layout::Nhwc => 3,
            Layout::Vector { chw: None } => 1,
            Layout::Vector { chw: Some(_) } | Layout::Pooled => {
                return Err("a slice of a flattened map".into())
            }
        };
        let spatial: Vec<usize> = (1..dims.len()).filter(|&a| a != channel_axis).collect();
        let spatial_cut = spatial.iter().any(|&a| kept[a] != (0, dims[a]));
        let channel_cut = kept[channel_axis] != (0, dims[channel_axis]);
        let layout = x.layout;
        match (spatial_cut, channel_cut) {
            (false, _) => {
                let (start, end) = kept[channel_axis];
                let op = Op::ChannelSlice {
                    start: start as i64,
                    end: end as i64,
                };
                self.push(node, op, vec![x], vec![], layout)
            }
            (true, false) if layout == Layout::Nchw => {
                let [(t, b), (l, r)] = [kept[2], kept[3]];
                let op = Op::Pad {
                    top: -(t as i64),
                    bottom: -((dims[2] - b) as i64),
                    left: -(l as i64),
                    right: -((dims[3] - r) as i64),
                };
                self.push(node, op, vec![x], vec![], layout)
            }
            _ => Err("a slice of channels and of positions at once".into()),
        }
    }
}

/// The flag saying whether `op` adds a bias, for the layers whose bias
/// ONNX may write as a separate `Add` (PyTorch's `MatMul` then `Add`).
fn bias_flag(op: &mut Op) -> Option<&mut bool> {
    match op {
        Op::Dense { bias, .. } | Op::Conv2d { bias, .. } => Some(bias),
        Op::Input { .. }
        | Op::ConvTranspose2d { .. }
        | Op::DepthwiseConv2d { .. }
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
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => None,
    }
}

/// The ONNX dimensions of `x` (batch as 1).
fn onnx_dims(x: &Value) -> Result<Vec<u64>, String> {
    let s = &x.shape.0;
    Ok(match x.layout {
        Layout::Nchw => vec![1, s[2], s[0], s[1]],
        Layout::Nhwc => vec![1, s[0], s[1], s[2]],
        Layout::Vector { .. } => std::iter::once(1).chain(s.iter().copied()).collect(),
        Layout::Pooled => vec![1, s.first().copied().unwrap_or(1), 1, 1],
    })
}

fn same_layout(inputs: &[Value]) -> Result<Layout, String> {
    let layout = inputs.first().ok_or("no inputs")?.layout;
    if inputs.iter().all(|v| v.layout == layout) {
        Ok(layout)
    } else {
        Err("inputs laid out differently".into())
    }
}

fn selu(node: &NodeProto) -> Result<Activation, String> {
    let (alpha, gamma) = (
        read::float(node, "alpha", 1.673_263_2),
        read::float(node, "gamma", 1.050_701),
    );
    if (alpha - 1.673_263_2).abs() < 1e-6 && (gamma - 1.050_701).abs() < 1e-6 {
        Ok(Activation::Selu)
    } else {
        Err(format!("a selu with alpha {alpha}, gamma {gamma}"))
    }
}

fn hard_sigmoid(node: &NodeProto) -> Result<Activation, String> {
    let (alpha, beta) = (
        read::float(node, "alpha", 0.2),
        read::float(node, "beta", 0.5),
    );
    if (alpha - 1.0 / 6.0).abs() < 1e-6 && beta == 0.5 {
        Ok(Activation::HardSigmoid)
    } else {
        Err(format!(
            "a hard sigmoid with alpha {alpha}, beta {beta} (cnnc's is Keras 3's: 1/6, 0.5)"
        ))
    }
}

/// A feature map's `[h, w, c]`.
fn hwc(shape: &Shape) -> [u64; 3] {
    [shape.0[0], shape.0[1], shape.0[2]]
}

/// A 4-D kernel's dimensions.
fn kernel4(w: &Constant) -> Result<(u64, u64, u64, u64), String> {
    match w.dims[..] {
        [a, b, c, d] if a * b * c * d > 0 => Ok((a, b, c, d)),
        _ => Err(format!("a kernel of dimensions {:?}", w.dims)),
    }
}

/// The largest stride, dilation or window side read: far beyond any real
/// model, and small enough that window arithmetic cannot overflow.
const MAX_WINDOW: u64 = 1 << 20;

fn positive(v: i64, what: &str) -> Result<u64, String> {
    u64::try_from(v)
        .ok()
        .filter(|&v| v > 0 && v <= MAX_WINDOW)
        .ok_or(format!("{what} {v} (cnnc reads 1 to 2^20)"))
}

/// A two-number attribute (`strides`, `dilations`, `kernel_shape`), or
/// `default` for both when absent.
fn pair(node: &NodeProto, name: &str, default: u64) -> Result<[u64; 2], String> {
    match read::ints(node, name) {
        None => Ok([default; 2]),
        Some(v) if v.len() == 2 => Ok([positive(v[0], name)?, positive(v[1], name)?]),
        Some(v) => Err(format!("{name} {v:?} is not two numbers")),
    }
}

/// A convolution's or pooling's window: stride, dilation and padding in
/// cnnc's terms (`same` where the pads are TensorFlow's).
struct Window {
    stride: [u64; 2],
    dilation: [u64; 2],
    padding: Padding,
    ceil: bool,
}

impl Window {
    fn read(node: &NodeProto, input: &Shape, kernel: [u64; 2]) -> Result<Window, String> {
        let stride = pair(node, "strides", 1)?;
        let dilation = pair(node, "dilations", 1)?;
        let ceil = read::int(node, "ceil_mode", 0) != 0;
        let auto = read::string(node, "auto_pad", "NOTSET");
        let same: Vec<(u64, u64)> = (0..2)
            .map(|a| same_padding(input.0[a], kernel[a], stride[a], dilation[a]))
            .collect();
        let pads: [u64; 4] = match auto.as_str() {
            "SAME_UPPER" => [same[0].0, same[1].0, same[0].1, same[1].1],
            "VALID" => [0; 4],
            "NOTSET" => {
                let v = read::ints(node, "pads").unwrap_or(vec![0; 4]);
                let v: Vec<u64> = v
                    .iter()
                    .filter_map(|&p| u64::try_from(p).ok())
                    .filter(|&p| p <= ops::MAX_PAD)
                    .collect();
                v.try_into()
                    .map_err(|_| "pads are not 4 non-negative numbers")?
            }
            other => return Err(format!("auto_pad {other}")),
        };
        let [top, left, bottom, right] = pads;
        let is_same =
            !ceil && [(top, bottom), (left, right)] == [same[0], same[1]] && pads != [0; 4];
        let padding = if is_same {
            Padding::Same
        } else {
            Padding::explicit([[top, bottom], [left, right]], false)
        };
        Ok(Window {
            stride,
            dilation,
            padding,
            ceil,
        })
    }
}

/// The `same` or `valid` padding (and output padding) of a transposed
/// convolution from `input` to `output` whose padding before is `before`.
fn transposed_padding(
    input: [u64; 2],
    output: [u64; 2],
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    before: [i64; 2],
) -> Option<(Padding, Option<[u64; 2]>)> {
    let fits = |padding: Padding, extra: Option<[u64; 2]>| {
        (0..2).all(|a| {
            let size = transposed_output_size(
                input[a],
                kernel[a],
                stride[a],
                dilation[a],
                padding,
                extra.map(|e| e[a]),
            );
            let placed = match padding {
                Padding::Same => {
                    same_padding(output[a], kernel[a], stride[a], dilation[a]).0 as i64
                }
                Padding::Valid | Padding::Explicit { .. } => 0,
            };
            size == Some(output[a]) && placed == before[a]
        })
    };
    for padding in [Padding::Same, Padding::Valid] {
        if fits(padding, None) {
            return Some((padding, None));
        }
        for y in 0..stride[0].min(64) {
            for x in 0..stride[1].min(64) {
                if fits(padding, Some([y, x])) {
                    return Some((padding, Some([y, x])));
                }
            }
        }
    }
    None
}

fn tensor(dims: &[u64], data: Vec<f32>) -> Tensor {
    Tensor {
        shape: dims.iter().map(|&d| d as usize).collect(),
        data,
    }
}

/// `data` of `shape` with its axes permuted by `perm` (output axis `k` is
/// input axis `perm[k]`).
pub fn permute(data: &[f32], shape: &[u64], perm: &[usize]) -> Vec<f32> {
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    super::super::permute(data, &shape, perm).0
}

/// The operators of a chain `cnnc export` writes for one cnnc op, and
/// what the chain is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Composite {
    Gelu { approximate: bool },
    Mish,
    ScaleBias,
    Rbf,
    DepthMaxPool,
    Reshape,
}

impl Composite {
    fn of(ops: &[&str]) -> Option<Composite> {
        Some(match ops {
            ["Div", "Erf", "Add", "Mul", "Mul"] => Composite::Gelu { approximate: false },
            ["Mul", "Mul", "Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul"] => {
                Composite::Gelu { approximate: true }
            }
            ["Softplus", "Tanh", "Mul"] => Composite::Mish,
            ["Mul", "Add"] => Composite::ScaleBias,
            ["Unsqueeze", "Sub", "Mul", "ReduceSum"] => Composite::Rbf,
            ["Reshape", "ReduceMax"] => Composite::DepthMaxPool,
            ["Transpose", "Reshape", "Transpose"]
            | ["Transpose", "Reshape"]
            | ["Reshape", "Transpose"] => Composite::Reshape,
            _ => return None,
        })
    }
}

impl Lowering<'_> {
    /// Lowers `chain` (nodes named `P/...` then `P`, as `cnnc export`
    /// writes one op as several) as the one op it is, or `None` when the
    /// chain is not one of those.
    pub fn composite(&mut self, chain: &[&NodeProto]) -> Option<Result<(), Unsupported>> {
        let ops: Vec<&str> = chain.iter().map(|n| n.op_type.as_str()).collect();
        let composite = Composite::of(&ops)?;
        let (first, last) = (chain[0], chain[chain.len() - 1]);
        let result = self.lower_composite(composite, chain, first, last);
        Some(result.map_err(|reason| Unsupported {
            node: last.name.clone(),
            op_type: format!("{composite:?} ({})", ops.join(", ")),
            reason,
        }))
    }

    fn lower_composite(
        &mut self,
        composite: Composite,
        chain: &[&NodeProto],
        first: &NodeProto,
        last: &NodeProto,
    ) -> Lowered {
        let x = self.input(first, 0)?;
        let layout = x.layout;
        let (op, weights) = match composite {
            Composite::Gelu { approximate } => {
                (Op::Activation(Activation::Gelu { approximate }), vec![])
            }
            Composite::Mish => (Op::Activation(Activation::Mish), vec![]),
            Composite::ScaleBias => {
                let c = x.shape.channels();
                let coefficient = self.per_channel(first, c)?;
                let bias = self.per_channel(last, c)?;
                (
                    Op::ScaleBias,
                    vec![("coefficient", coefficient), ("bias", bias)],
                )
            }
            Composite::Rbf => {
                let centers = self
                    .constant(chain[1], 1)
                    .ok_or("its centres are not constant")?;
                let [inputs, units] = centers.dims[..] else {
                    return Err("its centres are not a matrix".into());
                };
                if x.shape.0 != [inputs] {
                    return Err(format!("centres of {inputs} features for {:?}", x.shape.0));
                }
                let data = centers
                    .floats()
                    .ok_or("its centres are not float")?
                    .to_vec();
                (
                    Op::Rbf { units },
                    vec![("centers", tensor(&[inputs, units], data))],
                )
            }
            Composite::DepthMaxPool => {
                let shape = self
                    .constant(first, 1)
                    .and_then(Constant::ints)
                    .ok_or("no constant shape")?;
                let size = shape
                    .get(2)
                    .and_then(|&s| u64::try_from(s).ok())
                    .ok_or("no group size")?;
                (Op::DepthMaxPool { size }, vec![])
            }
            Composite::Reshape => {
                let reshape = chain
                    .iter()
                    .find(|n| n.op_type == "Reshape")
                    .expect("the pattern has one");
                let shape = self
                    .constant(reshape, 1)
                    .and_then(Constant::ints)
                    .ok_or("no constant shape")?;
                (
                    Op::Reshape {
                        shape: shape.iter().skip(1).copied().collect(),
                    },
                    vec![],
                )
            }
        };
        let shapes = [&x.shape];
        let output_rank = ops::infer(&op, &shapes).map_err(|e| e.to_string())?.rank();
        let layout = match (composite, output_rank) {
            (Composite::Reshape, 3) => Layout::Nchw,
            (Composite::Reshape, _) => Layout::Vector { chw: None },
            _ => layout,
        };
        self.push(last, op, vec![x], weights, layout)
    }

    /// A constant input of `node` holding one value per channel.
    fn per_channel(&self, node: &NodeProto, channels: u64) -> Result<Tensor, String> {
        let c = (0..2)
            .find_map(|i| self.constant(node, i))
            .ok_or("no constant factor")?;
        let data = c.floats().ok_or("not float")?;
        if data.len() as u64 != channels {
            return Err(format!("{} values for {channels} channels", data.len()));
        }
        Ok(tensor(&[channels], data.to_vec()))
    }
}
