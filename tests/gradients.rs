//! The gradient program (`cnnc::compile_gradients`, a vector-Jacobian
//! product): for each op family, its outputs against the reference forward
//! pass, and its input and weight gradients against central finite
//! differences of `L = sum(upstream * outputs)`, computed by the reference
//! (which accumulates in f64), in training and inference mode.

#[path = "support/reference.rs"]
mod reference;

#[path = "support/interpret.rs"]
mod interpret;

use cnnc::plan::{Access, Role};
use cnnc::runtime::gradients::{GradientError, Gradients, Vjp};
use cnnc::runtime::inference::Inference;
use cnnc::runtime::weights::{self, TensorStore};
use cnnc::{Mode, TypedGraph};

/// Values in (-1, 1), deterministic.
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

/// `n` distinct values at least `1 / n` apart, in a deterministic shuffled
/// order, none closer to 0 than `0.5 / n`: inputs on which maxima, ReLU
/// and sorting are stable under perturbations smaller than `0.25 / n`.
fn separated(n: usize, seed: u64) -> Vec<f32> {
    let keys = data(n, seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut values = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        values[i] = (rank as f32 + 0.5) / n as f32 * 2.0 - 1.0;
    }
    values
}

fn compile(source: &str) -> TypedGraph {
    cnnc::compile_source("model.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"))
}

/// Random weights (moving variances positive), deterministic.
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

/// What one check runs on.
struct Case<'a> {
    source: &'a str,
    batch: usize,
    mode: Mode,
    /// The input batch (flattened), or `None` for values in (-1, 1).
    input: Option<Vec<f32>>,
    /// The finite-difference step.
    step: f32,
}

impl<'a> Case<'a> {
    fn new(source: &'a str, mode: Mode) -> Case<'a> {
        Case {
            source,
            batch: 3,
            mode,
            input: None,
            step: 1e-2,
        }
    }
}

/// `L = sum over outputs of sum(upstream * output)` by the reference, in f64.
fn objective(
    model: &TypedGraph,
    store: &TensorStore,
    input: &[f32],
    batch: usize,
    training: bool,
    upstream: &[(String, Vec<f32>)],
) -> f64 {
    let values = interpret::run(model, store, input, batch, training);
    model
        .graph
        .outputs
        .iter()
        .map(|(name, id)| {
            let dy = &upstream
                .iter()
                .find(|(n, _)| n == name)
                .expect("upstream")
                .1;
            values[id]
                .iter()
                .zip(dy)
                .map(|(&y, &d)| f64::from(y) * f64::from(d))
                .sum::<f64>()
        })
        .sum()
}

/// Runs the gradient program of `case` and checks its outputs against the
/// reference, and its input gradient and every trainable weight's gradient
/// (a few entries of each) against central differences of [`objective`].
/// Returns the program's result.
fn check(case: Case<'_>) -> Vjp {
    let model = compile(case.source);
    let store = random_weights(&model);
    let per_example = model.input_shape().expect("input").elements() as usize;
    let input = case
        .input
        .clone()
        .unwrap_or_else(|| data(case.batch * per_example, 7));
    let upstream: Vec<(String, Vec<f32>)> = model
        .outputs()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let len = case.batch * shape.iter().product::<u64>() as usize;
            (name, data(len, 50 + i as u64))
        })
        .collect();
    let program =
        cnnc::compile_gradients(&model, case.mode, case.batch).unwrap_or_else(|e| panic!("{e}"));
    let mut gradients = Gradients::new(program, store.clone(), 2).unwrap_or_else(|e| panic!("{e}"));
    let vjp = gradients
        .run(&input, &upstream)
        .unwrap_or_else(|e| panic!("{e}"));
    let training = matches!(case.mode, Mode::Training { .. });
    check_outputs(&model, &store, &input, case.batch, training, &vjp);
    let loss = |store: &TensorStore, input: &[f32]| {
        objective(&model, store, input, case.batch, training, &upstream)
    };
    let h = case.step;
    let len = input.len();
    for i in [0, len / 3, len / 2, len - 1] {
        let (mut up, mut down) = (input.clone(), input.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (loss(&store, &up) - loss(&store, &down)) / (2.0 * f64::from(h));
        close(f64::from(vjp.input[i]), numeric, &format!("input[{i}]"));
    }
    for spec in weights::specs(&model)
        .into_iter()
        .filter(|s| s.param.trainable)
    {
        let grad = vjp.weights.get(&spec.name).expect("a gradient per weight");
        assert_eq!(grad.shape, spec.shape, "{}: shape", spec.name);
        let len = grad.data.len();
        for i in [0, len / 3, len - 1] {
            let (mut up, mut down) = (store.clone(), store.clone());
            up.get_mut(&spec.name).expect("weight").data[i] += h;
            down.get_mut(&spec.name).expect("weight").data[i] -= h;
            let numeric = (loss(&up, &input) - loss(&down, &input)) / (2.0 * f64::from(h));
            close(
                f64::from(grad.data[i]),
                numeric,
                &format!("{}[{i}]", spec.name),
            );
        }
    }
    let trainable = weights::specs(&model)
        .iter()
        .filter(|s| s.param.trainable)
        .count();
    assert_eq!(
        vjp.weights.len(),
        trainable,
        "one gradient per trainable weight"
    );
    assert_unchanged(&store, gradients.weights());
    vjp
}

