//! Fusion over a kernel plan: chains of element-wise kernels become one
//! kernel, and an element-wise kernel that only finishes a convolution's or
//! dense layer's output (bias already in, activation, batchnorm in
//! inference, a residual add) becomes that contraction's epilogue, run on
//! each block of rows while it is in cache. So does one that finishes what
//! a window kernel writes a row per item (pooling and depthwise
//! convolution, forward and backward-data): the gradient of the ReLU
//! before a max pooling, on the pooling's gradient; and one that finishes
//! an input gradient on Winograd's transforms, once the algorithm pass has
//! chosen them (the gradient of the ReLU before a 3x3 convolution), so the
//! pass runs again after it. A forward product of a few
//! rows, which its kernel splits over the output channels
//! ([`forward_splits_columns`]), finishes no block of whole rows and keeps
//! its element-wise consumer as a step of its own.

use crate::codegen::contraction::forward_splits_columns;
use crate::codegen::elementwise::{Elementwise, Expr, Operand};
use crate::plan::{
    Access, Algorithm, BufferId, ContractionPass, Geometry, KernelDesc, KernelPlan, PlanError,
    Role, Step,
};

/// Fuses until nothing more fuses, element-wise chains first (so that a
/// whole chain becomes one epilogue); returns how many kernels were merged,
/// after checking that the fused plan still holds every invariant.
pub fn run(plan: &mut KernelPlan) -> Result<usize, PlanError> {
    let mut merged = 0;
    for epilogues in [false, true] {
        while let Some((producer, consumer)) = candidate(plan, epilogues) {
            fuse(plan, producer, consumer);
            merged += 1;
        }
    }
    plan.verify()?;
    Ok(merged)
}

/// How many steps read and write each buffer.
fn uses(plan: &KernelPlan) -> (Vec<usize>, Vec<usize>) {
    let mut reads = vec![0; plan.buffers.len()];
    let mut writes = vec![0; plan.buffers.len()];
    for step in &plan.steps {
        for (b, written) in arguments(step) {
            if written {
                writes[b] += 1;
            } else {
                reads[b] += 1;
            }
        }
    }
    (reads, writes)
}

/// Each argument of `step` and whether the step writes it (rather than
/// reads it). A kernel whose description is inconsistent reports nothing
/// here: it never fuses, and the plan's verification names it.
fn arguments(step: &Step) -> Vec<(BufferId, bool)> {
    step.accesses()
        .into_iter()
        .map(|(b, access)| (b, access == Access::Write))
        .collect()
}

