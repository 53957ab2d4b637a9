//! Reverse-mode automatic differentiation as a graph transformation.
//!
//! The training graph is the model's graph plus, in the same IR: the labels,
//! one fused softmax cross-entropy loss per output, and the backward pass —
//! one `InputGrad` node per input that needs a gradient and one `WeightGrad`
//! node per trainable weight, built from each op's rule in
//! [`crate::ops::gradient`]. A node whose output feeds several consumers gets
//! the sum of their gradients. The whole step is then compiled once.
//!
//! A gradient graph ([`vector_jacobian`]) has the same backward pass, built
//! by the same walk, seeded differently: each output's gradient is an
//! `Upstream` node that the caller fills, and the model's input gets a
//! gradient too. It computes the vector-Jacobian product of the model.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::graph::{Activation, Graph, Node, Op, Shape};
use crate::ops::{self, Need};
use crate::shapes::{self, TypedGraph};

/// How the outputs are scored.
#[derive(Debug, Clone, PartialEq)]
pub struct LossSpec {
    /// Label smoothing of the cross-entropy.
    pub smoothing: f64,
    /// The weight of each output's loss; outputs not named weigh 1.
    pub weights: Vec<(String, f64)>,
}

/// A differentiated model: the forward pass, the losses and the gradients.
#[derive(Debug, Clone)]
pub struct TrainingGraph {
    /// The whole graph, shape-checked.
    pub typed: TypedGraph,
    /// The labels node.
    pub labels: NodeIndex,
    /// Each output's name and its loss node (per-example loss times weight).
    pub losses: Vec<(String, NodeIndex)>,
    /// Each trainable weight's full name and the node computing its gradient.
    pub gradients: Vec<(String, NodeIndex)>,
}

/// A model differentiated from given gradients of its outputs: the forward
/// pass, then the backward pass that maps the upstream gradients `dL/dy` of
/// the outputs to `dL/dx` of the input and `dL/dw` of every trainable weight
/// (a vector-Jacobian product).
#[derive(Debug, Clone)]
pub struct GradientGraph {
    /// The whole graph, shape-checked.
    pub typed: TypedGraph,
    /// Each output's name and the `Upstream` node of its gradient (of the
    /// output's shape), in the order of the model's outputs.
    pub upstream: Vec<(String, NodeIndex)>,
    /// The node computing the gradient with respect to the model's input
    /// (`None` for a graph without an input).
    pub input_gradient: Option<NodeIndex>,
    /// Each trainable weight's full name and the node computing its
    /// gradient (summed over the batch). Batchnorm's moving statistics are
    /// not trainable, so have none.
    pub gradients: Vec<(String, NodeIndex)>,
}

/// Builds the training graph of `model` for the loss `loss`; errors point
/// into the model's source.
pub fn differentiate(model: &TypedGraph, loss: &LossSpec) -> Result<TrainingGraph, Diagnostics> {
    let shape = check_outputs(model).map_err(|errors| model.graph.diagnostics(errors))?;
    let mut builder = Builder::new(model);
    let anchor = model.graph.input.map(|i| model.graph.nodes[i].clone());
    let labels = builder.add(Op::Labels { shape }, "labels", anchor.as_ref(), &[]);
    let losses = builder.losses(model, loss, labels);
    let (gradients, _) = builder.walk(model, &requires_grad(model, false));
    let typed = shapes::infer(builder.graph).map_err(|errors| model.graph.diagnostics(errors))?;
    debug_assert_eq!(typed.graph.verify(), Ok(()));
    Ok(TrainingGraph {
        typed,
        labels,
        losses,
        gradients,
    })
}

/// Builds the gradient graph of `model`: each output seeded with an
/// `Upstream` node of its shape, whatever that shape is, and gradients for
/// the input and every trainable weight.
pub fn vector_jacobian(model: &TypedGraph) -> Result<GradientGraph, Diagnostics> {
    let mut builder = Builder::new(model);
    let upstream = builder.upstream(model);
    let (gradients, input_gradient) = builder.walk(model, &requires_grad(model, true));
    let typed = shapes::infer(builder.graph).map_err(|errors| model.graph.diagnostics(errors))?;
    debug_assert_eq!(typed.graph.verify(), Ok(()));
    Ok(GradientGraph {
        typed,
        upstream,
        input_gradient,
        gradients,
    })
}

