//! The kernel plans of every stdlib model and example hold the plan's
//! invariants (`KernelPlan::verify`: every argument exists with the length
//! its kernel needs, every buffer is written before it is read, nothing
//! writes what the caller lends read-only): the planning functions verify
//! after lowering and after fusion, so planning each model is the check.
//! The fused plans are verified again here, and their memory is placed.

use std::path::PathBuf;

use cnnc::autodiff::LossSpec;
use cnnc::config::TrainConfig;
use cnnc::plan::{Access, KernelPlan, Role};
use cnnc::{Precision, TypedGraph};

fn models(dir: &str) -> Vec<(PathBuf, TypedGraph)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let graphs = cnnc::check_file(&file).unwrap_or_else(|d| panic!("{}:\n{d}", file.display()));
        all.extend(graphs.into_iter().map(|g| (file.clone(), g)));
    }
    assert!(!all.is_empty(), "{dir} has models");
    all
}

/// Plans inference and a training step of every model of `dir` at batch 2
/// (and inference at batch 1), verifying and placing each plan.
fn plans_verify(dir: &str) {
    let loss = LossSpec {
        smoothing: 0.1,
        weights: Vec::new(),
    };
    let mut updates = 0;
    for (file, model) in models(dir) {
        let at = |what: &str| format!("{} `{}` {what}", file.display(), model.graph.name);
        let mut plans = Vec::new();
        for batch in [1, 2] {
            let plan = cnnc::plan_inference(&model, batch)
                .unwrap_or_else(|e| panic!("{}: {e}", at("inference")));
            plans.push(plan);
        }
        // Models whose outputs are neither class scores nor per-pixel
        // scores cannot be trained.
        if model
            .outputs()
            .iter()
            .all(|(_, shape)| matches!(shape.len(), 1 | 3))
        {
            let train = model.graph.train.clone().unwrap_or_default();
            for precision in [Precision::F32, Precision::Bf16] {
                let plan = cnnc::plan_training_in(&model, &loss, &train.optimizer, 2, precision)
                    .unwrap_or_else(|e| panic!("{}: {e}", at("training")));
                updates += updates_follow_their_last_use(&plan, &at("training"));
                plans.push(plan);
            }
        }
        for plan in plans {
            plan.verify()
                .unwrap_or_else(|e| panic!("{}: {e}", at("plan")));
            cnnc::memory::plan(&plan).unwrap_or_else(|e| panic!("{}: {e}", at("memory")));
        }
    }
    assert!(updates > 0, "{dir}: no training plan with updates");
}

/// Each optimizer update of `plan` runs after every step that uses what
/// it writes (its weight, its optimizer state) or writes what it reads
/// (its gradient), and as early as that allows: the step before it is one
/// of those, or another update hoisted to the same place. Returns how many
/// updates it checked.
fn updates_follow_their_last_use(plan: &KernelPlan, at: &str) -> usize {
    let mut updates = 0;
    for (i, update) in plan.steps.iter().enumerate() {
        if !update.is_update() {
            continue;
        }
        updates += 1;
        let uses = update.accesses();
        let conflicts = |j: usize| {
            plan.steps[j].accesses().iter().any(|&(b, access)| {
                uses.iter()
                    .any(|&(c, own)| b == c && (access == Access::Write || own == Access::Write))
            })
        };
        if let Some(j) = (i + 1..plan.steps.len()).find(|&j| conflicts(j)) {
            panic!(
                "{at}: step {j} ({:?}) uses what update step {i} ({:?}) changes, after it",
                plan.steps[j].nodes, update.nodes
            );
        }
        let before = plan.steps[..i].iter().rposition(|s| !s.is_update());
        if let Some(j) = before {
            assert!(
                conflicts(j),
                "{at}: update step {i} ({:?}) could run before step {j} ({:?})",
                update.nodes,
                plan.steps[j].nodes
            );
        }
    }
    updates
}

