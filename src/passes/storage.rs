//! Stores in bf16 the activations that bf16 products read or write
//! ([`Storage::Bf16`]): in a bf16 plan, a temporary that one kernel writes
//! (an element-wise kernel, a bf16 forward product with or without its
//! epilogue, or 2-D pooling's forward pass) and that only bf16
//! contractions (as their input: the forward pass, the kernel gradient),
//! element-wise kernels (epilogues included), 2-D pooling (as its `x`)
//! and batchnorm's statistics read. Its writer rounds it as it stores it,
//! the contractions copy it where they would have rounded it (so their
//! results do not change, bit for bit), and the other readers widen it.
//! It takes half the memory: the arena holds such activations from the
//! forward pass to their kernel gradient.
//!
//! What else reads an activation (softmax and the loss, a product in f32,
//! other window kernels and reductions) keeps it f32, and so does what
//! the caller sees (outputs, losses, gradients). So that a batch splits
//! across ranks at whole examples, an activation whose examples hold an
//! odd number of values stays f32 too.
//!
//! The pass runs after fusion, which decides which kernels read what.

use crate::codegen::elementwise::{Elementwise, Operand};
use crate::codegen::reduce::ReduceKind;
use crate::codegen::window::{Pass as WindowPass, WindowKind};
use crate::graph::PoolKind;
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
            let places: Vec<Place> = step
                .accesses()
                .into_iter()
                .enumerate()
                .filter(|(_, (arg, _))| *arg == b)
                .filter_map(|(i, (_, access))| place(&step.kernel, i, access))
                .collect();
            for place in places {
                store(&mut step.kernel, place);
            }
        }
    }
    plan.verify()?;
    Ok(chosen.len())
}

/// What a kernel does with one of its buffers, where that buffer may be
/// stored in bf16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// An element-wise kernel's input (a tensor), widened as it is read.
    ElementwiseInput(usize),
    /// An element-wise kernel's output, rounded as it is stored.
    ElementwiseOutput(usize),
    /// An extra input (a tensor) of a contraction's or window kernel's
    /// epilogue, widened as it is read.
    EpilogueInput(usize),
    /// A bf16 product's input (the forward pass, the kernel gradient),
    /// copied into its packed operand.
    ProductInput,
    /// A bf16 forward product's output, rounded as it is stored.
    ProductOutput,
    /// 2-D pooling's `x`, widened as it is read.
    PoolInput,
    /// 2-D pooling's forward output (without an epilogue), rounded as it
    /// is stored.
    PoolOutput,
    /// The input of batchnorm's statistics (column moments), widened as
    /// it is read.
    MomentsInput,
}

impl Place {
    /// Whether the kernel writes the buffer there.
    fn writes(self) -> bool {
        matches!(
            self,
            Place::ElementwiseOutput(_) | Place::ProductOutput | Place::PoolOutput
        )
    }
}

/// Whether buffer `b` is an activation to store in bf16: a temporary
/// whose examples hold an even number of values, written by one kernel,
/// read by a bf16 product or written by one (an output already as exact
/// as bf16 operands make it), every access of it a [`Place`].
fn qualifies(plan: &KernelPlan, b: BufferId) -> bool {
    let buffer = &plan.buffers[b];
    let batch = plan.batch.max(1);
    if buffer.role != Role::Temporary
        || !buffer.len.is_multiple_of(batch)
        || !(buffer.len / batch).is_multiple_of(2)
    {
        return false;
    }
    let (mut writers, mut products) = (0, 0);
    for step in &plan.steps {
        for (i, (arg, access)) in step.accesses().into_iter().enumerate() {
            if arg != b {
                continue;
            }
            let Some(place) = place(&step.kernel, i, access) else {
                return false;
            };
            writers += usize::from(place.writes());
            products += usize::from(matches!(place, Place::ProductInput | Place::ProductOutput));
        }
    }
    writers == 1 && products > 0
}

