//! The gradient program against TensorFlow: for each model of
//! `tests/tf/grads/` (a convolution with batchnorm and ReLU, stdlib's
//! residual unit, a separable convolution, stdlib's SE-block, a dense
//! softmax layer, two convolutions on Winograd's transforms, the
//! activations after the chapter on one convolution's output, batchnorm
//! without gamma or without beta, a reshape, nearest and bilinear
//! upsampling, transposed convolutions, explicit padding and cropping,
//! grouped convolutions, channel slices), the outputs,
//! the input's gradient and every trainable weight's gradient of `sum(dy *
//! output)`, in inference and in training mode, against what
//! `tf.GradientTape` recorded with the same weights (`tests/tf/grads.py`,
//! TensorFlow 2.21 / Keras 3.15; its output, with the versions, is
//! `tests/tf/grads.out`).
//!
//! Tolerance: `|ours - tf| <= 2e-5 * max(|tf|, 1)` element by element
//! (Winograd's convolutions: [`WINOGRAD_TOLERANCE`]). Both sides compute in
//! f32 and sum in different orders (TensorFlow's oneDNN kernels, cnnc's
//! GEMM and reductions), and a gradient is a sum of up to about a thousand
//! products of values near 1, so their rounding differs by a few units in
//! the last place of those terms: the largest difference measured is
//! 6.5e-6 (the kernel gradient of the last transposed convolution, each
//! entry a sum of 896 products), then 2.4e-6 (the input gradient of
//! bilinear upsampling, and a convolution's kernel gradient after nearest
//! upsampling), most are below 1e-6. Ten times that still fails any
//! wrong term: a missing batch-statistics term, a transposed kernel or a
//! wrong slice changes gradients by more than 1e-2.

use std::path::Path;

use cnnc::runtime::gradients::Gradients;
use cnnc::Mode;

mod recorded;
use recorded::{flat, Recorded};

/// How close cnnc's values must be to TensorFlow's: `|ours - tf| <=
/// relative * max(|tf|, floor)`, element by element.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    relative: f32,
    /// Whether the floor is the root mean square of TensorFlow's values
    /// rather than 1.
    rms_floor: bool,
}

/// The models without Winograd convolutions (above).
const TOLERANCE: Tolerance = Tolerance {
    relative: 2e-5,
    rms_floor: false,
};

/// Winograd's F(4x4, 3x3): its transforms scale values by up to 8 (and the
/// kernel gradient's output-gradient transform by up to 64) and cancel them
/// again, so its rounding error follows the size of the whole tensor, not
/// of the element (a value near zero by cancellation is off by 4.8e-4 of
/// itself), and is larger than a direct sum's: measured against
/// TensorFlow it is at most 1.2e-5 of the larger of the value and the root
/// mean square (the output and the input gradient), within what the
/// kernels' own tests allow against the f64 reference
/// (`tests/codegen_contraction.rs`, 1e-4 and 3e-4). A wrong term moves a
/// value by more than 1e-2 of it.
const WINOGRAD_TOLERANCE: Tolerance = Tolerance {
    relative: 1e-4,
    rms_floor: true,
};

fn close(ours: &[f32], tf: &[f32], what: &str, tolerance: Tolerance) {
    assert_eq!(ours.len(), tf.len(), "{what}: length");
    let floor = if tolerance.rms_floor {
        let squares: f64 = tf.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        (squares / tf.len().max(1) as f64).sqrt() as f32
    } else {
        1.0
    };
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in ours.iter().zip(tf).enumerate() {
        let error = (a - b).abs() / b.abs().max(floor);
        assert!(
            error <= tolerance.relative,
            "{what}[{i}]: cnnc {a}, TensorFlow {b}"
        );
        worst = worst.max(error);
    }
    eprintln!("{what}: largest difference {worst:.1e}");
}

/// Runs the gradient program of `tests/tf/grads/{case}.cnn` with the
/// recorded weights, input and upstream gradient in both modes, and
/// compares every result with TensorFlow's.
fn check(case: &str, tolerance: Tolerance) {
    let model = cnnc::load_model(Path::new(&format!("tests/tf/grads/{case}.cnn")), None)
        .unwrap_or_else(|d| panic!("{d}"));
    let mut recorded = Recorded::open("grads", case);
    let store = recorded.weights(&model, case);
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
            tolerance,
        );
        let expected = recorded.array(&format!("{name}.input"));
        close(
            &vjp.input,
            &flat(&expected),
            &format!("{case} {name} input gradient"),
            tolerance,
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
                tolerance,
            );
        }
    }
}

#[test]
fn conv_batchnorm_relu_matches_tensorflow() {
    check("conv_bn_relu", TOLERANCE);
}

#[test]
fn a_residual_unit_matches_tensorflow() {
    check("residual", TOLERANCE);
}

#[test]
fn a_separable_convolution_matches_tensorflow() {
    check("separable", TOLERANCE);
}

#[test]
fn an_se_block_matches_tensorflow() {
    check("se", TOLERANCE);
}

