//! The dataflow IR: a petgraph `StableGraph` of primitive ops.
//!
//! Elaboration builds a [`Graph`]; shape inference turns it into a
//! [`TypedGraph`](crate::shapes::TypedGraph). Nodes keep the span and the
//! block path they came from, which also name their weights.

mod op;

use std::fmt;
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::config::TrainConfig;
use crate::diagnostics::{Diagnostic, Diagnostics, SourceMap, Span};

pub use op::{Activation, AxisPadding, Interpolation, Op, Padding, PoolKind};

/// A per-example tensor shape (NHWC without the batch dimension, which is
/// implicit and symbolic): `[28, 28, 1]` for an image, `[10]` for logits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<u64>);

impl Shape {
    /// The number of elements of one example.
    pub fn elements(&self) -> u64 {
        self.0.iter().product()
    }

    /// The rank (number of dimensions, batch excluded).
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The last dimension: channels of an image, features of a vector.
    pub fn channels(&self) -> u64 {
        self.0.last().copied().unwrap_or(1)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// How a weight tensor starts out before training.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Glorot (Xavier) uniform, Keras' default for kernels.
    GlorotUniform,
    /// He normal (truncated), for ReLU networks.
    HeNormal,
    /// He uniform.
    HeUniform,
    /// LeCun normal, for SELU networks.
    LecunNormal,
    /// All zeros (biases, batchnorm beta and moving mean).
    Zeros,
    /// All ones (batchnorm gamma and moving variance).
    Ones,
    /// A base initializer with some entries set: the seed's line filters.
    Set(Box<Init>, Vec<(Vec<Slice>, f64)>),
}

/// One axis of an index pattern in `init: zeros where [_, 3, _, 0] = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// `_`: the whole axis.
    All,
    /// A single index.
    At(u64),
    /// `a..b`.
    Range(u64, u64),
}

/// As written in `.cnn`: `_`, `3` or `0..2`.
impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slice::All => write!(f, "_"),
            Slice::At(i) => write!(f, "{i}"),
            Slice::Range(a, b) => write!(f, "{a}..{b}"),
        }
    }
}

/// A weight tensor of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The name within its layer (`kernel`, `bias`, `gamma`...).
    pub name: String,
    /// Its shape, in the seed's layouts (conv `[kh, kw, in, out]`, dense `[in, out]`).
    pub shape: Vec<u64>,
    /// Whether the optimizer updates it.
    pub trainable: bool,
    /// How it starts out.
    pub init: Init,
}

/// One primitive operation in the dataflow graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// Its unique path in the block hierarchy, e.g. `stage2.residual_unit1.conv2`
    /// (or `....conv2.relu` for the activation a layer call asked for).
    pub name: String,
    /// The path of the layer call it belongs to; several nodes may share one
    /// (a conv and its activation, a separable conv's two halves).
    pub layer: String,
    /// The layer as written (`conv`, `separable_conv`, `add`...).
    pub layer_kind: String,
    /// Its weights.
    pub params: Vec<Param>,
    /// Whether its layer trains, as Keras's `layer.trainable`: false for a
    /// layer written with `trainable: false` or matched by the train
    /// section's `freeze`. A frozen layer's weights are not trainable, and a
    /// frozen batchnorm normalises with its moving statistics, and leaves
    /// them as they are, even while training (as Keras 3's does).
    pub trainable: bool,
    /// The source of the call that made it.
    pub span: Span,
    /// The block calls that led to it, outermost first.
    pub trace: Vec<Span>,
}

/// The dataflow graph of one model, before shapes are checked.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The model's name.
    pub name: String,
    /// Nodes, and edges weighted by the consumer's input slot.
    pub nodes: StableGraph<Node, usize>,
    /// The input node.
    pub input: Option<NodeIndex>,
    /// Named outputs, in declaration order.
    pub outputs: Vec<(String, NodeIndex)>,
    /// The model's training section, when it has one.
    pub train: Option<TrainConfig>,
    /// The source files its nodes' spans point into, so that every later
    /// stage can report an error at its place in the model's text.
    pub sources: Arc<SourceMap>,
}

impl Graph {
    /// `errors` about this graph's nodes, with the sources to render them.
    pub fn diagnostics(&self, errors: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics::new(errors, self.sources.clone())
    }

    /// Adds a node fed by `inputs` (in slot order) and returns its index.
    pub fn add(&mut self, node: Node, inputs: &[NodeIndex]) -> NodeIndex {
        let id = self.nodes.add_node(node);
        for (slot, &from) in inputs.iter().enumerate() {
            self.nodes.add_edge(from, id, slot);
        }
        id
    }

    /// The nodes feeding `node`, in slot order.
    pub fn inputs_of(&self, node: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<(usize, NodeIndex)> = self
            .nodes
            .edges_directed(node, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Checks the IR's invariants: inputs in consecutive slots with the arity
    /// each op expects, no cycles, unique names, outputs that exist.
    pub fn verify(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for id in self.nodes.node_indices() {
            let node = &self.nodes[id];
            if !names.insert(node.name.as_str()) {
                return Err(format!("two nodes are named `{}`", node.name));
            }
            let mut slots: Vec<usize> = self
                .nodes
                .edges_directed(id, Direction::Incoming)
                .map(|e| *e.weight())
                .collect();
            slots.sort_unstable();
            if slots.iter().enumerate().any(|(i, &s)| i != s) {
                return Err(format!("node `{}` has input slots {slots:?}", node.name));
            }
            if !node.op.arity().accepts(slots.len()) {
                return Err(format!(
                    "node `{}` ({}) has {} inputs",
                    node.name,
                    node.op.name(),
                    slots.len()
                ));
            }
        }
        // `toposort` walks iteratively; `is_cyclic_directed` recurses once
        // per node of a chain and overflows the stack of a thread on the
        // long chains a loop builds (`for i in 0..65536 { relu }`).
        if petgraph::algo::toposort(&self.nodes, None).is_err() {
            return Err("the graph has a cycle".into());
        }
        for (name, id) in &self.outputs {
            if !self.nodes.contains_node(*id) {
                return Err(format!("output `{name}` refers to a removed node"));
            }
        }
        Ok(())
    }
}
