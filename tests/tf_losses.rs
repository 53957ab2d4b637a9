//! cnnc's training losses, the sparse categorical cross-entropy and the
//! binary cross-entropy of one sigmoid score, checked against Keras's
//! `SparseCategoricalCrossentropy` and `BinaryCrossentropy` and the gradients
//! TensorFlow takes of it (`tests/tf/losses.py`, TensorFlow 2.21 / Keras
//! 3.15; its output, with the versions, is `tests/tf/losses.out`): per
//! pixel for segmentation models (a label per pixel, the loss the mean over
//! every pixel of the batch), and per example for a classifier, with the
//! same code.
//!
//! Each case takes one SGD step with learning rate 1 and no momentum from
//! the recorded weights, so that `before - after` of each weight is its
//! gradient, and compares the step's loss and those gradients with
//! TensorFlow's.
//!
//! Tolerance: `|ours - tf| <= 2e-5 * max(|tf|, 1)` for the loss, the
//! output and every gradient entry, as `tests/tf_gradients.rs` allows: both
//! sides compute in f32 and sum in different orders. The largest
//! differences measured are 3.5e-7 (the 1x1 convolution's kernel gradient
//! in `segmentation_softmax`; a gradient read back as `before - after` in
//! f32 is itself rounded to about 6e-8 for weights near 0.7), 2.4e-7 (an
//! output) and 7.3e-8 (a loss). The gradients here are 1e-3 to 1.3, the
//! losses about 2, so the bound is still tight where it counts: averaging
//! the loss over the batch instead of over every pixel multiplies every
//! gradient by `h * w` (36 and 20 here; tried: conv1's bias gradient
//! became -6.78 against TensorFlow's -0.188), and a label paired with the
//! wrong pixel (the image transposed, shifted by one pixel, or another
//! example's labels) moves the loss by 7e-3 to 1.5e-1: each far outside it.

use std::path::Path;

use cnnc::autodiff::LossSpec;
use cnnc::config::{Optimizer, OptimizerKind, TrainConfig};
use cnnc::runtime::training::Trainer;
use cnnc::runtime::weights;

mod recorded;
use recorded::{flat, Recorded};

/// `|ours - tf| <= RELATIVE * max(|tf|, 1)`, element by element.
const RELATIVE: f64 = 2e-5;

/// Plain SGD (no momentum, no weight decay): a step with learning rate 1
/// subtracts the gradient.
fn sgd(lr: f64) -> Optimizer {
    Optimizer {
        kind: OptimizerKind::Sgd,
        lr,
        momentum: 0.0,
        weight_decay: 0.0,
        ..TrainConfig::default().optimizer
    }
}

/// Asserts `|ours - tf| <= RELATIVE * max(|tf|, 1)` for each pair, and
/// returns the largest difference relative to that floor.
fn close(ours: &[f64], tf: &[f64], what: &str) -> f64 {
    assert_eq!(ours.len(), tf.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&a, &b)) in ours.iter().zip(tf).enumerate() {
        let error = (a - b).abs() / b.abs().max(1.0);
        assert!(error <= RELATIVE, "{what}[{i}]: cnnc {a}, TensorFlow {b}");
        worst = worst.max(error);
    }
    eprintln!("{what}: largest difference {worst:.1e}");
    worst
}

/// Takes one training step of `tests/tf/losses/{case}.cnn` on the recorded
/// weights, input and labels, and compares its loss and each trainable
/// weight's gradient with TensorFlow's.
fn check(case: &str) {
    let path = format!("tests/tf/losses/{case}.cnn");
    let model = cnnc::load_model(Path::new(&path), None).unwrap_or_else(|d| panic!("{d}"));
    let mut recorded = Recorded::open("losses", case);
    let store = recorded.weights(&model, case);
    let x = recorded.array("x");
    let labels = recorded.array_of::<i64>("labels");
    let batch = x.shape()[0];
    // A label per row of scores: [batch] for a classifier, [batch, h, w]
    // for per-pixel scores [h, w, classes].
    let output = &model.outputs()[0].1;
    let mut expected_shape = vec![batch];
    expected_shape.extend(output[..output.len() - 1].iter().map(|&d| d as usize));
    assert_eq!(labels.shape(), expected_shape, "{case}: labels");
    let labels: Vec<u32> = labels
        .iter()
        .map(|&l| u32::try_from(l).expect("a class index"))
        .collect();

    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let step = cnnc::compile_training(&model, &loss, &sgd(1.0), batch)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut trainer = Trainer::new(step, store.clone(), 2).unwrap_or_else(|e| panic!("{e}"));
    let result = trainer
        .train_step(&flat(&x), &labels, 1.0)
        .unwrap_or_else(|e| panic!("{case}: {e}"));

    let tf_loss = f64::from(recorded.array("loss").iter().copied().next().expect("loss"));
    close(&[result.losses[0].1], &[tf_loss], &format!("{case} loss"));
    let tf_output = recorded.array("output");
    let ours: Vec<f64> = result.outputs[0].1.iter().map(|&v| f64::from(v)).collect();
    let tf: Vec<f64> = tf_output.iter().map(|&v| f64::from(v)).collect();
    close(&ours, &tf, &format!("{case} output"));

    let mut trainable: Vec<String> = weights::specs(&model)
        .into_iter()
        .filter(|s| s.param.trainable)
        .map(|s| s.name)
        .collect();
    let mut tf_names = recorded.with_prefix("grad.");
    trainable.sort();
    tf_names.sort();
    assert_eq!(trainable, tf_names, "{case}: the trainable weights");
    for name in tf_names {
        let before = &store.get(&name).expect("weight").data;
        let after = &trainer.weights.get(&name).expect("weight").data;
        let gradient: Vec<f64> = before
            .iter()
            .zip(after)
            .map(|(&b, &a)| f64::from(b) - f64::from(a))
            .collect();
        let tf: Vec<f64> = flat(&recorded.array(&format!("grad.{name}")))
            .into_iter()
            .map(f64::from)
            .collect();
        close(&gradient, &tf, &format!("{case} gradient of {name}"));
    }
}

/// Per-pixel probabilities from a softmax after a small U-Net (a skip
/// connection around max pooling, a convolution and nearest upsampling):
/// Keras takes the cross-entropy from the softmax's logits, the mean over
/// the 4 * 6 * 6 pixels of the batch.
#[test]
fn a_per_pixel_softmax_loss_matches_keras() {
    check("segmentation_softmax");
}

/// Per-pixel logits (no activation on the last convolution) against
/// `SparseCategoricalCrossentropy(from_logits=True)`, on a 5 x 4 image so
/// that a label read along the wrong axis is caught.
#[test]
fn a_per_pixel_loss_of_logits_matches_keras() {
    check("segmentation_logits");
}

/// The control: a classifier's softmax, one label per example.
#[test]
fn a_classifiers_loss_matches_keras() {
    check("dense_softmax_loss");
}

/// One sigmoid channel per pixel (foreground or not) against
/// `BinaryCrossentropy`, which Keras takes from the sigmoid's logits.
#[test]
fn a_per_pixel_binary_loss_of_a_sigmoid_matches_keras() {
    check("segmentation_sigmoid");
}