/// With every update right after its weight's last use, the weight
/// gradients are never all live at once: ResNet-34's training arena is
/// smaller than its weight gradients together (it held all of them, 81
/// MiB at batch 32, when the updates ran after the backward pass).
#[test]
fn a_training_arena_does_not_hold_every_weight_gradient() {
    let model = models("examples")
        .into_iter()
        .find(|(file, _)| file.ends_with("resnet34.cnn"))
        .map(|(_, model)| model)
        .expect("examples/resnet34.cnn");
    let train = model.graph.train.clone().unwrap_or_default();
    let loss = LossSpec {
        smoothing: 0.0,
        weights: Vec::new(),
    };
    let plan = cnnc::plan_training(&model, &loss, &train.optimizer, 32).expect("plan");
    let gradients: u64 = plan
        .steps
        .iter()
        .filter(|s| s.is_update())
        .flat_map(|s| s.accesses())
        .filter(|&(b, access)| access == Access::Read && plan.buffers[b].role == Role::Temporary)
        .map(|(b, _)| 4 * plan.buffers[b].len as u64)
        .sum();
    let arena = cnnc::memory::plan(&plan).expect("memory").arena_bytes;
    assert!(
        arena < gradients,
        "arena {arena} bytes, weight gradients {gradients} bytes"
    );
}

#[test]
fn stdlib_plans_verify() {
    plans_verify("stdlib");
}

#[test]
fn example_plans_verify() {
    plans_verify("examples");
}

