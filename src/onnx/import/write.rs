//! Imported layers as `.cnn` text a person would write: one layer call a
//! line on the current tensor, an activation folded into the layer before
//! it, `let` only for tensors read again later, `+`, `*` and `concat` for
//! joins, layers with weights named after their ONNX nodes.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
use onnx_protobuf::type_proto::Value as Type;
use onnx_protobuf::ValueInfoProto;

use super::{ImportOptions, Imported, Layer, Source};
use crate::graph::{Activation, Interpolation, Op, Padding, PoolKind};
use crate::runtime::weights::TensorStore;

/// The per-example dimensions of a graph input or output (after its batch
/// axis), each a fixed positive number.
pub fn fixed_dims(value: &ValueInfoProto) -> Result<Vec<u64>, String> {
    let Some(Type::TensorType(tensor)) = &value.type_.value else {
        return Err(format!("`{}` is not a tensor", value.name));
    };
    let dims: Vec<Option<u64>> = tensor
        .shape
        .dim
        .iter()
        .skip(1)
        .map(|d| match &d.value {
            Some(Dim::DimValue(v)) => u64::try_from(*v).ok().filter(|&v| v > 0),
            _ => None,
        })
        .collect();
    if tensor.shape.dim.is_empty() || dims.iter().any(Option::is_none) {
        return Err(format!(
            "`{}` has no fixed size after its batch axis; cnnc models have fixed input sizes",
            value.name
        ));
    }
    Ok(dims.into_iter().flatten().collect())
}

/// The text and weights of `layers`, whose outputs are `outputs`.
pub fn write(
    layers: &[Layer],
    outputs: &[(String, Source)],
    input: &[u64],
    options: &ImportOptions,
) -> Imported {
    let mut model = identifier(options.model, &HashSet::new()).unwrap_or_else(|| "imported".into());
    // A model may not take a layer's, function's or keyword's name.
    while reserved(&model) {
        model += "_";
    }
    let names = layer_names(layers);
    let folded = folded(layers, outputs);
    // The file's name on one line, whatever characters it holds.
    let source: String = options
        .source
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let mut text = format!("# Imported from {source} by cnnc import.\n\n");
    let dims: Vec<String> = input.iter().map(u64::to_string).collect();
    writeln!(text, "model {model} : [{}] {{", dims.join(", ")).expect("a String takes writes");
    let mut body = Body::new(layers, outputs, &folded, &names);
    body.write_all();
    text += &body.text;
    text += "}\n";
    let mut weights = TensorStore::new();
    for (i, layer) in layers.iter().enumerate() {
        // A trainable pooling's scale is its `scale` part.
        let path = match (&layer.op, folded.get(&i)) {
            (Op::ScaleBias, Some(&host)) => format!("{}.scale", names[host]),
            _ => names[i].clone(),
        };
        for (local, tensor) in &layer.weights {
            weights.insert(format!("{path}.{local}"), tensor.clone());
        }
    }
    Imported {
        text,
        weights,
        model,
    }
}

/// The statements of the model's body, as they are written.
struct Body<'a> {
    layers: &'a [Layer],
    outputs: &'a [(String, Source)],
    /// Activations written as the `activation:` of the layer before them:
    /// the activation's index -> that layer's.
    folded: &'a HashMap<usize, usize>,
    names: &'a [String],
    /// The statements in order: the layers not folded.
    order: Vec<usize>,
    /// How many statements and outputs read each tensor.
    uses: HashMap<Source, usize>,
    /// Tensors bound by `let`, by name.
    bound: HashMap<Source, String>,
    current: Source,
    text: String,
}

impl<'a> Body<'a> {
    fn new(
        layers: &'a [Layer],
        outputs: &'a [(String, Source)],
        folded: &'a HashMap<usize, usize>,
        names: &'a [String],
    ) -> Self {
        let order: Vec<usize> = (0..layers.len())
            .filter(|i| !folded.contains_key(i))
            .collect();
        let mut uses = HashMap::new();
        for &i in &order {
            for s in &layers[i].inputs {
                *uses.entry(resolve(*s, folded)).or_insert(0) += 1;
            }
        }
        for (_, s) in outputs {
            *uses.entry(resolve(*s, folded)).or_insert(0) += 1;
        }
        Body {
            layers,
            outputs,
            folded,
            names,
            order,
            uses,
            bound: HashMap::new(),
            current: Source::Input,
            text: String::new(),
        }
    }

