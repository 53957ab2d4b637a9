//! Memory planning: where every buffer of a kernel plan lives.
//!
//! Temporaries (activations, gradients, scratch) are placed in one arena by
//! liveness ([`arena`]: greedy best-fit over lifetimes), and an element-wise
//! kernel's output may take over the memory of an input that dies with it
//! ([`in_place`]). Every other buffer (input, labels, weights, optimizer
//! state, outputs, per-step scalars) becomes an external slot that the caller
//! lends for each run, numbered in buffer order.

pub mod arena;

use std::fmt;

use thiserror::Error;

use crate::codegen::elementwise::Operand;
use crate::codegen::program::Slot;
use crate::limits::{bytes, CapError, MemoryCap};
use crate::plan::{BufferId, KernelDesc, KernelPlan, Role};

pub use arena::ALIGN;

/// Where every buffer of one plan lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The slot of each buffer, indexed by [`BufferId`].
    pub slots: Vec<Slot>,
    /// For each external slot, in order, the buffer it holds.
    pub externals: Vec<BufferId>,
    /// The arena's size in bytes.
    pub arena_bytes: u64,
}

/// Why a plan's buffers could not be placed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MemoryError {
    /// The temporaries together are larger than any allocation can be.
    #[error(
        "plan `{plan}` needs more memory than can be addressed: its temporaries take more than \
         {limit} bytes (the largest, `{largest}`, takes {largest_bytes})"
    )]
    TooLarge {
        /// The plan's name.
        plan: String,
        /// The most bytes one allocation may have.
        limit: u64,
        /// The largest temporary's name.
        largest: String,
        /// Its size in bytes, saturated at `u64::MAX`.
        largest_bytes: u64,
    },
    /// The program would need more memory than the cap allows: refused
    /// before its arena, its optimizer state or its batch is allocated.
    #[error(
        "model `{plan}` at batch {batch} needs {total}, more than {cap}: {need} \
         (help: lower the batch size; {help})",
        batch = need.batch,
        total = bytes(need.total()),
        help = cap.help()
    )]
    OverCap {
        /// The plan's name (the model's).
        plan: String,
        /// What it needs, by kind.
        need: Need,
        /// The cap it exceeds.
        cap: MemoryCap,
    },
    /// The cap could not be read.
    #[error(transparent)]
    Cap(#[from] CapError),
}

/// The memory a program holds while it runs, by kind, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The batch size it was planned for.
    pub batch: usize,
    /// The arena: activations, gradients and scratch, placed by liveness.
    pub arena: u64,
    /// The weights (batchnorm's moving statistics included).
    pub weights: u64,
    /// The optimizer's state (zero outside training).
    pub state: u64,
    /// The buffers lent for each run: the input batch, labels, outputs,
    /// losses, upstream gradients and the gradients returned.
    pub lent: u64,
}

impl Need {
    /// What running `plan`, placed by `layout`, holds in memory.
    pub fn of(plan: &KernelPlan, layout: &Layout) -> Need {
        let mut need = Need {
            batch: plan.batch,
            arena: layout.arena_bytes,
            weights: 0,
            state: 0,
            lent: 0,
        };
        for buffer in &plan.buffers {
            let size = buffer.bytes();
            let kind = match buffer.role {
                Role::Temporary => continue,
                Role::Weight(_) => &mut need.weights,
                Role::State(_) => &mut need.state,
                Role::Input
                | Role::Labels
                | Role::Output(_)
                | Role::Loss(_)
                | Role::Scalars(_)
                | Role::Upstream(_)
                | Role::InputGradient
                | Role::Gradient(_) => &mut need.lent,
            };
            *kind = kind.saturating_add(size);
        }
        need
    }

    /// All of it, saturated at `u64::MAX`.
    pub fn total(&self) -> u64 {
        [self.arena, self.weights, self.state, self.lent]
            .iter()
            .fold(0u64, |sum, &b| sum.saturating_add(b))
    }
}