/// Training scores every output with a softmax cross-entropy against one
/// set of labels, so each must be a vector of class scores (`[classes]`, a
/// label per example) or a map of them (`[h, w, classes]`, a label per
/// pixel: segmentation), and all must take labels of the same shape.
/// Returns the labels' per-example shape: the outputs' with one label in
/// place of the scores.
fn check_outputs(model: &TypedGraph) -> Result<Vec<u64>, Vec<Diagnostic>> {
    let label_shape = |shape: &Shape| {
        let mut dims = shape.0.clone();
        if let Some(last) = dims.last_mut() {
            *last = 1;
        }
        dims
    };
    let mut errors = Vec::new();
    let mut first: Option<(&String, Vec<u64>)> = None;
    for (name, id) in &model.graph.outputs {
        let shape = &model.info(*id).shape;
        let span = model.graph.nodes[*id].span;
        if !matches!(shape.rank(), 1 | 3) {
            errors.push(
                Diagnostic::error(span, format!("training needs class scores, but output `{name}` has shape {shape}"), "this output")
                    .with_note("help: end a classifier with a vector of scores, e.g. `global_avg_pool` or `flatten`, then `dense(classes, activation: softmax)`; a segmentation model ends with per-pixel scores [h, w, classes], e.g. `conv(classes, 1, activation: softmax)`"),
            );
            continue;
        }
        let labels = label_shape(shape);
        match &first {
            None => first = Some((name, labels)),
            Some((other, expected)) if *expected != labels => errors.push(
                Diagnostic::error(
                    span,
                    format!("output `{name}` has shape {shape}, which takes labels of shape {}, but output `{other}` takes labels of shape {}", Shape(labels), Shape(expected.clone())),
                    "this output",
                )
                .with_note("every output is scored against the same labels: make all outputs class vectors, or all per-pixel maps of the same size"),
            ),
            Some(_) => {}
        }
    }
    match (errors.is_empty(), first) {
        (true, Some((_, labels))) => Ok(labels),
        (true, None) => Ok(vec![1]),
        (false, _) => Err(errors),
    }
}

/// Which nodes' outputs depend on a trainable weight, or, when `input`, on
/// the model's input (only those need a gradient).
fn requires_grad(model: &TypedGraph, input: bool) -> Vec<bool> {
    let g = &model.graph;
    let mut needs = vec![false; model.info.len()];
    for &id in &model.order {
        let own = g.nodes[id].params.iter().any(|p| p.trainable) || (input && g.input == Some(id));
        needs[id.index()] = own || g.inputs_of(id).iter().any(|i| needs[i.index()]);
    }
    needs
}

struct Builder {
    graph: Graph,
    /// The gradient contributions to each forward node's output.
    grads: HashMap<NodeIndex, Vec<NodeIndex>>,
}

impl Builder {
    /// A builder that extends `model`'s graph.
    fn new(model: &TypedGraph) -> Builder {
        Builder {
            graph: model.graph.clone(),
            grads: HashMap::new(),
        }
    }

    /// The backward pass, from the gradients seeded so far: each forward
    /// node in reverse order gets the sum of its gradients and passes them
    /// on by its op's rule to the inputs that `needs_grad`. Returns the
    /// weight gradients, and the input's gradient when it needs one.
    fn walk(
        &mut self,
        model: &TypedGraph,
        needs_grad: &[bool],
    ) -> (Vec<(String, NodeIndex)>, Option<NodeIndex>) {
        let mut gradients = Vec::new();
        let mut input_gradient = None;
        for &id in model.order.iter().rev() {
            let Some(dy) = self.gradient_of(id) else {
                continue;
            };
            if model.graph.input == Some(id) {
                input_gradient = Some(dy);
                continue;
            }
            gradients.extend(self.backward(model, id, dy, needs_grad));
        }
        (gradients, input_gradient)
    }

