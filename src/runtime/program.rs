//! From a kernel plan to a runnable program: temporaries are placed in the
//! arena by liveness (`memory::plan`), every kernel is compiled, and the
//! other buffers become external slots the caller lends for each run.

use std::collections::HashMap;

use thiserror::Error;

use crate::codegen::contraction::{ConvBackwardData, ConvBackwardFilter, ConvForward};
use crate::codegen::elementwise::Operand;
use crate::codegen::{CodegenError, Jit};
use crate::memory;
use crate::plan::{BufferId, ContractionPass, Geometry, KernelDesc, KernelPlan, Role};

use super::contraction::{BackwardDataStep, BackwardFilterStep, ForwardStep};
use super::executor::{Kernel, Program, RowKernel, Slot, Step};
use super::weights::TensorStore;

/// Element counts below which a kernel runs on one thread: below this,
/// waking a second thread costs more than it saves.
const SERIAL_ELEMENTS: usize = 16 * 1024;

/// Why a plan could not be compiled.
#[derive(Debug, Error)]
pub enum ProgramError {
    /// A kernel failed to compile.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
}

/// A compiled program and the meaning of its external slots.
pub struct Compiled {
    /// The program.
    pub program: Program,
    /// For each external slot, the plan buffer it holds.
    pub externals: Vec<BufferId>,
    /// The arena's peak size in bytes.
    pub arena_bytes: u64,
}

/// Compiles `plan` with `jit`: the caller keeps `jit` alive as long as the
/// program, whose code it owns.
pub fn compile(plan: &KernelPlan, jit: &mut Jit) -> Result<Compiled, ProgramError> {
    let (slots, externals, arena_bytes) = place(plan);
    let mut steps = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let (kernel, elements): (Box<dyn Kernel>, usize) = match &step.kernel {
            KernelDesc::Elementwise {
                kernel,
                rows,
                channels,
            } => {
                let compiled = jit.compile_elementwise(kernel)?;
                (
                    Box::new(RowKernel {
                        kernel: compiled,
                        rows: *rows,
                        channels: *channels,
                    }),
                    rows * channels,
                )
            }
            KernelDesc::Reduce(r) => (Box::new(jit.compile_reduce(r)?), r.rows * r.n),
            KernelDesc::Window(w) => {
                let elements = w.input.iter().product();
                (Box::new(jit.compile_window(w)?), elements)
            }
            KernelDesc::Contraction {
                name,
                geometry,
                pass,
            } => contraction(jit, name, geometry, pass)?,
            KernelDesc::Copy(c) => (Box::new(c.clone()), c.rows * c.len),
            KernelDesc::Mask(m) => (Box::new(m.clone()), m.len),
        };
        // Small kernels run on one thread.
        let serial_below = if elements < SERIAL_ELEMENTS {
            usize::MAX
        } else {
            0
        };
        steps.push(Step {
            kernel,
            args: step.args.iter().map(|&b| slots[b]).collect(),
            serial_below,
        });
    }
    let arena_len = (arena_bytes / 4) as usize;
    Ok(Compiled {
        program: Program { steps, arena_len },
        externals,
        arena_bytes,
    })
}

/// The kernel of a contraction step, and its size in multiply-adds (for
/// the threading threshold).
fn contraction(
    jit: &mut Jit,
    name: &str,
    geometry: &Geometry,
    pass: &ContractionPass,
) -> Result<(Box<dyn Kernel>, usize), ProgramError> {
    let (bias, work) = match geometry {
        Geometry::Conv(s) => (
            s.bias,
            s.batch * s.height * s.width * s.in_channels * s.out_channels,
        ),
        Geometry::Dense(s) => (s.bias, s.rows * s.inputs * s.units),
    };
    let kernel: Box<dyn Kernel> = match pass {
        ContractionPass::Forward { epilogue } => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvForward::new(name, s)?,
                Geometry::Dense(s) => ConvForward::dense(name, s)?,
            };
            let epilogue = match epilogue {
                Some(e) => Some((
                    jit.compile_elementwise(e)?,
                    e.inputs.len() - 1,
                    e.outputs.len() - 1,
                )),
                None => None,
            };
            Box::new(ForwardStep {
                kernel,
                name: name.to_string(),
                bias,
                epilogue,
            })
        }
        ContractionPass::BackwardData => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardData::new(name, s)?,
                Geometry::Dense(s) => ConvBackwardData::dense(name, s)?,
            };
            Box::new(BackwardDataStep {
                kernel,
                name: name.to_string(),
            })
        }
        ContractionPass::BackwardFilter => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardFilter::new(name, s)?,
                Geometry::Dense(s) => ConvBackwardFilter::dense(name, s)?,
            };
            Box::new(BackwardFilterStep {
                kernel,
                name: name.to_string(),
                bias,
            })
        }
    };
    Ok((kernel, work))
}

/// The arena bytes `plan` needs (temporaries placed by liveness).
pub fn arena_bytes(plan: &KernelPlan) -> u64 {
    place(plan).2
}