#[test]
fn every_example_has_a_training_plan() {
    // Guards the filter above: the examples are all trainable classifiers
    // or segmentation models, so none may be skipped silently.
    for (file, model) in models("examples") {
        let train = model
            .graph
            .train
            .clone()
            .unwrap_or_else(TrainConfig::default);
        let loss = LossSpec {
            smoothing: 0.0,
            weights: Vec::new(),
        };
        // Class scores, or per-pixel scores (segmentation).
        let trainable = model
            .outputs()
            .iter()
            .all(|(_, shape)| matches!(shape.len(), 1 | 3));
        assert!(
            trainable || file.ends_with("line_filters.cnn"),
            "{} `{}` has an output that is not class scores",
            file.display(),
            model.graph.name
        );
        if trainable {
            cnnc::plan_training(&model, &loss, &train.optimizer, 1)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}

/// A convolution's activation becomes its epilogue, except on a product of
/// a few rows, which its kernel splits over the output channels (no item
/// finishes a whole row): there it stays a step of its own.
#[test]
fn few_row_products_keep_their_activation_apart() {
    use cnnc::plan::{ContractionPass, KernelDesc};
    let source =
        "model m : [7, 7, 8] { conv(128, 3, padding: same, activation: relu) -> flatten -> dense(10) }";
    let model = cnnc::compile_source("m.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"));
    // 49 rows at batch 1, 98 at batch 2.
    for (batch, fused) in [(1, false), (2, true)] {
        let plan = cnnc::plan_inference(&model, batch).expect("plans");
        let epilogue = plan.steps.iter().find_map(|step| match &step.kernel {
            KernelDesc::Contraction {
                pass: ContractionPass::Forward { epilogue },
                name,
                ..
            } if name.starts_with("conv") => Some(epilogue.is_some()),
            _ => None,
        });
        assert_eq!(epilogue, Some(fused), "batch {batch}: {:#?}", plan.steps);
        let elementwise = plan
            .steps
            .iter()
            .filter(|s| matches!(s.kernel, KernelDesc::Elementwise { .. }))
            .count();
        assert_eq!(elementwise > 0, !fused, "batch {batch}: {:#?}", plan.steps);
    }
}

/// `tanh(0.75 x)` of one tensor: LeNet-5's subsampling after its pooling,
/// an element-wise consumer that reads nothing else.
fn scale_tanh() -> cnnc::codegen::elementwise::Elementwise {
    use cnnc::codegen::elementwise::{Binary, Elementwise, Expr, Operand, Unary};
    Elementwise {
        name: "scale_tanh".into(),
        inputs: vec![Operand::Tensor],
        exprs: vec![
            Expr::Load(0),
            Expr::Const(0.75),
            Expr::Binary(Binary::Mul, 0, 1),
            Expr::Unary(Unary::Tanh, 2),
        ],
        outputs: vec![3],
        stores: Vec::new(),
    }
}

/// A plan of a kernel (a window kernel, a Winograd input gradient) whose
/// last buffer an element-wise step finishes into a temporary, which a
/// copy gives the caller.
struct FusedCase {
    plan: cnnc::KernelPlan,
    /// The buffers the caller lends, in the order of the plan's buffers.
    values: Vec<Vec<f32>>,
}

impl FusedCase {
    /// Window kernel `window` and its consumer, as [`FusedCase::new`].
    fn window(
        window: cnnc::codegen::window::Window,
        finish: cnnc::codegen::elementwise::Elementwise,
        others: &[usize],
    ) -> FusedCase {
        let (pixels, channels) = window.row_items().expect("a row per item");
        let rows = window.domain().expect("validates") * pixels;
        let batch = window.input[0];
        let kernel = cnnc::plan::KernelDesc::Window {
            window,
            epilogue: None,
        };
        FusedCase::new(kernel, batch, (rows, channels), finish, others)
    }

    /// `producer` on a batch of `batch` (its buffers bound in order to the
    /// plan's first buffers, the last, written, a temporary of `rows x
    /// channels`), then `finish` on that temporary and the buffers
    /// `others` into another, copied into the output.
    fn new(
        producer: cnnc::plan::KernelDesc,
        batch: usize,
        (rows, channels): (usize, usize),
        finish: cnnc::codegen::elementwise::Elementwise,
        others: &[usize],
    ) -> FusedCase {
        use cnnc::codegen::native::CopyRows;
        use cnnc::plan::{KernelDesc, KernelPlan, Len, Role, Step};
        let mut plan = KernelPlan {
            name: "fused".into(),
            batch,
            ..KernelPlan::default()
        };
        let buffers = producer.signature().expect("consistent");
        let mut values = Vec::new();
        let mut args = Vec::new();
        for (i, b) in buffers.iter().enumerate() {
            let Len::Exactly(len) = b.len else {
                panic!("{producer:?} takes per-step scalars");
            };
            let role = if i + 1 == buffers.len() {
                Role::Temporary
            } else if i == 0 {
                Role::Input
            } else {
                Role::Weight(format!("w{i}"))
            };
            args.push(plan.buffer(format!("b{i}"), len, role));
            // Values from -1 to 1 in steps of 1/4: ties and zeros.
            values.push(
                (0..len)
                    .map(|k| ((k * 7 + i) % 9) as f32 / 4.0 - 1.0)
                    .collect(),
            );
        }
        let written = *args.last().expect("a written buffer");
        let mut inputs = vec![written];
        inputs.extend(others.iter().map(|&o| args[o]));
        let finished = plan.buffer("finished", rows * channels, Role::Temporary);
        let out = plan.buffer("out", rows * channels, Role::Output("out".into()));
        inputs.push(finished);
        plan.steps.push(Step {
            kernel: producer,
            args,
            nodes: vec!["producer".into()],
        });
        plan.steps.push(Step {
            kernel: KernelDesc::Elementwise {
                kernel: finish,
                rows,
                channels,
            },
            args: inputs,
            nodes: vec!["finish".into()],
        });
        plan.steps.push(Step {
            kernel: KernelDesc::Copy(CopyRows {
                name: "copy".into(),
                rows,
                len: channels,
                from: (channels, 0),
                to: (channels, 0),
            }),
            args: vec![finished, out],
            nodes: vec!["copy".into()],
        });
        values.pop();
        FusedCase { plan, values }
    }

    /// Checks that `fused`, this case's plan after fusion, gives bitwise
    /// what the steps give apart (something other than zeros), on one
    /// thread and on two.
    fn assert_bitwise(&self, fused: &cnnc::KernelPlan) {
        let apart = self.run(&self.plan, 1);
        assert!(apart.iter().any(|&v| v != 0.0), "{}", self.plan);
        for threads in [1, 2] {
            let together = self.run(fused, threads);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&together),
                bits(&apart),
                "{fused} on {threads} threads"
            );
        }
    }

    /// The plan's output, run on `threads` threads.
    fn run(&self, plan: &cnnc::KernelPlan, threads: usize) -> Vec<f32> {
        plan.verify().expect("verifies");
        let layout = cnnc::memory::plan(plan).expect("places");
        let compiled = cnnc::executable::build(plan.clone(), layout).expect("builds");
        let out_len = plan.buffers.last().expect("out").len;
        let mut values = self.values.clone();
        let mut out = vec![f32::NAN; out_len];
        let mut external: Vec<&mut [f32]> = Vec::new();
        let mut lent: Vec<Option<&mut [f32]>> =
            values.iter_mut().map(|v| Some(v.as_mut_slice())).collect();
        let mut out_slot = Some(out.as_mut_slice());
        for &b in &compiled.layout.externals {
            let slice = if b + 1 == plan.buffers.len() {
                out_slot.take()
            } else {
                lent.get_mut(b).and_then(Option::take)
            };
            external.push(slice.expect("lent once"));
        }
        let mut executor = cnnc::runtime::executor::Executor::new(threads).expect("executor");
        executor
            .run(&compiled.program, &mut external)
            .expect("runs");
        drop(external);
        out
    }
}

