//! Keeps `docs/adding-an-op.md` true, and checks that every op has every
//! rule: a name, an arity, a way to be written in `.cnn`, a shape rule, a
//! gradient rule and a lowering, forward and backward.

use std::collections::HashSet;
use std::mem::discriminant;
use std::path::PathBuf;

use cnnc::autodiff::{self, LossSpec};
use cnnc::config::TrainConfig;
use cnnc::diagnostics::Span;
use cnnc::elaborate::layers::{
    self, Arg, ArgSpec, Args, DefaultValue, Kind, Layer, Written, LAYERS,
};
use cnnc::graph::{
    Activation, Graph, Init, Interpolation, Node, Op, Padding, Param, PoolKind, Shape,
};
use cnnc::ops::{self, GradInputs};
use cnnc::passes::lower::{self, Mode};
use petgraph::stable_graph::NodeIndex;

const WALKTHROUGH: &str = include_str!("../docs/adding-an-op.md");

/// The variant every exhaustive rule over `Op` names, so every file that
/// holds such a rule names it too.
const MARKER: &str = "Op::Lrn";

/// One numbered step of the walkthrough: the files it names and the other
/// code spans (items that must be found in those files).
#[derive(Debug, Default)]
struct Step {
    text: String,
    paths: Vec<String>,
    items: Vec<String>,
}

/// The walkthrough's numbered steps, each with its continuation lines.
fn steps() -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_step = false;
    for line in WALKTHROUGH.lines() {
        let starts = line
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if starts {
            steps.push(Step::default());
            in_step = true;
        } else if line.trim().is_empty() || line.starts_with('#') {
            in_step = false;
        }
        if let (true, Some(step)) = (in_step, steps.last_mut()) {
            step.text.push_str(line);
            step.text.push('\n');
        }
    }
    for step in &mut steps {
        // Code spans are the odd pieces between backticks.
        for span in step.text.split('`').skip(1).step_by(2) {
            if is_path(span) {
                step.paths.push(span.to_string());
            } else if span.chars().any(|c| c.is_ascii_alphabetic()) {
                step.items.push(span.to_string());
            }
        }
    }
    steps
}