/// The program's outputs against the reference forward pass.
fn check_outputs(
    model: &TypedGraph,
    store: &TensorStore,
    input: &[f32],
    batch: usize,
    training: bool,
    vjp: &Vjp,
) {
    let values = interpret::run(model, store, input, batch, training);
    for (name, id) in &model.graph.outputs {
        let ours = &vjp
            .outputs
            .iter()
            .find(|(n, _)| n == name)
            .expect("output")
            .1;
        let expected: Vec<f32> = values[id].iter().copied().collect();
        assert_eq!(ours.len(), expected.len(), "output `{name}`");
        // Relative to the element, or where it is small (cancellation) to
        // the outputs' root mean square, as in the kernels' own tests.
        let rms = (expected.iter().map(|&v| v * v).sum::<f32>() / expected.len() as f32).sqrt();
        for (i, (&a, &b)) in ours.iter().zip(&expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(rms).max(1.0),
                "output `{name}`[{i}]: {a}, reference {b}"
            );
        }
    }
}

/// `analytic` within 1% (plus 1e-4) of `numeric`: the central difference's
/// error is O(h^2) on smooth functions, and the reference's f32 outputs
/// round L at about 1e-7 of its size, which the step divides by 2h.
fn close(analytic: f64, numeric: f64, what: &str) {
    let tolerance = 1e-2 * numeric.abs().max(analytic.abs()) + 1e-4;
    assert!(
        (analytic - numeric).abs() <= tolerance,
        "{what}: gradient program {analytic}, finite difference {numeric}"
    );
}

/// The program left every weight (moving statistics included) as it was given.
fn assert_unchanged(before: &TensorStore, after: &TensorStore) {
    for (name, tensor) in before.iter() {
        assert_eq!(
            after.get(name).expect("weight").data,
            tensor.data,
            "{name} changed"
        );
    }
}

const TRAINING: Mode = Mode::Training { dropout: false };
const BOTH: [Mode; 2] = [Mode::Inference, TRAINING];

#[test]
fn convolutions() {
    let source = "
        model m : [6, 6, 2] {
            conv(3, 3, stride: 2, padding: same)
            conv(2, 2, dilation: 2, use_bias: false)
        }";
    for mode in BOTH {
        check(Case::new(source, mode));
    }
}

/// A 3x3 layer wide enough that the algorithm pass runs its forward pass,
/// input gradient and kernel gradient on Winograd's transforms.
#[test]
fn winograd_convolutions() {
    let source = "
        model m : [16, 16, 32] {
            conv(32, 3, padding: same)
            conv(4, 3)
        }";
    let program = cnnc::compile_gradients(&compile(source), TRAINING, 3).expect("compiles");
    let methods: Vec<String> = program
        .compiled
        .plan
        .steps
        .iter()
        .map(|s| s.kernel.method())
        .collect();
    for pass in ["forward", "backward-data", "backward-filter"] {
        assert!(
            methods.contains(&format!("{pass}, winograd F(4x4,3x3)")),
            "{pass} is not on Winograd's transforms: {methods:?}"
        );
    }
    for mode in BOTH {
        check(Case::new(source, mode));
    }
}

