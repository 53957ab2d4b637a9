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
            rank,
            size,
            _universe: universe,
        })
    }
}

impl MpiWorld {
    /// Ends every rank of the job (`MPI_Abort`) with exit code `code`:
    /// for a failure on this rank that the others, waiting for its rows,
    /// cannot know of.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
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
        check_parts(values.len(), parts, self.size)?;
        count(values.len(), "a buffer")?;
        let counts = parts
            .iter()
            .map(|p| count(p.len(), "a part"))
            .collect::<Result<Vec<i32>, _>>()?;
        let displs = parts
            .iter()
            .map(|p| count(p.start, "an offset"))
            .collect::<Result<Vec<i32>, _>>()?;
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