/// The first pair (producer step, consumer step) that can be fused: the
/// producer (an element-wise kernel, or with `epilogues` a contraction) has
/// one output, a temporary that only the consumer (an element-wise kernel
/// over the same matrix) reads, as a full tensor.
fn candidate(plan: &KernelPlan, epilogues: bool) -> Option<(usize, usize)> {
    let (reads, writes) = uses(plan);
    for (p, step) in plan.steps.iter().enumerate() {
        let (output, rows, channels) = match &step.kernel {
            KernelDesc::Elementwise {
                kernel,
                rows,
                channels,
            } if kernel.outputs.len() == 1 && !epilogues => (*step.args.last()?, *rows, *channels),
            KernelDesc::Contraction {
                pass: ContractionPass::Forward { epilogue: None },
                geometry,
                ..
            } if epilogues => {
                let (rows, channels) = matrix(geometry);
                if forward_splits_columns(rows, channels) {
                    // Its items finish no whole row to run an epilogue on.
                    continue;
                }
                let output = if has_bias(geometry) {
                    step.args[3]
                } else {
                    step.args[2]
                };
                (output, rows, channels)
            }
            // On Winograd's transforms an input gradient's items finish
            // blocks of rows too (the gradient of the ReLU before a 3x3
            // convolution); col2im's items add into rows that others
            // share. The algorithm pass has chosen by then: `run` again
            // after it.
            KernelDesc::Contraction {
                pass: ContractionPass::BackwardData { epilogue: None },
                geometry: Geometry::Conv(s),
                algorithm: Algorithm::Winograd(_),
                ..
            } if epilogues => (step.args[2], s.batch * s.height * s.width, s.in_channels),
            KernelDesc::Window {
                window,
                epilogue: None,
            } if epilogues => {
                let Some((pixels, channels)) = window.row_items() else {
                    continue;
                };
                let Ok(domain) = window.domain() else {
                    continue;
                };
                (*step.args.last()?, domain * pixels, channels)
            }
            _ => continue,
        };
        if plan.buffers[output].role != Role::Temporary || reads[output] != 1 || writes[output] != 1
        {
            continue;
        }
        let Some(consumer) = plan
            .steps
            .iter()
            .enumerate()
            .skip(p + 1)
            .find(|(_, s)| s.args.contains(&output))
            .map(|(i, _)| i)
        else {
            continue;
        };
        // Moving the producer's work to the consumer must not read an input
        // that a step in between overwrites (in-place updates).
        let inputs: Vec<BufferId> = arguments(step)
            .into_iter()
            .filter(|&(_, w)| !w)
            .map(|(b, _)| b)
            .collect();
        let overwritten = plan.steps[p + 1..consumer]
            .iter()
            .any(|s| arguments(s).iter().any(|&(b, w)| w && inputs.contains(&b)));
        if overwritten {
            continue;
        }
        // An epilogue runs the consumer's work at the producer's place: the
        // consumer's other inputs must already be there, not computed later.
        if epilogues {
            let consumer_inputs: Vec<BufferId> = arguments(&plan.steps[consumer])
                .into_iter()
                .filter(|&(b, w)| !w && b != output)
                .map(|(b, _)| b)
                .collect();
            let later = plan.steps[p + 1..consumer].iter().any(|s| {
                arguments(s)
                    .iter()
                    .any(|&(b, w)| w && consumer_inputs.contains(&b))
            });
            if later {
                continue;
            }
        }
        let fits = match &plan.steps[consumer].kernel {
            KernelDesc::Elementwise {
                kernel,
                rows: r,
                channels: c,
            } => {
                *r == rows
                    && *c == channels
                    && kernel.outputs.len() == 1
                    && input_operands(kernel, &plan.steps[consumer].args)
                        .iter()
                        .all(|&(b, op)| b != output || op == Operand::Tensor)
                    && plan.buffers[*plan.steps[consumer].args.last()?].role == Role::Temporary
            }
            _ => false,
        };
        if fits {
            return Some((p, consumer));
        }
    }
    None
}

fn has_bias(geometry: &Geometry) -> bool {
    match geometry {
        Geometry::Conv(s) => s.bias,
        Geometry::Dense(s) => s.bias,
    }
}

/// Rows and channels of a contraction's output.
fn matrix(geometry: &Geometry) -> (usize, usize) {
    match geometry {
        Geometry::Conv(s) => {
            let out = |axis: usize, i: usize| {
                let [k, st, d] = [s.kernel[axis], s.stride[axis], s.dilation[axis]];
                let padding = s.padding.axis(axis);
                crate::ops::output_size(i as u64, k as u64, st as u64, d as u64, padding)
                    .unwrap_or(0) as usize
            };
            let (oh, ow) = (out(0, s.height), out(1, s.width));
            (s.batch * oh * ow, s.out_channels)
        }
        Geometry::Dense(s) => (s.rows, s.units),
    }
}

/// The input buffers of an element-wise step with their operands.
fn input_operands(kernel: &Elementwise, args: &[BufferId]) -> Vec<(BufferId, Operand)> {
    kernel
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &op)| (args[i], op))
        .collect()
}