#[test]
fn transposed_convolutions() {
    // Strided with `same` and with `valid` and an output padding, at
    // stride 1 with a dilation, without a bias, and with an activation.
    let source = "
        model m : [4, 5, 2] {
            conv_transpose(3, 3, stride: 2, padding: same)
            conv_transpose(2, [2, 3], stride: [2, 1], output_padding: [1, 0], activation: tanh)
            conv_transpose(2, 3, dilation: 2, padding: same, use_bias: false)
        }";
    for mode in BOTH {
        check(Case::new(source, mode));
    }
}

/// A 3x3 stride-1 transposed convolution wide enough that the algorithm
/// pass runs the passes it borrows from the convolution it transposes on
/// Winograd's transforms: its forward pass (that convolution's
/// backward-data pass), its input gradient (the forward pass) and its
/// kernel gradient.
#[test]
fn winograd_transposed_convolutions() {
    let source = "
        model m : [16, 16, 32] {
            conv_transpose(32, 3, padding: same)
            conv(4, 3, stride: 4)
        }";
    let program = cnnc::compile_gradients(&compile(source), TRAINING, 3).expect("compiles");
    let methods: Vec<String> = program
        .compiled
        .plan
        .steps
        .iter()
        .map(|s| s.kernel.method())
        .collect();
    for pass in ["forward", "backward-data", "backward-filter"] {
        assert!(
            methods.contains(&format!("{pass}, winograd F(4x4,3x3)")),
            "{pass} is not on Winograd's transforms: {methods:?}"
        );
    }
    check(Case::new(source, TRAINING));
}

#[test]
fn upsampling() {
    let source = "
        model m : [3, 4, 2] {
            upsample(2)
            conv(2, 3, padding: same)
            upsample([2, 3], mode: bilinear)
            upsample([3, 1], mode: bilinear)
        }";
    for mode in BOTH {
        check(Case::new(source, mode));
    }
}

#[test]
fn depthwise_and_separable_convolutions() {
    let source = "
        model m : [6, 6, 3] {
            depthwise_conv(3, multiplier: 2, padding: same)
            separable_conv(4, 3, stride: 2)
        }";
    check(Case::new(source, TRAINING));
}

#[test]
fn dense_layers() {
    let source = "
        model m : [7] {
            dense(5)
            dense(3, use_bias: false)
        }";
    check(Case::new(source, Mode::Inference));
}

#[test]
fn average_pooling_and_flatten() {
    let source = "
        model m : [5, 5, 2] {
            avgpool(2)
            avgpool(3, stride: 1, padding: same)
            flatten
        }";
    check(Case::new(source, Mode::Inference));
}

#[test]
fn reshapes_between_convolutions() {
    // A reshape moves no value: its gradient is dY in the input's shape,
    // through a convolution on the reshaped image and a dense layer.
    let source = "
        model m : [4, 6, 2] {
            conv(3, 1)
            reshape([6, -1, 2])
            conv(2, 3, padding: same)
            reshape([-1])
            dense(3)
        }";
    for mode in BOTH {
        check(Case::new(source, mode));
    }
}

#[test]
fn max_pooling_away_from_ties() {
    // Distinct inputs at least 1/150 apart, so that a step of 1e-3 never
    // changes which element is a window's maximum.
    let source = "
        model m : [5, 5, 3] {
            let a = maxpool(2)
            let b = depth_maxpool(3)
            let c = global_max_pool
            output pooled = a
            output depth = b
            output global = c
        }";
    let batch = 2;
    check(Case {
        input: Some(separated(batch * 75, 4)),
        step: 1e-3,
        batch,
        ..Case::new(source, Mode::Inference)
    });
}

#[test]
fn global_pooling() {
    let source = "
        model m : [4, 4, 3] {
            let a = global_avg_pool
            let b = global_max_pool
            concat(a, b)
        }";
    check(Case {
        input: Some(separated(3 * 48, 8)),
        step: 2e-3,
        ..Case::new(source, Mode::Inference)
    });
}