impl fmt::Display for Need {
    /// `arena 1.2 GiB (activations, gradients and scratch), weights …`,
    /// leaving out the kinds the program does not have.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arena {} (activations, gradients and scratch), weights {}",
            bytes(self.arena),
            bytes(self.weights)
        )?;
        if self.state > 0 {
            write!(f, ", optimizer state {}", bytes(self.state))?;
        }
        write!(
            f,
            ", batch buffers {} (input, labels, outputs)",
            bytes(self.lent)
        )
    }
}

/// Refuses a program that needs more memory than `cap` ([`Need::of`]
/// `plan` and `layout`), before anything of it is allocated: the sizes of
/// every kind and the cap are in the error.
pub fn check_cap(plan: &KernelPlan, layout: &Layout, cap: &MemoryCap) -> Result<(), MemoryError> {
    let need = Need::of(plan, layout);
    if cap.allows(need.total()) {
        return Ok(());
    }
    Err(MemoryError::OverCap {
        plan: plan.name.clone(),
        need,
        cap: *cap,
    })
}

/// Places every buffer of `plan`: temporaries in the arena by liveness (an
/// element-wise kernel's output over an input that dies there, see
/// [`in_place`]), the rest in external slots in buffer order.
pub fn plan(plan: &KernelPlan) -> Result<Layout, MemoryError> {
    let (mut first, mut last) = lifetimes(plan);
    // What a prepared step writes is computed once and read by every run:
    // it keeps its place for the whole program, shared with nothing, and
    // never hosts another buffer in place.
    for (step, prepared) in plan.steps.iter().zip(plan.prepared()) {
        if prepared {
            for &b in &step.args {
                if plan.buffers[b].role == Role::Temporary {
                    (first[b], last[b]) = (0, plan.steps.len());
                }
            }
        }
    }
    let host = in_place(plan, &first, &mut last);
    let temporaries: Vec<BufferId> = (0..plan.buffers.len())
        .filter(|&b| {
            plan.buffers[b].role == Role::Temporary && first[b] != usize::MAX && host[b] == b
        })
        .collect();
    check_size(plan, &temporaries)?;
    let lifetimes: Vec<arena::Buffer> = temporaries
        .iter()
        .map(|&b| arena::Buffer {
            bytes: plan.buffers[b].bytes(),
            first: first[b],
            last: last[b],
        })
        .collect();
    let arena = arena::place(&lifetimes);
    let mut slots = vec![Slot::Arena { offset: 0, len: 0 }; plan.buffers.len()];
    for (&b, &offset) in temporaries.iter().zip(&arena.offsets) {
        slots[b] = Slot::Arena {
            offset: (offset / 4) as usize,
            len: plan.buffers[b].slots(),
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
                len: buffer.slots(),
            };
            externals.push(b);
        }
    }
    Ok(Layout {
        slots,
        externals,
        arena_bytes: arena.peak,
    })
}

/// Refuses temporaries whose aligned sizes add up to more than one
/// allocation may hold (`isize::MAX` bytes): the arena's peak is never above
/// that sum, so no offset computed by [`arena::place`] can overflow either.
fn check_size(plan: &KernelPlan, temporaries: &[BufferId]) -> Result<(), MemoryError> {
    let limit = isize::MAX as u64;
    let bytes = |b: BufferId| (plan.buffers[b].slots() as u64).checked_mul(4);
    let total = temporaries.iter().try_fold(0u64, |sum, &b| {
        bytes(b)
            .and_then(|n| n.checked_add(ALIGN))
            .and_then(|n| sum.checked_add(n))
    });
    if total.is_some_and(|t| t <= limit) {
        return Ok(());
    }
    let largest = temporaries
        .iter()
        .copied()
        .max_by_key(|&b| plan.buffers[b].slots())
        .unwrap_or_default();
    Err(MemoryError::TooLarge {
        plan: plan.name.clone(),
        limit,
        largest: plan
            .buffers
            .get(largest)
            .map(|b| b.name.clone())
            .unwrap_or_default(),
        largest_bytes: bytes(largest).unwrap_or(u64::MAX),
    })
}