/// The Cranelift IR of every generated kernel of `plan`, in step order:
/// `(kernel name, IR)`. Contractions show their epilogue's IR (the GEMM is
/// not generated).
pub fn clif(plan: &KernelPlan) -> Result<Vec<(String, String)>, ProgramError> {
    let mut jit = Jit::new()?;
    let compiled = compile(plan, &mut jit)?;
    Ok(compiled
        .program
        .steps
        .iter()
        .filter_map(|s| {
            s.kernel
                .clif()
                .map(|c| (s.kernel.name().to_string(), c.to_string()))
        })
        .collect())
}

/// Where each buffer lives: temporaries in the arena by liveness (an
/// element-wise kernel's output over an input that dies there, see
/// [`in_place`]), the rest in external slots in buffer order.
fn place(plan: &KernelPlan) -> (Vec<Slot>, Vec<BufferId>, u64) {
    let (first, mut last) = lifetimes(plan);
    let host = in_place(plan, &first, &mut last);
    let temporaries: Vec<BufferId> = (0..plan.buffers.len())
        .filter(|&b| {
            plan.buffers[b].role == Role::Temporary && first[b] != usize::MAX && host[b] == b
        })
        .collect();
    let lifetimes: Vec<memory::Buffer> = temporaries
        .iter()
        .map(|&b| memory::Buffer {
            bytes: plan.buffers[b].len as u64 * 4,
            first: first[b],
            last: last[b],
        })
        .collect();
    let arena = memory::plan(&lifetimes);
    let mut slots = vec![Slot::Arena { offset: 0, len: 0 }; plan.buffers.len()];
    for (&b, &offset) in temporaries.iter().zip(&arena.offsets) {
        slots[b] = Slot::Arena {
            offset: (offset / 4) as usize,
            len: plan.buffers[b].len,
        };
    }
    for b in 0..plan.buffers.len() {
        if host[b] != b {
            slots[b] = slots[host[b]];
        }
    }
    let mut externals = Vec::new();
    for (b, buffer) in plan.buffers.iter().enumerate() {
        if buffer.role != Role::Temporary {
            slots[b] = Slot::External {
                index: externals.len(),
                len: buffer.len,
            };
            externals.push(b);
        }
    }
    (slots, externals, arena.peak)
}

/// For each buffer, the first and the last step that uses it
/// (`usize::MAX` and 0 for a buffer no step uses).
fn lifetimes(plan: &KernelPlan) -> (Vec<usize>, Vec<usize>) {
    let mut first = vec![usize::MAX; plan.buffers.len()];
    let mut last = vec![0; plan.buffers.len()];
    for (i, step) in plan.steps.iter().enumerate() {
        for &b in &step.args {
            first[b] = first[b].min(i);
            last[b] = last[b].max(i);
        }
    }
    (first, last)
}

/// For each buffer, the buffer whose memory it uses: itself, or, for the
/// output of an element-wise kernel, a temporary tensor input of the same
/// length whose last reader is that kernel. Every element-wise kernel loads
/// all its inputs at an index before it stores its outputs there, so its
/// output may overwrite such an input element by element; a ReLU or a
/// gradient sum then needs no second buffer. `last` is extended so that
/// each host lives as long as the buffers it holds.
fn in_place(plan: &KernelPlan, first: &[usize], last: &mut [usize]) -> Vec<BufferId> {
    let mut host: Vec<BufferId> = (0..plan.buffers.len()).collect();
    let temporary = |b: BufferId| plan.buffers[b].role == Role::Temporary;
    for (i, step) in plan.steps.iter().enumerate() {
        let KernelDesc::Elementwise { kernel, .. } = &step.kernel else {
            continue;
        };
        let (inputs, outputs) = step.args.split_at(kernel.inputs.len().min(step.args.len()));
        let mut taken: Vec<BufferId> = Vec::new();
        for &output in outputs {
            if !temporary(output) || first[output] != i || host[output] != output {
                continue;
            }
            let tensor_inputs = inputs
                .iter()
                .zip(&kernel.inputs)
                .filter(|(_, operand)| **operand == Operand::Tensor)
                .map(|(&b, _)| b);
            let dying = tensor_inputs.map(|b| host[b]).find(|&h| {
                temporary(h)
                    && h != output
                    && first[h] < i
                    && last[h] == i
                    && plan.buffers[h].len == plan.buffers[output].len
                    && !taken.contains(&h)
                    && !outputs.contains(&h)
            });
            if let Some(h) = dying {
                taken.push(h);
                host[output] = h;
                last[h] = last[output];
            }
        }
    }
    host
}

/// The caller's buffers for one run of a program, by role.
#[derive(Default)]
pub struct Lent<'a> {
    /// The input batch.
    pub input: Option<&'a mut [f32]>,
    /// The labels (training).
    pub labels: Option<&'a mut [f32]>,
    /// The weights, by full name.
    pub weights: Option<&'a mut TensorStore>,
    /// The optimizer's state, by name (training).
    pub states: Option<&'a mut TensorStore>,
    /// Per-step scalars, by name (`coefficients`, `step`).
    pub scalars: Vec<(&'static str, &'a mut [f32])>,
    /// One buffer per output and loss, in the order of `compiled.externals`.
    pub results: Vec<&'a mut [f32]>,
}

