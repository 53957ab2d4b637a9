//! The ranks of an MPI job (`mpirun -np N cnnc run …`), through rsmpi on
//! the system's MPI library: built with `--features mpi`.
//!
//! Only the calling thread talks to MPI (the executor's workers never do),
//! so the library is initialised for `MPI_THREAD_FUNNELED`. MPI's default
//! error handler stays: a failed call ends the job, and when a rank dies,
//! `mpirun` stops the others and names the rank that died.

use std::cell::RefCell;
use std::ops::Range;

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};
use mpi::Threading;

use super::parallel::{check_parts, Collective, CollectiveError};

/// This process's place in the MPI job: `MPI_COMM_WORLD`. Dropping it
/// finalises MPI.
pub struct MpiWorld {
    world: SimpleCommunicator,
    /// Kept from call to call, so that a step's exchanges do not fault in
    /// fresh pages: the part this rank sends, and every rank's buffer of a
    /// merge.
    scratch: RefCell<(Vec<f32>, Vec<f32>)>,
    /// The gathers started and not finished, by ticket.
    pending: RefCell<Vec<(u64, Pending)>>,
    /// The next ticket.
    tickets: std::cell::Cell<u64>,
    rank: usize,
    size: usize,
    // Declared last: dropped (MPI_Finalize) after the communicator.
    _universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI; an error when it was initialised before or cannot
    /// give the thread support the executor needs.
    pub fn init() -> Result<MpiWorld, CollectiveError> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| CollectiveError("MPI was already initialised".into()))?;
        if threading < Threading::Funneled {
            return Err(CollectiveError(format!(
                "the MPI library offers thread support {threading:?}, below the funneled \
                 support cnnc's worker threads need"
            )));
        }
        let world = universe.world();
        let rank = usize::try_from(world.rank()).unwrap_or(0);
        let size = usize::try_from(world.size()).unwrap_or(1).max(1);
        Ok(MpiWorld {
            world,
            scratch: RefCell::new((Vec::new(), Vec::new())),
            pending: RefCell::new(Vec::new()),
            tickets: std::cell::Cell::new(0),
            rank,
            size,
            _universe: universe,
        })
    }
}

impl MpiWorld {
    /// MPI's counts and offsets of `parts` of a buffer of `len` values,
    /// once they are checked to split it among the ranks and to fit MPI's
    /// `int`.
    fn partition(
        &self,
        len: usize,
        parts: &[Range<usize>],
    ) -> Result<(Vec<i32>, Vec<i32>), CollectiveError> {
        check_parts(len, parts, self.size)?;
        count(len, "a buffer")?;
        let counts = parts.iter().map(|p| count(p.len(), "a part"));
        let displs = parts.iter().map(|p| count(p.start, "an offset"));
        Ok((
            counts.collect::<Result<_, _>>()?,
            displs.collect::<Result<_, _>>()?,
        ))
    }