/// Where buffer `i` of `kernel`, accessed as `access`, may be bf16: `None`
/// where the kernel needs f32.
fn place(kernel: &KernelDesc, i: usize, access: Access) -> Option<Place> {
    let (own, epilogue) = match kernel {
        KernelDesc::Elementwise { kernel, .. } => {
            let inputs = kernel.inputs.len();
            return match access {
                Access::Read => (kernel.inputs.get(i) == Some(&Operand::Tensor))
                    .then_some(Place::ElementwiseInput(i)),
                Access::Write => (i >= inputs).then_some(Place::ElementwiseOutput(i - inputs)),
            };
        }
        KernelDesc::Contraction {
            geometry,
            pass,
            algorithm,
            ..
        } => {
            let bf16 = matches!(algorithm, Algorithm::Bf16 { .. });
            let output = forward_output(geometry);
            let (own, epilogue) = match pass {
                ContractionPass::Forward { epilogue } => (output + 1, epilogue.as_ref()),
                ContractionPass::BackwardData { epilogue } => (3, epilogue.as_ref()),
                ContractionPass::BackwardFilter { .. } => (output + 1, None),
            };
            let forward = matches!(pass, ContractionPass::Forward { .. });
            let filter = matches!(pass, ContractionPass::BackwardFilter { .. });
            match (i, access) {
                (0, Access::Read) if bf16 && (forward || filter) => {
                    return Some(Place::ProductInput)
                }
                (i, Access::Write) if bf16 && forward && i == output => {
                    return Some(Place::ProductOutput)
                }
                _ => (own, epilogue),
            }
        }
        KernelDesc::Window { window, epilogue } => {
            let own = window.buffers().ok()?.len();
            if let WindowKind::Pool { kind, .. } = window.kind {
                let reads_x = window.pass == WindowPass::Forward
                    || (window.pass == WindowPass::BackwardData && kind == PoolKind::Max);
                match (i, access, window.pass) {
                    (0, Access::Read, _) if reads_x => return Some(Place::PoolInput),
                    (1, Access::Write, WindowPass::Forward) if epilogue.is_none() => {
                        return Some(Place::PoolOutput)
                    }
                    _ => {}
                }
            }
            (own, epilogue.as_ref())
        }
        KernelDesc::Reduce(r) => {
            let moments = r.kind == ReduceKind::ColumnMoments;
            return (moments && i == 0 && access == Access::Read).then_some(Place::MomentsInput);
        }
        _ => return None,
    };
    // An epilogue's extra inputs (its inputs 1..) follow the kernel's own
    // buffers.
    let epilogue = epilogue.filter(|_| i >= own)?;
    let extra = i - own + 1;
    (access == Access::Read && epilogue.inputs.get(extra) == Some(&Operand::Tensor))
        .then_some(Place::EpilogueInput(extra))
}

/// Makes `kernel` read or write its buffer at `place` in bf16.
fn store(kernel: &mut KernelDesc, place: Place) {
    match (kernel, place) {
        (KernelDesc::Elementwise { kernel, .. }, Place::ElementwiseInput(i)) => {
            kernel.inputs[i] = Operand::Bf16;
        }
        (KernelDesc::Elementwise { kernel, .. }, Place::ElementwiseOutput(k)) => {
            store_output(kernel, k);
        }
        (
            KernelDesc::Contraction {
                pass:
                    ContractionPass::Forward {
                        epilogue: Some(epilogue),
                    }
                    | ContractionPass::BackwardData {
                        epilogue: Some(epilogue),
                    },
                ..
            }
            | KernelDesc::Window {
                epilogue: Some(epilogue),
                ..
            },
            Place::EpilogueInput(k),
        ) => epilogue.inputs[k] = Operand::Bf16,
        (
            KernelDesc::Contraction {
                algorithm: Algorithm::Bf16 { input, .. },
                ..
            },
            Place::ProductInput,
        ) => *input = Storage::Bf16,
        (
            KernelDesc::Contraction {
                pass,
                algorithm: Algorithm::Bf16 { output, .. },
                ..
            },
            Place::ProductOutput,
        ) => {
            *output = Storage::Bf16;
            // The epilogue stores the product's output.
            if let ContractionPass::Forward {
                epilogue: Some(epilogue),
            } = pass
            {
                store_output(epilogue, 0);
            }
        }
        (KernelDesc::Window { window, .. }, Place::PoolInput) => window.storage.x = Storage::Bf16,
        (KernelDesc::Window { window, .. }, Place::PoolOutput) => window.storage.y = Storage::Bf16,
        (KernelDesc::Reduce(r), Place::MomentsInput) => {
            if r.loads.is_empty() {
                r.loads.push(Storage::F32);
            }
            r.loads[0] = Storage::Bf16;
        }
        // `place` gives each place only for the kernels matched above.
        (kernel, place) => unreachable!("{place:?} of {}", kernel.summary()),
    }
}

/// Makes element-wise kernel `kernel` store its output `k` in bf16.
fn store_output(kernel: &mut Elementwise, k: usize) {
    if kernel.stores.len() <= k {
        kernel.stores.resize(k + 1, Storage::F32);
    }
    kernel.stores[k] = Storage::Bf16;
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
