//! The executor: runs a program's kernels in order over one arena, each
//! kernel's domain split across the worker threads.
//!
//! Every kernel runs over a domain of independent work items where any
//! split gives bitwise the same result, so the output does not depend on the
//! number of threads. Buffers are either places in the arena (activations,
//! gradients, scratch) or external slices the caller lends for one run
//! (inputs, labels, weights, outputs), whose lengths are checked.

use std::ops::Range;
use std::sync::Mutex;

use thiserror::Error;

use super::denormals::Flushing;
use super::team::Team;
use crate::codegen::program::Slot;
use crate::codegen::program::{Program, Step};

/// One step's total time, as the profile records it.
#[derive(Debug, Clone, Default)]
pub struct StepTime {
    /// The kernel's name.
    pub name: String,
    /// How the kernel computes, where it chose that by the CPU
    /// ([`crate::codegen::program::Kernel::method`]).
    pub method: Option<&'static str>,
    /// The total time.
    pub time: std::time::Duration,
}

/// Why a program could not run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// An external buffer is missing or has the wrong length.
    #[error(
        "step `{step}`: external buffer {index} has {actual} values, but {expected} are needed"
    )]
    ExternalSize {
        /// The step.
        step: String,
        /// Which external buffer.
        index: usize,
        /// The length given (0 when missing).
        actual: usize,
        /// The length needed.
        expected: usize,
    },
    /// An arena slot lies outside the arena.
    #[error("step `{step}`: an arena slot ends at {end}, beyond the arena's {len} values")]
    ArenaBounds {
        /// The step.
        step: String,
        /// Where the slot ends.
        end: usize,
        /// The arena's length.
        len: usize,
    },
    /// A kernel reported a failure.
    #[error("kernel `{step}` failed: {message}")]
    Kernel {
        /// The step.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// Data-parallel ranks could not exchange rows.
    #[error("exchanging rows with the other ranks: {0}")]
    Exchange(String),
    /// The thread pool could not be created.
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// How many were asked for.
        threads: usize,
        /// The system's message.
        message: String,
    },
}

/// Runs programs on a fixed number of threads, owning the arena.
pub struct Executor {
    team: Team,
    threads: usize,
    arena: Vec<f32>,
    /// When profiling: each step's name and accumulated time.
    profile: Option<Vec<StepTime>>,
}

/// Pointers handed to worker threads. The kernels' domain contract (no two
/// work items write the same element) makes the concurrent use sound.
#[derive(Clone, Copy)]
struct SharedArgs<'a>(&'a [*mut f32]);
// SAFETY: see the type's comment; the pointers outlive the scope they are
// used in, which `Executor::run` guarantees by borrowing the buffers.
unsafe impl Send for SharedArgs<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedArgs<'_> {}

