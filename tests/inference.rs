//! Whole models compiled for inference against the reference
//! implementation, interpreted op by op over the same graph and weights.

#[path = "support/reference.rs"]
mod reference;

#[path = "support/interpret.rs"]
mod interpret;

use cnnc::graph::{Activation, Op};
use cnnc::plan::{KernelDesc, Role};
use cnnc::runtime::inference::Inference;
use cnnc::runtime::weights;
use cnnc::TypedGraph;
use ndarray::{ArrayD, IxDyn};

fn compile(source: &str) -> TypedGraph {
    cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"))
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Compiles `source` for `batch`, runs it on random data with random
/// weights (moving variances made positive) and compares with the reference.
fn check(source: &str, batch: usize, threads: usize) {
    run_and_compare(&compile(source), batch, threads);
}

/// Runs `model` on random data with random weights (moving variances made
/// positive) and compares every output with the reference.
fn run_and_compare(model: &TypedGraph, batch: usize, threads: usize) {
    let model = model.clone();
    let mut store = weights::init(&model, 7);
    for (name, tensor) in store.iter_mut() {
        let seed = name.len() as u64;
        let random = data(tensor.data.len(), seed);
        tensor.data = if name.ends_with("moving_variance") {
            random.iter().map(|v| v.abs() + 0.5).collect()
        } else {
            random
        };
    }
    let input_len = batch * model.input_shape().expect("input").elements() as usize;
    let input = data(input_len, 99);
    let values = interpret::run(&model, &store, &input, batch, false);
    let expected: std::collections::HashMap<String, Vec<f32>> = model
        .graph
        .outputs
        .iter()
        .map(|(name, id)| (name.clone(), values[id].iter().copied().collect()))
        .collect();
    let compiled = cnnc::compile_inference(&model, batch).unwrap_or_else(|e| panic!("{e}"));
    let mut inference = Inference::new(compiled, store, threads).unwrap_or_else(|e| panic!("{e}"));
    // A first run on other data fills what the program prepares from the
    // weights; the checked run reuses it.
    inference
        .run(&data(input_len, 98))
        .unwrap_or_else(|e| panic!("{e}"));
    let outputs = inference.run(&input).unwrap_or_else(|e| panic!("{e}"));
    for (name, values) in outputs {
        let reference = &expected[&name];
        assert_eq!(values.len(), reference.len(), "{name}");
        for (i, (a, e)) in values.iter().zip(reference).enumerate() {
            assert!(
                (a - e).abs() <= 1e-4 * e.abs().max(1.0),
                "{name}[{i}] = {a}, reference {e}\n{}",
                inference.plan()
            );
        }
    }
}

/// The model's input is given, not computed: compilation gives the `input`
/// node one buffer of the whole batch, for the caller to fill, and no
/// kernel; the first layer reads the caller's values.
#[test]
fn the_input_is_a_buffer_the_caller_fills_not_a_kernel() {
    let model = compile("model m : [3] { relu }");
    let input = &model.graph.nodes[model.graph.input.expect("a model has an input")];
    assert!(matches!(input.op, Op::Input { .. }), "{:?}", input.op);
    let batch = 2;
    let compiled = cnnc::compile_inference(&model, batch).unwrap_or_else(|e| panic!("{e}"));
    let mut inference =
        Inference::new(compiled, weights::init(&model, 0), 1).unwrap_or_else(|e| panic!("{e}"));
    let plan = inference.plan();
    let buffers: Vec<usize> = plan
        .buffers
        .iter()
        .filter(|b| b.role == Role::Input)
        .map(|b| b.len)
        .collect();
    assert_eq!(buffers, [batch * 3], "{plan}");
    assert!(
        plan.steps.iter().all(|s| !s.nodes.contains(&input.name)),
        "a kernel computes the input:\n{plan}"
    );
    let x = [-1.0, 2.0, -3.0, 4.0, 0.5, -0.25];
    let outputs = inference.run(&x).unwrap_or_else(|e| panic!("{e}"));
    let given = ArrayD::from_shape_vec(IxDyn(&[batch, 3]), x.to_vec()).expect("x");
    let expected = reference::activation(&given, Activation::Relu);
    assert_eq!(outputs[0].1, expected.iter().copied().collect::<Vec<f32>>());
}

#[test]
fn pooling_normalisation_and_activations() {
    let source = "
        model m : [9, 11, 6] {
            batchnorm -> relu
            let a = maxpool(3, stride: 2, padding: same)
            let b = avgpool(2, padding: same)
            let t = concat(a, b) -> lrn(depth_radius: 2) -> depthwise_conv(3, padding: same, multiplier: 2) -> elu
            let s = t -> global_avg_pool -> sigmoid
            t * s
            leaky_relu(alpha: 0.2)
            global_max_pool
            softmax
        }";
    check(source, 1, 1);
    check(source, 7, 2);
}

#[test]
fn modern_activations_as_convolution_epilogues() {
    let source = "
        model m : [7, 7, 3] {
            conv(8, 3, padding: same, activation: swish)
            conv(8, 3, padding: same, activation: gelu)
            conv(8, 3, padding: same) -> gelu(approximate: true)
            conv(8, 1, activation: relu6)
            conv(8, 1) -> hard_swish -> mish
            global_avg_pool
            dense(4, activation: hard_sigmoid)
        }";
    check(source, 1, 1);
    check(source, 5, 2);
}

#[test]
fn convolutions_dense_layers_and_residual_units() {
    let source = "
        use resnet
        model m : [12, 12, 3] {
            conv(8, 3, padding: same, activation: relu)
            residual_unit(8)
            residual_unit(16, stride: 2)
            maxpool(2)
            flatten
            dense(20, activation: tanh)
            dropout(0.5)
            dense(10, activation: softmax)
        }";
    check(source, 1, 1);
    check(source, 5, 2);
}

#[test]
fn the_examples_run_and_match_the_reference() {
    for file in [
        "examples/fashion_cnn.cnn",
        "examples/inception.cnn",
        "examples/lenet5.cnn",
    ] {
        check_file(file, 2);
    }
}

/// An inference program transforms its frozen kernels once where that is
/// worth their memory: at batch 1 the seed CNN's plan has prepared steps,
/// all of them Winograd kernel transforms; at batch 256, and in a training
/// step (whose weights change), none. Runs
/// after the first skip them and give bitwise what a fresh program gives
/// on the same input, so nothing else wrote over the prepared buffers.
#[test]
fn frozen_kernels_are_transformed_once() {
    let file = "examples/fashion_cnn.cnn";
    let source = std::fs::read_to_string(file).expect("example");
    let model = cnnc::compile_source(file, &source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let compiled = cnnc::compile_inference(&model, 1).unwrap_or_else(|e| panic!("{e}"));
    let plan = &compiled.plan;
    let prepared: Vec<usize> = (0..plan.steps.len())
        .filter(|&i| plan.prepared()[i])
        .collect();
    assert!(!prepared.is_empty(), "nothing prepared at batch 1:\n{plan}");
    for &i in &prepared {
        assert!(
            matches!(plan.steps[i].kernel, KernelDesc::WinogradFilter { .. }),
            "step {i} is prepared:\n{plan}"
        );
    }
    // At batch 256 making them costs a fraction of a percent of the
    // convolutions: none is kept, and the arena holds none of them.
    let large = cnnc::plan_inference(&model, 256).unwrap_or_else(|e| panic!("{e}"));
    assert!(large.prepared().iter().all(|&p| !p), "{large}");
    let train = model.graph.train.clone().unwrap_or_default();
    let loss = cnnc::autodiff::LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let training =
        cnnc::plan_training(&model, &loss, &train.optimizer, 1).unwrap_or_else(|e| panic!("{e}"));
    assert!(training.prepared().iter().all(|&p| !p));

    let example = model.input_shape().expect("input").elements() as usize;
    let inputs: Vec<Vec<f32>> = (0..3).map(|seed| data(example, seed)).collect();
    let mut kept =
        Inference::new(compiled, weights::init(&model, 3), 2).unwrap_or_else(|e| panic!("{e}"));
    for input in &inputs {
        let reused = kept.run(input).unwrap_or_else(|e| panic!("{e}"));
        let fresh_program = cnnc::compile_inference(&model, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut fresh = Inference::new(fresh_program, weights::init(&model, 3), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = fresh.run(input).unwrap_or_else(|e| panic!("{e}"));
        for ((name, a), (_, b)) in reused.iter().zip(&expected) {
            assert!(
                a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: a later run differs from a fresh program's"
            );
        }
    }
}

/// Like `check`, for a file on disk (whose imports resolve next to it).
fn check_file(file: &str, batch: usize) {
    let source = std::fs::read_to_string(file).expect("example");
    let model = cnnc::compile_source(file, &source, Some(std::path::Path::new("examples")), None)
        .unwrap_or_else(|d| panic!("{d}"));
    run_and_compare(&model, batch, 2);
}

/// Kernels read and write subnormal numbers as zero on every thread that
/// runs them, as TensorFlow's do (`docs/backend.md`), and the caller's
/// thread gets its own floating-point mode back.
#[test]
fn kernels_flush_subnormals_on_every_thread_and_restore_the_callers_mode() {
    let width = 256;
    let model = compile(&format!(
        "model m : [1, 1, {width}] {{ flatten dense({width}) }}"
    ));
    let batch = 64;
    for threads in [1, 2] {
        let mut store = weights::init(&model, 1);
        for (name, tensor) in store.iter_mut() {
            tensor.data.fill(0.0);
            if name.ends_with(".kernel") {
                // The identity: each output is its input, exactly, unless
                // the input reads as zero.
                for i in 0..width {
                    tensor.data[i * width + i] = 1.0;
                }
            }
        }
        let compiled = cnnc::compile_inference(&model, batch).unwrap_or_else(|e| panic!("{e}"));
        let mut inference =
            Inference::new(compiled, store, threads).unwrap_or_else(|e| panic!("{e}"));
        let subnormal = f32::MIN_POSITIVE / 4.0;
        let mut input = vec![subnormal; batch * width];
        // One normal value per item, which must come through.
        for item in 0..batch {
            input[item * width + item % width] = 0.5;
        }
        let outputs = inference.run(&input).unwrap_or_else(|e| panic!("{e}"));
        for (name, values) in outputs {
            for (i, &v) in values.iter().enumerate() {
                let expected = if i % width == (i / width) % width {
                    0.5
                } else {
                    0.0
                };
                assert_eq!(v, expected, "{name}[{i}] on {threads} threads");
            }
        }
        let product = std::hint::black_box(subnormal) * std::hint::black_box(1.0f32);
        assert_eq!(product, subnormal, "the caller's thread keeps subnormals");
    }
}