#[test]
fn batchnorm_in_training_and_inference_mode() {
    // In training mode the batch's statistics depend on every example, so
    // the input's gradient has the mean terms; in inference mode they are
    // the moving statistics, constants.
    let source = "
        model m : [3, 3, 4] {
            conv(4, 1) -> batchnorm
            global_avg_pool
            batchnorm
        }";
    for mode in BOTH {
        check(Case {
            batch: 4,
            ..Case::new(source, mode)
        });
    }
}

#[test]
fn batchnorm_without_gamma_or_beta() {
    // Keras's scale=False and center=False: the factor 1 and the offset 0
    // are constants, and the layer has no gradient for them.
    let source = "
        model m : [3, 3, 4] {
            conv(4, 1) -> batchnorm(scale: false) -> tanh
            conv(4, 1) -> batchnorm(center: false)
            global_avg_pool
            batchnorm(center: false, scale: false)
        }";
    for mode in BOTH {
        check(Case {
            batch: 4,
            ..Case::new(source, mode)
        });
    }
}

#[test]
fn activations() {
    // Inputs away from 0, where ReLU and its kin have their kink.
    let source = "
        model m : [12] {
            let a = relu
            let b = leaky_relu(0.2)
            let c = elu
            let d = selu
            let e = tanh
            let f = sigmoid
            concat(a, b, c, d, e, f)
            softmax
        }";
    check(Case {
        input: Some(separated(3 * 12, 2)),
        step: 1e-3,
        ..Case::new(source, Mode::Inference)
    });
}

#[test]
fn self_gated_and_clipped_activations() {
    // Inputs spread over (-8, 8), at least 1/6 away from the kinks at
    // -3, 0, 3 and 6, so that every piece of relu6 and the hard ones is hit.
    let source = "
        model m : [16] {
            let a = relu6
            let b = swish
            let c = gelu
            let d = gelu(approximate: true)
            let e = hard_sigmoid
            let f = hard_swish
            let g = mish
            let h = silu
            concat(a, b, c, d, e, f, g, h)
            softmax
        }";
    let input: Vec<f32> = separated(3 * 16, 5).iter().map(|v| v * 8.0).collect();
    for mode in [Mode::Inference, TRAINING] {
        check(Case {
            input: Some(input.clone()),
            step: 1e-3,
            ..Case::new(source, mode)
        });
    }
}

#[test]
fn sums_products_and_concatenations() {
    let source = "
        model m : [4, 4, 2] {
            let a = conv(3, 1)
            let b = conv(3, 3, padding: same)
            let s = b -> global_avg_pool -> sigmoid
            let sum = a + b
            let scaled = a * s
            let product = a * b
            concat(sum, scaled, product)
        }";
    for mode in BOTH {
        check(Case::new(source, mode));
    }
}

#[test]
fn local_response_normalisation() {
    let source = "
        model m : [3, 3, 5] {
            lrn(depth_radius: 2, bias: 1.0, alpha: 0.5, beta: 0.75)
        }";
    check(Case::new(source, Mode::Inference));
}

#[test]
fn lenets_subsampling_and_rbf_units() {
    let source = "
        model m : [6, 6, 1] {
            conv(2, 3, activation: tanh)
            avgpool(2, trainable: true, activation: tanh)
            flatten
            rbf(3)
        }";
    check(Case::new(source, TRAINING));
}

#[test]
fn dropout_off_is_the_identity() {
    // Dropout is off in inference mode and in training mode without a seed:
    // the reference's identity, forward and backward.
    let source = "
        model m : [6] {
            dense(4)
            dropout(0.5)
        }";
    for mode in BOTH {
        check(Case::new(source, mode));
    }
}