/// For each buffer, the first and the last step that uses it
/// (`usize::MAX` and 0 for a buffer no step uses).
pub fn lifetimes(plan: &KernelPlan) -> (Vec<usize>, Vec<usize>) {
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
                .filter(|(_, operand)| matches!(operand, Operand::Tensor | Operand::Bf16))
                .map(|(&b, _)| b);
            let dying = tensor_inputs.map(|b| host[b]).find(|&h| {
                temporary(h)
                    && h != output
                    && first[h] < i
                    && last[h] == i
                    && plan.buffers[h].len == plan.buffers[output].len
                    && plan.buffers[h].storage == plan.buffers[output].storage
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
        let layout = super::plan(plan).expect("places");
        let (first, last) = lifetimes(plan);
        let range = |b: BufferId| match layout.slots[b] {
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
        let optimizer = crate::config::TrainConfig::default().optimizer;
        let plan = crate::plan_training(&model, &loss, &optimizer, 4).expect("plans");
        assert!(
            shared_in_place(&plan) > 0,
            "the backward pass has element-wise steps that can run in place"
        );
    }

    /// A bf16 temporary takes half the slots, and shares memory in place
    /// only with a buffer stored as it is: `x -> t (f32) -> u (bf16) -> v
    /// (bf16) -> y`, each by an element-wise copy.
    #[test]
    fn bf16_temporaries_take_half_and_share_in_place_only_with_bf16() {
        use crate::codegen::elementwise::{Elementwise, Expr};
        use crate::plan::Storage;
        let mut plan = KernelPlan {
            name: "bf16".into(),
            batch: 2,
            ..KernelPlan::default()
        };
        let x = plan.buffer("x", 10, Role::Input);
        let t = plan.buffer("t", 10, Role::Temporary);
        let u = plan.buffer("u", 10, Role::Temporary);
        let v = plan.buffer("v", 10, Role::Temporary);
        let y = plan.buffer("y", 10, Role::Output("y".into()));
        plan.buffers[u].storage = Storage::Bf16;
        plan.buffers[v].storage = Storage::Bf16;
        let copy = |input: Operand, store: Storage| KernelDesc::Elementwise {
            kernel: Elementwise {
                name: "copy".into(),
                inputs: vec![input],
                exprs: vec![Expr::Load(0)],
                outputs: vec![0],
                stores: vec![store],
            },
            rows: 2,
            channels: 5,
        };
        for (kernel, args) in [
            (copy(Operand::Tensor, Storage::F32), [x, t]),
            (copy(Operand::Tensor, Storage::Bf16), [t, u]),
            (copy(Operand::Bf16, Storage::Bf16), [u, v]),
            (copy(Operand::Bf16, Storage::F32), [v, y]),
        ] {
            plan.steps.push(crate::plan::Step {
                kernel,
                args: args.to_vec(),
                nodes: vec![],
            });
        }
        plan.verify().expect("a consistent plan");
        let layout = super::plan(&plan).expect("places");
        let slot = |b: BufferId| match layout.slots[b] {
            Slot::Arena { offset, len } => (offset, len),
            Slot::External { .. } => unreachable!("a temporary is in the arena"),
        };
        assert_eq!([slot(t).1, slot(u).1, slot(v).1], [10, 5, 5]);
        assert_eq!(slot(u), slot(v), "bf16 over bf16 in place");
        assert_ne!(slot(t).0, slot(u).0, "bf16 over f32 in place");
        assert_eq!(shared_in_place(&plan), 1);
    }

    #[test]
    fn temporaries_larger_than_an_allocation_are_refused_with_their_size() {
        let mut plan = KernelPlan {
            name: "huge".into(),
            ..KernelPlan::default()
        };
        let input = plan.buffer("x", 4, Role::Input);
        let big = plan.buffer("big", usize::MAX / 2, Role::Temporary);
        plan.steps.push(crate::plan::Step {
            kernel: KernelDesc::Copy(crate::codegen::native::CopyRows {
                name: "copy".into(),
                rows: 1,
                len: 4,
                from: (4, 0),
                to: (4, 0),
            }),
            args: vec![input, big],
            nodes: vec![],
        });
        let error = super::plan(&plan).unwrap_err();
        assert_eq!(
            error,
            MemoryError::TooLarge {
                plan: "huge".into(),
                limit: isize::MAX as u64,
                largest: "big".into(),
                largest_bytes: u64::MAX,
            }
        );
    }
}
