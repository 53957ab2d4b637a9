//! The optimizer update kernels against Keras 3.15 itself: three updates of
//! five weights with fixed gradients, the expected weights printed by
//! `keras.optimizers.X(...).apply_gradients` (TensorFlow 2.21 backend).
//! With `weight_decay`, Keras 3 scales the weights by `1 - lr * decay`
//! before each update (its `Adam(weight_decay=…)` equals `AdamW`).

use cnnc::codegen::elementwise::{LiveTaps, Operand};
use cnnc::codegen::Jit;
use cnnc::config::{Optimizer, OptimizerKind, TrainConfig};
use cnnc::optimizer::{state_count, StepState};

const W0: [f32; 5] = [0.5, -1.25, 2.0, 0.0, 0.75];
const GRADS: [[f32; 5]; 3] = [
    [0.1, -0.2, 0.3, 0.05, -0.5],
    [-0.3, 0.1, 0.2, -0.05, 0.4],
    [0.2, 0.2, -0.1, 0.15, 0.0],
];

fn optimizer(kind: OptimizerKind, lr: f64, momentum: f64) -> Optimizer {
    Optimizer {
        kind,
        lr,
        momentum,
        ..TrainConfig::default().optimizer
    }
}

/// Runs three updates in place and returns the weights.
fn train(optimizer: &Optimizer) -> Vec<f32> {
    let mut jit = Jit::new().expect("jit");
    let kernel = jit
        .compile_elementwise(&optimizer.update_kernel())
        .expect("compiles");
    let states = state_count(optimizer);
    let mut w = W0.to_vec();
    let mut state: Vec<Vec<f32>> = vec![vec![0.0; 5]; states];
    let mut step = StepState::new();
    for g in GRADS {
        let (mut coefficients, next) = optimizer.coefficients(step, optimizer.lr);
        step = next;
        let mut g = g.to_vec();
        // Inputs: w, g, state..., coefficients; outputs: w, state... (in place).
        let mut args: Vec<*mut f32> = vec![w.as_mut_ptr(), g.as_mut_ptr()];
        args.extend(state.iter_mut().map(|s| s.as_mut_ptr()));
        args.push(coefficients.as_mut_ptr());
        args.push(w.as_mut_ptr());
        args.extend(state.iter_mut().map(|s| s.as_mut_ptr()));
        // SAFETY: every tensor buffer holds 5 values, the coefficients as many as the kernel reads.
        unsafe { kernel.run(&args, 0..1, 5) };
    }
    w
}

fn assert_keras(kind: &str, optimizer: Optimizer, keras: [f64; 5]) {
    let w = train(&optimizer);
    for (i, (&ours, &theirs)) in w.iter().zip(&keras).enumerate() {
        assert!(
            (f64::from(ours) - theirs).abs() < 2e-6,
            "{kind}: w[{i}] = {ours}, Keras {theirs}"
        );
    }
}

#[test]
fn sgd() {
    assert_keras(
        "sgd",
        optimizer(OptimizerKind::Sgd, 0.1, 0.0),
        [
            0.4999999701976776,
            -1.2599999904632568,
            1.9600000381469727,
            -0.015000000596046448,
            0.7599999904632568,
        ],
    );
}

#[test]
fn momentum() {
    assert_keras(
        "momentum",
        optimizer(OptimizerKind::Momentum, 0.1, 0.9),
        [
            0.5099000334739685,
            -1.2347999811172485,
            1.8906999826431274,
            -0.019050000235438347,
            0.809499979019165,
        ],
    );
}

#[test]
fn nesterov() {
    assert_keras(
        "nesterov",
        optimizer(OptimizerKind::Nesterov, 0.1, 0.9),
        [
            0.5089100003242493,
            -1.2463200092315674,
            1.8616299629211426,
            -0.032145000994205475,
            0.8135500550270081,
        ],
    );
}

#[test]
fn adam() {
    assert_keras(
        "adam",
        optimizer(OptimizerKind::Adam, 0.01, 0.0),
        [
            0.4947543144226074,
            -1.2400639057159424,
            1.9747779369354248,
            -0.015078588388860226,
            0.7610304355621338,
        ],
    );
}

#[test]
fn nadam() {
    assert_keras(
        "nadam",
        optimizer(OptimizerKind::Nadam, 0.01, 0.0),
        [
            0.49360454082489014,
            -1.2501965761184692,
            1.9848833084106445,
            -0.013552488759160042,
            0.7548735737800598,
        ],
    );
}

#[test]
fn rmsprop() {
    assert_keras(
        "rmsprop",
        optimizer(OptimizerKind::RmsProp, 0.01, 0.0),
        [
            0.4809276759624481,
            -1.255289077758789,
            1.9593663215637207,
            -0.03766530752182007,
            0.761236846446991,
        ],
    );
    assert_keras(
        "rmsprop_momentum",
        optimizer(OptimizerKind::RmsProp, 0.01, 0.5),
        [
            0.47228723764419556,
            -1.2389442920684814,
            1.9265586137771606,
            -0.04990806803107262,
            0.7747609615325928,
        ],
    );
}

