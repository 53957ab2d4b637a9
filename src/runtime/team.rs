//! A team of worker threads that run the parts of one kernel at a time,
//! with the calling thread as the first member.
//!
//! A training step of ResNet-34 runs about 470 kernels, many of them a few
//! microseconds long. Handing each to a general thread pool costs two
//! cross-thread wake-ups per kernel (the caller injects the job and sleeps;
//! a sleeping worker must be woken to take the second half); at tens of
//! microseconds each, that is a tenth of the step. Here the caller runs the
//! first part itself, and between kernels the workers spin on a counter for
//! a short while before they park, so a kernel reaches them in well under a
//! microsecond while a step is running, and idle teams sleep.
//! `benches/dispatch.rs` measures one dispatch against rayon's `scope`.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// A fixed team of `size` members: the thread that calls [`Team::run`] and
/// `size - 1` workers.
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// The job in flight: a member index → its part of the work. Only the
/// leader writes it, between jobs, when no worker reads it.
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped by the leader to publish a job.
    generation: AtomicU64,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    /// Whether any worker's part panicked in the current job.
    panicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    stop: AtomicBool,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written by the leader only while `pending` is zero (no
// worker reads it), and published by the `generation` release/acquire pair;
// the pointee is `Sync` and outlives the job (`run` waits for `pending` to
// reach zero before returning).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Team {
    /// A team of `size` members (at least one: the caller alone spawns no thread).
    pub fn new(size: usize) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut team = Team {
            shared,
            workers: Vec::new(),
        };
        for index in 1..size.max(1) {
            let shared = Arc::clone(&team.shared);
            let worker = std::thread::Builder::new()
                .name(format!("cnnc-worker-{index}"))
                .spawn(move || work(&shared, index))?;
            team.workers.push(worker);
        }
        Ok(team)
    }

    /// The number of members, the caller included.
    pub fn size(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `part(i)` for every member `i` at once (the caller runs
    /// `part(0)`), and returns when all are done. Returns `false` when a
    /// worker's part panicked (the caller's own panic propagates, after the
    /// workers have finished).
    ///
    /// `&mut self` keeps two jobs from ever being in flight at once.
    pub fn run(&mut self, part: &(dyn Fn(usize) + Sync)) -> bool {
        let s = &*self.shared;
        if self.workers.is_empty() {
            part(0);
            return true;
        }
        // SAFETY: no job is in flight (the previous `run` waited for it),
        // so no worker reads `job` now; the lifetime is erased because
        // this function waits below until every worker is done with it.
        unsafe {
            let erased: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(part);
            *s.job.get() = Some(erased);
        }
        s.panicked.store(false, Ordering::Relaxed);
        s.pending.store(self.workers.len(), Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        // Wait for the workers even when our own part panics, so that
        // none of them still runs `part` once this frame is gone.
        let own = catch_unwind(AssertUnwindSafe(|| part(0)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if let Err(panic) = own {
            std::panic::resume_unwind(panic);
        }
        !s.panicked.load(Ordering::Relaxed)
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A worker's life: wait for a new generation, run its part, report.
fn work(s: &Shared, index: usize) {
    // Kernels run as the leader runs them (it holds one in the executor).
    let _flushing = super::denormals::Flushing::new();
    let mut seen = 0u64;
    loop {
        seen = wait_for_job(s, seen);
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the leader wrote `job` before publishing this generation
        // (acquired in `wait_for_job`) and keeps it alive until `pending`
        // reaches zero, which this worker's decrement below contributes to.
        let job = unsafe { (*s.job.get()).map(|p| &*p) };
        if let Some(job) = job {
            if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Spins, then parks, until the generation differs from `seen`; returns it.
fn wait_for_job(s: &Shared, seen: u64) -> u64 {
    let started = Instant::now();
    let mut spins = 0u32;
    loop {
        let now = s.generation.load(Ordering::Acquire);
        if now != seen {
            return now;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(1024) {
            std::hint::spin_loop();
            continue;
        }
        if started.elapsed() < SPIN {
            continue;
        }
        let guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        // Re-checked under the lock: the leader bumps the generation and
        // then, seeing a sleeper, takes the lock to notify, so the bump is
        // either seen here or the notification reaches the wait.
        let guard = if s.generation.load(Ordering::SeqCst) == seen {
            s.wake.wait(guard).unwrap_or_else(|p| p.into_inner())
        } else {
            guard
        };
        s.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_runs_its_part_once_per_job() {
        for size in [1, 2, 3, 5] {
            let mut team = Team::new(size).expect("threads");
            assert_eq!(team.size(), size);
            let counts: Vec<AtomicUsize> = (0..size).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..1000 {
                assert!(team.run(&|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }));
            }
            for c in &counts {
                assert_eq!(c.load(Ordering::Relaxed), 1000);
            }
        }
    }

    #[test]
    fn parked_workers_wake_for_the_next_job() {
        let mut team = Team::new(3).expect("threads");
        let total = AtomicUsize::new(0);
        for _ in 0..3 {
            // Longer than the spin, so that the workers park in between.
            std::thread::sleep(SPIN * 3);
            team.run(&|i| {
                total.fetch_add(i + 1, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 3 * (1 + 2 + 3));
    }

    #[test]
    fn a_panicking_part_is_reported_and_the_team_goes_on() {
        let mut team = Team::new(2).expect("threads");
        assert!(!team.run(&|i| {
            if i == 1 {
                panic!("a worker's part fails");
            }
        }));
        let caller = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|i| {
                if i == 0 {
                    panic!("the caller's part fails");
                }
            })
        }));
        assert!(caller.is_err());
        let done = AtomicUsize::new(0);
        assert!(team.run(&|_| {
            done.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(done.load(Ordering::Relaxed), 2);
    }
}