    /// One `Upstream` node per output, of its shape, seeding the backward
    /// pass at the output itself (a softmax output included: its gradient
    /// is the softmax's).
    fn upstream(&mut self, model: &TypedGraph) -> Vec<(String, NodeIndex)> {
        let mut seeds = Vec::new();
        for (output, id) in &model.graph.outputs {
            let like = model.graph.nodes[*id].clone();
            let op = Op::Upstream {
                output: output.clone(),
                shape: model.info(*id).shape.0.clone(),
            };
            let seed = self.add(op, &format!("upstream:{output}"), Some(&like), &[]);
            self.grads.entry(*id).or_default().push(seed);
            seeds.push((output.clone(), seed));
        }
        seeds
    }

    /// Adds a node named `name`, placed (span, layer) like `like`.
    fn add(&mut self, op: Op, name: &str, like: Option<&Node>, inputs: &[NodeIndex]) -> NodeIndex {
        let node = Node {
            op,
            name: name.to_string(),
            layer: like.map_or_else(|| name.to_string(), |n| n.layer.clone()),
            layer_kind: "gradient".into(),
            params: Vec::new(),
            // A gradient node belongs to its forward node's layer, frozen
            // or not (a frozen batchnorm's gradient is inference mode's).
            trainable: like.is_none_or(|n| n.trainable),
            span: like.map(|n| n.span).unwrap_or_default(),
            trace: like.map(|n| n.trace.clone()).unwrap_or_default(),
        };
        self.graph.add(node, inputs)
    }

    /// One fused cross-entropy per output, on the logits: an output that is
    /// a softmax is scored on its input, and so is a sigmoid of one score
    /// (the binary cross-entropy, which the loss kernel computes for rows of
    /// one score); any other output is taken as logits. Seeds the backward
    /// pass with the losses' gradients.
    fn losses(
        &mut self,
        model: &TypedGraph,
        loss: &LossSpec,
        labels: NodeIndex,
    ) -> Vec<(String, NodeIndex)> {
        let mut losses = Vec::new();
        for (output, id) in &model.graph.outputs {
            let node = &model.graph.nodes[*id];
            let one_score = model.info(*id).shape.0.last() == Some(&1);
            let on_input = node.op == Op::Activation(Activation::Softmax)
                || one_score && node.op == Op::Activation(Activation::Sigmoid);
            let logits = if on_input {
                model.graph.inputs_of(*id)[0]
            } else {
                *id
            };
            let weight = loss
                .weights
                .iter()
                .find(|(n, _)| n == output)
                .map_or(1.0, |(_, w)| *w);
            let like = model.graph.nodes[logits].clone();
            let (smoothing, name) = (loss.smoothing, format!("loss:{output}"));
            let ce = self.add(
                Op::CrossEntropy { smoothing, weight },
                &name,
                Some(&like),
                &[logits, labels],
            );
            let grad_name = format!("grad:{}", like.name);
            let grad = self.add(
                Op::CrossEntropyGrad { smoothing, weight },
                &grad_name,
                Some(&like),
                &[logits, labels],
            );
            self.grads.entry(logits).or_default().push(grad);
            losses.push((output.clone(), ce));
        }
        losses
    }

    /// The gradient of node `id`'s output: its one contribution, or their sum.
    fn gradient_of(&mut self, id: NodeIndex) -> Option<NodeIndex> {
        let parts = self.grads.remove(&id)?;
        if parts.len() == 1 {
            return Some(parts[0]);
        }
        let like = self.graph.nodes[id].clone();
        Some(self.add(Op::Add, &format!("grad:{}", like.name), Some(&like), &parts))
    }