    fn write_all(&mut self) {
        if self.needs_binding(Source::Input, self.order.first().copied()) {
            self.bind(Source::Input, "image".into());
        }
        for k in 0..self.order.len() {
            let i = self.order[k];
            let statement = self.statement(i);
            self.line(&statement);
            self.current = Source::Layer(i);
            let next = self.order.get(k + 1).copied();
            if self.needs_binding(Source::Layer(i), next) {
                let name = format!("{}_out", self.names[i]);
                self.bind(Source::Layer(i), name);
            }
        }
        // One output that is the last statement's needs no statement when
        // it is named `output`, cnnc's name for an unnamed one.
        if let [(name, source)] = self.outputs {
            if name == "output" && resolve(*source, self.folded) == self.current {
                return;
            }
        }
        let mut taken: HashSet<String> = self.bound.values().cloned().collect();
        for (name, source) in self.outputs {
            let source = resolve(*source, self.folded);
            let expression = self.expression(source);
            let base = identifier(name, &taken).unwrap_or_else(|| "out".into());
            let mut name = base.clone();
            while reserved(&name) || taken.contains(&name) {
                name += "_";
            }
            taken.insert(name.clone());
            self.line(&format!("output {name} = {expression}"));
        }
    }

    /// Whether `source` is read by anything but the statement `next`
    /// (through the current tensor), or more than once.
    fn needs_binding(&self, source: Source, next: Option<usize>) -> bool {
        let uses = self.uses.get(&source).copied().unwrap_or(0);
        let read_next = next.is_some_and(|n| {
            self.layers[n]
                .inputs
                .iter()
                .any(|s| resolve(*s, self.folded) == source)
        });
        let last_output = next.is_none()
            && self
                .outputs
                .iter()
                .any(|(_, s)| resolve(*s, self.folded) == source);
        uses > 1 || (uses == 1 && !read_next && !last_output)
    }

    fn bind(&mut self, source: Source, name: String) {
        self.line(&format!("let {name} = current"));
        self.bound.insert(source, name);
    }

    fn expression(&self, source: Source) -> String {
        if source == self.current {
            "current".into()
        } else {
            self.bound
                .get(&source)
                .cloned()
                .unwrap_or_else(|| "current".into())
        }
    }

    fn statement(&self, i: usize) -> String {
        let layer = &self.layers[i];
        let inputs: Vec<String> = layer
            .inputs
            .iter()
            .map(|s| self.expression(resolve(*s, self.folded)))
            .collect();
        // Joins are expressions; every other op is a layer call.
        match role(&layer.op) {
            Role::Join(operator) => inputs.join(operator),
            Role::Concat(axis) => {
                // cnnc joins on the last axis unless told otherwise.
                let axis = if axis + 1 == layer.rank {
                    String::new()
                } else {
                    format!(", axis: {axis}")
                };
                format!("concat({}{axis})", inputs.join(", "))
            }
            Role::Activation { .. } | Role::Scale | Role::Host { .. } | Role::Call => {
                self.layer_call(i, inputs.first())
            }
        }
    }

    /// Layer `i` as a call: its folded activation and scale in its
    /// arguments, its name if it holds weights, on `input` unless that is
    /// the current tensor.
    fn layer_call(&self, i: usize, input: Option<&String>) -> String {
        let layer = &self.layers[i];
        let members: Vec<&Op> = self
            .folded
            .iter()
            .filter(|(_, &on)| on == i)
            .map(|(&a, _)| &self.layers[a].op)
            .collect();
        let activation = members
            .iter()
            .copied()
            .find(|op| matches!(role(op), Role::Activation { .. }));
        let trainable = members.contains(&&Op::ScaleBias);
        let mut call = call(&layer.op, activation, trainable);
        if !layer.weights.is_empty() || trainable {
            call += &format!(" as {}", self.names[i]);
        }
        match input {
            Some(x) if x != "current" => format!("{x} -> {call}"),
            _ => call,
        }
    }

    fn line(&mut self, line: &str) {
        self.text += "    ";
        self.text += line;
        self.text += "\n";
    }
}

