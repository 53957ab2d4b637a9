//! `cnnc import`: an ONNX model as a `.cnn` file and its weights.
//!
//! Three steps: read the protobuf and its constants (`read`), lower the
//! nodes to cnnc layers while tracking how ONNX lays each tensor out
//! (`lower`), and write the layers as `.cnn` text (`write`). The text is
//! then compiled by cnnc's own front end and the weights checked against
//! it, so that what is written is a model cnnc runs; nothing is written
//! when any step fails, and every node the language cannot express is
//! reported at once.

mod lower;
mod read;
mod write;

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{Message, ModelProto};
use thiserror::Error;

use crate::graph::Op;
use crate::runtime::weights::{self, TensorStore};
use lower::{Layout, Lowering, Value};

/// Where a cnnc layer's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The model's input.
    Input,
    /// The output of layer number `n`.
    Layer(usize),
}

/// One cnnc layer read from ONNX.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The ONNX node it came from (its name, for the layer's name).
    pub node: String,
    /// What it computes.
    pub op: Op,
    /// Its inputs.
    pub inputs: Vec<Source>,
    /// Its weights by local name (`kernel`, `bias`...), in cnnc's layouts.
    pub weights: Vec<(&'static str, weights::Tensor)>,
    /// The rank of its per-example output.
    pub rank: usize,
}

/// A node the language cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The node's name (may be empty in the file).
    pub node: String,
    /// Its ONNX operator.
    pub op_type: String,
    /// What cnnc cannot do.
    pub reason: String,
}

/// Why an ONNX model could not be imported.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The bytes are not an ONNX model.
    #[error("not an ONNX model: {0}")]
    Decode(String),
    /// The graph's input or outputs are not what cnnc models have.
    #[error("{0}")]
    Interface(String),
    /// Nodes the language cannot express, every one, and how many nodes
    /// after them read what they would have written.
    #[error("{} node(s) cannot be written in the .cnn language{}:\n{}", .nodes.len(), following(*.after), list(.nodes))]
    Unsupported {
        /// The nodes.
        nodes: Vec<Unsupported>,
        /// The nodes downstream of them, not lowered.
        after: usize,
    },
    /// The written model did not compile, or its weights did not fit it:
    /// a fault of cnnc, reported with the text.
    #[error("the imported model does not compile (a fault of cnnc's importer):\n{0}")]
    Internal(String),
}

fn following(after: usize) -> String {
    match after {
        0 => String::new(),
        n => format!(" ({n} node(s) after them are left unread)"),
    }
}

fn list(nodes: &[Unsupported]) -> String {
    nodes
        .iter()
        .map(|n| {
            let name = if n.node.is_empty() {
                "(unnamed)"
            } else {
                &n.node
            };
            format!("  node `{name}` ({}): {}", n.op_type, n.reason)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The `.cnn` text.
    pub text: String,
    /// The weights under the text's names.
    pub weights: TensorStore,
    /// The model's name in the text.
    pub model: String,
}

/// How to name what is written.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions<'a> {
    /// The model's name (made a valid identifier).
    pub model: &'a str,
    /// The ONNX file, named in the text's first comment.
    pub source: &'a str,
}

/// The `.cnn` text and weights of the ONNX model `bytes`.
pub fn import(bytes: &[u8], options: ImportOptions) -> Result<Imported, ImportError> {
    let model =
        ModelProto::parse_from_bytes(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Decode("the model has no graph".into()))?;
    let (constants, unreadable) = read::constants(graph);
    let mut readers: HashMap<String, usize> = HashMap::new();
    // A graph output counts as a reader: a layer whose output is one keeps
    // its meaning (no bias added to it, no sigmoid made a swish).
    let outputs = graph.output.iter().map(|o| &o.name);
    for input in graph.node.iter().flat_map(|n| &n.input).chain(outputs) {
        *readers.entry(input.clone()).or_default() += 1;
    }
    let mut lowering = Lowering {
        constants: &constants,
        readers,
        layers: Vec::new(),
        values: HashMap::new(),
    };
    let (input_name, input) = model_input(graph, &constants)?;
    let input_shape = input.shape.0.clone();
    lowering.values.insert(input_name, input);
    // cnnc's own exports write some ops as chains of nodes; read them whole.
    let chains = if model.producer_name == "cnnc" {
        chains(&graph.node)
    } else {
        graph.node.iter().map(|n| vec![n]).collect()
    };
    lower_all(&mut lowering, chains, &unreadable)?;
    let outputs = graph
        .output
        .iter()
        .map(|o| match lowering.values.get(&o.name) {
            Some(value) => Ok((o.name.clone(), value.source)),
            None => Err(ImportError::Interface(format!(
                "output `{}` is not computed by the graph",
                o.name
            ))),
        })
        .collect::<Result<Vec<_>, ImportError>>()?;
    let written = write::write(&lowering.layers, &outputs, &input_shape, &options);
    check(&written)?;
    Ok(written)
}

/// Lowers every chain of nodes; fails with every node that cannot be
/// written. A node that reads what a refused node wrote is not reported
/// itself: the list names the causes, and counts the nodes they leave
/// unread. A node that reads a constant that cannot be read is refused
/// with the constant's fault.
fn lower_all(
    lowering: &mut Lowering,
    chains: Vec<Vec<&onnx_protobuf::NodeProto>>,
    unreadable: &HashMap<String, String>,
) -> Result<(), ImportError> {
    let mut refused = Vec::new();
    let mut unread: HashSet<&str> = HashSet::new();
    let mut after = 0;
    for chain in chains {
        let mut inputs = chain.iter().flat_map(|n| &n.input);
        let outputs = chain
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str));
        if inputs.clone().any(|i| unread.contains(i.as_str())) {
            after += chain.len();
            unread.extend(outputs);
            continue;
        }
        let result = match inputs.find_map(|i| unreadable.get(i).map(|why| (i, why))) {
            Some((name, why)) => Err(Unsupported {
                node: chain[0].name.clone(),
                op_type: chain[0].op_type.clone(),
                reason: format!("its constant `{name}` cannot be read: {why}"),
            }),
            None => match lowering.composite(&chain) {
                Some(result) => result,
                None => chain.iter().try_for_each(|node| lowering.node(node)),
            },
        };
        if let Err(e) = result {
            refused.push(e);
            unread.extend(outputs);
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ImportError::Unsupported {
            nodes: refused,
            after,
        })
    }
}