impl Executor {
    /// An executor with `threads` workers (at least one).
    pub fn new(threads: usize) -> Result<Executor, RuntimeError> {
        let threads = threads.max(1);
        let team = Team::new(threads).map_err(|e| RuntimeError::Threads {
            threads,
            message: e.to_string(),
        })?;
        Ok(Executor {
            team,
            threads,
            arena: Vec::new(),
            profile: None,
        })
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The arena as the last run left it.
    pub fn arena(&self) -> &[f32] {
        &self.arena
    }

    /// Runs every step of `program` in order; `external` are the caller's
    /// buffers, indexed by [`Slot::External`].
    pub fn run(
        &mut self,
        program: &Program,
        external: &mut [&mut [f32]],
    ) -> Result<(), RuntimeError> {
        self.run_steps(program, 0..program.steps.len(), external)
    }

    /// Runs `program` like [`Self::run`], but, when `prepared`, without
    /// its prepared steps: the caller ran the program on this executor
    /// before, with the same weights, so that what those steps write is
    /// still in the arena (their places are theirs alone).
    pub fn run_prepared(
        &mut self,
        program: &Program,
        external: &mut [&mut [f32]],
        prepared: bool,
    ) -> Result<(), RuntimeError> {
        self.run_range(program, 0..program.steps.len(), external, prepared)
    }

    /// Runs steps `steps` of `program` in order (a training step checks its
    /// loss between the backward pass and the weight updates).
    pub fn run_steps(
        &mut self,
        program: &Program,
        steps: Range<usize>,
        external: &mut [&mut [f32]],
    ) -> Result<(), RuntimeError> {
        self.run_range(program, steps, external, false)
    }

    /// Runs steps `steps` of `program` in order, without its prepared steps
    /// when `skip_prepared`.
    fn run_range(
        &mut self,
        program: &Program,
        steps: Range<usize>,
        external: &mut [&mut [f32]],
        skip_prepared: bool,
    ) -> Result<(), RuntimeError> {
        self.reserve(program);
        let first = steps.start;
        for (i, step) in program.steps[steps].iter().enumerate() {
            if skip_prepared && step.prepared {
                self.record(program, first + i, std::time::Duration::ZERO);
                continue;
            }
            let args = self.bind(step, external)?;
            let started = std::time::Instant::now();
            self.execute(step, &args)
                .map_err(|message| RuntimeError::Kernel {
                    step: step.kernel.name().to_string(),
                    message,
                })?;
            self.record(program, first + i, started.elapsed());
        }
        Ok(())
    }

    /// Grows the arena to what `program` needs.
    pub(super) fn reserve(&mut self, program: &Program) {
        if self.arena.len() < program.arena_len {
            self.arena.resize(program.arena_len, 0.0);
        }
    }

    /// Adds `elapsed` to step `index`'s entry of the profile, when
    /// profiling.
    pub(super) fn record(&mut self, program: &Program, index: usize, elapsed: std::time::Duration) {
        if let Some(profile) = &mut self.profile {
            if profile.len() < program.steps.len() {
                profile.resize(program.steps.len(), StepTime::default());
            }
            let kernel = &program.steps[index].kernel;
            let entry = &mut profile[index];
            entry.name = kernel.name().to_string();
            entry.method = kernel.method();
            entry.time += elapsed;
        }
    }

    /// Starts recording the time of every step (from now on).
    pub fn enable_profile(&mut self) {
        self.profile = Some(Vec::new());
    }

    /// Each step's time so far, when profiling.
    pub fn profile(&self) -> &[StepTime] {
        self.profile.as_deref().unwrap_or(&[])
    }

    /// The raw pointers of a step's arguments, after checking their bounds.
    pub(super) fn bind(
        &mut self,
        step: &Step,
        external: &mut [&mut [f32]],
    ) -> Result<Vec<*mut f32>, RuntimeError> {
        let arena_len = self.arena.len();
        let arena = self.arena.as_mut_ptr();
        step.args
            .iter()
            .map(|slot| match *slot {
                Slot::Arena { offset, len } => {
                    let end = offset.saturating_add(len);
                    if end > arena_len {
                        return Err(RuntimeError::ArenaBounds {
                            step: step.kernel.name().into(),
                            end,
                            len: arena_len,
                        });
                    }
                    // SAFETY: offset + len lies within the arena (checked above).
                    Ok(unsafe { arena.add(offset) })
                }
                Slot::External { index, len } => match external.get_mut(index) {
                    Some(buffer) if buffer.len() == len => Ok(buffer.as_mut_ptr()),
                    other => Err(RuntimeError::ExternalSize {
                        step: step.kernel.name().into(),
                        index,
                        actual: other.map_or(0, |b| b.len()),
                        expected: len,
                    }),
                },
            })
            .collect()
    }

    /// Runs one step, its domain split into one contiguous part per thread;
    /// returns the first failure any part reported.
    fn execute(&mut self, step: &Step, args: &[*mut f32]) -> Result<(), String> {
        self.execute_items(step, args, 0..step.kernel.domain())
    }

    /// Runs work items `items` of one step (a range within its domain),
    /// split into one contiguous part per thread; returns the first failure
    /// any part reported.
    pub(super) fn execute_items(
        &mut self,
        step: &Step,
        args: &[*mut f32],
        items: Range<usize>,
    ) -> Result<(), String> {
        if items.end > step.kernel.domain() {
            return Err(format!(
                "work items {items:?} lie beyond the kernel's {}",
                step.kernel.domain()
            ));
        }
        // Subnormals flush to zero on this thread as on the team's workers.
        let _flushing = Flushing::new();
        let domain = items.len();
        let first = items.start;
        let kernel = step.kernel.as_ref();
        let shared = SharedArgs(args);
        if self.threads == 1 || domain < step.serial_below.max(2) {
            // SAFETY: the arguments were bound and bounds-checked for this
            // step, and `items` lies within its domain (the caller's word).
            return unsafe { kernel.run(shared.0, items) };
        }
        let shares = Shares::new(domain, self.threads);
        let failure = std::sync::Mutex::new(None);
        let finished = self.team.run(&|member| {
            let args = shared;
            while let Some(part) = shares.next(member) {
                let part = first + part.start..first + part.end;
                // SAFETY: as above; `Shares` hands out each work item once.
                if let Err(e) = unsafe { kernel.run(args.0, part) } {
                    let mut first = failure.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(e);
                    return;
                }
            }
        });
        if !finished {
            return Err("a worker thread panicked".into());
        }
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A step's work items as the team takes them: each member owns one
/// contiguous share of the domain ([`split`]) and takes it from the front,
/// a few items at a time, so that on a quiet machine every member works on
/// the rows it worked on in the kernel before (still in its cache); a
/// member done with its share then takes items from the back of the
/// others', so that a core slowed by another process does not hold the
/// step up. Every item is handed out exactly once; the kernels' results do
/// not depend on which member runs an item, nor on how items are grouped
/// into calls.
struct Shares {
    /// Per member, what is left of its share.
    shares: Vec<Mutex<Range<usize>>>,
    /// Items taken at once: a quarter of a share.
    chunk: usize,
}

impl Shares {
    /// The shares of `domain` items for `members` members.
    fn new(domain: usize, members: usize) -> Shares {
        let parts = split(domain, members);
        let chunk = parts[0].len().div_ceil(4).max(1);
        Shares {
            shares: parts.into_iter().map(Mutex::new).collect(),
            chunk,
        }
    }

    /// The next items for `member`: from the front of its own share, else
    /// from the back of another's; `None` when every item is taken.
    fn next(&self, member: usize) -> Option<Range<usize>> {
        let n = self.shares.len();
        self.shares
            .get(member)
            .and_then(|own| self.take(own, true))
            .or_else(|| {
                (1..=n)
                    .map(|k| &self.shares[(member + k) % n])
                    .find_map(|other| self.take(other, false))
            })
    }

    /// Up to `chunk` items from the front (`front`) or the back of `share`.
    fn take(&self, share: &Mutex<Range<usize>>, front: bool) -> Option<Range<usize>> {
        // A poisoned share is still a valid range: taking from it is
        // safe, and the panic is reported by the team.
        let mut left = share.lock().unwrap_or_else(|p| p.into_inner());
        if left.is_empty() {
            return None;
        }
        Some(if front {
            let cut = (left.start + self.chunk).min(left.end);
            let taken = left.start..cut;
            left.start = cut;
            taken
        } else {
            let cut = left.end.saturating_sub(self.chunk).max(left.start);
            let taken = cut..left.end;
            left.end = cut;
            taken
        })
    }
}

/// `domain` split into `parts` contiguous ranges of near-equal length.
pub fn split(domain: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, domain.max(1));
    (0..parts)
        .map(|i| domain * i / parts..domain * (i + 1) / parts)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_hand_out_every_item_once() {
        for (domain, members) in [(1, 2), (4, 2), (7, 2), (257, 2), (10, 3), (5, 8)] {
            let shares = Shares::new(domain, members);
            let mut seen = vec![0; domain];
            // Member 0 takes one chunk, then the last member empties every
            // share, its own first, then the others' from their backs.
            let first = shares.next(0).expect("items left");
            assert!(first.start == 0 && !first.is_empty(), "{first:?}");
            let mut taken = vec![first];
            while let Some(part) = shares.next(members.min(domain) - 1) {
                taken.push(part);
            }
            assert_eq!(shares.next(0), None);
            for part in taken {
                for item in part {
                    seen[item] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{domain} {members}: {seen:?}");
        }
    }

    #[test]
    fn shares_are_safe_to_take_at_once() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let shares = Shares::new(100_000, 2);
        let counts: Vec<AtomicU64> = (0..100_000).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|scope| {
            for member in 0..2 {
                let (shares, counts) = (&shares, &counts);
                scope.spawn(move || {
                    while let Some(part) = shares.next(member) {
                        for item in part {
                            counts[item].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn splits_cover_the_domain_in_order() {
        assert_eq!(split(10, 3), vec![0..3, 3..6, 6..10]);
        assert_eq!(split(1, 4), vec![0..1]);
        assert_eq!(split(0, 2), vec![0..0]);
    }
}