/// How the writer treats an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An operator between tensors (`+`, `*`).
    Join(&'static str),
    /// `concat(...)` along this axis.
    Concat(usize),
    /// An activation, folded into the layer before it where that takes
    /// one and it has no arguments (`plain`).
    Activation {
        /// Whether it is written by its name alone.
        plain: bool,
    },
    /// LeNet's scale and bias, folded into the average pooling before it.
    Scale,
    /// A layer that takes an `activation:` argument (an average pooling
    /// only with its scale: `pooling`).
    Host {
        /// Whether it is an average pooling.
        pooling: bool,
    },
    /// Any other layer call.
    Call,
}

fn role(op: &Op) -> Role {
    match op {
        Op::Add => Role::Join(" + "),
        Op::Multiply => Role::Join(" * "),
        Op::Concat { axis } => Role::Concat(*axis),
        Op::Activation(a) => Role::Activation {
            plain: activation_arguments(a).is_empty(),
        },
        Op::ScaleBias => Role::Scale,
        Op::Conv2d { .. }
        | Op::DepthwiseConv2d { .. }
        | Op::ConvTranspose2d { .. }
        | Op::Dense { .. } => Role::Host { pooling: false },
        Op::Pool2d {
            kind: PoolKind::Avg,
            ..
        } => Role::Host { pooling: true },
        Op::Pool2d {
            kind: PoolKind::Max,
            ..
        }
        | Op::Input { .. }
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
        | Op::Rbf { .. }
        | Op::Labels { .. }
        | Op::Upstream { .. }
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. }
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => Role::Call,
    }
}

/// The activation layers written as the `activation:` of the layer they
/// read: the activation's index -> the layer's.
fn folded(layers: &[Layer], outputs: &[(String, Source)]) -> HashMap<usize, usize> {
    let mut readers: HashMap<Source, usize> = HashMap::new();
    for layer in layers {
        for s in &layer.inputs {
            *readers.entry(*s).or_insert(0) += 1;
        }
    }
    for (_, s) in outputs {
        *readers.entry(*s).or_insert(0) += 1;
    }
    let mut folded: HashMap<usize, usize> = HashMap::new();
    for (a, layer) in layers.iter().enumerate() {
        let [Source::Layer(on)] = layer.inputs.as_slice() else {
            continue;
        };
        if readers.get(&Source::Layer(*on)) != Some(&1) {
            continue;
        }
        // Where `on` is itself folded (a scale after a pooling), its host.
        let host = folded.get(on).copied().unwrap_or(*on);
        let fits = match (role(&layer.op), role(&layers[host].op)) {
            // An activation with arguments is not an `activation:`; a
            // pooling takes one only after its scale.
            (Role::Activation { plain }, Role::Host { pooling }) => {
                plain && (!pooling || folded.contains_key(on))
            }
            (Role::Scale, Role::Host { pooling: true }) => host == *on,
            _ => false,
        };
        if fits {
            folded.insert(a, host);
        }
    }
    folded
}

/// The source a folded activation's output stands for: the layer that
/// now writes it.
fn resolve(source: Source, folded: &HashMap<usize, usize>) -> Source {
    match source {
        Source::Layer(i) => Source::Layer(folded.get(&i).copied().unwrap_or(i)),
        Source::Input => Source::Input,
    }
}

/// Layer `as` names: the ONNX node names made identifiers, unique, and
/// never a name the language gives a layer, function or keyword.
fn layer_names(layers: &[Layer]) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::new();
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let base = identifier(&node_path(&layer.node), &taken)
                .unwrap_or_else(|| format!("{}{}", layer.op.name(), i + 1));
            let mut name = base.clone();
            let mut n = 2;
            while taken.contains(&name) || reserved(&name) {
                name = format!("{base}_{n}");
                n += 1;
            }
            taken.insert(name.clone());
            name
        })
        .collect()
}

/// The module path in PyTorch's node names, without the operator:
/// `/block2/conv1/Conv` is `block2.conv1`, and `/layer1/layer1.0/conv1/Conv`
/// is `layer1.0.conv1` (a part repeated at the start of the next is
/// dropped); other names as they are.
fn node_path(name: &str) -> String {
    if !name.starts_with('/') {
        return name.to_string();
    }
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    let Some((_, modules)) = parts.split_last() else {
        return String::new();
    };
    if modules.is_empty() {
        return parts[0].to_string();
    }
    let kept: Vec<&str> = modules
        .iter()
        .enumerate()
        .filter(|(i, part)| {
            modules
                .get(i + 1)
                .is_none_or(|next| !next.starts_with(&format!("{part}.")))
        })
        .map(|(_, part)| *part)
        .collect();
    kept.join(".")
}