#[test]
fn dropout_with_a_seed_scales_the_kept_values_forward_and_backward() {
    let (features, batch) = (64, 2);
    let model = compile(&format!("model m : [{features}] {{ dropout(0.5) }}"));
    let program = cnnc::compile_gradients(&model, Mode::Training { dropout: true }, batch)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut gradients = Gradients::new(program, TensorStore::new(), 1).expect("runner");
    gradients.seed = 5;
    let ones = vec![1.0; batch * features];
    let upstream = data(batch * features, 3);
    let vjp = gradients
        .run(&ones, &[("output".to_string(), upstream.clone())])
        .expect("runs");
    let mask = &vjp.outputs[0].1;
    assert!(mask.iter().all(|&m| m == 0.0 || m == 2.0), "{mask:?}");
    let kept = mask.iter().filter(|&&m| m != 0.0).count();
    assert!((32..96).contains(&kept), "kept {kept} of 128");
    let expected: Vec<f32> = upstream.iter().zip(mask).map(|(d, m)| d * m).collect();
    assert_eq!(vjp.input, expected);
    // The same seed draws the same mask; another seed another.
    let again = gradients
        .run(&ones, &[("output".to_string(), upstream.clone())])
        .expect("runs");
    assert_eq!(&again.outputs[0].1, mask);
    gradients.seed = 6;
    let other = gradients
        .run(&ones, &[("output".to_string(), upstream)])
        .expect("runs");
    assert_ne!(&other.outputs[0].1, mask);
}

#[test]
fn views_of_the_input_and_of_the_upstream_gradient_are_copied_out() {
    // The output is a view of the input, and the input's gradient a view
    // of the upstream gradient: both must still reach the caller.
    let source = "model m : [2, 2, 3] { flatten }";
    let vjp = check(Case::new(source, Mode::Inference));
    assert_eq!(vjp.outputs[0].1, data(3 * 12, 7));
    assert_eq!(vjp.input, data(3 * 12, 50));
}

#[test]
fn residual_and_se_blocks_with_several_outputs() {
    // stdlib's residual unit and SE-block with ELU for ReLU: after a batch
    // norm on batch statistics many values sit near ReLU's kink, where
    // finite differences are meaningless (tests/tf_gradients.rs checks the
    // ReLU blocks against TensorFlow).
    let source = "
        block unit(filters) {
            let main = in -> conv(filters, 3, padding: same, use_bias: false) -> batchnorm -> elu
                -> conv(filters, 3, padding: same, use_bias: false) -> batchnorm
            main + in
            elu
        }
        block se(ratio = 2) {
            let scale = in
                -> global_avg_pool
                -> dense(in.channels // ratio, activation: elu)
                -> dense(in.channels, activation: sigmoid)
            in * scale
        }
        model m : [4, 4, 3] {
            conv(4, 3, padding: same, use_bias: false) -> batchnorm -> elu
            let s = unit(4) -> se
            output features = s
            output scores = s -> global_avg_pool -> dense(3, activation: softmax)
        }";
    for mode in BOTH {
        let vjp = check(Case::new(source, mode));
        let names: Vec<&str> = vjp.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["features", "scores"]);
    }
}

