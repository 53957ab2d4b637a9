//! Data-parallel steps: one batch split across ranks (processes under MPI,
//! or threads in one process), with bitwise the same result as one process
//! running the whole batch, whatever the number of ranks.
//!
//! Every rank runs the same program, compiled for the whole batch, over an
//! arena of its own. The input holds only the rank's share of the batch
//! items ([`shares`]); the other items' rows are *partial*: they hold
//! whatever was there. A kernel whose rows of each item depend only on the
//! same item's rows ([`crate::plan::KernelDesc::per_example`]: convolutions,
//! element-wise kernels, pooling, the loss) runs only the work items of the
//! rank's share where it can say which they are
//! ([`crate::codegen::program::Kernel::example_items`]), all of them
//! otherwise; what it writes is then partial too. A kernel that sums over
//! the batch (a weight gradient, batchnorm's moments) first gathers every
//! partial buffer it takes from all ranks ([`Collective::all_gather`]), then
//! runs whole, on every rank, and computes exactly what one process would:
//! its inputs are the same bits, and each work item's result does not
//! depend on who runs it (the executor's contract, which already makes the
//! result independent of the number of threads). A kernel gradient with
//! enough arithmetic runs a share of its work items on each rank instead,
//! and the ranks merge what they wrote ([`Collective::merge`]). A buffer
//! that nothing touches between its last per-example kernel and the kernel
//! that needs it whole starts its gather early, while the rank computes on
//! ([`Collective::start_gather`]).
//!
//! So nothing is ever summed across ranks: no reduction order changes with
//! the number of ranks, and the weights, the optimizer's state and
//! batchnorm's statistics stay the same bits on every rank, step after
//! step. What crosses between ranks are the rows of the buffers that
//! batch-wide kernels read: activations and their gradients, not weight
//! gradients. `docs/scale-out.md` weighs that against the gradient
//! all-reduce of PyTorch's DistributedDataParallel.

use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use thiserror::Error;

use super::executor::{Executor, RuntimeError};
use crate::codegen::program::{Program, Slot};
use crate::plan::{Access, KernelPlan, Len, Role};

/// Why ranks could not exchange rows.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct CollectiveError(pub String);

/// The ranks of a data-parallel run, and how they exchange values.
///
/// Every rank calls the same methods in the same order (each call is a
/// collective operation).
pub trait Collective {
    /// This rank, from 0.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Every rank passes a buffer of the same length whose part
    /// `parts[rank]` it computed; afterwards every rank's buffer holds
    /// every rank's part. The parts are disjoint and in rank order.
    fn all_gather(&self, values: &mut [f32], parts: &[Range<usize>])
        -> Result<(), CollectiveError>;
    /// Starts [`Self::all_gather`] on the `len` values at `values` and
    /// returns at once, with a ticket for [`Self::finish_gather`]; every
    /// rank starts the same gathers in the same order. By default it
    /// gathers before it returns.
    ///
    /// # Safety
    /// The values stay valid, and this rank neither reads nor writes them,
    /// until the ticket is finished.
    unsafe fn start_gather(
        &self,
        values: *mut f32,
        len: usize,
        parts: &[Range<usize>],
    ) -> Result<u64, CollectiveError> {
        // SAFETY: the caller's contract: `len` valid values, ours alone.
        let values = unsafe { std::slice::from_raw_parts_mut(values, len) };
        self.all_gather(values, parts).map(|()| 0)
    }
    /// Waits for a gather [`Self::start_gather`] started.
    fn finish_gather(&self, ticket: u64) -> Result<(), CollectiveError> {
        let _ = ticket;
        Ok(())
    }
    /// Lets started gathers move while this rank computes (MPI moves a
    /// large message only inside its calls).
    fn progress(&self) -> Result<(), CollectiveError> {
        Ok(())
    }
    /// Every rank passes a buffer of the same length in which it wrote
    /// some values and left the others +0.0, no value written by two
    /// ranks; afterwards every rank's buffer holds each value from the rank
    /// that wrote it. Bitwise: the values' bits are OR-ed, which any order
    /// of combining gives alike.
    fn merge(&self, values: &mut [f32]) -> Result<(), CollectiveError>;
    /// Whether any rank passed `true` (stopping together on Ctrl-C).
    fn any(&self, flag: bool) -> Result<bool, CollectiveError>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), CollectiveError> {
        self.any(false).map(|_| ())
    }
}