/// `name` as an identifier: letters, digits and `_` (others become `_`),
/// starting with a letter; `None` if nothing is left.
fn identifier(name: &str, _taken: &HashSet<String>) -> Option<String> {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    let out = out.trim_matches('_').to_string();
    match out.chars().next() {
        None => None,
        Some(c) if c.is_ascii_alphabetic() => Some(out),
        Some(_) => Some(format!("n{out}")),
    }
}

/// Names the language keeps for itself.
fn reserved(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "model", "block", "train", "use", "let", "output", "for", "in", "if", "else", "current",
        "true", "false", "and", "or", "not", "as", "input", "int", "round", "floor", "ceil", "min",
        "max", "len", "sum",
    ];
    WORDS.contains(&name)
        || crate::elaborate::layers::LAYERS
            .iter()
            .any(|(l, _)| *l == name)
        || crate::elaborate::layers::ACTIVATIONS.contains(&name)
}

/// The arguments an activation needs beyond its name.
fn activation_arguments(activation: &Activation) -> String {
    match activation {
        Activation::LeakyRelu { alpha } | Activation::Elu { alpha } => {
            format!("alpha: {}", tidy(*alpha))
        }
        Activation::Gelu { approximate: true } => "approximate: true".into(),
        Activation::Relu
        | Activation::Selu
        | Activation::Tanh
        | Activation::Sigmoid
        | Activation::Relu6
        | Activation::Swish
        | Activation::Gelu { approximate: false }
        | Activation::HardSigmoid
        | Activation::HardSwish
        | Activation::Mish
        | Activation::Softmax => String::new(),
    }
}

/// A number with the digits f32 holds: `1e-5` rather than
/// `9.999999747378752e-6`.
fn tidy(x: f64) -> String {
    let short: f64 = format!("{x:.6e}").parse().unwrap_or(x);
    format!("{short}")
}

fn pair(p: [u64; 2]) -> String {
    if p[0] == p[1] {
        p[0].to_string()
    } else {
        format!("[{}, {}]", p[0], p[1])
    }
}

fn padding(p: Padding) -> Option<String> {
    match p {
        Padding::Same => Some("padding: same".into()),
        Padding::Valid => None,
        Padding::Explicit {
            pads: [[t, b], [l, r]],
            ceil,
        } => {
            let pads = if [t, b, l, r] == [0; 4] {
                None
            } else {
                Some(format!("padding: [{t}, {b}, {l}, {r}]"))
            };
            let ceil = ceil.then(|| "ceil_mode: true".to_string());
            let parts: Vec<String> = pads.into_iter().chain(ceil).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        }
    }
}

/// A sliding window's arguments that differ from the defaults: stride,
/// padding, dilation.
fn window_args(stride: [u64; 2], p: Padding, dilation: [u64; 2]) -> Vec<String> {
    let mut args = Vec::new();
    if stride != [1, 1] {
        args.push(format!("stride: {}", pair(stride)));
    }
    args.extend(padding(p));
    if dilation != [1, 1] {
        args.push(format!("dilation: {}", pair(dilation)));
    }
    args
}

