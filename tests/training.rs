//! Whole training steps: the gradients a compiled step applies, checked
//! against central finite differences of the reference forward pass and
//! loss, for models that use every kind of gradient kernel.

#[path = "support/reference.rs"]
mod reference;

#[path = "support/interpret.rs"]
mod interpret;

use cnnc::autodiff::LossSpec;
use cnnc::config::{Optimizer, OptimizerKind, TrainConfig};
use cnnc::runtime::training::{Trainer, TrainingError};
use cnnc::runtime::weights::{self, TensorStore};
use cnnc::TypedGraph;
use ndarray::{ArrayD, IxDyn};

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

/// Compiles `model`'s training step for batches of `batch` and starts a
/// trainer on it with `weights`.
fn trainer(
    model: &TypedGraph,
    weights: TensorStore,
    loss: &LossSpec,
    optimizer: Optimizer,
    batch: usize,
    threads: usize,
) -> Result<Trainer, String> {
    let step = cnnc::compile_training(model, loss, &optimizer, batch).map_err(|e| e.to_string())?;
    Trainer::new(step, weights, threads).map_err(|e| e.to_string())
}

fn sgd(lr: f64) -> Optimizer {
    Optimizer {
        kind: OptimizerKind::Sgd,
        lr,
        ..TrainConfig::default().optimizer
    }
}

/// Random weights (positive moving variances), deterministic.
fn random_weights(model: &TypedGraph) -> TensorStore {
    let mut store = weights::init(model, 3);
    for (i, (name, tensor)) in store.iter_mut().enumerate() {
        let random = data(tensor.data.len(), 100 + i as u64);
        tensor.data = if name.ends_with("variance") {
            random.iter().map(|v| v.abs() + 0.5).collect()
        } else {
            random
        };
    }
    store
}

/// Takes one SGD step with learning rate 1 (so the change of each weight is
/// minus its gradient) and compares a few entries of every trainable
/// weight's gradient with central differences of the reference loss.
fn check_gradients(source: &str, batch: usize, classes: usize) {
    check_gradients_at(source, batch, classes, |_, len| vec![0, len / 3, len - 1]);
}

/// [`check_gradients`] at the entries `entries(weight, len)` of each
/// trainable weight.
fn check_gradients_at(
    source: &str,
    batch: usize,
    classes: usize,
    entries: impl Fn(&str, usize) -> Vec<usize>,
) {
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let store = random_weights(&model);
    let input = data(
        batch * model.input_shape().expect("input").elements() as usize,
        7,
    );
    // A label per row of scores: per example, or per pixel.
    let (_, output) = &model.outputs()[0];
    let rows = batch * (output.iter().product::<u64>() / output.last().expect("scores")) as usize;
    let labels: Vec<usize> = (0..rows).map(|i| (i * 5 + 1) % classes).collect();
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let mut trainer =
        trainer(&model, store.clone(), &loss, sgd(1.0), batch, 2).unwrap_or_else(|e| panic!("{e}"));
    let labels_u32: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let result = trainer
        .train_step(&input, &labels_u32, 1.0)
        .unwrap_or_else(|e| panic!("{e}"));
    let reference_loss = interpret::loss(&model, &store, &input, &labels);
    let ours = result.losses[0].1;
    assert!(
        (ours - reference_loss).abs() < 1e-4 * reference_loss.max(1.0),
        "loss {ours}, reference {reference_loss}"
    );
    for spec in weights::specs(&model)
        .into_iter()
        .filter(|s| s.param.trainable)
    {
        let before = &store.get(&spec.name).expect("weight").data;
        let after = &trainer.weights.get(&spec.name).expect("weight").data;
        for i in entries(&spec.name, before.len()) {
            let analytic = f64::from(before[i] - after[i]);
            let h = 1e-2f32;
            let (mut up, mut down) = (store.clone(), store.clone());
            up.get_mut(&spec.name).expect("weight").data[i] += h;
            down.get_mut(&spec.name).expect("weight").data[i] -= h;
            let numeric = (interpret::loss(&model, &up, &input, &labels)
                - interpret::loss(&model, &down, &input, &labels))
                / (2.0 * f64::from(h));
            let tolerance = 2e-2 * numeric.abs().max(analytic.abs()) + 2e-4;
            assert!(
                (analytic - numeric).abs() <= tolerance,
                "{}[{i}]: step gradient {analytic}, finite difference {numeric}",
                spec.name
            );
        }
    }
}