/// The external slots of `compiled`, in order, filled from `lent`; the
/// error names a weight or state tensor that `lent` lacks.
pub fn bind<'a>(
    plan: &KernelPlan,
    compiled: &Compiled,
    lent: Lent<'a>,
) -> Result<Vec<&'a mut [f32]>, String> {
    let by_name = |store: Option<&'a mut TensorStore>| -> HashMap<String, &'a mut [f32]> {
        store
            .into_iter()
            .flat_map(|s| s.iter_mut())
            .map(|(n, t)| (n.to_string(), t.data.as_mut_slice()))
            .collect()
    };
    let (mut weights, mut states) = (by_name(lent.weights), by_name(lent.states));
    let (mut input, mut labels) = (lent.input, lent.labels);
    let mut scalars: HashMap<&str, &'a mut [f32]> = lent.scalars.into_iter().collect();
    let mut results = lent.results.into_iter();
    let mut external = Vec::with_capacity(compiled.externals.len());
    for &b in &compiled.externals {
        let slot: &'a mut [f32] = match &plan.buffers[b].role {
            Role::Input => input.take().unwrap_or_default(),
            Role::Labels => labels.take().unwrap_or_default(),
            Role::Output(_) | Role::Loss(_) => results.next().unwrap_or_default(),
            Role::Scalars(name) => scalars.remove(name.as_str()).unwrap_or_default(),
            Role::Weight(name) => weights.remove(name).ok_or_else(|| name.clone())?,
            Role::State(name) => states.remove(name).ok_or_else(|| name.clone())?,
            Role::Temporary => Default::default(),
        };
        external.push(slot);
    }
    Ok(external)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "
        model m : [8, 8, 2] {
            let a = conv(4, 3, padding: same) -> batchnorm -> relu
            let b = a -> conv(4, 3, padding: same) -> batchnorm
            a + b
            relu
            dropout(0.2)
            flatten
            dense(3, activation: softmax)
        }";

    /// Checks that temporaries live at the same step share memory only as
    /// [`in_place`] allows: an element-wise step's output over a tensor
    /// input whose last reader it is, at the same offset. Returns how many
    /// such pairs there are.
    fn shared_in_place(plan: &KernelPlan) -> usize {
        let (slots, _, _) = place(plan);
        let (first, last) = lifetimes(plan);
        let range = |b: BufferId| match slots[b] {
            Slot::Arena { offset, len } => Some(offset..offset + len),
            Slot::External { .. } => None,
        };
        let mut pairs = 0;
        for a in 0..plan.buffers.len() {
            for b in 0..plan.buffers.len() {
                let (Some(ra), Some(rb)) = (range(a), range(b)) else {
                    continue;
                };
                let live_together = first[a] <= last[b] && first[b] <= last[a];
                let overlap = ra.start < rb.end && rb.start < ra.end;
                if a == b || first[a] == usize::MAX || !live_together || !overlap {
                    continue;
                }
                // `a` dies where `b` is born, in one element-wise step.
                if last[a] != first[b] {
                    continue;
                }
                let step = &plan.steps[first[b]];
                let KernelDesc::Elementwise { kernel, .. } = &step.kernel else {
                    panic!("{a} and {b} share memory outside an element-wise step");
                };
                let (inputs, outputs) = step.args.split_at(kernel.inputs.len());
                assert_eq!(ra, rb, "in-place buffers must coincide exactly");
                assert!(inputs.contains(&a) && outputs.contains(&b));
                pairs += 1;
            }
        }
        // Every other overlap in time and memory is a defect.
        for a in 0..plan.buffers.len() {
            for b in a + 1..plan.buffers.len() {
                let (Some(ra), Some(rb)) = (range(a), range(b)) else {
                    continue;
                };
                if first[a] == usize::MAX || first[b] == usize::MAX {
                    continue;
                }
                let live_together = first[a] <= last[b] && first[b] <= last[a];
                let overlap = ra.start < rb.end && rb.start < ra.end;
                let handoff = last[a] == first[b] || last[b] == first[a];
                assert!(
                    !(live_together && overlap) || handoff,
                    "buffers {a} and {b} overlap while both are live"
                );
            }
        }
        pairs
    }

    #[test]
    fn element_wise_outputs_overwrite_only_inputs_that_die_with_them() {
        let model = crate::compile_source("m.cnn", MODEL, None, None).expect("compiles");
        let inference = crate::plan_inference(&model, 4).expect("plans");
        shared_in_place(&inference);
        let loss = crate::autodiff::LossSpec {
            smoothing: 0.0,
            weights: Vec::new(),
        };
        let training = crate::autodiff::differentiate(&model, &loss).expect("differentiates");
        let optimizer = crate::train::TrainConfig::default().optimizer;
        let plan = crate::plan_training(&training, 4, &optimizer).expect("plans");
        assert!(
            shared_in_place(&plan) > 0,
            "the backward pass has element-wise steps that can run in place"
        );
    }
}