/// Merges `producer` into `consumer` and removes the producer's step.
fn fuse(plan: &mut KernelPlan, producer: usize, consumer: usize) {
    let consumer_step = plan.steps[consumer].clone();
    let KernelDesc::Elementwise { kernel: outer, .. } = &consumer_step.kernel else {
        return;
    };
    let producer_step = plan.steps[producer].clone();
    match producer_step.kernel.clone() {
        KernelDesc::Elementwise {
            kernel: inner,
            rows,
            channels,
        } => {
            let intermediate = *producer_step.args.last().expect("an output");
            let inner_inputs = &producer_step.args[..inner.inputs.len()];
            let (kernel, args) = splice(
                &inner,
                inner_inputs,
                outer,
                &consumer_step.args,
                intermediate,
            );
            let mut nodes = producer_step.nodes.clone();
            nodes.extend(consumer_step.nodes.clone());
            plan.steps[consumer] = crate::plan::Step {
                kernel: KernelDesc::Elementwise {
                    kernel,
                    rows,
                    channels,
                },
                args,
                nodes,
            };
            plan.steps.remove(producer);
        }
        KernelDesc::Contraction {
            name,
            geometry,
            algorithm,
            pass,
        } => {
            // A forward pass's output follows its bias, when it has one; an
            // input gradient's follows the kernel.
            let forward = matches!(pass, ContractionPass::Forward { .. });
            let own = if forward && has_bias(&geometry) { 4 } else { 3 };
            let (epilogue, step) = epilogue_of(&producer_step, &consumer_step, outer, own);
            let epilogue = Some(epilogue);
            let pass = if forward {
                ContractionPass::Forward { epilogue }
            } else {
                ContractionPass::BackwardData { epilogue }
            };
            let kernel = KernelDesc::Contraction {
                name,
                geometry,
                pass,
                algorithm,
            };
            replace(plan, (producer, consumer), step.with(kernel));
        }
        KernelDesc::Window { window, .. } => {
            // The window's last buffer is the one its items write.
            let own = producer_step.args.len();
            let (epilogue, step) = epilogue_of(&producer_step, &consumer_step, outer, own);
            let kernel = KernelDesc::Window {
                window,
                epilogue: Some(epilogue),
            };
            replace(plan, (producer, consumer), step.with(kernel));
        }
        _ => {}
    }
}

/// A fused step but for its kernel: its arguments, the nodes it
/// computes, and the buffer its epilogue updates in place.
struct Fused {
    args: Vec<BufferId>,
    nodes: Vec<String>,
    updated: BufferId,
}

impl Fused {
    /// The fused step, with its epilogue in `kernel`, and the buffer the
    /// epilogue updates.
    fn with(self, kernel: KernelDesc) -> (crate::plan::Step, BufferId) {
        let step = crate::plan::Step {
            kernel,
            args: self.args,
            nodes: self.nodes,
        };
        (step, self.updated)
    }
}

/// The consumer (kernel `outer`) as the epilogue of the producer, whose
/// first `own` arguments are its own, the last of them the buffer it
/// writes: the epilogue reads and writes that buffer in place (its input
/// 0 and output 0). Returns it and the rest of the fused step: the
/// producer's own arguments, then the consumer's other inputs.
fn epilogue_of(
    producer: &crate::plan::Step,
    consumer: &crate::plan::Step,
    outer: &Elementwise,
    own: usize,
) -> (Elementwise, Fused) {
    let updated = producer.args[own - 1];
    let epilogue = in_place(outer, &consumer.args, updated);
    let mut args = producer.args[..own].to_vec();
    args.extend(
        consumer.args[..outer.inputs.len()]
            .iter()
            .filter(|&&b| b != updated),
    );
    let mut nodes = producer.nodes.clone();
    nodes.extend(consumer.nodes.clone());
    (
        epilogue,
        Fused {
            args,
            nodes,
            updated,
        },
    )
}

/// Puts the fused step at the producer's place and removes the consumer,
/// whose output is, for every later step, the buffer the epilogue updates.
fn replace(
    plan: &mut KernelPlan,
    (producer, consumer): (usize, usize),
    (step, updated): (crate::plan::Step, BufferId),
) {
    let output = *plan.steps[consumer].args.last().expect("an output");
    plan.steps[producer] = step;
    plan.steps.remove(consumer);
    rename(plan, output, updated);
}

/// Every later use of `from` reads `to` instead: an epilogue's output is
/// its producer's buffer, updated in place.
fn rename(plan: &mut KernelPlan, from: BufferId, to: BufferId) {
    for step in &mut plan.steps {
        for arg in &mut step.args {
            if *arg == from {
                *arg = to;
            }
        }
    }
}