/// Checks that `parts` are one range of `len` values for each of `ranks`
/// ranks, as [`Collective::all_gather`] takes them.
pub fn check_parts(
    len: usize,
    parts: &[Range<usize>],
    ranks: usize,
) -> Result<(), CollectiveError> {
    let fits = |p: &Range<usize>| p.start <= p.end && p.end <= len;
    if parts.len() != ranks || !parts.iter().all(fits) {
        return Err(CollectiveError(format!(
            "parts {parts:?} do not split {len} values among {ranks} ranks"
        )));
    }
    Ok(())
}

/// The batch items of each of `ranks` ranks: `batch` split into contiguous
/// shares in rank order, the later ones an item larger where it does not
/// divide (a rank may have none).
pub fn shares(batch: usize, ranks: usize) -> Vec<Range<usize>> {
    let ranks = ranks.max(1);
    (0..ranks)
        .map(|r| batch * r / ranks..batch * (r + 1) / ranks)
        .collect()
}

/// How a step of a data-parallel run runs on a rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// On the rank's batch items: a per-example kernel that reads a buffer
    /// with the batch in it.
    PerExample,
    /// Whole, on every rank, once its inputs are whole.
    Whole,
    /// On a share of its work items, on whole inputs, what each rank wrote
    /// then merged ([`crate::plan::KernelDesc::splits_across_ranks`]).
    Split,
}

/// Nominal FLOPs per value written below which a kernel that could be
/// split across ranks runs whole on each instead: merging a value costs
/// about as much memory traffic as this many FLOPs save (a kernel gradient
/// of few output rows, ResNet's last stages, is cheaper to compute again
/// than to send).
const SPLIT_FLOPS_PER_VALUE: u64 = 512;

/// A data-parallel run of a program: which buffers hold only this rank's
/// rows, and how to complete them.
pub struct Sharding<'w> {
    world: &'w dyn Collective,
    /// The batch the program was compiled for.
    batch: usize,
    /// Each rank's batch items.
    shares: Vec<Range<usize>>,
    /// Per step: how it runs, and how it uses each argument.
    steps: Vec<(Mode, Vec<Access>)>,
    /// Per buffer: whether only this rank's rows are valid.
    partial: Vec<bool>,
    /// Per step: the buffers whose gather starts once it has run, because
    /// no step reads or writes them until one that needs them whole, which
    /// is not the next (a layer's input, which its kernel gradient reads in
    /// the backward pass).
    early: Vec<Vec<usize>>,
    /// The gathers started and not finished: buffer and ticket.
    pending: Vec<(usize, u64)>,
    /// What this run exchanged so far.
    exchanged: Exchanged,
}

/// What a data-parallel run exchanged between ranks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exchanged {
    /// Values gathered (every rank's parts, this rank's included) and
    /// merged.
    pub values: u64,
    /// Of those, the values merged (kernel gradients computed in parts).
    pub merged: u64,
    /// Collective calls.
    pub calls: u64,
    /// Time this rank spent in them (waiting for slower ranks included).
    pub time: std::time::Duration,
    /// Of those calls, the gathers started early, while the rank computed
    /// on ([`Collective::start_gather`]).
    pub early: u64,
    /// The values of those, and the time spent starting and finishing them.
    pub early_values: u64,
    /// As above.
    pub early_time: std::time::Duration,
}

impl<'w> Sharding<'w> {
    /// How each step of the plan runs on this rank, in words for
    /// profiles: `per example`, `split` or `whole`.
    pub fn modes(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .map(|(mode, _)| match mode {
                Mode::PerExample => "per example",
                Mode::Split => "split",
                Mode::Whole => "whole",
            })
            .collect()
    }