/// Whether a code span names a file or folder of the repository.
fn is_path(span: &str) -> bool {
    let extensions = [".rs", ".md", ".pest", ".cnn"];
    span.contains('/')
        && !span.contains(' ')
        && (span.ends_with('/') || extensions.iter().any(|e| span.ends_with(e)))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, relative to the repository, sorted.
fn rust_files(dir: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![root().join(dir)];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("a readable folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root()).expect("under the root");
                files.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_walkthrough_names_files_and_items_that_exist() {
    let steps = steps();
    assert!(steps.len() >= 9, "found {} steps", steps.len());
    for step in &steps {
        assert!(
            !step.paths.is_empty(),
            "a step names no file:\n{}",
            step.text
        );
        let mut text = String::new();
        for path in &step.paths {
            assert!(root().join(path).exists(), "`{path}` does not exist");
            if !path.ends_with('/') {
                text.push_str(&read(path));
            }
        }
        for item in &step.items {
            assert!(
                text.contains(item.as_str()),
                "`{item}` is in none of {:?}",
                step.paths
            );
        }
    }
}

#[test]
fn every_file_with_a_rule_over_op_is_in_the_walkthrough() {
    let listed: HashSet<String> = steps().into_iter().flat_map(|s| s.paths).collect();
    let mut files = rust_files("src");
    files.extend(rust_files("tests/support"));
    let with_rules: Vec<&String> = files
        .iter()
        .filter(|file| read(file).contains(MARKER))
        .collect();
    assert!(with_rules.len() >= 6, "{with_rules:?}");
    for file in with_rules {
        assert!(
            listed.contains(file),
            "`{file}` names `{MARKER}`, so a new op touches it, but docs/adding-an-op.md does not list it"
        );
    }
}

/// The files under a `#![deny(clippy::wildcard_enum_match_arm)]`: those
/// that hold it, and for a `mod.rs` its folder's other files.
fn linted_files() -> Vec<String> {
    let mut linted = Vec::new();
    for file in rust_files("src") {
        let text = read(&file);
        let denies = text.split("#![deny(").skip(1).any(|attribute| {
            let lints = attribute.split(")]").next().unwrap_or_default();
            lints.contains("clippy::wildcard_enum_match_arm")
        });
        if denies {
            match file.strip_suffix("mod.rs") {
                Some(folder) => linted.extend(rust_files(folder)),
                None => linted.push(file),
            }
        }
    }
    linted
}

#[test]
fn op_rules_have_no_catch_all_that_clippy_cannot_see() {
    // Clippy's lint sees `match` arms; `matches!`, `if let` and `let ... else`
    // over an op are catch-alls too. Tests, at the end of a file, may use them.
    let linted = linted_files();
    assert!(linted.len() >= 8, "{linted:?}");
    for file in linted {
        let text = read(&file);
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (number, line) in code.lines().enumerate() {
            let catch_all = (line.contains("matches!(") && line.contains("Op::"))
                || line.contains("if let Op::")
                || line.trim_start().starts_with("let Op::");
            assert!(!catch_all, "{file}:{}: {line}", number + 1);
        }
    }
}

/// How a sample op is wired into a test model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wiring {
    /// Applied to a `[6, 6, 4]` feature map.
    Image,
    /// Applied to a `[144]` vector.
    Vector,
    /// Applied to two `[6, 6, 4]` feature maps.
    TwoImages,
    /// Applied to a `[6, 6, 4]` feature map and `[4]` channel scales.
    ImageAndScales,
    /// Not wired by hand: the model's input, or made by autodiff.
    Built,
}

impl Wiring {
    fn shapes(self) -> Vec<Shape> {
        let image = Shape(vec![6, 6, 4]);
        match self {
            Wiring::Image => vec![image],
            Wiring::Vector => vec![Shape(vec![144])],
            Wiring::TwoImages => vec![image.clone(), image],
            Wiring::ImageAndScales => vec![image, Shape(vec![4])],
            Wiring::Built => Vec::new(),
        }
    }
}

/// One sample of every op, written `pattern => (sample, wiring)`. The macro
/// also builds an exhaustive `match` over the patterns, so that this file
/// does not compile until a new variant of `Op` has a sample here.
macro_rules! every_op {
    ($($pattern:pat => $sample:expr,)*) => {{
        #[allow(dead_code, reason = "compiled only to check that the patterns cover `Op`")]
        fn exhaustive(op: &Op) {
            match op {
                $($pattern => {})*
            }
        }
        vec![$({
            let (op, wiring): (Op, Wiring) = $sample;
            assert!(matches!(op, $pattern), "{op} is not {}", stringify!($pattern));
            (op, wiring)
        }),*]
    }};
}

fn conv() -> Op {
    Op::Conv2d {
        filters: 3,
        kernel: [3, 3],
        stride: [1, 1],
        padding: Padding::Same,
        dilation: [1, 1],
        bias: true,
        groups: 1,
    }
}

fn samples() -> Vec<(Op, Wiring)> {
    use Wiring::*;
    let activation = |a| (Op::Activation(a), Image);
    every_op! {
        Op::Input { .. } => (Op::Input { shape: vec![6, 6, 4] }, Built),
        Op::Conv2d { .. } => (conv(), Image),
        Op::ConvTranspose2d { .. } => (
            Op::ConvTranspose2d {
                filters: 3,
                kernel: [3, 3],
                stride: [2, 2],
                padding: Padding::Same,
                output_padding: Some([1, 1]),
                dilation: [1, 1],
                bias: true,
            },
            Image,
        ),
        Op::Upsample { .. } => (
            Op::Upsample { factor: [2, 3], mode: Interpolation::Bilinear },
            Image,
        ),
        Op::DepthwiseConv2d { .. } => (
            Op::DepthwiseConv2d {
                multiplier: 2,
                kernel: [3, 3],
                stride: [2, 2],
                padding: Padding::Same,
                dilation: [1, 1],
                bias: true,
            },
            Image,
        ),
        Op::Dense { .. } => (Op::Dense { units: 5, bias: true }, Vector),
        Op::Pool2d { kind: PoolKind::Max, .. } => (
            Op::Pool2d { kind: PoolKind::Max, size: [2, 2], stride: [2, 2], padding: Padding::Valid },
            Image,
        ),
        Op::Pool2d { kind: PoolKind::Avg, .. } => (
            Op::Pool2d { kind: PoolKind::Avg, size: [3, 3], stride: [1, 1], padding: Padding::Same },
            Image,
        ),
        Op::Pad { .. } => (Op::Pad { top: 1, bottom: 0, left: -1, right: 2 }, Image),
        Op::GlobalPool { kind: PoolKind::Max } => (Op::GlobalPool { kind: PoolKind::Max }, Image),
        Op::GlobalPool { kind: PoolKind::Avg } => (Op::GlobalPool { kind: PoolKind::Avg }, Image),
        Op::DepthMaxPool { .. } => (Op::DepthMaxPool { size: 2 }, Image),
        Op::Flatten => (Op::Flatten, Image),
        Op::Reshape { .. } => (Op::Reshape { shape: vec![-1, 4] }, Image),
        Op::ChannelSlice { .. } => (Op::ChannelSlice { start: 1, end: -1 }, Image),
        Op::Dropout { .. } => (Op::Dropout { rate: 0.25 }, Image),
        Op::BatchNorm { .. } => (Op::BatchNorm { momentum: 0.9, epsilon: 1e-3, center: true, scale: true }, Image),
        Op::Lrn { .. } => (Op::Lrn { depth_radius: 1, bias: 1.0, alpha: 0.5, beta: 0.75 }, Image),
        Op::ScaleBias => (Op::ScaleBias, Image),
        Op::Rbf { .. } => (Op::Rbf { units: 3 }, Vector),
        Op::Activation(Activation::Relu) => activation(Activation::Relu),
        Op::Activation(Activation::LeakyRelu { .. }) => activation(Activation::LeakyRelu { alpha: 0.3 }),
        Op::Activation(Activation::Elu { .. }) => activation(Activation::Elu { alpha: 1.0 }),
        Op::Activation(Activation::Selu) => activation(Activation::Selu),
        Op::Activation(Activation::Tanh) => activation(Activation::Tanh),
        Op::Activation(Activation::Sigmoid) => activation(Activation::Sigmoid),
        Op::Activation(Activation::Relu6) => activation(Activation::Relu6),
        Op::Activation(Activation::Swish) => activation(Activation::Swish),
        Op::Activation(Activation::Gelu { .. }) => activation(Activation::Gelu { approximate: false }),
        Op::Activation(Activation::HardSigmoid) => activation(Activation::HardSigmoid),
        Op::Activation(Activation::HardSwish) => activation(Activation::HardSwish),
        Op::Activation(Activation::Mish) => activation(Activation::Mish),
        Op::Activation(Activation::Softmax) => activation(Activation::Softmax),
        Op::Add => (Op::Add, TwoImages),
        Op::Concat { .. } => (Op::Concat { axis: 2 }, TwoImages),
        Op::Multiply => (Op::Multiply, ImageAndScales),
        Op::Labels { .. } => (Op::Labels { shape: vec![1] }, Built),
        Op::Upstream { .. } => (Op::Upstream { output: "output".into(), shape: vec![3] }, Built),
        Op::CrossEntropy { .. } => (Op::CrossEntropy { smoothing: 0.0, weight: 1.0 }, Built),
        Op::CrossEntropyGrad { .. } => (Op::CrossEntropyGrad { smoothing: 0.0, weight: 1.0 }, Built),
        Op::InputGrad { .. } => (
            Op::InputGrad {
                forward: Box::new(conv()),
                slot: 0,
                inputs: vec![vec![6, 6, 4]],
                node: "conv".into(),
            },
            Built,
        ),
        Op::WeightGrad { .. } => (
            Op::WeightGrad {
                forward: Box::new(conv()),
                index: 0,
                weight: "conv.kernel".into(),
                shape: vec![3, 3, 4, 3],
            },
            Built,
        ),
    }
}

#[test]
fn every_op_has_a_name_of_its_own() {
    let samples = samples();
    let names: HashSet<&str> = samples.iter().map(|(op, _)| op.name()).collect();
    assert_eq!(names.len(), samples.len(), "{names:?}");
    for (op, _) in &samples {
        assert!(op.to_string().starts_with(op.name()), "{op}");
    }
}

#[test]
fn every_op_that_a_model_computes_has_every_rule() {
    let mut made_by_autodiff = Vec::new();
    for (op, wiring) in samples() {
        if wiring == Wiring::Built {
            continue;
        }
        let shapes = wiring.shapes();
        let refs: Vec<&Shape> = shapes.iter().collect();
        assert!(op.arity().accepts(refs.len()), "{op}: arity");
        ops::infer(&op, &refs).unwrap_or_else(|e| panic!("{op}: {e}"));
        check_gradient_rule(&op, &refs);
        check_written(&op);
        made_by_autodiff.extend(check_lowering(&op, wiring));
    }
    // The training graphs above hold every op that autodiff makes.
    for (op, wiring) in samples() {
        let made = made_by_autodiff.contains(&discriminant(&op));
        assert!(
            wiring != Wiring::Built || made || matches!(op, Op::Input { .. }),
            "no training graph has a `{}` node",
            op.name()
        );
    }
}

/// A gradient for every input, and for each weight exactly when it is
/// trainable; each reads dY and nameable values.
fn check_gradient_rule(op: &Op, inputs: &[&Shape]) {
    let rule = ops::gradient(op, inputs.len());
    assert_eq!(rule.inputs.len(), inputs.len(), "{op}: input rules");
    for needs in &rule.inputs {
        assert!(GradInputs::named(needs, needs).is_some(), "{op}: {needs:?}");
    }
    let params = ops::params(op, inputs);
    assert_eq!(rule.weights.len(), params.len(), "{op}: weight rules");
    for ((name, _, trainable), needs) in params.iter().zip(&rule.weights) {
        assert_eq!(*trainable, needs.is_some(), "{op}: {name}");
        if let Some(needs) = needs {
            assert!(GradInputs::named(needs, needs).is_some(), "{op}: {name}");
        }
    }
}

/// A forward op is written with a layer that expands into it, or by
/// combining tensors.
fn check_written(op: &Op) {
    match layers::written_as(op) {
        Written::Layer(layer) => {
            let (_, signature) = LAYERS
                .iter()
                .find(|(name, _)| Layer::named(name) == Some(layer))
                .unwrap_or_else(|| panic!("{op}: {layer:?} is not in LAYERS"));
            let parts = layer.expand(&default_args(signature));
            assert!(
                parts
                    .iter()
                    .any(|p| discriminant(&p.op) == discriminant(op)),
                "{op}: {layer:?} does not expand into it"
            );
        }
        Written::Combination(how) => {
            let model = cnnc::compile_source("t.cnn", &combining(how), None, None)
                .unwrap_or_else(|d| panic!("{op}: {d}"));
            let ops: Vec<&Op> = model.graph.nodes.node_weights().map(|n| &n.op).collect();
            assert!(
                ops.iter().any(|o| discriminant(*o) == discriminant(op)),
                "{op}: `{how}` does not make it: {ops:?}"
            );
        }
        Written::ModelInput | Written::Training => panic!("{op}: a model cannot compute it"),
    }
}

/// A model that combines two tensors with `how`.
fn combining(how: &str) -> String {
    let expression = match how {
        "concat" => "concat(a, b)".to_string(),
        // The right side of a product is one scale per channel.
        "*" => "a * (b -> global_avg_pool)".to_string(),
        operator => format!("a {operator} b"),
    };
    format!(
        "model m : [4, 4, 2] {{
            let a = conv(2, 1)
            let b = conv(2, 1)
            {expression}
        }}"
    )
}