/// The consumer `outer` with its loads of `intermediate` replaced by the
/// producer `inner`'s computation; returns the kernel and its arguments.
fn splice(
    inner: &Elementwise,
    inner_args: &[BufferId],
    outer: &Elementwise,
    outer_args: &[BufferId],
    intermediate: BufferId,
) -> (Elementwise, Vec<BufferId>) {
    let mut inputs: Vec<Operand> = Vec::new();
    let mut args: Vec<BufferId> = Vec::new();
    let mut exprs: Vec<Expr> = Vec::new();
    // The producer's inputs first, then the consumer's other inputs.
    let inner_map: Vec<usize> = inner
        .inputs
        .iter()
        .zip(inner_args)
        .map(|(&op, &b)| add_input(&mut inputs, &mut args, op, b))
        .collect();
    let base = exprs.len();
    exprs.extend(
        inner
            .exprs
            .iter()
            .map(|e| remap(e, |x| x + base, |i| inner_map[i])),
    );
    let produced = base + inner.outputs[0];
    let outer_map: Vec<Option<usize>> = outer
        .inputs
        .iter()
        .zip(outer_args)
        .map(|(&op, &b)| {
            if b == intermediate {
                None
            } else {
                Some(add_input(&mut inputs, &mut args, op, b))
            }
        })
        .collect();
    let mut positions: Vec<usize> = Vec::with_capacity(outer.exprs.len());
    for e in &outer.exprs {
        let position = match e {
            Expr::Load(i) if outer_map[*i].is_none() => produced,
            Expr::Load(i) => {
                exprs.push(Expr::Load(outer_map[*i].expect("mapped")));
                exprs.len() - 1
            }
            other => {
                exprs.push(remap(
                    other,
                    |x| positions[x],
                    |i| outer_map[i].unwrap_or(i),
                ));
                exprs.len() - 1
            }
        };
        positions.push(position);
    }
    let outputs = outer.outputs.iter().map(|&o| positions[o]).collect();
    args.extend(&outer_args[outer.inputs.len()..]);
    (
        Elementwise {
            name: format!("{}+{}", inner.name, outer.name),
            inputs,
            exprs,
            outputs,
            stores: outer.stores.clone(),
        },
        args,
    )
}

/// Adds an input unless the same buffer is already there with the same operand.
fn add_input(
    inputs: &mut Vec<Operand>,
    args: &mut Vec<BufferId>,
    op: Operand,
    buffer: BufferId,
) -> usize {
    if let Some(i) = inputs
        .iter()
        .zip(args.iter())
        .position(|(&o, &b)| o == op && b == buffer)
    {
        return i;
    }
    inputs.push(op);
    args.push(buffer);
    inputs.len() - 1
}

/// `e` with its step references mapped by `step` and its input buffers by `input`.
fn remap(e: &Expr, step: impl Fn(usize) -> usize, input: impl Fn(usize) -> usize) -> Expr {
    match *e {
        Expr::Load(i) => Expr::Load(input(i)),
        Expr::Scalar { input: i, index } => Expr::Scalar {
            input: input(i),
            index,
        },
        Expr::Const(c) => Expr::Const(c),
        Expr::Unary(op, a) => Expr::Unary(op, step(a)),
        Expr::Binary(op, a, b) => Expr::Binary(op, step(a), step(b)),
        Expr::Fma(a, b, c) => Expr::Fma(step(a), step(b), step(c)),
        Expr::IfPositive {
            cond,
            then,
            otherwise,
        } => Expr::IfPositive {
            cond: step(cond),
            then: step(then),
            otherwise: step(otherwise),
        },
    }
}

/// The consumer as an in-place epilogue on `y`: input 0 and output 0 are
/// `y`, its other inputs follow in order.
fn in_place(outer: &Elementwise, outer_args: &[BufferId], y: BufferId) -> Elementwise {
    let mut inputs = vec![Operand::Tensor];
    let mut map: Vec<usize> = Vec::with_capacity(outer.inputs.len());
    for (&op, &b) in outer.inputs.iter().zip(outer_args) {
        if b == y && op == Operand::Tensor {
            map.push(0);
        } else {
            inputs.push(op);
            map.push(inputs.len() - 1);
        }
    }
    let exprs = outer
        .exprs
        .iter()
        .map(|e| remap(e, |x| x, |i| map[i]))
        .collect();
    Elementwise {
        name: format!("epilogue:{}", outer.name),
        inputs,
        exprs,
        outputs: outer.outputs.clone(),
        stores: outer.stores.clone(),
    }
}
