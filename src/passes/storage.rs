//! Stores in bf16 the activations that bf16 products read
//! ([`Storage::Bf16`]): in a bf16 plan, a temporary that one kernel writes
//! (an element-wise kernel, or a bf16 forward product with or without its
//! epilogue) and that only bf16 contractions (as their input: the forward
//! pass, the kernel gradient) and element-wise kernels read. Its writer
//! rounds it as it stores it, the contractions copy it where they would
//! have rounded it (so their results do not change, bit for bit), and the
//! element-wise readers widen it. It takes half the memory: the arena
//! holds such activations from the forward pass to their kernel gradient.
//!
//! What else reads an activation (pooling, batchnorm's statistics, a
//! product in f32, an epilogue's extra operand) keeps it f32, and so does
//! what the caller sees (outputs, losses, gradients). So that a batch
//! splits across ranks at whole examples, an activation whose examples
//! hold an odd number of values stays f32 too.
//!
//! The pass runs after fusion, which decides which kernels read what.

use crate::codegen::elementwise::Operand;
use crate::plan::{
    Access, Algorithm, BufferId, ContractionPass, Geometry, KernelDesc, KernelPlan, PlanError,
    Precision, Role, Storage,
};

/// Stores in bf16 every activation of `plan` that qualifies, when
/// `precision` is bf16; returns how many, after checking that the plan
/// still holds every invariant.
pub fn run(plan: &mut KernelPlan, precision: Precision) -> Result<usize, PlanError> {
    if precision == Precision::F32 {
        return Ok(0);
    }
    let chosen: Vec<BufferId> = (0..plan.buffers.len())
        .filter(|&b| qualifies(plan, b))
        .collect();
    for &b in &chosen {
        plan.buffers[b].storage = Storage::Bf16;
        for step in &mut plan.steps {
            let positions: Vec<usize> = (0..step.args.len())
                .filter(|&i| step.args[i] == b)
                .collect();
            match &mut step.kernel {
                KernelDesc::Elementwise { kernel, .. } => {
                    let inputs = kernel.inputs.len();
                    for i in positions {
                        if i < inputs {
                            kernel.inputs[i] = Operand::Bf16;
                        } else {
                            let k = i - inputs;
                            if kernel.stores.len() <= k {
                                kernel.stores.resize(k + 1, Storage::F32);
                            }
                            kernel.stores[k] = Storage::Bf16;
                        }
                    }
                }
                KernelDesc::Contraction {
                    pass, algorithm, ..
                } => {
                    let Algorithm::Bf16 { input, output } = algorithm else {
                        continue;
                    };
                    for i in positions {
                        if i == 0 {
                            *input = Storage::Bf16;
                        } else {
                            // The forward pass's output (the only other
                            // position `qualifies` lets through).
                            *output = Storage::Bf16;
                            if let ContractionPass::Forward {
                                epilogue: Some(epilogue),
                            } = pass
                            {
                                if epilogue.stores.is_empty() {
                                    epilogue.stores.push(Storage::F32);
                                }
                                epilogue.stores[0] = Storage::Bf16;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    plan.verify()?;
    Ok(chosen.len())
}

/// Whether buffer `b` is an activation to store in bf16: a temporary
/// whose examples hold an even number of values, written by one
/// element-wise kernel or bf16 forward product, read by at least one bf16
/// contraction as its input and otherwise only by element-wise kernels
/// as a tensor.
fn qualifies(plan: &KernelPlan, b: BufferId) -> bool {
    let buffer = &plan.buffers[b];
    let batch = plan.batch.max(1);
    if buffer.role != Role::Temporary
        || !buffer.len.is_multiple_of(batch)
        || !(buffer.len / batch).is_multiple_of(2)
    {
        return false;
    }
    let (mut writers, mut contractions) = (0, 0);
    for step in &plan.steps {
        for (i, (arg, access)) in step.accesses().into_iter().enumerate() {
            if arg != b {
                continue;
            }
            let fits = match (&step.kernel, access) {
                (KernelDesc::Elementwise { kernel, .. }, Access::Write) => {
                    writers += 1;
                    i >= kernel.inputs.len()
                }
                (KernelDesc::Elementwise { kernel, .. }, Access::Read) => {
                    kernel.inputs.get(i) == Some(&Operand::Tensor)
                }
                (
                    KernelDesc::Contraction {
                        pass: ContractionPass::Forward { .. } | ContractionPass::BackwardFilter,
                        algorithm: Algorithm::Bf16 { .. },
                        ..
                    },
                    Access::Read,
                ) if i == 0 => {
                    contractions += 1;
                    true
                }
                (
                    KernelDesc::Contraction {
                        geometry,
                        pass: ContractionPass::Forward { .. },
                        algorithm: Algorithm::Bf16 { .. },
                        ..
                    },
                    Access::Write,
                ) => {
                    writers += 1;
                    i == forward_output(geometry)
                }
                _ => false,
            };
            if !fits {
                return false;
            }
        }
    }
    writers == 1 && contractions > 0
}

/// The position of a forward product's output among its buffers: after
/// the input, the kernel and the bias if the layer has one.
fn forward_output(geometry: &Geometry) -> usize {
    let bias = match geometry {
        Geometry::Conv(s) => s.bias,
        Geometry::Dense(s) => s.bias,
    };
    2 + usize::from(bias)
}