/// A window kernel's element-wise consumer becomes its epilogue, run on
/// each chunk of rows the window finishes: the gradient of a ReLU on a max
/// pooling's gradient (windows that overlap, and ties and zeros, as after
/// a ReLU), a scale and tanh on an average pooling (LeNet-5's
/// subsampling) and on a depthwise convolution and its input gradient
/// (MobileNet's batchnorm and ReLU6), with rows of more and of fewer f32s
/// than a chunk. Each is bitwise what the two steps give apart, on one
/// thread and on two. A global pooling's items are not rows: no epilogue
/// fuses there, and a plan that gives it one does not verify.
#[test]
fn window_epilogues_are_bitwise_their_steps_apart() {
    use cnnc::codegen::elementwise::{Elementwise, Expr, Operand};
    use cnnc::codegen::window::{Pass, Window, WindowKind};
    use cnnc::graph::{Padding, PoolKind};
    use cnnc::plan::KernelDesc;
    let depthwise = |pass, input| Window {
        name: "depthwise".into(),
        kind: WindowKind::DepthwiseConv {
            multiplier: 2,
            kernel: [3, 3],
            stride: [2, 1],
            dilation: [1, 1],
            padding: Padding::Same,
            bias: false,
        },
        pass,
        input,
        storage: Default::default(),
    };
    let pool = |kind, pass, size, stride, input| Window {
        name: "pool".into(),
        kind: WindowKind::Pool {
            kind,
            size: [size, size],
            stride: [stride, stride],
            padding: Padding::Same,
        },
        pass,
        input,
        storage: Default::default(),
    };
    // dz = dx where the ReLU's output x > 0, else 0; x is the pooling's
    // input (buffer 0).
    let relu_gradient = Elementwise {
        name: "relu_gradient".into(),
        inputs: vec![Operand::Tensor, Operand::Tensor],
        exprs: vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Const(0.0),
            Expr::IfPositive {
                cond: 1,
                then: 0,
                otherwise: 2,
            },
        ],
        outputs: vec![3],
        stores: Vec::new(),
    };
    let scale_tanh = scale_tanh();
    let cases = [
        // 3x3 windows at stride 2 overlap; rows of 9 x 40 f32s.
        FusedCase::window(
            pool(PoolKind::Max, Pass::BackwardData, 3, 2, [3, 9, 9, 40]),
            relu_gradient.clone(),
            &[0],
        ),
        // Rows of 56 x 80 f32s, more than a chunk.
        FusedCase::window(
            pool(PoolKind::Max, Pass::BackwardData, 2, 2, [2, 6, 56, 80]),
            relu_gradient,
            &[0],
        ),
        FusedCase::window(
            pool(PoolKind::Avg, Pass::Forward, 2, 2, [2, 10, 10, 6]),
            scale_tanh.clone(),
            &[],
        ),
        FusedCase::window(
            depthwise(Pass::Forward, [2, 9, 7, 20]),
            scale_tanh.clone(),
            &[],
        ),
        FusedCase::window(
            depthwise(Pass::BackwardData, [2, 9, 7, 20]),
            scale_tanh.clone(),
            &[],
        ),
    ];
    for case in &cases {
        let mut fused = case.plan.clone();
        assert_eq!(cnnc::passes::fuse::run(&mut fused), Ok(1), "{}", case.plan);
        assert!(
            matches!(
                fused.steps[..],
                [
                    cnnc::plan::Step {
                        kernel: KernelDesc::Window {
                            epilogue: Some(_),
                            ..
                        },
                        ..
                    },
                    _
                ]
            ),
            "{fused}"
        );
        case.assert_bitwise(&fused);
    }
    let global = Window {
        name: "global".into(),
        kind: WindowKind::GlobalPool {
            kind: PoolKind::Max,
        },
        pass: Pass::Forward,
        input: [2, 3, 3, 4],
        storage: Default::default(),
    };
    assert_eq!(global.row_items(), None);
    let mut plan = cnnc::KernelPlan {
        name: "global".into(),
        batch: 2,
        ..cnnc::KernelPlan::default()
    };
    let x = plan.buffer("x", 72, cnnc::plan::Role::Input);
    let y = plan.buffer("y", 8, cnnc::plan::Role::Output("y".into()));
    plan.steps.push(cnnc::plan::Step {
        kernel: KernelDesc::Window {
            window: global,
            epilogue: Some(scale_tanh),
        },
        args: vec![x, y],
        nodes: vec![],
    });
    let error = plan.verify().expect_err("no rows to finish").to_string();
    assert!(error.contains("do not write a row each"), "{error}");
}