/// Every argument at its default, the required ones at small valid values,
/// every boolean on (so that optional parts, like a trainable average
/// pool's scale, appear).
fn default_args(signature: &[ArgSpec]) -> Args {
    let mut bound: Vec<(&'static str, Arg)> = Vec::new();
    for spec in signature {
        let arg = match (spec.default, spec.kind) {
            (DefaultValue::Required, Kind::Pair) => Arg::Pair([2, 2]),
            (DefaultValue::Required, Kind::Rate) => Arg::Float(0.5),
            (DefaultValue::Required, _) => Arg::Int(2),
            (DefaultValue::Int(i), _) => Arg::Int(i),
            (DefaultValue::Float(x), _) => Arg::Float(x),
            (DefaultValue::Bool(_), _) => Arg::Bool(true),
            (DefaultValue::Symbol("same"), _) => Arg::Padding(Padding::Same),
            (DefaultValue::Symbol(_), Kind::Padding | Kind::SameOrValid) => {
                Arg::Padding(Padding::Valid)
            }
            (DefaultValue::Symbol(_), Kind::Activation) => Arg::Activation(None),
            (DefaultValue::Symbol(_), Kind::Interpolation) => {
                Arg::Interpolation(Interpolation::Nearest)
            }
            (DefaultValue::Symbol(_), Kind::OutputPadding) => Arg::OutputPadding(None),
            (DefaultValue::Symbol(_), _) => Arg::Init(Init::GlorotUniform),
            (DefaultValue::SameAs(other), _) => {
                let (_, value) = bound.iter().find(|(n, _)| *n == other).expect("bound");
                value.clone()
            }
        };
        bound.push((spec.name, arg));
    }
    Args(bound)
}

/// Builds a model around `op`, lowers it for inference, for training and
/// as a gradient program in both modes, and returns the kinds of op that
/// autodiff added.
fn check_lowering(op: &Op, wiring: Wiring) -> Vec<std::mem::Discriminant<Op>> {
    let model = cnnc::shapes::infer(model_around(op, wiring))
        .unwrap_or_else(|d| panic!("{op}: {}", d[0].message));
    lower::inference(&model, 2).unwrap_or_else(|e| panic!("{op}: {e}"));
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let training = autodiff::differentiate(&model, &loss).unwrap_or_else(|d| panic!("{op}: {d}"));
    let optimizer = TrainConfig::default().optimizer;
    lower::training(&training, 2, &optimizer).unwrap_or_else(|e| panic!("{op}: {e}"));
    let graph = &training.typed.graph;
    let gradient_of_op = graph.nodes.node_weights().any(|n| match &n.op {
        Op::InputGrad { forward, .. } => discriminant(&**forward) == discriminant(op),
        _ => false,
    });
    assert!(gradient_of_op, "{op}: autodiff gave it no input gradient");
    let vjp = autodiff::vector_jacobian(&model).unwrap_or_else(|d| panic!("{op}: {d}"));
    for mode in [Mode::Inference, Mode::Training { dropout: true }] {
        let plan = lower::gradients(&vjp, 2, mode).unwrap_or_else(|e| panic!("{op}: {e}"));
        plan.verify()
            .unwrap_or_else(|e| panic!("{op}, {mode:?}: {e}"));
    }
    graph
        .nodes
        .node_weights()
        .chain(vjp.typed.graph.nodes.node_weights())
        .map(|n| discriminant(&n.op))
        .collect()
}

/// `input [6, 6, 4] -> conv -> op -> flatten -> dense(3)`, the conv giving
/// every input of `op` a gradient.
fn model_around(op: &Op, wiring: Wiring) -> Graph {
    let mut model = Model::default();
    let input = model.add(
        "input",
        Op::Input {
            shape: vec![6, 6, 4],
        },
        &[],
    );
    let stem = model.add("stem", pointwise_conv(4), &[input]);
    let operands = match wiring {
        Wiring::Image => vec![stem],
        Wiring::Vector => vec![model.add("flat", Op::Flatten, &[stem])],
        Wiring::TwoImages => vec![stem, stem],
        Wiring::ImageAndScales => {
            let scales = Op::GlobalPool {
                kind: PoolKind::Avg,
            };
            vec![stem, model.add("scales", scales, &[stem])]
        }
        Wiring::Built => Vec::new(),
    };
    let sample = model.add("sample", op.clone(), &operands);
    let vector = match model.shapes[&sample].rank() {
        1 => sample,
        _ => model.add("flatten", Op::Flatten, &[sample]),
    };
    let dense = Op::Dense {
        units: 3,
        bias: true,
    };
    let output = model.add("output", dense, &[vector]);
    model.graph.input = Some(input);
    model.graph.outputs = vec![("output".into(), output)];
    model.graph
}

/// A 1x1 convolution to `filters` channels.
fn pointwise_conv(filters: u64) -> Op {
    Op::Conv2d {
        filters,
        kernel: [1, 1],
        stride: [1, 1],
        padding: Padding::Valid,
        dilation: [1, 1],
        bias: true,
        groups: 1,
    }
}

/// A graph built node by node, with each node's weights from `ops::params`.
#[derive(Default)]
struct Model {
    graph: Graph,
    shapes: std::collections::HashMap<NodeIndex, Shape>,
}

impl Model {
    fn add(&mut self, name: &str, op: Op, inputs: &[NodeIndex]) -> NodeIndex {
        let shapes: Vec<&Shape> = inputs.iter().map(|i| &self.shapes[i]).collect();
        let shape = ops::infer(&op, &shapes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let params = ops::params(&op, &shapes)
            .into_iter()
            .map(|(param, shape, trainable)| Param {
                name: param.to_string(),
                shape,
                trainable,
                init: Init::GlorotUniform,
            })
            .collect();
        let node = Node {
            layer_kind: op.name().to_string(),
            op,
            name: name.to_string(),
            layer: name.to_string(),
            params,
            trainable: true,
            span: Span::default(),
            trace: Vec::new(),
        };
        let id = self.graph.add(node, inputs);
        self.shapes.insert(id, shape);
        id
    }
}