#[test]
fn dense_softmax_matches_tensorflow() {
    check("dense_softmax", TOLERANCE);
}

/// relu6, swish, gelu (exact and tanh), hard_sigmoid, hard_swish and mish
/// as Keras 3 defines them, values and gradients, their inputs spread over
/// about (-6, 6) so that every piece of the clipped ones is reached.
#[test]
fn the_activations_after_the_chapter_match_tensorflow() {
    check("activations", TOLERANCE);
}

/// Keras's `BatchNormalization(scale=False)` (Inception-v3's) and
/// `center=False`, in both modes.
#[test]
fn batchnorm_without_gamma_or_beta_matches_tensorflow() {
    check("batchnorm_flags", TOLERANCE);
}

/// The train section's `freeze` as Keras's `layer.trainable = False`: the
/// frozen layers get no gradients, and the frozen batchnorm runs on its
/// moving statistics in training mode too, beside one that does not.
#[test]
fn frozen_layers_match_tensorflow() {
    check("frozen", TOLERANCE);
}

/// Keras's `Reshape` with an inferred dimension, between convolutions and
/// into a dense layer.
#[test]
fn a_reshape_matches_tensorflow() {
    check("reshape", TOLERANCE);
}

/// Keras's `ZeroPadding2D` and `Cropping2D`, a convolution padded
/// explicitly (`tf.nn.conv2d` with a list of paddings), max pooling padded
/// explicitly (`tf.nn.max_pool2d` likewise), average pooling padded
/// explicitly with the padded cells left out of each mean, a separable
/// convolution padded explicitly, and PyTorch's `ceil_mode` (recorded as
/// the mean over the cells of windows padded one more cell at the end).
#[test]
fn explicit_padding_and_cropping_match_tensorflow() {
    check("padding", TOLERANCE);
}

/// Keras's `Conv2D(groups=g)`: two groups, then four with stride 2 and
/// `same` padding before a batch norm, each pass on the grouped kernels
/// (checked in the plan), never the GEMM's.
#[test]
fn grouped_convolutions_match_tensorflow() {
    let model = cnnc::load_model(Path::new("tests/tf/grads/grouped.cnn"), None)
        .unwrap_or_else(|d| panic!("{d}"));
    let plan = cnnc::plan_gradients(&model, Mode::Inference, 4)
        .expect("plans")
        .to_string();
    for pass in ["forward", "backward-data", "backward-filter"] {
        let steps = plan
            .lines()
            .filter(|l| l.contains(&format!("grouped {pass} ")))
            .count();
        // The first layer's input gradient is the model's input gradient.
        assert_eq!(steps, 2, "{pass} on the grouped kernels:\n{plan}");
    }
    assert!(!plan.contains("contraction"), "{plan}");
    check("grouped", TOLERANCE);
}

/// Channel slices (Keras `Lambda`s of `x[..., a:b]`): ShuffleNet's split
/// of a tensor into a branch and a part passed on, concatenated back, and
/// a slice with negative indices.
#[test]
fn channel_slices_match_tensorflow() {
    check("slicing", TOLERANCE);
}

/// Two 3x3 stride-1 convolutions whose forward passes, input gradients
/// and kernel gradients all run on Winograd's F(4x4, 3x3) at this batch
/// (checked in the plan), one padded `same`, one `valid`.
#[test]
fn winograd_convolutions_match_tensorflow() {
    let model = cnnc::load_model(Path::new("tests/tf/grads/winograd.cnn"), None)
        .unwrap_or_else(|d| panic!("{d}"));
    let plan = cnnc::plan_gradients(&model, Mode::Inference, 4)
        .expect("plans")
        .to_string();
    for pass in ["forward", "backward-data", "backward-filter"] {
        let steps = plan
            .lines()
            .filter(|l| {
                l.contains(&format!("contraction {pass} ")) && l.contains("winograd F(4x4,3x3)")
            })
            .count();
        assert_eq!(steps, 2, "{pass} on Winograd's transforms:\n{plan}");
    }
    check("winograd", WINOGRAD_TOLERANCE);
}

/// Keras's `UpSampling2D` repeating pixels (`ops.repeat`), between two
/// convolutions.
#[test]
fn nearest_upsampling_matches_tensorflow() {
    check("upsample_nearest", TOLERANCE);
}

/// `UpSampling2D(interpolation="bilinear")`, which is `tf.image.resize`:
/// half-pixel centres, the edges clamped, no antialiasing; factors of
/// `[2, 3]` and `[3, 1]`.
#[test]
fn bilinear_upsampling_matches_tensorflow() {
    check("upsample_bilinear", TOLERANCE);
}

/// `Conv2DTranspose` with stride 2: `same`; `valid` with an output padding
/// of `[1, 0]` and a `[3, 2]` kernel; an even kernel with `same`, an output
/// padding of 1 and no bias. The kernels in Keras's layout, `[kh, kw,
/// filters, in]`.
#[test]
fn transposed_convolutions_match_tensorflow() {
    check("conv_transpose", TOLERANCE);
}