/// An input gradient on Winograd's transforms takes its element-wise
/// consumer as an epilogue on each block of rows its items finish (the
/// gradient of the ReLU before a 3x3 convolution), bitwise what the two
/// steps give apart, with both tiles, on one thread and two; on im2col,
/// whose items add into rows that others share, it keeps the consumer
/// apart.
#[test]
fn winograd_input_gradient_epilogues_are_bitwise_their_steps_apart() {
    use cnnc::codegen::contraction::winograd::Tile;
    use cnnc::codegen::contraction::ConvShape;
    use cnnc::graph::Padding;
    use cnnc::plan::{Algorithm, ContractionPass, Geometry, KernelDesc};
    let shape = ConvShape {
        batch: 3,
        height: 9,
        width: 10,
        in_channels: 20,
        out_channels: 24,
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Same,
        bias: false,
    };
    let input_gradient = |algorithm| KernelDesc::Contraction {
        name: "conv".into(),
        geometry: Geometry::Conv(shape),
        pass: ContractionPass::BackwardData { epilogue: None },
        algorithm,
    };
    let scale_tanh = scale_tanh();
    let matrix = (shape.batch * shape.height * shape.width, shape.in_channels);
    for tile in [Tile::F2, Tile::F4] {
        let kernel = input_gradient(Algorithm::Winograd(tile));
        let case = FusedCase::new(kernel, shape.batch, matrix, scale_tanh.clone(), &[]);
        let mut fused = case.plan.clone();
        assert_eq!(cnnc::passes::fuse::run(&mut fused), Ok(1), "{}", case.plan);
        assert!(
            matches!(
                fused.steps[0].kernel,
                KernelDesc::Contraction {
                    pass: ContractionPass::BackwardData { epilogue: Some(_) },
                    ..
                }
            ),
            "{fused}"
        );
        case.assert_bitwise(&fused);
    }
    let case = FusedCase::new(
        input_gradient(Algorithm::Gemm),
        shape.batch,
        matrix,
        scale_tanh.clone(),
        &[],
    );
    let mut plan = case.plan.clone();
    assert_eq!(cnnc::passes::fuse::run(&mut plan), Ok(0), "{plan}");
    // Given one anyway, the plan does not verify.
    let KernelDesc::Contraction { pass, .. } = &mut plan.steps[0].kernel else {
        panic!("{plan}");
    };
    *pass = ContractionPass::BackwardData {
        epilogue: Some(scale_tanh),
    };
    let error = plan
        .verify()
        .expect_err("im2col finishes no rows")
        .to_string();
    assert!(error.contains("off Winograd's transforms"), "{error}");
}
