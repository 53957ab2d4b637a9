//! Puts a plan's contractions in the precision the user chose
//! ([`Precision`]). In bf16, each convolution and dense layer on the GEMM
//! multiplies bf16 operands and sums in f32 ([`Algorithm::Bf16`]): its
//! forward pass and its input gradient read its weights packed to bf16 by
//! a step of their own before them ([`KernelDesc::PackWeights`], transposed
//! for the input gradient): once a training step, as the weights change;
//! once a program at inference, where the weights are frozen
//! ([`KernelPlan::prepared`]). The kernel gradient packs its operands as
//! it goes. The master weights, the optimizer's state, batch statistics,
//! the loss and every activation stay f32.
//!
//! A forward pass whose products sum fewer than [`MIN_FORWARD_DEPTH`]
//! terms (a first layer on one or three channels) stays f32: its operands
//! would be mostly padding to AMX's tiles, and in f32 it runs as a direct
//! product without im2col (the seed CNN's conv1 at batch 256: 14.6 ms in
//! bf16, 8.4 ms in f32, `docs/backend.md`).
//!
//! The pass runs before the algorithm pass, so that a layer in bf16 is not
//! also given Winograd's transforms (which would round its operands
//! again). Grouped convolutions and the window kernels (depthwise
//! convolutions, pooling) stay f32.

use crate::plan::{
    Access, Algorithm, ContractionPass, Geometry, KernelDesc, KernelPlan, Len, PlanError,
    Precision, Role, Step,
};

/// The fewest terms a forward product in bf16 sums.
pub const MIN_FORWARD_DEPTH: usize = 64;

/// Gives every contraction on the GEMM the bf16 algorithm when `precision`
/// is bf16, each forward pass and input gradient with the step that packs
/// its weights; returns how many, after checking that the plan still holds
/// every invariant.
pub fn run(plan: &mut KernelPlan, precision: Precision) -> Result<usize, PlanError> {
    if precision == Precision::F32 {
        return Ok(0);
    }
    let mut chosen = 0;
    let mut steps = Vec::with_capacity(plan.steps.len());
    for mut step in std::mem::take(&mut plan.steps) {
        let KernelDesc::Contraction {
            name,
            geometry,
            pass,
            algorithm: algorithm @ Algorithm::Gemm,
        } = &mut step.kernel
        else {
            steps.push(step);
            continue;
        };
        let transposed = match pass {
            ContractionPass::Forward { .. } if forward_depth(geometry) < MIN_FORWARD_DEPTH => {
                steps.push(step);
                continue;
            }
            ContractionPass::Forward { .. } => false,
            ContractionPass::BackwardData { epilogue: None } => true,
            ContractionPass::BackwardFilter { .. } => {
                // It packs its operands as it goes: no step of its own.
                *algorithm = Algorithm::BF16;
                steps.push(step);
                chosen += 1;
                continue;
            }
            ContractionPass::BackwardData { epilogue: Some(_) } => {
                steps.push(step);
                continue;
            }
        };
        *algorithm = Algorithm::BF16;
        let packed_name = format!("{name}.bf16{}", if transposed { "t" } else { "" });
        let pack = KernelDesc::PackWeights {
            name: packed_name.clone(),
            geometry: *geometry,
            transposed,
        };
        let len = packed_len(plan, &pack, steps.len())?;
        let packed = plan.buffer(packed_name, len, Role::Temporary);
        // The forward pass and the input gradient take the layer's weights
        // as their second argument; they read them packed instead.
        let weights = std::mem::replace(&mut step.args[1], packed);
        steps.push(Step {
            kernel: pack,
            args: vec![weights, packed],
            nodes: step.nodes.clone(),
        });
        steps.push(step);
        chosen += 1;
    }
    plan.steps = steps;
    plan.verify()?;
    Ok(chosen)
}

/// The terms each output of a layer's forward product sums: its taps
/// times its input channels, or a dense layer's inputs.
fn forward_depth(geometry: &Geometry) -> usize {
    match geometry {
        Geometry::Conv(s) => s.kernel[0] * s.kernel[1] * s.in_channels,
        Geometry::Dense(s) => s.inputs,
    }
}

/// The f32 slots the packing step `pack` writes, as its signature says;
/// `index` is where it goes in the plan, for the error.
fn packed_len(plan: &KernelPlan, pack: &KernelDesc, index: usize) -> Result<usize, PlanError> {
    let fail = |message: String| PlanError::Kernel {
        plan: plan.name.clone(),
        step: index,
        kernel: pack.name().to_string(),
        message,
    };
    let signature = pack.signature().map_err(fail)?;
    match signature.get(1) {
        Some(param) if param.access == Access::Write => match param.len {
            Len::Exactly(len) | Len::AtLeast(len) => Ok(len),
        },
        _ => Err(fail("writes no packed weights".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::contraction::DenseShape;

    #[test]
    fn a_dense_layer_reads_its_weights_packed_by_a_step_before_it() {
        let mut plan = KernelPlan {
            name: "m".into(),
            batch: 4,
            ..KernelPlan::default()
        };
        let shape = DenseShape {
            rows: 4,
            inputs: 70,
            units: 10,
            bias: true,
        };
        let x = plan.buffer("x", 4 * 70, Role::Input);
        let w = plan.buffer("d.kernel", 700, Role::Weight("d.kernel".into()));
        let b = plan.buffer("d.bias", 10, Role::Weight("d.bias".into()));
        let y = plan.buffer("y", 40, Role::Output("y".into()));
        plan.steps.push(Step {
            kernel: KernelDesc::Contraction {
                name: "d".into(),
                geometry: Geometry::Dense(shape),
                pass: ContractionPass::Forward { epilogue: None },
                algorithm: Algorithm::Gemm,
            },
            args: vec![x, w, b, y],
            nodes: vec!["d".into()],
        });
        let unchanged = plan.clone();
        assert_eq!(run(&mut plan.clone(), Precision::F32), Ok(0));
        let mut shallow = plan.clone();
        if let KernelDesc::Contraction {
            geometry: Geometry::Dense(s),
            ..
        } = &mut shallow.steps[0].kernel
        {
            s.inputs = MIN_FORWARD_DEPTH - 1;
        }
        shallow.buffers[x].len = 4 * (MIN_FORWARD_DEPTH - 1);
        shallow.buffers[w].len = 10 * (MIN_FORWARD_DEPTH - 1);
        assert_eq!(
            run(&mut shallow, Precision::Bf16),
            Ok(0),
            "a shallow product"
        );
        assert_eq!(run(&mut plan, Precision::Bf16), Ok(1));
        assert_ne!(plan, unchanged);
        let [pack, forward] = &plan.steps[..] else {
            panic!("two steps: {:?}", plan.steps);
        };
        let packed = pack.args[1];
        // 70 inputs are 35 pairs, padded to 48 lines of a 64-column panel.
        assert_eq!(plan.buffers[packed].len, 48 * 64);
        assert_eq!(plan.buffers[packed].role, Role::Temporary);
        assert_eq!(pack.args, vec![w, packed]);
        assert_eq!(forward.args, vec![x, packed, b, y]);
        assert!(matches!(
            forward.kernel,
            KernelDesc::Contraction {
                algorithm: Algorithm::BF16,
                ..
            }
        ));
    }
}