#[test]
fn gradients_of_pooling_normalisation_and_recalibration() {
    let source = "
        model m : [6, 6, 4] {
            let t = depthwise_conv(3, padding: same) -> batchnorm -> elu
            let a = t -> avgpool(2)
            let b = t -> maxpool(2)
            let c = concat(a, b) -> lrn(depth_radius: 1) -> avgpool(1, trainable: true)
            let s = c -> global_max_pool -> sigmoid
            c * s
            tanh
            global_avg_pool
            softmax
        }";
    check_gradients(source, 3, 8);
}

#[test]
fn gradients_of_kernels_whose_edge_taps_only_read_padding() {
    // On 2x2 images a 3x3 stride-2 kernel reads with 4 of its taps, and on
    // 1x1 images a 3x3 kernel with its centre alone: their kernel
    // gradients hold only those taps' rows, which the update reads, and
    // the other rows as zeros. Every entry of both kernels is checked.
    let source = "
        model m : [2, 2, 3] {
            conv(4, 3, stride: 2, padding: same) -> tanh
            conv(5, 3, padding: same) -> tanh
            flatten
            dense(3, activation: softmax)
        }";
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let step =
        cnnc::compile_training(&model, &loss, &sgd(1.0), 3).unwrap_or_else(|e| panic!("{e}"));
    let live = step
        .compiled
        .plan
        .steps
        .iter()
        .filter(|s| s.kernel.method().ends_with("live rows"))
        .count();
    assert_eq!(live, 2, "both kernel gradients hold their live rows");
    check_gradients_at(source, 3, 3, |name, len| {
        if name.ends_with(".kernel") && !name.starts_with("dense") {
            (0..len).collect()
        } else {
            vec![0, len / 3, len - 1]
        }
    });
}

#[test]
fn gradients_of_convolutions_dense_layers_and_blocks() {
    // A residual unit with a projection, an inception-style concatenation
    // and dense layers: every contraction gradient, summed gradients and
    // slices. Smooth activations, so that finite differences see no kinks.
    let source = "
        block unit(filters, stride = 1) {
            let main = conv(filters, 3, stride: stride, padding: same, use_bias: false) -> batchnorm -> tanh
                -> conv(filters, 3, padding: same) -> batchnorm
            let skip = conv(filters, 1, stride: stride, use_bias: false) -> batchnorm
            main + skip
            elu
        }
        model m : [8, 8, 2] {
            conv(4, 3, padding: same) -> tanh
            unit(6, stride: 2)
            let a = conv(3, 1, activation: elu)
            let b = conv(2, 3, padding: same, dilation: 2, activation: sigmoid)
            concat(a, b)
            flatten
            dense(7, activation: selu)
            dense(5, activation: softmax)
        }";
    check_gradients(source, 3, 5);
}

#[test]
fn gradients_through_self_gated_activations_after_convolutions() {
    // Their gradients read the convolution's output, which so stays a
    // buffer of its own instead of becoming an epilogue's input. The smooth
    // ones only: relu6's and hard_swish's kinks fall among these values,
    // where a finite difference straddles them; tests/gradients.rs checks
    // those on inputs kept away from their kinks.
    let source = "
        model m : [6, 6, 3] {
            conv(4, 3, padding: same, activation: swish)
            conv(4, 3, padding: same, activation: gelu)
            conv(4, 3, padding: same) -> mish
            depthwise_conv(3, padding: same) -> gelu(approximate: true)
            global_avg_pool
            dense(5, activation: softmax)
        }";
    check_gradients(source, 3, 5);
}

#[test]
fn gradients_of_a_small_unet() {
    // A strided convolution down, a transposed convolution and both
    // upsamplings back up, joined with the skip path: every weight of the
    // decoder gets its gradient through a training step.
    let source = "
        model m : [6, 6, 2] {
            let skip = conv(3, 3, padding: same, activation: tanh)
            let deep = skip -> conv(4, 3, stride: 2, padding: same, activation: tanh)
            let up = deep -> conv_transpose(3, 3, stride: 2, padding: same, activation: tanh)
            let near = deep -> upsample(2) -> conv(2, 1)
            let smooth = deep -> upsample(2, mode: bilinear)
                -> conv_transpose(2, [1, 3], padding: same, output_padding: none, use_bias: false)
            concat(skip, up, near, smooth)
            global_avg_pool
            dense(4, activation: softmax)
        }";
    check_gradients(source, 3, 4);
}