    /// Adds the gradient nodes of forward node `id`, given `dy`; returns the
    /// weight gradients it made.
    fn backward(
        &mut self,
        model: &TypedGraph,
        id: NodeIndex,
        dy: NodeIndex,
        needs_grad: &[bool],
    ) -> Vec<(String, NodeIndex)> {
        let forward = model.graph.nodes[id].clone();
        let inputs = model.graph.inputs_of(id);
        let rule = ops::gradient(&forward.op, inputs.len());
        let resolve = |needs: &[Need]| -> Vec<NodeIndex> {
            needs
                .iter()
                .map(|need| match *need {
                    Need::Dy => dy,
                    Need::Input(k) => inputs[k],
                    Need::Output => id,
                })
                .collect()
        };
        for (slot, needs) in rule.inputs.iter().enumerate() {
            let producer = inputs[slot];
            if needs.is_empty() || !needs_grad[producer.index()] {
                continue;
            }
            let shapes = inputs
                .iter()
                .map(|&i| model.info(i).shape.0.clone())
                .collect();
            let op = Op::InputGrad {
                forward: Box::new(forward.op.clone()),
                slot,
                inputs: shapes,
                node: forward.name.clone(),
            };
            let name = if inputs.len() == 1 {
                format!("grad:{}/in", forward.name)
            } else {
                format!("grad:{}/in{slot}", forward.name)
            };
            let grad = self.add(op, &name, Some(&forward), &resolve(needs));
            self.grads.entry(producer).or_default().push(grad);
        }
        let mut made = Vec::new();
        for (index, (param, needs)) in forward.params.iter().zip(&rule.weights).enumerate() {
            let Some(needs) = needs.as_ref().filter(|_| param.trainable) else {
                continue;
            };
            let weight = format!("{}.{}", forward.name, param.name);
            let op = Op::WeightGrad {
                forward: Box::new(forward.op.clone()),
                index,
                weight: weight.clone(),
                shape: param.shape.clone(),
            };
            let grad = self.add(
                op,
                &format!("grad:{weight}"),
                Some(&forward),
                &resolve(needs),
            );
            made.push((weight, grad));
        }
        made
    }
}

#[cfg(test)]
#[allow(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants,
    reason = "a test looks at one op and fails on any other"
)]
mod tests {
    use super::*;