/// The nodes in groups: each run of nodes named `P/...` followed by the
/// node named `P` (how `cnnc export` writes one op as several), and every
/// other node alone.
fn chains(nodes: &[onnx_protobuf::NodeProto]) -> Vec<Vec<&onnx_protobuf::NodeProto>> {
    let mut chains = Vec::new();
    let mut pending: Vec<&onnx_protobuf::NodeProto> = Vec::new();
    for node in nodes {
        let prefix = pending
            .first()
            .and_then(|n| n.name.rsplit_once('/'))
            .map(|(p, _)| p);
        match prefix {
            Some(p) if node.name == p => {
                pending.push(node);
                chains.push(std::mem::take(&mut pending));
                continue;
            }
            Some(p) if node.name.rsplit_once('/').map(|(q, _)| q) == Some(p) => {
                pending.push(node);
                continue;
            }
            _ => chains.extend(pending.drain(..).map(|n| vec![n])),
        }
        if node.name.contains('/') && !node.name.starts_with("output ") {
            pending.push(node);
        } else {
            chains.push(vec![node]);
        }
    }
    chains.extend(pending.into_iter().map(|n| vec![n]));
    chains
}

/// The graph's one input (not an initializer) as a cnnc value: a feature
/// map (NHWC when its readers transpose it to NCHW, as a cnnc export does;
/// else NCHW, as PyTorch writes it) or a vector.
fn model_input(
    graph: &onnx_protobuf::GraphProto,
    constants: &HashMap<String, read::Constant>,
) -> Result<(String, Value), ImportError> {
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !constants.contains_key(&i.name))
        .collect();
    let [input] = inputs[..] else {
        return Err(ImportError::Interface(format!(
            "the model has {} inputs; a cnnc model has one",
            inputs.len()
        )));
    };
    let dims = write::fixed_dims(input).map_err(ImportError::Interface)?;
    let transposed = graph.node.iter().any(|n| {
        n.op_type == "Transpose"
            && n.input.first() == Some(&input.name)
            && read::ints(n, "perm") == Some(vec![0, 3, 1, 2])
    });
    let (shape, layout) = match dims[..] {
        [h, w, c] if transposed => (vec![h, w, c], Layout::Nhwc),
        [c, h, w] => (vec![h, w, c], Layout::Nchw),
        [f] => (vec![f], Layout::Vector { chw: None }),
        _ => {
            return Err(ImportError::Interface(format!(
                "the input `{}` has per-example dimensions {dims:?}: cnnc reads images [c, h, w] or vectors",
                input.name
            )))
        }
    };
    let value = Value {
        source: Source::Input,
        shape: crate::graph::Shape(shape),
        layout,
    };
    Ok((input.name.clone(), value))
}

/// Compiles the written text with cnnc's front end and checks the weights
/// against it.
fn check(imported: &Imported) -> Result<(), ImportError> {
    let typed = crate::compile_source("imported.cnn", &imported.text, None, None)
        .map_err(|d| ImportError::Internal(format!("{}\n{}", d.render(false), imported.text)))?;
    let problems = weights::mismatches(&typed, &imported.weights);
    if problems.is_empty() {
        Ok(())
    } else {
        let text: Vec<String> = problems.iter().map(|p| format!("{p:?}")).collect();
        Err(ImportError::Internal(text.join("\n")))
    }
}