    /// The sharding of `plan` across `world`, for one run whose input
    /// holds only this rank's batch items.
    pub fn new(plan: &KernelPlan, world: &'w dyn Collective) -> Result<Sharding<'w>, RuntimeError> {
        // Which buffers have the batch: the input, and what a per-example
        // kernel computes from a buffer that has it.
        let mut batched: Vec<bool> = plan.buffers.iter().map(|b| b.role == Role::Input).collect();
        let steps = plan
            .steps
            .iter()
            .map(|s| {
                let signature = s
                    .kernel
                    .signature()
                    .map_err(|message| RuntimeError::Kernel {
                        step: s.kernel.name().to_string(),
                        message,
                    })?;
                let written: usize = signature
                    .iter()
                    .filter(|p| p.access == Access::Write)
                    .map(|p| match p.len {
                        Len::Exactly(n) | Len::AtLeast(n) => n,
                    })
                    .sum();
                let flops = s.kernel.flops().map_or(0, |f| f.nominal);
                let reads_batch = s
                    .args
                    .iter()
                    .zip(&signature)
                    .any(|(&b, p)| p.access == Access::Read && batched[b]);
                let mode = if s.kernel.per_example() && reads_batch {
                    for (&b, p) in s.args.iter().zip(&signature) {
                        batched[b] |= p.access == Access::Write;
                    }
                    Mode::PerExample
                } else if s.kernel.splits_across_ranks()
                    && world.size() > 1
                    && flops >= SPLIT_FLOPS_PER_VALUE * written as u64
                {
                    Mode::Split
                } else {
                    Mode::Whole
                };
                Ok((mode, signature.iter().map(|p| p.access).collect()))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let early = early_gathers(plan, &steps, &batched);
        let mut sharding = Sharding {
            world,
            batch: plan.batch,
            shares: shares(plan.batch, world.size()),
            steps,
            partial: vec![false; plan.buffers.len()],
            early,
            pending: Vec::new(),
            exchanged: Exchanged::default(),
        };
        // At the start only the input is partial.
        for (partial, buffer) in sharding.partial.iter_mut().zip(&plan.buffers) {
            *partial = buffer.role == Role::Input;
        }
        Ok(sharding)
    }

    /// This rank's batch items.
    pub fn own(&self) -> Range<usize> {
        self.shares[self.world.rank().min(self.shares.len() - 1)].clone()
    }

    /// What this run exchanged so far.
    pub fn exchanged(&self) -> Exchanged {
        self.exchanged
    }

    /// Merges what the ranks wrote of `values` ([`Collective::merge`]).
    fn merge(&mut self, values: &mut [f32]) -> Result<(), RuntimeError> {
        let started = std::time::Instant::now();
        self.world
            .merge(values)
            .map_err(|e| RuntimeError::Exchange(e.0))?;
        self.exchanged.values += values.len() as u64;
        self.exchanged.merged += values.len() as u64;
        self.exchanged.calls += 1;
        self.exchanged.time += started.elapsed();
        Ok(())
    }

    /// Makes buffer `buffer`, held in `values`, whole on every rank if it
    /// is partial.
    pub fn complete(&mut self, buffer: usize, values: &mut [f32]) -> Result<(), RuntimeError> {
        let started = std::time::Instant::now();
        if let Some(at) = self.pending.iter().position(|&(b, _)| b == buffer) {
            let (_, ticket) = self.pending.remove(at);
            self.world
                .finish_gather(ticket)
                .map_err(|e| RuntimeError::Exchange(e.0))?;
            self.exchanged.time += started.elapsed();
            self.exchanged.early_time += started.elapsed();
            return Ok(());
        }
        if !self.partial.get(buffer).copied().unwrap_or(false) {
            return Ok(());
        }
        let parts = self.parts(buffer, values.len())?;
        self.world
            .all_gather(values, &parts)
            .map_err(|e| RuntimeError::Exchange(e.0))?;
        self.exchanged.values += values.len() as u64;
        self.exchanged.calls += 1;
        self.exchanged.time += started.elapsed();
        self.partial[buffer] = false;
        Ok(())
    }

    /// Starts completing buffer `buffer`, held in the `len` values at
    /// `values`, if it is partial; [`Self::complete`] finishes it.
    ///
    /// # Safety
    /// The values stay valid, and nothing reads or writes them, until
    /// then.
    unsafe fn start_early(
        &mut self,
        buffer: usize,
        values: *mut f32,
        len: usize,
    ) -> Result<(), RuntimeError> {
        if !self.partial.get(buffer).copied().unwrap_or(false) {
            return Ok(());
        }
        let parts = self.parts(buffer, len)?;
        let started = std::time::Instant::now();
        // SAFETY: the caller's contract.
        let ticket = unsafe { self.world.start_gather(values, len, &parts) }
            .map_err(|e| RuntimeError::Exchange(e.0))?;
        self.pending.push((buffer, ticket));
        self.exchanged.values += len as u64;
        self.exchanged.calls += 1;
        self.exchanged.early += 1;
        self.exchanged.early_values += len as u64;
        self.exchanged.time += started.elapsed();
        self.exchanged.early_time += started.elapsed();
        self.partial[buffer] = false;
        Ok(())
    }

    /// Lets the gathers under way move, when there are any; counted as
    /// their time.
    fn progress(&mut self) -> Result<(), RuntimeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.world
            .progress()
            .map_err(|e| RuntimeError::Exchange(e.0))?;
        self.exchanged.time += started.elapsed();
        self.exchanged.early_time += started.elapsed();
        Ok(())
    }

    /// Each rank's part of buffer `buffer` of `len` values.
    fn parts(&self, buffer: usize, len: usize) -> Result<Vec<Range<usize>>, RuntimeError> {
        if self.batch == 0 || !len.is_multiple_of(self.batch) {
            return Err(RuntimeError::Exchange(format!(
                "buffer {buffer} of {len} values does not hold {} batch items of the same size",
                self.batch
            )));
        }
        let per = len / self.batch;
        Ok(self
            .shares
            .iter()
            .map(|s| s.start * per..s.end * per)
            .collect())
    }
}

impl Drop for Sharding<'_> {
    /// Waits for the gathers still under way (a step that stopped early,
    /// on a loss that is not finite, left them), so that none writes into
    /// memory that is no longer its buffer's.
    fn drop(&mut self) {
        for (_, ticket) in self.pending.drain(..) {
            // A failure here ends the job anyway (MPI's error handler).
            let _ = self.world.finish_gather(ticket);
        }
    }
}

/// Per step of `plan`: the batch buffers whose gather can start once it
/// has run ([`Sharding::early`]): it is a per-example step that reads or
/// writes the buffer, and the next step to touch the buffer needs it whole
/// and is not the step after it.
fn early_gathers(
    plan: &KernelPlan,
    steps: &[(Mode, Vec<Access>)],
    batched: &[bool],
) -> Vec<Vec<usize>> {
    let mut early = vec![Vec::new(); plan.steps.len()];
    // The last per-example step that touched each buffer, while the steps
    // since have not.
    let mut last: Vec<Option<usize>> = vec![None; plan.buffers.len()];
    for (i, (step, (mode, _))) in plan.steps.iter().zip(steps).enumerate() {
        for &b in &step.args {
            if *mode != Mode::PerExample {
                if let Some(l) = last[b].take() {
                    if i > l + 1 && batched[b] && !early[l].contains(&b) {
                        early[l].push(b);
                    }
                }
            } else {
                last[b] = Some(i);
            }
        }
    }
    early
}

impl Executor {
    /// Runs steps `steps` of `program` (compiled from `plan`) as one rank of
    /// `sharding`: like [`Executor::run_steps`], but each per-example step
    /// computes only this rank's batch items where a buffer it takes is
    /// partial, and every other step first completes the partial buffers
    /// it takes.
    pub fn run_sharded(
        &mut self,
        (program, plan): (&Program, &KernelPlan),
        steps: Range<usize>,
        external: &mut [&mut [f32]],
        sharding: &mut Sharding,
    ) -> Result<(), RuntimeError> {
        self.reserve(program);
        for index in steps {
            let (step, planned) = (&program.steps[index], &plan.steps[index]);
            let mode = sharding.steps[index].0;
            let args = self.bind(step, external)?;
            // SAFETY: `bind` checked that the slot's values from this
            // pointer lie in its buffer; each slice made from it is the
            // only reference to them while it lives.
            let values = |k: usize| unsafe {
                std::slice::from_raw_parts_mut(args[k], slot_len(step.args[k]))
            };
            let domain = step.kernel.domain();
            if mode != Mode::PerExample {
                for (k, &b) in planned.args.iter().enumerate() {
                    sharding.complete(b, values(k))?;
                }
            }
            // The profile counts the kernel; the exchanges, `exchanged`.
            let started = std::time::Instant::now();
            let writes = || {
                let access = &sharding.steps[index].1;
                (0..planned.args.len()).filter(|&k| access.get(k) == Some(&Access::Write))
            };
            let items = match mode {
                // The rank's items, even from whole buffers (an output
                // gradient that a kernel gradient had gathered).
                Mode::PerExample => step
                    .kernel
                    .example_items(sharding.batch, sharding.own())
                    .filter(|items| items.end <= domain)
                    .unwrap_or(0..domain),
                Mode::Split => {
                    // What the other ranks write must be +0.0 here.
                    writes().for_each(|k| values(k).fill(0.0));
                    let size = sharding.world.size();
                    shares(domain, size)[sharding.world.rank().min(size - 1)].clone()
                }
                Mode::Whole => 0..domain,
            };
            self.execute_items(step, &args, items)
                .map_err(|message| RuntimeError::Kernel {
                    step: step.kernel.name().to_string(),
                    message,
                })?;
            let elapsed = started.elapsed();
            if mode == Mode::Split {
                for k in writes().collect::<Vec<_>>() {
                    sharding.merge(values(k))?;
                }
            }
            if mode == Mode::PerExample {
                let access = &sharding.steps[index].1;
                for (&b, a) in planned.args.iter().zip(access) {
                    if *a == Access::Write {
                        sharding.partial[b] = true;
                    }
                }
            }
            for b in sharding.early[index].clone() {
                let k = planned.args.iter().position(|&a| a == b).unwrap_or(0);
                // SAFETY: `bind` checked the slot; no step touches the
                // buffer until the one that completes it (`early_gathers`),
                // and its place is its own until its last reader.
                unsafe { sharding.start_early(b, args[k], slot_len(step.args[k]))? };
            }
            sharding.progress()?;
            self.record(program, index, elapsed);
        }
        Ok(())
    }
}

/// The number of values a slot holds.
fn slot_len(slot: Slot) -> usize {
    match slot {
        Slot::Arena { len, .. } | Slot::External { len, .. } => len,
    }
}

/// Ranks that are threads of one process: for tests, and to check a
/// data-parallel run against one process without MPI. A rank whose
/// `LocalWorld` is dropped (its thread ended, or panicked) has left: the
/// others' collective calls then fail instead of waiting for it.
pub struct LocalWorld {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    meeting: Mutex<Meeting>,
    arrived: Condvar,
}

/// The ranks' meeting point: a barrier that knows who left.
struct Meeting {
    /// Ranks waiting at the current barrier.
    waiting: usize,
    /// Barriers passed so far.
    generation: u64,
    /// The first rank that left, if one did.
    left: Option<usize>,
    /// Where each rank leaves its part for the others.
    staging: Vec<f32>,
    flags: Vec<bool>,
}

impl LocalWorld {
    /// `size` ranks, one for each thread that will run a share.
    pub fn new(size: usize) -> Vec<LocalWorld> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            size,
            meeting: Mutex::new(Meeting {
                waiting: 0,
                generation: 0,
                left: None,
                staging: Vec::new(),
                flags: vec![false; size],
            }),
            arrived: Condvar::new(),
        });
        (0..size)
            .map(|rank| LocalWorld {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    fn meeting(&self) -> MutexGuard<'_, Meeting> {
        // A rank that panicked holding the lock left the data whole: every
        // change under it is a plain store.
        self.shared
            .meeting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Does `work` under the lock, then waits until every rank has got
    /// here; fails when a rank has left.
    fn meet(&self, work: impl FnOnce(&mut Meeting)) -> Result<(), CollectiveError> {
        let mut meeting = self.meeting();
        let gone = |m: &Meeting| {
            m.left
                .map(|r| CollectiveError(format!("rank {r} has left")))
        };
        if let Some(e) = gone(&meeting) {
            return Err(e);
        }
        work(&mut meeting);
        meeting.waiting += 1;
        let generation = meeting.generation;
        if meeting.waiting == self.shared.size {
            meeting.waiting = 0;
            meeting.generation += 1;
            self.shared.arrived.notify_all();
            return Ok(());
        }
        while meeting.generation == generation {
            if let Some(e) = gone(&meeting) {
                return Err(e);
            }
            meeting = self
                .shared
                .arrived
                .wait(meeting)
                .unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }
}

impl Drop for LocalWorld {
    fn drop(&mut self) {
        let mut meeting = self.meeting();
        meeting.left.get_or_insert(self.rank);
        self.shared.arrived.notify_all();
    }
}

impl Collective for LocalWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather(
        &self,
        values: &mut [f32],
        parts: &[Range<usize>],
    ) -> Result<(), CollectiveError> {
        check_parts(values.len(), parts, self.shared.size)?;
        let own = parts[self.rank].clone();
        self.meet(|m| {
            if m.staging.len() < values.len() {
                m.staging.resize(values.len(), 0.0);
            }
            m.staging[own.clone()].copy_from_slice(&values[own.clone()]);
        })?;
        {
            let meeting = self.meeting();
            for (r, part) in parts.iter().enumerate() {
                if r != self.rank {
                    values[part.clone()].copy_from_slice(&meeting.staging[part.clone()]);
                }
            }
        }
        // Nobody writes the staging area again before everyone has read it.
        self.meet(|_| {})
    }

    fn merge(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        let len = values.len();
        self.meet(|m| {
            if self.rank == 0 {
                m.staging.clear();
                m.staging.resize(len, 0.0);
            }
        })?;
        self.meet(|m| {
            for (merged, v) in m.staging.iter_mut().zip(values.iter()) {
                *merged = f32::from_bits(merged.to_bits() | v.to_bits());
            }
        })?;
        values.copy_from_slice(&self.meeting().staging[..len]);
        self.meet(|_| {})
    }

    fn any(&self, flag: bool) -> Result<bool, CollectiveError> {
        self.meet(|m| m.flags[self.rank] = flag)?;
        let any = self.meeting().flags.iter().any(|&f| f);
        self.meet(|_| {})?;
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_rank_order() {
        assert_eq!(shares(32, 3), vec![0..10, 10..21, 21..32]);
        assert_eq!(shares(2, 3), vec![0..0, 0..1, 1..2]);
        assert_eq!(shares(7, 1), vec![0..7]);
    }

    #[test]
    fn local_ranks_gather_every_part() {
        let worlds = LocalWorld::new(3);
        let parts = vec![0..2, 2..5, 5..6];
        let results: Vec<Vec<f32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = worlds
                .iter()
                .map(|w| {
                    let parts = parts.clone();
                    scope.spawn(move || {
                        let mut values = vec![-1.0; 6];
                        for i in parts[w.rank()].clone() {
                            values[i] = (10 * w.rank() + i) as f32;
                        }
                        w.all_gather(&mut values, &parts).unwrap();
                        let mut merged = vec![0.0; 4];
                        merged[w.rank()] = -(w.rank() as f32) - 0.5;
                        w.merge(&mut merged).unwrap();
                        assert_eq!(merged, vec![-0.5, -1.5, -2.5, 0.0]);
                        assert!(w.any(w.rank() == 2).unwrap());
                        assert!(!w.any(false).unwrap());
                        values
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for values in results {
            assert_eq!(values, vec![0.0, 1.0, 12.0, 13.0, 14.0, 25.0]);
        }
    }

    #[test]
    fn a_rank_that_leaves_makes_the_others_fail_not_wait() {
        let mut worlds = LocalWorld::new(3);
        let last = worlds.pop().expect("three");
        let error = std::thread::scope(|scope| {
            let waiting: Vec<_> = worlds
                .iter()
                .map(|w| scope.spawn(move || w.any(true)))
                .collect();
            drop(last);
            waiting
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect::<Vec<_>>()
        });
        for result in error {
            assert_eq!(result, Err(CollectiveError("rank 2 has left".into())));
        }
    }
}