#[test]
fn gradients_of_a_per_pixel_loss() {
    // Segmentation: per-pixel scores `[h, w, classes]`, a label per pixel,
    // the loss the mean over every pixel of the batch (as Keras averages
    // a sparse cross-entropy of such scores). With a softmax and without.
    let source = "
        model m : [6, 6, 2] {
            let skip = conv(3, 3, padding: same, activation: tanh)
            let deep = skip -> maxpool(2) -> conv(4, 3, padding: same, activation: tanh)
            concat(skip, deep -> upsample(2))
            conv(3, 1, activation: softmax)
        }";
    check_gradients(source, 3, 3);
    let logits = "
        model m : [5, 4, 1] {
            conv(4, 3, padding: same, activation: tanh)
            conv(5, 1)
        }";
    check_gradients(logits, 2, 5);
}

#[test]
fn gradients_of_the_binary_cross_entropy_of_a_sigmoid() {
    // One score behind a sigmoid: a binary classifier, and a mask of one
    // channel (foreground or not), each scored on the sigmoid's logit.
    let classifier = "
        model m : [4, 4, 2] {
            conv(3, 3, padding: same, activation: tanh)
            flatten
            dense(1, activation: sigmoid)
        }";
    check_gradients(classifier, 4, 2);
    let mask = "
        model m : [5, 4, 1] {
            conv(4, 3, padding: same, activation: tanh)
            conv(1, 1, activation: sigmoid)
        }";
    check_gradients(mask, 2, 2);
}

#[test]
fn gradients_through_explicit_padding_cropping_and_ceil_mode() {
    // Every gradient of the first convolution's weights flows back through
    // zero padding, a depthwise convolution and pools padded explicitly
    // (the pools rounding up with ceil_mode), a cropping and a convolution
    // padded by 2 on every side.
    let source = "
        model m : [7, 6, 3] {
            conv(4, 3, padding: [1, 2, 0, 1], activation: tanh)
            zero_padding([1, 0, 2, 1])
            let t = depthwise_conv(3, padding: [2, 0, 1, 3], multiplier: 2) -> elu
            let a = t -> maxpool(3, stride: 2, padding: [1, 1, 2, 0], ceil_mode: true)
            let b = t -> avgpool(2, padding: 1, ceil_mode: true)
            concat(a, b) -> cropping([1, 0, 1, 2])
            conv(3, 3, padding: 2, activation: tanh)
            global_avg_pool
            dense(5, activation: softmax)
        }";
    check_gradients(source, 3, 5);
}

#[test]
fn gradients_of_grouped_convolutions() {
    // ResNeXt's grouped 3x3 between 1x1 convolutions, and a strided grouped
    // convolution without a bias before a batch norm.
    let source = "
        model m : [7, 7, 4] {
            conv(6, 3, padding: same, groups: 2) -> tanh
            conv(8, 1) -> elu
            conv(12, 3, stride: 2, padding: same, groups: 4, use_bias: false) -> batchnorm -> tanh
            global_avg_pool
            dense(5, activation: softmax)
        }";
    check_gradients(source, 3, 5);
}

#[test]
fn gradients_of_channel_slices() {
    // ShuffleNet's channel split: half the channels pass, the other half
    // goes through a branch; the two slices' gradients add into one, and
    // a slice of a dense layer's features.
    let source = "
        model m : [5, 5, 3] {
            let t = conv(8, 3, padding: same) -> tanh
            let kept = t -> channels(0, 4)
            let branch = t -> channels(4, 8) -> conv(4, 3, padding: same) -> tanh
            let u = concat(branch, kept) -> conv(6, 1) -> elu
            let whole = u -> channels(0, 6)
            whole + (u -> channels(-6, 6))
            global_avg_pool
            dense(7, activation: tanh)
            channels(2, -1)
            dense(5, activation: softmax)
        }";
    check_gradients(source, 3, 5);
}

