//! The executor on small hand-built programs: arena and external buffers,
//! thread counts, and the errors of a wrongly bound program.

#[path = "support/reference.rs"]
mod reference;

use cnnc::codegen::elementwise::{Binary, Elementwise, Expr, Operand};
use cnnc::codegen::program::Slot;
use cnnc::codegen::program::{Program, RowKernel, Step};
use cnnc::codegen::reduce::{Reduce, ReduceKind};
use cnnc::codegen::Jit;
use cnnc::runtime::executor::{Executor, RuntimeError};
use ndarray::ArrayD;

const ROWS: usize = 37;
const CHANNELS: usize = 10;

/// bias + relu into the arena, then softmax of it into the output.
fn program(jit: &mut Jit) -> Program {
    let bias_relu = Elementwise {
        name: "bias_relu".into(),
        inputs: vec![Operand::Tensor, Operand::PerChannel],
        exprs: vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Binary(Binary::Add, 0, 1),
            Expr::Const(0.0),
            Expr::Binary(Binary::Max, 2, 3),
        ],
        outputs: vec![4],
        stores: Vec::new(),
    };
    let softmax = Reduce {
        name: "softmax".into(),
        kind: ReduceKind::Softmax,
        rows: ROWS,
        n: CHANNELS,
        loads: Vec::new(),
    };
    let n = ROWS * CHANNELS;
    let hidden = Slot::Arena { offset: 16, len: n };
    Program {
        steps: vec![
            Step {
                kernel: Box::new(RowKernel {
                    kernel: jit.compile_elementwise(&bias_relu).expect("compiles"),
                    rows: ROWS,
                    channels: CHANNELS,
                }),
                args: vec![
                    Slot::External { index: 0, len: n },
                    Slot::External {
                        index: 1,
                        len: CHANNELS,
                    },
                    hidden,
                ],
                serial_below: 0,
                prepared: false,
            },
            Step {
                kernel: Box::new(jit.compile_reduce(&softmax).expect("compiles")),
                args: vec![hidden, Slot::External { index: 2, len: n }],
                serial_below: 0,
                prepared: false,
            },
        ],
        arena_len: 16 + n,
    }
}

fn inputs() -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..ROWS * CHANNELS)
        .map(|i| ((i * 7919) % 101) as f32 / 25.0 - 2.0)
        .collect();
    let bias: Vec<f32> = (0..CHANNELS).map(|c| c as f32 / 10.0 - 0.5).collect();
    (x, bias)
}

#[test]
fn runs_a_program_and_matches_the_reference_on_any_thread_count() {
    let mut jit = Jit::new().expect("jit");
    let program = program(&mut jit);
    let (mut x, mut bias) = inputs();
    let mut outputs = Vec::new();
    for threads in [1, 2, 3] {
        let mut executor = Executor::new(threads).expect("threads");
        let mut y = vec![0.0f32; ROWS * CHANNELS];
        executor
            .run(&program, &mut [&mut x, &mut bias, &mut y])
            .expect("runs");
        outputs.push(y);
    }
    assert_eq!(outputs[0], outputs[1], "1 vs 2 threads");
    assert_eq!(outputs[0], outputs[2], "1 vs 3 threads");
    let hidden: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| (v + bias[i % CHANNELS]).max(0.0))
        .collect();
    let expected =
        reference::softmax(&ArrayD::from_shape_vec(vec![ROWS, CHANNELS], hidden).expect("shape"));
    for (a, e) in outputs[0].iter().zip(expected.iter()) {
        assert!((a - e).abs() < 1e-6, "{a} vs {e}");
    }
}

#[test]
fn wrongly_sized_buffers_are_errors() {
    let mut jit = Jit::new().expect("jit");
    let program = program(&mut jit);
    let (mut x, mut bias) = inputs();
    let mut executor = Executor::new(2).expect("threads");
    let mut short = vec![0.0f32; 5];
    let err = executor
        .run(&program, &mut [&mut x, &mut bias, &mut short])
        .unwrap_err();
    assert_eq!(
        err,
        RuntimeError::ExternalSize {
            step: "softmax".into(),
            index: 2,
            actual: 5,
            expected: ROWS * CHANNELS
        }
    );
    let err = executor.run(&program, &mut [&mut x]).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::ExternalSize {
                index: 1,
                actual: 0,
                ..
            }
        ),
        "{err}"
    );
    let mut broken = program;
    broken.steps[1].args[0] = Slot::Arena {
        offset: 1 << 40,
        len: 4,
    };
    let mut y = vec![0.0f32; ROWS * CHANNELS];
    let err = executor
        .run(&broken, &mut [&mut x, &mut bias, &mut y])
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ArenaBounds { .. }), "{err}");
}
