//! Shape inference over a whole graph: every tensor's shape, each node's
//! parameter count, forward FLOPs and activation bytes, before anything runs.

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

use petgraph::stable_graph::NodeIndex;

use crate::diagnostics::Diagnostic;
use crate::graph::{Graph, Init, Node, Shape, Slice};
use crate::ops;

/// A graph whose shapes have been checked: only this type reaches the later stages.
#[derive(Debug, Clone)]
pub struct TypedGraph {
    /// The graph.
    pub graph: Graph,
    /// Nodes in a topological order (inputs before their consumers).
    pub order: Vec<NodeIndex>,
    /// Per node (indexed by `NodeIndex::index()`): its output shape and costs.
    pub info: Vec<Option<NodeInfo>>,
}

/// What shape inference knows of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Its per-example output shape.
    pub shape: Shape,
    /// Number of weights (trainable and not).
    pub params: u64,
    /// Number of trainable weights.
    pub trainable: u64,
    /// Forward FLOPs per example.
    pub flops: u64,
    /// Bytes of its output per example (f32), or in all for an output
    /// without a batch dimension (a weight gradient).
    pub bytes: u64,
    /// Whether the output has a batch dimension.
    pub batched: bool,
}

/// Parameter counts of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    /// All weights.
    pub total: u64,
    /// Those the optimizer updates.
    pub trainable: u64,
    /// Those it does not (batchnorm statistics, frozen layers).
    pub non_trainable: u64,
}

/// Infers and checks every node's shape in topological order.
pub fn infer(graph: Graph) -> Result<TypedGraph, Vec<Diagnostic>> {
    let order = match source_order(&graph)
        .map_or_else(|| petgraph::algo::toposort(&graph.nodes, None), Ok)
    {
        Ok(order) => order,
        Err(cycle) => {
            let node = &graph.nodes[cycle.node_id()];
            return Err(vec![Diagnostic::error(
                node.span,
                "the dataflow graph has a cycle",
                format!("at `{}`", node.name),
            )]);
        }
    };
    let mut info: Vec<Option<NodeInfo>> = vec![
        None;
        graph
            .nodes
            .node_indices()
            .map(|i| i.index() + 1)
            .max()
            .unwrap_or(0)
    ];
    let mut errors = Vec::new();
    for &id in &order {
        let inputs: Option<Vec<Shape>> = graph
            .inputs_of(id)
            .iter()
            .map(|i| info[i.index()].as_ref().map(|n| n.shape.clone()))
            .collect();
        let Some(inputs) = inputs else { continue };
        let refs: Vec<&Shape> = inputs.iter().collect();
        let node = &graph.nodes[id];
        match node_info(node, &refs) {
            Ok(i) => info[id.index()] = Some(i),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(TypedGraph { graph, order, info })
    } else {
        Err(errors)
    }
}

/// The nodes in the order they were added, when that order is topological
/// (as it is for elaborated graphs): dumps and summaries then follow the
/// source, branch by branch, as a reader wrote them.
fn source_order(graph: &Graph) -> Option<Vec<NodeIndex>> {
    let mut order: Vec<NodeIndex> = graph.nodes.node_indices().collect();
    order.sort_unstable();
    let topological = order
        .iter()
        .all(|&id| graph.inputs_of(id).iter().all(|&input| input < id));
    topological.then_some(order)
}

fn node_info(node: &Node, inputs: &[&Shape]) -> Result<NodeInfo, Diagnostic> {
    let at = |message: String| Diagnostic::error(node.span, message, format!("in `{}`", node.name));
    // The typed error becomes text only here, with its span and its hint.
    let shape = ops::infer(&node.op, inputs)
        .map_err(|e| e.to_diagnostic(node.span, format!("in `{}`", node.name)))?;
    let expected = ops::params(&node.op, inputs);
    let matches = expected.len() == node.params.len()
        && expected
            .iter()
            .zip(&node.params)
            .all(|((name, shape, _), p)| *name == p.name && *shape == p.shape);
    if !matches {
        return Err(at(format!(
            "the weights of `{}` do not match its input shapes",
            node.name
        )));
    }
    let mut params = 0u64;
    let mut trainable = 0u64;
    for p in &node.params {
        check_init(&p.init, &p.shape).map_err(|m| {
            at(format!(
                "{m} (weight `{}.{}` of shape {})",
                node.name,
                p.name,
                Shape(p.shape.clone())
            ))
        })?;
        let n: u64 = p.shape.iter().product();
        params += n;
        if p.trainable {
            trainable += n;
        }
    }
    Ok(NodeInfo {
        flops: ops::flops(&node.op, inputs, &shape),
        bytes: shape.elements() * 4,
        batched: node.op.is_batched(),
        shape,
        params,
        trainable,
    })
}

/// Checks that the entries an initializer sets lie inside the weight.
fn check_init(init: &Init, shape: &[u64]) -> Result<(), String> {
    let Init::Set(_, entries) = init else {
        return Ok(());
    };
    for (slices, _) in entries {
        if slices.len() != shape.len() {
            return Err(format!(
                "an entry has {} indices, but the weight has {} axes",
                slices.len(),
                shape.len()
            ));
        }
        for (axis, (slice, &dim)) in slices.iter().zip(shape).enumerate() {
            let fits = match *slice {
                Slice::All => true,
                Slice::At(i) => i < dim,
                Slice::Range(a, b) => a < b && b <= dim,
            };
            if !fits {
                return Err(format!(
                    "index {slice} is outside axis {axis} of size {dim}"
                ));
            }
        }
    }
    Ok(())
}

impl TypedGraph {
    /// The node `id`'s inferred information.
    pub fn info(&self, id: NodeIndex) -> &NodeInfo {
        // Inference succeeded, so every node of the graph has its info.
        self.info[id.index()]
            .as_ref()
            .expect("every node was inferred")
    }

    /// Total, trainable and non-trainable parameter counts.
    pub fn param_counts(&self) -> ParamCounts {
        let (total, trainable) = self
            .order
            .iter()
            .map(|&id| self.info(id))
            .fold((0, 0), |(t, tr), i| (t + i.params, tr + i.trainable));
        ParamCounts {
            total,
            trainable,
            non_trainable: total - trainable,
        }
    }

    /// Forward FLOPs per example of the whole model.
    pub fn flops(&self) -> u64 {
        // Each layer's count saturates; so does the total.
        self.order
            .iter()
            .fold(0u64, |total, &id| total.saturating_add(self.info(id).flops))
    }

    /// The model's outputs: names and per-example shapes.
    pub fn outputs(&self) -> Vec<(String, Vec<u64>)> {
        self.graph
            .outputs
            .iter()
            .map(|(name, id)| (name.clone(), self.info(*id).shape.0.clone()))
            .collect()
    }

    /// The model's per-example input shape.
    pub fn input_shape(&self) -> Option<&Shape> {
        self.graph.input.map(|id| &self.info(id).shape)
    }
}