/// The layer call of `op`, with its activation folded in (and, for an
/// average pooling, LeNet's trainable scale and bias).
fn call(op: &Op, activation: Option<&Op>, trainable: bool) -> String {
    let mut args: Vec<String> = Vec::new();
    let mut push = |cond: bool, text: String| {
        if cond {
            args.push(text);
        }
    };
    let layer = match op {
        Op::Conv2d {
            filters,
            kernel,
            stride,
            padding: p,
            dilation,
            bias,
            groups,
        } => {
            push(true, filters.to_string());
            push(true, pair(*kernel));
            window_args(*stride, *p, *dilation)
                .into_iter()
                .for_each(|a| push(true, a));
            push(*groups != 1, format!("groups: {groups}"));
            push(!bias, "use_bias: false".into());
            "conv"
        }
        Op::DepthwiseConv2d {
            multiplier,
            kernel,
            stride,
            padding: p,
            dilation,
            bias,
        } => {
            push(true, pair(*kernel));
            window_args(*stride, *p, *dilation)
                .into_iter()
                .for_each(|a| push(true, a));
            push(*multiplier != 1, format!("multiplier: {multiplier}"));
            push(!bias, "use_bias: false".into());
            "depthwise_conv"
        }
        Op::ConvTranspose2d {
            filters,
            kernel,
            stride,
            padding: p,
            output_padding,
            dilation,
            bias,
        } => {
            push(true, filters.to_string());
            push(true, pair(*kernel));
            window_args(*stride, *p, *dilation)
                .into_iter()
                .for_each(|a| push(true, a));
            if let Some(extra) = output_padding {
                push(true, format!("output_padding: {}", pair(*extra)));
            }
            push(!bias, "use_bias: false".into());
            "conv_transpose"
        }
        Op::Dense { units, bias } => {
            push(true, units.to_string());
            push(!bias, "use_bias: false".into());
            "dense"
        }
        Op::Pool2d {
            kind,
            size,
            stride,
            padding: p,
        } => {
            push(true, pair(*size));
            push(stride != size, format!("stride: {}", pair(*stride)));
            padding(*p).into_iter().for_each(|a| push(true, a));
            match kind {
                PoolKind::Max => "maxpool",
                PoolKind::Avg => "avgpool",
            }
        }
        Op::GlobalPool {
            kind: PoolKind::Avg,
        } => "global_avg_pool",
        Op::GlobalPool {
            kind: PoolKind::Max,
        } => "global_max_pool",
        Op::Flatten => "flatten",
        Op::BatchNorm {
            momentum,
            epsilon,
            center,
            scale,
        } => {
            push(*momentum != 0.99, format!("momentum: {}", tidy(*momentum)));
            push(*epsilon != 0.001, format!("epsilon: {}", tidy(*epsilon)));
            push(!center, "center: false".into());
            push(!scale, "scale: false".into());
            "batchnorm"
        }
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => {
            push(true, format!("depth_radius: {depth_radius}"));
            push(true, format!("bias: {}", tidy(*bias)));
            push(true, format!("alpha: {}", tidy(*alpha)));
            push(true, format!("beta: {}", tidy(*beta)));
            "lrn"
        }
        Op::Activation(a) => {
            let extra = activation_arguments(a);
            push(!extra.is_empty(), extra);
            a.name()
        }
        Op::Upsample { factor, mode } => {
            push(*factor != [2, 2], pair(*factor));
            push(*mode == Interpolation::Bilinear, "mode: bilinear".into());
            "upsample"
        }
        Op::Pad { .. } => {
            let amounts = op.pad_amounts();
            let cropping = amounts.iter().any(|&a| a < 0);
            let [t, b, l, r] = amounts.map(i64::abs);
            push(true, format!("[{t}, {b}, {l}, {r}]"));
            if cropping {
                "cropping"
            } else {
                "zero_padding"
            }
        }
        Op::ChannelSlice { start, end } => {
            push(true, format!("{start}, {end}"));
            "channels"
        }
        Op::DepthMaxPool { size } => {
            push(true, size.to_string());
            "depth_maxpool"
        }
        Op::Reshape { shape } => {
            let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
            push(true, format!("[{}]", dims.join(", ")));
            "reshape"
        }
        Op::Dropout { rate } => {
            push(true, tidy(*rate));
            "dropout"
        }
        // The lowering writes these ops as expressions (add, multiply,
        // concat) or never produces them; a name that does not parse
        // makes the compile check report it.
        Op::Rbf { units } => {
            push(true, units.to_string());
            "rbf"
        }
        Op::Input { .. }
        | Op::ScaleBias
        | Op::Add
        | Op::Concat { .. }
        | Op::Multiply
        | Op::Labels { .. }
        | Op::Upstream { .. }
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. }
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => "__unwritable__",
    };
    if trainable {
        args.push("trainable: true".into());
    }
    if let Some(Op::Activation(a)) = activation {
        args.push(format!("activation: {}", a.name()));
    }
    if args.is_empty() {
        layer.to_string()
    } else {
        format!("{layer}({})", args.join(", "))
    }
}