#[test]
fn bad_upstream_gradients_and_inputs_are_refused_with_their_sizes() {
    let model = compile("model m : [2, 2, 1] { flatten -> dense(3) }");
    let store = random_weights(&model);
    let program = cnnc::compile_gradients(&model, Mode::Inference, 2).expect("compiles");
    let mut gradients = Gradients::new(program, store, 1).expect("runner");
    let short = [("output".to_string(), vec![0.0; 5])];
    let err = gradients.run(&[0.0; 8], &short).unwrap_err();
    assert!(matches!(
        err,
        GradientError::UpstreamSize {
            actual: 5,
            expected: 6,
            batch: 2,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "the upstream gradient of output `output` has 5 values, but the output has 6 for a batch of 2"
    );
    let misnamed = [("scores".to_string(), vec![0.0; 6])];
    let err = gradients.run(&[0.0; 8], &misnamed).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the upstream gradients are given for outputs [scores], but the model's outputs are [output]"
    );
    let err = gradients
        .run(&[0.0; 7], &[("output".to_string(), vec![0.0; 6])])
        .unwrap_err();
    assert!(
        matches!(
            err,
            GradientError::InputSize {
                actual: 7,
                expected: 8,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_weights_are_named() {
    let model = compile("model m : [3] { dense(2) }");
    let program = cnnc::compile_gradients(&model, Mode::Inference, 1).expect("compiles");
    let err = Gradients::new(program, TensorStore::new(), 1)
        .err()
        .expect("no weights");
    assert_eq!(
        err.to_string(),
        "the weights have no tensor `dense1.kernel`"
    );
}

#[test]
fn a_gradient_program_writes_no_weight() {
    // Batchnorm's moving statistics are read in inference mode and left
    // alone in training mode: the caller's weights are never written.
    let model = compile(
        "model m : [4, 4, 2] {
            conv(3, 3, padding: same) -> batchnorm -> relu
            dropout(0.3)
            flatten
            dense(2)
        }",
    );
    for mode in [Mode::Inference, Mode::Training { dropout: true }] {
        let plan = cnnc::plan_gradients(&model, mode, 2).expect("plans");
        for step in &plan.steps {
            let signature = step.kernel.signature().expect("signature");
            for (&b, param) in step.args.iter().zip(&signature) {
                let role = &plan.buffers[b].role;
                assert!(
                    param.access == Access::Read || !matches!(role, Role::Weight(_)),
                    "{mode:?}: step {} writes {role:?}",
                    step.kernel.name()
                );
            }
        }
        let gradients = plan
            .buffers
            .iter()
            .filter(|b| matches!(b.role, Role::Gradient(_)));
        assert_eq!(
            gradients.count(),
            6,
            "{mode:?}: conv, batchnorm's gamma and beta, dense"
        );
        assert_eq!(plan.with_role(&Role::InputGradient).len(), 1, "{mode:?}");
    }
}

#[test]
fn a_training_mode_forward_normalises_with_the_batchs_statistics() {
    let model = compile(
        "model m : [3, 3, 2] {
            conv(3, 3, padding: same) -> batchnorm -> tanh
            dropout(0.5)
        }",
    );
    let store = random_weights(&model);
    let batch = 4;
    let input = data(batch * 18, 9);
    for (mode, training) in [(Mode::Inference, false), (TRAINING, true)] {
        let compiled = cnnc::compile_forward(&model, mode, batch).expect("compiles");
        let mut program = Inference::new(compiled, store.clone(), 2).expect("runner");
        let outputs = program.run(&input).expect("runs");
        let expected =
            &interpret::run(&model, &store, &input, batch, training)[&model.graph.outputs[0].1];
        for (i, (&a, &b)) in outputs[0].1.iter().zip(expected.iter()).enumerate() {
            assert!((a - b).abs() < 1e-5, "{mode:?}[{i}]: {a}, reference {b}");
        }
    }
}

#[test]
fn a_forward_pass_returns_an_output_that_is_a_view_of_the_input() {
    let model = compile("model m : [2, 2, 1] { flatten }");
    let compiled = cnnc::compile_forward(&model, Mode::Inference, 2).expect("compiles");
    let mut program = Inference::new(compiled, TensorStore::new(), 1).expect("runner");
    let input = data(8, 1);
    assert_eq!(program.run(&input).expect("runs")[0].1, input);
}

#[test]
fn a_training_mode_forward_with_dropout_draws_the_gradient_programs_mask() {
    let (features, batch) = (32, 2);
    let model = compile(&format!("model m : [{features}] {{ dropout(0.25) }}"));
    let mode = Mode::Training { dropout: true };
    let ones = vec![1.0; batch * features];
    let compiled = cnnc::compile_forward(&model, mode, batch).expect("compiles");
    let mut forward = Inference::new(compiled, TensorStore::new(), 1).expect("runner");
    forward.seed = 9;
    let mask = forward.run(&ones).expect("runs").remove(0).1;
    assert!(
        mask.iter().all(|&m| m == 0.0 || m == 1.0 / 0.75),
        "{mask:?}"
    );
    assert!(mask.contains(&0.0), "some values dropped");
    let program = cnnc::compile_gradients(&model, mode, batch).expect("compiles");
    let mut gradients = Gradients::new(program, TensorStore::new(), 1).expect("runner");
    gradients.seed = 9;
    let upstream = [("output".to_string(), ones.clone())];
    let vjp = gradients.run(&ones, &upstream).expect("runs");
    assert_eq!(vjp.outputs[0].1, mask);
    assert_eq!(vjp.input, mask);
}