/// The same optimizers with `weight_decay=0.5`, as Keras 3 applies it.
#[test]
fn weight_decay() {
    let decayed = |kind, lr, momentum| Optimizer {
        weight_decay: 0.5,
        ..optimizer(kind, lr, momentum)
    };
    let cases = [
        (
            "sgd",
            decayed(OptimizerKind::Sgd, 0.1, 0.0),
            [
                0.42816248536109924,
                -1.0831687450408936,
                1.6786749362945557,
                -0.014762500301003456,
                0.6501562595367432,
            ],
        ),
        (
            "nesterov",
            decayed(OptimizerKind::Nesterov, 0.1, 0.9),
            [
                0.4370049834251404,
                -1.071603775024414,
                1.585052490234375,
                -0.031491249799728394,
                0.699093759059906,
            ],
        ),
        (
            "adam",
            decayed(OptimizerKind::Adam, 0.01, 0.0),
            [
                0.48736679553985596,
                -1.2215205430984497,
                1.9450759887695312,
                -0.01498147752135992,
                0.7497339248657227,
            ],
        ),
        (
            "nadam",
            decayed(OptimizerKind::Nadam, 0.01, 0.0),
            [
                0.4862006604671478,
                -1.2316265106201172,
                1.9551703929901123,
                -0.013480057008564472,
                0.7436027526855469,
            ],
        ),
        (
            "rmsprop_momentum",
            decayed(OptimizerKind::RmsProp, 0.01, 0.5),
            [
                0.46506839990615845,
                -1.2206087112426758,
                1.8971937894821167,
                -0.04962834715843201,
                0.7632744908332825,
            ],
        ),
    ];
    for (kind, optimizer, keras) in cases {
        assert_keras(kind, optimizer, keras);
    }
}

/// Three updates of a 3x3 kernel (2 input channels, 5 output channels:
/// a vector and a tail each row) from a gradient that holds only its live
/// taps' rows ([`Operand::LiveTaps`]: kernel rows 1..3, columns 0..2), the
/// other rows read as zeros, against the same updates from the whole
/// gradient with zeros in those rows: the same weights and state, bit for
/// bit, for every optimizer, with and without weight decay.
#[test]
fn a_gradient_of_live_taps_updates_as_the_whole_gradient_with_zeros() {
    let taps = LiveTaps {
        kernel: [3, 3],
        in_channels: 2,
        ys: [1, 3],
        xs: [0, 2],
    };
    let channels = 5;
    let (rows, stored) = (taps.rows(), taps.stored_rows());
    assert_eq!((rows, stored), (18, 8));
    let value = |i: usize, seed: usize| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0;
    let kinds = [
        (OptimizerKind::Sgd, 0.1, 0.0),
        (OptimizerKind::Momentum, 0.1, 0.9),
        (OptimizerKind::Nesterov, 0.1, 0.9),
        (OptimizerKind::Adam, 0.01, 0.0),
        (OptimizerKind::Nadam, 0.01, 0.0),
        (OptimizerKind::RmsProp, 0.01, 0.0),
    ];
    for (kind, lr, momentum) in kinds {
        for weight_decay in [0.0, 0.5] {
            let optimizer = Optimizer {
                weight_decay,
                ..optimizer(kind, lr, momentum)
            };
            let mut jit = Jit::new().expect("jit");
            let whole_kernel = optimizer.update_kernel();
            let mut live_kernel = whole_kernel.clone();
            live_kernel.inputs[1] = Operand::LiveTaps(taps);
            let whole_kernel = jit.compile_elementwise(&whole_kernel).expect("compiles");
            let live_kernel = jit.compile_elementwise(&live_kernel).expect("compiles");
            let states = state_count(&optimizer);
            let w0: Vec<f32> = (0..rows * channels).map(|i| value(i, 1)).collect();
            let mut whole = (w0.clone(), vec![vec![0.0f32; rows * channels]; states]);
            let mut live = whole.clone();
            let mut step = StepState::new();
            for seed in 2..5 {
                let (mut coefficients, next) = optimizer.coefficients(step, optimizer.lr);
                step = next;
                let mut compact: Vec<f32> =
                    (0..stored * channels).map(|i| value(i, seed)).collect();
                let mut full = vec![0.0f32; rows * channels];
                for row in 0..rows {
                    if let Some(s) = taps.stored_row(row) {
                        full[row * channels..][..channels]
                            .copy_from_slice(&compact[s * channels..][..channels]);
                    }
                }
                for (kernel, (w, state), g) in [
                    (&whole_kernel, &mut whole, &mut full),
                    (&live_kernel, &mut live, &mut compact),
                ] {
                    let mut args: Vec<*mut f32> = vec![w.as_mut_ptr(), g.as_mut_ptr()];
                    args.extend(state.iter_mut().map(|s| s.as_mut_ptr()));
                    args.push(coefficients.as_mut_ptr());
                    args.push(w.as_mut_ptr());
                    args.extend(state.iter_mut().map(|s| s.as_mut_ptr()));
                    // SAFETY: the weights and state hold `rows x channels`
                    // values, the gradient as many or its stored rows' (as
                    // its operand says), the coefficients as many as the
                    // kernel reads.
                    unsafe { kernel.run(&args, 0..rows, channels) };
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let what = format!("{kind:?}, weight decay {weight_decay}");
            assert_eq!(bits(&live.0), bits(&whole.0), "{what}: weights");
            for (a, b) in live.1.iter().zip(&whole.1) {
                assert_eq!(bits(a), bits(b), "{what}: state");
            }
            // The dead rows moved only by the weight decay.
            let moved = (0..rows)
                .filter(|&r| taps.stored_row(r).is_none())
                .any(|r| w0[r * channels] != live.0[r * channels]);
            assert_eq!(moved, weight_decay > 0.0, "{what}: dead rows");
        }
    }
}
