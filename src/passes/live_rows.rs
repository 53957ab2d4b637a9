//! Kernel gradients that hold only the rows of the taps that read some
//! input. A tap that only ever reads padding (ResNet's 3x3 kernels on the
//! last stage's 1x1 images keep only their centre) has a gradient of zeros
//! whatever the data: the kernel gradient then skips its rows
//! ([`ContractionPass::BackwardFilter`]'s `live_rows`), and the optimizer's
//! update reads them as zeros without memory
//! ([`Operand::LiveTaps`]). Both the arena's gradient and the memory the
//! step moves shrink (8 of 9 rows for those layers), and no result
//! changes: the update sees the same zeros.
//!
//! A gradient qualifies when it is a temporary that only element-wise
//! kernels read besides its writer, a convolution's kernel gradient on
//! the GEMM or in bf16, each reader indexing by element (tensors and
//! scalars), so that reading over the kernel's weight rows changes
//! nothing else. A gradient the caller sees, or that a reduction reads (a
//! gradient's norm), stays whole.

use crate::codegen::contraction::live_taps;
use crate::codegen::elementwise::{LiveTaps, Operand};
use crate::plan::{
    Algorithm, BufferId, ContractionPass, Geometry, KernelDesc, KernelPlan, PlanError, Role,
};

/// Rewrites every kernel gradient of `plan` that qualifies; returns how
/// many, after checking that the plan still holds every invariant.
pub fn run(plan: &mut KernelPlan) -> Result<usize, PlanError> {
    let mut rewritten = 0;
    for s in 0..plan.steps.len() {
        let Some((taps, channels)) = candidate(&plan.steps[s].kernel) else {
            continue;
        };
        let Some(&dw) = plan.steps[s].args.get(2) else {
            continue;
        };
        let Some(readers) = readers(plan, s, dw, &taps, channels) else {
            continue;
        };
        if let KernelDesc::Contraction {
            pass: ContractionPass::BackwardFilter { live_rows },
            ..
        } = &mut plan.steps[s].kernel
        {
            *live_rows = true;
        }
        plan.buffers[dw].len = taps.stored_rows() * channels;
        for t in readers {
            let step = &mut plan.steps[t];
            let KernelDesc::Elementwise {
                kernel,
                rows,
                channels: width,
            } = &mut step.kernel
            else {
                continue;
            };
            for (operand, &arg) in kernel.inputs.iter_mut().zip(&step.args) {
                if arg == dw {
                    *operand = Operand::LiveTaps(taps);
                }
            }
            (*rows, *width) = (taps.rows(), channels);
        }
        rewritten += 1;
    }
    plan.verify()?;
    Ok(rewritten)
}

/// The live taps and output channels of a convolution's whole kernel
/// gradient on the GEMM or in bf16 whose layer has taps that only read
/// padding.
fn candidate(kernel: &KernelDesc) -> Option<(LiveTaps, usize)> {
    let KernelDesc::Contraction {
        geometry: Geometry::Conv(shape),
        pass: ContractionPass::BackwardFilter { live_rows: false },
        algorithm: Algorithm::Gemm | Algorithm::Bf16 { .. },
        ..
    } = kernel
    else {
        return None;
    };
    let taps = live_taps(shape).ok()??;
    Some((taps, shape.out_channels))
}

/// The steps other than writer `writer` that use gradient `dw`, when it
/// qualifies: a temporary that each of them reads, and only reads, as an
/// element-wise kernel's tensor input over the kernel's length, with
/// every operand indexed by element.
fn readers(
    plan: &KernelPlan,
    writer: usize,
    dw: BufferId,
    taps: &LiveTaps,
    channels: usize,
) -> Option<Vec<usize>> {
    if plan.buffers.get(dw)?.role != Role::Temporary {
        return None;
    }
    let mut readers = Vec::new();
    for (t, step) in plan.steps.iter().enumerate() {
        if t == writer || !step.args.contains(&dw) {
            continue;
        }
        let KernelDesc::Elementwise {
            kernel,
            rows,
            channels: width,
        } = &step.kernel
        else {
            return None;
        };
        let by_element = kernel
            .inputs
            .iter()
            .all(|op| matches!(op, Operand::Tensor | Operand::Bf16 | Operand::Scalars));
        let inputs = kernel.inputs.len();
        let only_read = step
            .args
            .iter()
            .enumerate()
            .all(|(i, &arg)| arg != dw || (i < inputs && kernel.inputs[i] == Operand::Tensor));
        if !by_element || !only_read || rows * width != taps.rows() * channels {
            return None;
        }
        readers.push(t);
    }
    Some(readers)
}
