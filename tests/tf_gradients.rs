//! The gradient program against TensorFlow: for each model of
//! `tests/tf/grads/` (a convolution with batchnorm and ReLU, stdlib's
//! residual unit, a separable convolution, stdlib's SE-block, a dense
//! softmax layer), the outputs, the input's gradient and every trainable
//! weight's gradient of `sum(dy * output)`, in inference and in training
//! mode, against what `tf.GradientTape` recorded with the same weights
//! (`tests/tf/grads.py`, TensorFlow 2.21 / Keras 3.15; its output, with the
//! versions, is `tests/tf/grads.out`).
//!
//! Tolerance: `|ours - tf| <= 2e-5 * max(|tf|, 1)` element by element. Both
//! sides compute in f32 and sum in different orders (TensorFlow's oneDNN
//! kernels, cnnc's GEMM and reductions), and a gradient is a sum of up to a
//! few hundred products of values near 1, so their rounding differs by a
//! few units in the last place of those terms: the largest difference
//! measured is 2.3e-6 (a training-mode 1x1 convolution's kernel gradient
//! in the residual unit), most are below 1e-6. Ten times that still fails
//! any wrong term: a missing batch-statistics term, a transposed kernel or
//! a wrong slice changes gradients by more than 1e-2.

use std::fs::File;
use std::path::Path;

use cnnc::runtime::gradients::Gradients;
use cnnc::runtime::weights::{self, Tensor, TensorStore};
use cnnc::Mode;
use ndarray::ArrayD;
use ndarray_npy::NpzReader;

/// What `grads.py` recorded for one model.
struct Recorded {
    npz: NpzReader<File>,
    names: Vec<String>,
}

impl Recorded {
    fn open(case: &str) -> Recorded {
        let path = format!("tests/tf/grads/{case}.npz");
        let mut npz = NpzReader::new(File::open(&path).expect(&path)).expect(&path);
        let names = npz.names().expect("names");
        Recorded { npz, names }
    }

    fn array(&mut self, name: &str) -> ArrayD<f32> {
        self.npz
            .by_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The entries whose names start with `prefix`, without it.
    fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.names
            .iter()
            .filter_map(|n| n.trim_end_matches(".npy").strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    }
}

fn flat(array: &ArrayD<f32>) -> Vec<f32> {
    array.iter().copied().collect()
}

fn close(ours: &[f32], tf: &[f32], what: &str) {
    assert_eq!(ours.len(), tf.len(), "{what}: length");
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in ours.iter().zip(tf).enumerate() {
        let error = (a - b).abs() / b.abs().max(1.0);
        assert!(error <= 2e-5, "{what}[{i}]: cnnc {a}, TensorFlow {b}");
        worst = worst.max(error);
    }
    eprintln!("{what}: largest difference {worst:.1e}");
}

/// Runs the gradient program of `tests/tf/grads/{case}.cnn` with the
/// recorded weights, input and upstream gradient in both modes, and
/// compares every result with TensorFlow's.
fn check(case: &str) {
    let model = cnnc::load_model(Path::new(&format!("tests/tf/grads/{case}.cnn")), None)
        .unwrap_or_else(|d| panic!("{d}"));
    let mut recorded = Recorded::open(case);
    let mut store = TensorStore::new();
    for name in recorded.with_prefix("w.") {
        let array = recorded.array(&format!("w.{name}"));
        let tensor = Tensor {
            shape: array.shape().to_vec(),
            data: flat(&array),
        };
        store.insert(name, tensor);
    }
    // The file holds every weight of the model, in the model's shapes.
    let specs = weights::specs(&model);
    assert_eq!(store.len(), specs.len(), "{case}: weights");
    for spec in &specs {
        let tensor = store
            .get(&spec.name)
            .unwrap_or_else(|| panic!("{}", spec.name));
        assert_eq!(tensor.shape, spec.shape, "{}", spec.name);
    }
    let x = recorded.array("x");
    let dy = recorded.array("dy");
    let batch = x.shape()[0];
    let output = model.outputs()[0].0.clone();
    for (mode, name) in [
        (Mode::Inference, "inference"),
        (Mode::Training { dropout: false }, "training"),
    ] {
        let program = cnnc::compile_gradients(&model, mode, batch).expect("compiles");
        let mut gradients = Gradients::new(program, store.clone(), 2).expect("runner");
        let vjp = gradients
            .run(&flat(&x), &[(output.clone(), flat(&dy))])
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = recorded.array(&format!("{name}.output"));
        close(
            &vjp.outputs[0].1,
            &flat(&expected),
            &format!("{case} {name} output"),
        );
        let expected = recorded.array(&format!("{name}.input"));
        close(
            &vjp.input,
            &flat(&expected),
            &format!("{case} {name} input gradient"),
        );
        let mut tf_names = recorded.with_prefix(&format!("{name}.grad."));
        let mut ours: Vec<String> = vjp.weights.names().map(str::to_string).collect();
        tf_names.sort();
        ours.sort();
        assert_eq!(ours, tf_names, "{case} {name}: the trainable weights");
        for weight in tf_names {
            let expected = recorded.array(&format!("{name}.grad.{weight}"));
            let got = vjp.weights.get(&weight).expect("gradient");
            assert_eq!(got.shape, expected.shape(), "{weight}: layout");
            close(
                &got.data,
                &flat(&expected),
                &format!("{case} {name} {weight}"),
            );
        }
    }
}

#[test]
fn conv_batchnorm_relu_matches_tensorflow() {
    check("conv_bn_relu");
}

#[test]
fn a_residual_unit_matches_tensorflow() {
    check("residual");
}

#[test]
fn a_separable_convolution_matches_tensorflow() {
    check("separable");
}

#[test]
fn an_se_block_matches_tensorflow() {
    check("se");
}

#[test]
fn dense_softmax_matches_tensorflow() {
    check("dense_softmax");
}
