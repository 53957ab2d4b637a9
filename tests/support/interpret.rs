//! Runs a model's graph op by op with the reference implementation: the
//! expected values for whole-model tests of the compiled programs. Include
//! after `mod reference;` with `#[path = "support/interpret.rs"] mod interpret;`.
#![allow(dead_code)]

use std::collections::HashMap;

use cnnc::graph::Op;
use cnnc::runtime::weights::TensorStore;
use cnnc::TypedGraph;
use ndarray::ArrayD;
use petgraph::stable_graph::NodeIndex;

use crate::reference;

/// Every forward node's value for `input` (a batch of `batch` examples),
/// batchnorm using batch statistics when `training` (and its layer is
/// not frozen).
pub fn run(
    model: &TypedGraph,
    store: &TensorStore,
    input: &[f32],
    batch: usize,
    training: bool,
) -> HashMap<NodeIndex, ArrayD<f32>> {
    let g = &model.graph;
    let mut values: HashMap<NodeIndex, ArrayD<f32>> = HashMap::new();
    for &id in &model.order {
        let node = &g.nodes[id];
        let value = match &node.op {
            Op::Input { shape } => {
                let dims: Vec<usize> = std::iter::once(batch)
                    .chain(shape.iter().map(|&d| d as usize))
                    .collect();
                ArrayD::from_shape_vec(dims, input.to_vec()).expect("input shape")
            }
            // Dropout is tested separately; here it is the identity.
            Op::Dropout { .. } => values[&g.inputs_of(id)[0]].clone(),
            op => {
                let inputs: Vec<&ArrayD<f32>> =
                    g.inputs_of(id).iter().map(|i| &values[i]).collect();
                let params: Vec<ArrayD<f32>> = node
                    .params
                    .iter()
                    .map(|p| {
                        let t = store
                            .get(&format!("{}.{}", node.name, p.name))
                            .expect("weight");
                        ArrayD::from_shape_vec(t.shape.clone(), t.data.clone())
                            .expect("weight shape")
                    })
                    .collect();
                let params: Vec<&ArrayD<f32>> = params.iter().collect();
                // A frozen layer runs as in inference (Keras 3's frozen batchnorm).
                reference::forward(op, &inputs, &params, training && node.trainable)
            }
        };
        values.insert(id, value);
    }
    values
}

/// The mean cross-entropy of output 0, on its logits (the input of a final
/// softmax), with batch statistics in batchnorm: over the examples, or over
/// all their pixels for per-pixel scores (a label per row of scores).
pub fn loss(model: &TypedGraph, store: &TensorStore, input: &[f32], labels: &[usize]) -> f64 {
    let image = model.input_shape().expect("input").elements() as usize;
    let values = run(model, store, input, input.len() / image, true);
    let output = model.graph.outputs[0].1;
    let one_score = model.info(output).shape.0.last() == Some(&1);
    let logits = match model.graph.nodes[output].op {
        Op::Activation(cnnc::graph::Activation::Softmax) => model.graph.inputs_of(output)[0],
        Op::Activation(cnnc::graph::Activation::Sigmoid) if one_score => {
            model.graph.inputs_of(output)[0]
        }
        _ => output,
    };
    // One score: a sigmoid's logit, scored with the binary cross-entropy.
    if model.info(logits).shape.0.last() == Some(&1) {
        return f64::from(reference::binary_crossentropy_from_logits(
            &values[&logits],
            labels,
        ));
    }
    f64::from(reference::sparse_categorical_crossentropy(
        &values[&logits],
        labels,
        true,
        0.0,
    ))
}