#[test]
fn gradients_of_lenets_subsampling_and_rbf_units() {
    let source = "
        model m : [8, 8, 1] {
            conv(3, 3, activation: tanh)
            avgpool(2, trainable: true, activation: tanh)
            flatten
            dense(6, activation: tanh)
            rbf(4)
        }";
    check_gradients(source, 3, 4);
}

/// `freeze` in the train section: the frozen batchnorm normalises with its
/// moving statistics, so its input gradient is inference mode's, and the
/// layers before it still learn through it.
#[test]
fn gradients_through_frozen_layers() {
    check_gradients(
        "
        model m : [6, 6, 2] {
            conv(3, 3, padding: same) as stem
            batchnorm as stem_bn
            conv(4, 3, stride: 2, padding: same) -> batchnorm -> relu
            global_avg_pool
            dense(3)
        }
        train { freeze: [\"stem_bn\", \"dense*\"] }",
        4,
        3,
    );
}

/// A frozen layer's weights, and a frozen batchnorm's moving statistics,
/// are the same after training steps as before; the rest move.
#[test]
fn training_leaves_frozen_layers_as_they_were() {
    let source = "
        block unit(f) { conv(f, 3, padding: same) -> batchnorm -> relu }
        model m : [6, 6, 2] {
            unit(4) as base
            unit(4) as top
            global_avg_pool
            dense(3) as head
        }
        train { freeze: [\"base\"] }";
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let store = random_weights(&model);
    let batch = 4;
    let input = data(batch * 72, 5);
    let labels = [0, 1, 2, 1];
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let adam = Optimizer {
        kind: OptimizerKind::Adam,
        lr: 0.05,
        ..TrainConfig::default().optimizer
    };
    let mut trainer =
        trainer(&model, store.clone(), &loss, adam, batch, 2).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..3 {
        trainer.train_step(&input, &labels, 0.05).expect("step");
    }
    for (name, before) in store.iter() {
        let after = &trainer.weights.get(name).expect("weight").data;
        if name.starts_with("base.") {
            assert_eq!(after, &before.data, "{name} changed");
        } else {
            assert_ne!(after, &before.data, "{name} did not change");
        }
    }
}

#[test]
fn training_reduces_the_loss_and_moves_the_batchnorm_statistics() {
    let source = "
        model m : [5, 5, 3] {
            depthwise_conv(3, padding: same, multiplier: 2) -> batchnorm -> relu
            dropout(0.2)
            global_avg_pool
            softmax
        }";
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let store = random_weights(&model);
    let batch = 8;
    let input = data(batch * 75, 11);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 6).collect();
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let adam = Optimizer {
        kind: OptimizerKind::Adam,
        lr: 0.05,
        ..TrainConfig::default().optimizer
    };
    let mut trainer =
        trainer(&model, store.clone(), &loss, adam, batch, 2).unwrap_or_else(|e| panic!("{e}"));
    let first = trainer
        .train_step(&input, &labels, 0.05)
        .expect("step")
        .losses[0]
        .1;
    let mut last = first;
    for _ in 0..60 {
        last = trainer
            .train_step(&input, &labels, 0.05)
            .expect("step")
            .losses[0]
            .1;
    }
    assert!(last < 0.8 * first, "loss went from {first} to {last}");
    let moving = &trainer
        .weights
        .get("batchnorm1.moving_mean")
        .expect("statistic")
        .data;
    assert_ne!(
        moving,
        &store.get("batchnorm1.moving_mean").expect("statistic").data,
        "moving mean not updated"
    );
    let err = trainer.train_step(&input[1..], &labels, 0.05).unwrap_err();
    assert!(err.to_string().contains("images"), "{err}");
}

/// A trainer for `model`, a model without weights, with dropout's seed `seed`.
fn weightless_trainer(model: &TypedGraph, batch: usize, seed: u64) -> Trainer {
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let mut trainer = trainer(model, TensorStore::new(), &loss, sgd(0.0), batch, 2)
        .unwrap_or_else(|e| panic!("{e}"));
    trainer.seed = seed;
    trainer
}

/// The first output of one training step of `trainer` on `input`.
fn step_output(trainer: &mut Trainer, input: &[f32], batch: usize) -> Vec<f32> {
    let labels: Vec<u32> = (0..batch as u32).collect();
    let mut result = trainer
        .train_step(input, &labels, 0.0)
        .unwrap_or_else(|e| panic!("{e}"));
    result.outputs.remove(0).1
}

/// Dropout while training, through the compiled mask and product kernels.
/// A step on ones returns the step's mask itself; a fresh trainer at the
/// same step and seed, given other values, must return them masked as the
/// reference scales them (`x * keep / (1 - rate)`).
#[test]
fn training_dropout_applies_the_steps_mask_as_the_reference_scales_it() {
    let (features, batch, rate) = (64, 4, 0.75);
    // No weights, so that the model's output is the dropout's.
    let source = format!("model m : [{features}] {{ dropout({rate}) }}");
    let model =
        cnnc::compile_source("model.cnn", &source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let ones = vec![1.0; batch * features];
    let mut first = weightless_trainer(&model, batch, 0);
    let mask = step_output(&mut first, &ones, batch);
    // Kept values are scaled by 1 / (1 - 0.75) = 4; 256 values kept with
    // probability 0.25 keep 64 on average, with a standard deviation of 7.
    assert!(mask.iter().all(|&m| m == 0.0 || m == 4.0), "{mask:?}");
    let kept = mask.iter().filter(|&&m| m != 0.0).count();
    assert!((30..100).contains(&kept), "kept {kept} of 256");
    let next_step = step_output(&mut first, &ones, batch);
    assert_ne!(next_step, mask, "the next step drew the same mask");
    let other_seed = step_output(&mut weightless_trainer(&model, batch, 1), &ones, batch);
    assert_ne!(other_seed, mask, "another seed drew the same mask");

    let x = data(batch * features, 5);
    let dropped = step_output(&mut weightless_trainer(&model, batch, 0), &x, batch);
    let keep: Vec<f32> = mask.iter().map(|&m| f32::from(m != 0.0)).collect();
    let shape = IxDyn(&[batch, features]);
    let expected = reference::dropout_with_mask(
        &ArrayD::from_shape_vec(shape.clone(), x).expect("x"),
        &ArrayD::from_shape_vec(shape, keep).expect("mask"),
        rate,
    );
    assert_eq!(dropped, expected.iter().copied().collect::<Vec<f32>>());
}

#[test]
fn training_is_bitwise_deterministic_whatever_the_thread_count() {
    let source = "
        use resnet
        model m : [10, 10, 1] {
            conv(8, 3, padding: same, activation: relu)
            residual_unit(12, stride: 2)
            dropout(0.3)
            flatten
            dense(6, activation: softmax)
        }";
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let batch = 16;
    let input = data(batch * 100, 21);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 6).collect();
    let loss = LossSpec {
        smoothing: 0.1,
        weights: Vec::new(),
    };
    let nadam = Optimizer {
        kind: OptimizerKind::Nadam,
        lr: 0.01,
        ..TrainConfig::default().optimizer
    };
    let run = |threads: usize| {
        let mut trainer = trainer(
            &model,
            weights::init(&model, 9),
            &loss,
            nadam,
            batch,
            threads,
        )
        .expect("compiles");
        for _ in 0..3 {
            trainer.train_step(&input, &labels, 0.01).expect("step");
        }
        trainer.weights
    };
    let (one, two, three) = (run(1), run(2), run(3));
    for ((name, a), (_, b)) in one.iter().zip(two.iter()) {
        assert_eq!(a.data, b.data, "{name}: 1 vs 2 threads");
    }
    for ((name, a), (_, b)) in one.iter().zip(three.iter()) {
        assert_eq!(a.data, b.data, "{name}: 1 vs 3 threads");
    }
}

#[test]
fn a_loss_that_is_not_finite_stops_the_step_and_keeps_the_weights() {
    let source = "
        model m : [4, 4, 2] {
            conv(3, 3, padding: same) -> batchnorm -> relu
            global_avg_pool
            softmax
        }";
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let store = random_weights(&model);
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let mut trainer = trainer(&model, store.clone(), &loss, sgd(0.1), 2, 2).expect("compiles");
    let mut input = data(2 * 32, 3);
    input[5] = f32::NAN;
    let err = trainer.train_step(&input, &[0, 1], 0.1).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("loss of output `output`")
            && message.contains("step 1")
            && message.contains("lower the learning rate"),
        "{message}"
    );
    for (name, tensor) in store.iter() {
        assert_eq!(
            trainer.weights.get(name).expect("weight").data,
            tensor.data,
            "{name} changed"
        );
    }
}

#[test]
fn weight_decay_shrinks_every_trainable_weight_by_lr_times_decay() {
    // The first update's step does not depend on the weights (the moments
    // start at zero), so decay moves each trainable weight by exactly
    // `-lr * decay * w0` more than the same step without it, and leaves
    // batchnorm's moving statistics alone.
    let source = "
        model m : [6, 6, 2] {
            conv(4, 3, padding: same) -> batchnorm -> relu
            flatten
            dense(5, activation: softmax)
        }
        train { optimizer: nadam(lr: 0.01, weight_decay: 0.5) }";
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let decayed = model.graph.train.as_ref().expect("train section").optimizer;
    assert_eq!(decayed.weight_decay, 0.5);
    let plain = Optimizer {
        weight_decay: 0.0,
        ..decayed
    };
    let batch = 4;
    let input = data(batch * 72, 31);
    let labels: Vec<u32> = (0..batch as u32).collect();
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let store = random_weights(&model);
    let step = |optimizer: Optimizer| {
        let mut trainer = trainer(&model, store.clone(), &loss, optimizer, batch, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        trainer.train_step(&input, &labels, 0.01).expect("step");
        trainer.weights
    };
    let (with, without) = (step(decayed), step(plain));
    let mut decayed_weights = 0;
    for ((name, a), (_, b)) in with.iter().zip(without.iter()) {
        let w0 = &store.get(name).expect("initial weight").data;
        let statistic = name.contains("moving");
        for (i, ((&got, &plain), &initial)) in a.data.iter().zip(&b.data).zip(w0).enumerate() {
            let expected = if statistic {
                plain
            } else {
                plain - 0.01 * 0.5 * initial
            };
            assert!(
                (got - expected).abs() < 1e-6,
                "{name}[{i}]: {got} with decay, {expected} expected"
            );
        }
        decayed_weights += usize::from(!statistic);
    }
    assert!(decayed_weights >= 6, "{decayed_weights} trainable tensors");
}

/// A plain SGD trainer for `source`'s model, batch `batch`, random weights.
fn label_trainer(source: &str, batch: usize) -> Trainer {
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    trainer(&model, random_weights(&model), &loss, sgd(0.1), batch, 2)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The error of a step on `labels` (any images), checking that nothing ran:
/// the weights and the step count are as they were.
fn refused_step(trainer: &mut Trainer, labels: &[u32]) -> TrainingError {
    let before = (trainer.weights.clone(), trainer.step);
    let images = data(
        labels.len() * trainer.plan().input_shape.iter().product::<u64>() as usize,
        4,
    );
    let error = match trainer.train_step(&images, labels, 0.1) {
        Ok(result) => panic!("labels {labels:?} were accepted: {:?}", result.losses),
        Err(error) => error,
    };
    assert_eq!(trainer.step, before.1, "the step count moved");
    for (name, tensor) in before.0.iter() {
        let after = &trainer.weights.get(name).expect("weight").data;
        assert_eq!(after, &tensor.data, "{name} changed");
    }
    error
}

const TEN_CLASSES: &str = "
    model m : [2, 2, 3] {
        flatten
        dense(10, activation: softmax)
    }";

#[test]
fn a_label_equal_to_the_number_of_classes_is_refused_before_the_step() {
    let mut trainer = label_trainer(TEN_CLASSES, 4);
    let error = refused_step(&mut trainer, &[1, 10, 2, 3]);
    assert!(
        matches!(
            &error,
            TrainingError::LabelOutOfRange { label: 10, position: 1, output, scores: 10 }
                if output == "output"
        ),
        "{error:?}"
    );
    insta::assert_snapshot!("label_equal_to_classes", error.to_string());
    // The trainer is still usable: the same batch with a good label trains.
    let images = data(4 * 12, 4);
    trainer
        .train_step(&images, &[1, 9, 2, 3], 0.1)
        .expect("a good batch");
}

#[test]
fn a_huge_label_is_an_error_not_a_crash() {
    // 4,000,000,000 used to reach the cross-entropy kernel as an index.
    let mut trainer = label_trainer(TEN_CLASSES, 4);
    let error = refused_step(&mut trainer, &[0, 1, 2, 4_000_000_000]);
    assert!(
        matches!(
            error,
            TrainingError::LabelOutOfRange {
                label: 4_000_000_000,
                position: 3,
                scores: 10,
                ..
            }
        ),
        "{error:?}"
    );
    insta::assert_snapshot!("huge_label", error.to_string());
    for label in [u32::MAX, (1 << 24) + 1, 11] {
        let error = refused_step(&mut trainer, &[label, 0, 0, 0]);
        assert!(
            matches!(error, TrainingError::LabelOutOfRange { position: 0, .. }),
            "{label}: {error:?}"
        );
    }
}

#[test]
fn every_output_bounds_the_labels() {
    // Keras scores every output against the same labels, so a label must be
    // below each output's number of scores: 3 fits the first output's 10
    // but not the second's 2.
    let source = "
        model two : [2, 2, 3] {
            flatten
            output main = dense(10, activation: softmax)
            output aux = dense(2, activation: softmax)
        }";
    let mut trainer = label_trainer(source, 4);
    let error = refused_step(&mut trainer, &[0, 1, 3, 1]);
    assert!(
        matches!(
            &error,
            TrainingError::LabelOutOfRange { label: 3, position: 2, output, scores: 2 }
                if output == "aux"
        ),
        "{error:?}"
    );
    insta::assert_snapshot!("label_beyond_second_output", error.to_string());
    let images = data(4 * 12, 4);
    trainer
        .train_step(&images, &[0, 1, 1, 0], 0.1)
        .expect("labels below 2");
}

#[test]
fn an_output_may_have_more_scores_than_the_labels_use_as_in_keras() {
    // Five logits per example scored against labels 3 and 4 (as a data set
    // of four classes, or five, would label them). From TensorFlow 2.21 /
    // Keras 3.15 (tests/tf/labels.py, recorded in tests/tf/labels.out):
    // SparseCategoricalCrossentropy(from_logits=True) gives 4.4722605 and
    // 3.4126792, and refuses label 5 as "outside the valid range of [0, 5)".
    let source = "model logits : [1, 1, 5] { global_avg_pool }";
    let model =
        cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let mut trainer = trainer(&model, TensorStore::new(), &loss, sgd(0.1), 2, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let logits = [1.0, 2.0, 0.5, -1.0, 3.0, 0.0, -2.0, 1.5, 2.5, -0.5];
    let result = trainer.train_step(&logits, &[3, 4], 0.1).expect("step");
    let keras = (4.472_260_5 + 3.412_679_2) / 2.0;
    let ours = result.losses[0].1;
    assert!((ours - keras).abs() < 1e-6, "loss {ours}, Keras {keras}");
    let error = trainer.train_step(&logits, &[0, 5], 0.1).unwrap_err();
    assert!(
        matches!(
            error,
            TrainingError::LabelOutOfRange {
                label: 5,
                position: 1,
                scores: 5,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn an_output_with_more_scores_than_f32_labels_can_index_is_refused() {
    // Labels reach the kernels as f32: 2^24 + 1 would round to 2^24, so an
    // output with more than 2^24 + 1 scores could be scored against the
    // wrong class. No weights and no data: only the plan is built.
    let scores = (1usize << 24) + 2;
    let source = format!("model wide : [1, 1, {scores}] {{ global_avg_pool }}");
    let model =
        cnnc::compile_source("model.cnn", &source, None, None).unwrap_or_else(|d| panic!("{d}"));
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let step = cnnc::compile_training(&model, &loss, &sgd(0.1), 1).expect("compiles");
    let error = match Trainer::new(step, TensorStore::new(), 1) {
        Ok(_) => panic!("a trainer for {scores} scores"),
        Err(error) => error,
    };
    assert!(
        matches!(error, TrainingError::TooManyScores { scores: s, .. } if s == scores),
        "{error:?}"
    );
    insta::assert_snapshot!("too_many_scores", error.to_string());
}