    /// Ends every rank of the job (`MPI_Abort`) with exit code `code`:
    /// for a failure on this rank that the others, waiting for its rows,
    /// cannot know of.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// A gather under way (`MPI_Iallgatherv`): its request, and what MPI
/// reads until it completes, kept here until then.
struct Pending {
    request: ffi::MPI_Request,
    _send: Vec<f32>,
    _counts: Vec<i32>,
    _displs: Vec<i32>,
}

/// MPI's element count: `int`.
fn count(n: usize, what: &str) -> Result<i32, CollectiveError> {
    i32::try_from(n).map_err(|_| {
        CollectiveError(format!(
            "{what} of {n} values is beyond what one MPI call moves (2^31 - 1)"
        ))
    })
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(
        &self,
        values: &mut [f32],
        parts: &[Range<usize>],
    ) -> Result<(), CollectiveError> {
        let (counts, displs) = self.partition(values.len(), parts)?;
        // MPI may not read and write the same memory: the own part goes
        // out from a copy, and comes back into place unchanged.
        let mut scratch = self.scratch.borrow_mut();
        let own = &mut scratch.0;
        own.clear();
        own.extend_from_slice(&values[parts[self.rank].clone()]);
        let mut whole = PartitionMut::new(values, counts, displs);
        self.world.all_gather_varcount_into(&own[..], &mut whole);
        Ok(())
    }

    unsafe fn start_gather(
        &self,
        values: *mut f32,
        len: usize,
        parts: &[Range<usize>],
    ) -> Result<u64, CollectiveError> {
        let (counts, displs) = self.partition(len, parts)?;
        let own = &parts[self.rank];
        // SAFETY: the caller's contract: `len` valid values, which `own`
        // lies within (checked above).
        let send = unsafe { std::slice::from_raw_parts(values.add(own.start), own.len()) }.to_vec();
        let mut pending = Pending {
            // SAFETY: a plain handle, overwritten by MPI below.
            request: unsafe { ffi::RSMPI_REQUEST_NULL },
            _send: send,
            _counts: counts,
            _displs: displs,
        };
        // SAFETY: every pointer stays valid until the request completes:
        // the send buffer and the counts are moved into `pending`, whose
        // heap storage does not move, and the receive buffer is the
        // caller's, untouched until `finish_gather`. Only this thread calls
        // MPI (funneled).
        let code = unsafe {
            ffi::MPI_Iallgatherv(
                pending._send.as_ptr().cast(),
                pending._send.len() as i32,
                ffi::RSMPI_FLOAT,
                values.cast(),
                pending._counts.as_ptr(),
                pending._displs.as_ptr(),
                ffi::RSMPI_FLOAT,
                self.world.as_raw(),
                &mut pending.request,
            )
        };
        if code != 0 {
            return Err(CollectiveError(format!(
                "MPI_Iallgatherv failed with code {code}"
            )));
        }
        let ticket = self.tickets.get();
        self.tickets.set(ticket + 1);
        self.pending.borrow_mut().push((ticket, pending));
        Ok(ticket)
    }

    fn finish_gather(&self, ticket: u64) -> Result<(), CollectiveError> {
        let mut pending = self.pending.borrow_mut();
        let Some(at) = pending.iter().position(|(t, _)| *t == ticket) else {
            return Ok(());
        };
        let (_, mut gather) = pending.remove(at);
        // SAFETY: a request MPI_Iallgatherv made and nothing completed yet.
        let code = unsafe { ffi::MPI_Wait(&mut gather.request, ffi::RSMPI_STATUS_IGNORE) };
        if code != 0 {
            return Err(CollectiveError(format!("MPI_Wait failed with code {code}")));
        }
        Ok(())
    }

    fn progress(&self) -> Result<(), CollectiveError> {
        // Any MPI call moves every request along: testing the oldest does.
        if let Some((_, gather)) = self.pending.borrow_mut().first_mut() {
            let mut done = 0;
            // SAFETY: a live request; MPI_Test frees it and sets it to
            // MPI_REQUEST_NULL when it completes, and testing a null
            // request is allowed.
            let code =
                unsafe { ffi::MPI_Test(&mut gather.request, &mut done, ffi::RSMPI_STATUS_IGNORE) };
            if code != 0 {
                return Err(CollectiveError(format!("MPI_Test failed with code {code}")));
            }
        }
        Ok(())
    }

    fn merge(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        // Every rank's whole buffer to every rank, OR-ed here: OpenMPI's
        // reductions over shared memory run at a tenth of its gathers'
        // speed (2-3 GB/s against 24, `MPI_Allreduce` with `MPI_BOR`
        // against `MPI_Allgatherv` on this project's 2-core machines).
        count(values.len() * self.size, "the ranks' buffers")?;
        let mut scratch = self.scratch.borrow_mut();
        let all = &mut scratch.1;
        all.resize(values.len() * self.size, 0.0);
        let all = &mut all[..values.len() * self.size];
        self.world.all_gather_into(&values[..], all);
        for rank in all.chunks_exact(values.len().max(1)) {
            for (v, theirs) in values.iter_mut().zip(rank) {
                *v = f32::from_bits(v.to_bits() | theirs.to_bits());
            }
        }
        Ok(())
    }

    fn any(&self, flag: bool) -> Result<bool, CollectiveError> {
        let mut any = 0i32;
        self.world.all_reduce_into(
            &i32::from(flag),
            &mut any,
            mpi::collective::SystemOperation::max(),
        );
        Ok(any != 0)
    }
}