    fn compile(source: &str) -> TypedGraph {
        crate::compile_source("test.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"))
    }

    fn plain() -> LossSpec {
        LossSpec {
            smoothing: 0.0,
            weights: Vec::new(),
        }
    }

    #[test]
    fn every_trainable_weight_gets_one_gradient_of_its_shape() {
        let model = compile(
            "model m : [8, 8, 3] {
                conv(4, 3, padding: same, use_bias: false) -> batchnorm -> relu
                maxpool(2)
                flatten
                dense(5, activation: softmax)
            }",
        );
        let training = differentiate(&model, &plain()).expect("differentiates");
        let names: Vec<&str> = training.gradients.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = vec![
            "conv1.kernel",
            "batchnorm1.gamma",
            "batchnorm1.beta",
            "dense1.kernel",
            "dense1.bias",
        ];
        expected.sort_unstable();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        for (name, id) in &training.gradients {
            let weight = crate::runtime::weights::specs(&model)
                .into_iter()
                .find(|s| s.name == *name)
                .expect("a weight");
            let shape: Vec<u64> = weight.shape.iter().map(|&d| d as u64).collect();
            assert_eq!(training.typed.info(*id).shape.0, shape, "{name}");
            assert!(!training.typed.info(*id).batched);
        }
        // The softmax output is scored on its logits; the input needs no gradient.
        let loss = &training.typed.graph.nodes[training.losses[0].1];
        assert_eq!(loss.name, "loss:output");
        assert!(!training
            .typed
            .graph
            .nodes
            .node_weights()
            .any(|n| n.name == "grad:input"));
    }

    #[test]
    fn a_residual_connection_sums_its_gradients() {
        let model = compile(
            "model m : [4, 4, 2] {
                let stem = conv(2, 3, padding: same) as stem
                let main = stem -> conv(2, 3, padding: same) -> relu
                stem + main
                global_avg_pool
                dense(3, activation: softmax)
            }",
        );
        let training = differentiate(&model, &plain()).expect("differentiates");
        let g = &training.typed.graph;
        let sum = g
            .nodes
            .node_indices()
            .find(|&i| g.nodes[i].name == "grad:stem")
            .expect("the stem's gradient");
        assert!(matches!(g.nodes[sum].op, Op::Add));
        assert_eq!(g.inputs_of(sum).len(), 2, "the skip path and the conv path");
    }

    #[test]
    fn a_vector_jacobian_product_seeds_each_output_and_reaches_the_input() {
        // Any output shape will do: the seed is the caller's, not a loss.
        let model = compile(
            "model m : [4, 4, 2] {
                let t = conv(3, 3, padding: same) -> batchnorm
                output maps = t
                output scores = t -> global_avg_pool -> softmax
            }",
        );
        let graph = vector_jacobian(&model).expect("differentiates");
        let g = &graph.typed.graph;
        let seeds: Vec<(&str, &Op)> = graph
            .upstream
            .iter()
            .map(|(name, id)| (name.as_str(), &g.nodes[*id].op))
            .collect();
        let shape = |dims: &[u64]| dims.to_vec();
        assert_eq!(
            seeds,
            [
                (
                    "maps",
                    &Op::Upstream {
                        output: "maps".into(),
                        shape: shape(&[4, 4, 3])
                    }
                ),
                (
                    "scores",
                    &Op::Upstream {
                        output: "scores".into(),
                        shape: shape(&[3])
                    }
                ),
            ]
        );
        // No labels and no loss; the softmax output is differentiated itself.
        assert!(!g.nodes.node_weights().any(|n| matches!(
            n.op,
            Op::Labels { .. } | Op::CrossEntropy { .. } | Op::CrossEntropyGrad { .. }
        )));
        let input = graph.input_gradient.expect("the input's gradient");
        assert_eq!(graph.typed.info(input).shape.0, vec![4, 4, 2]);
        assert!(
            matches!(&g.nodes[input].op, Op::InputGrad { forward, .. } if matches!(**forward, Op::Conv2d { .. }))
        );
        let mut names: Vec<&str> = graph.gradients.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "batchnorm1.beta",
                "batchnorm1.gamma",
                "conv1.bias",
                "conv1.kernel"
            ]
        );
    }

    #[test]
    fn outputs_must_be_class_scores() {
        let model = compile("model m : [8, 8, 3] { conv(2, 7, padding: same)\n reshape([16, 8]) }");
        let errors = differentiate(&model, &plain()).unwrap_err();
        assert!(
            errors.errors[0]
                .message
                .contains("output `output` has shape [16, 8]"),
            "{}",
            errors.errors[0].message
        );
        // The error keeps its place: it renders with the model's line.
        let rendered = errors.render(false);
        assert!(rendered.contains("test.cnn:2:"), "{rendered}");
        assert!(rendered.contains("reshape([16, 8])"), "{rendered}");
    }

    #[test]
    fn per_pixel_scores_take_a_label_per_pixel_and_all_outputs_one_shape() {
        let model = compile("model m : [8, 6, 3] { conv(4, 3, padding: same) }");
        let training = differentiate(&model, &plain()).expect("differentiates");
        let labels = &training.typed.graph.nodes[training.labels].op;
        assert_eq!(
            *labels,
            Op::Labels {
                shape: vec![8, 6, 1]
            }
        );
        assert_eq!(
            training.typed.info(training.losses[0].1).shape.0,
            vec![8, 6, 1]
        );
        // A map and a vector cannot be scored against the same labels.
        let mixed = compile(
            "model m : [8, 6, 3] {\n let f = conv(4, 3, padding: same)\n output v = f -> global_avg_pool\n output p = f\n }",
        );
        let errors = differentiate(&mixed, &plain()).unwrap_err();
        let message = &errors.errors[0].message;
        assert!(
            message.contains("takes labels of shape [8, 6, 1]")
                && message.contains("takes labels of shape [1]"),
            "{message}"
        );
    }

    #[test]
    fn loss_weights_apply_per_output() {
        let model = compile(
            "model m : [4, 4, 1] {
                flatten
                let h = dense(6, activation: relu)
                output aux = h -> dense(3, activation: softmax)
                output main = h -> dense(3, activation: softmax)
            }",
        );
        let spec = LossSpec {
            smoothing: 0.1,
            weights: vec![("aux".into(), 0.3)],
        };
        let training = differentiate(&model, &spec).expect("differentiates");
        let weight_of = |output: &str| {
            let id = training
                .losses
                .iter()
                .find(|(n, _)| n == output)
                .expect("loss")
                .1;
            match training.typed.graph.nodes[id].op {
                Op::CrossEntropy { weight, smoothing } => (weight, smoothing),
                _ => panic!("not a loss"),
            }
        };
        assert_eq!(weight_of("aux"), (0.3, 0.1));
        assert_eq!(weight_of("main"), (1.0, 0.1));
    }
}
