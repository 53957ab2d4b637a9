//! The ranks of an MPI job (`mpirun -np N cnnc run …`), through rsmpi on
//! the system's MPI library: built with `--features mpi`.
//!
//! Only the calling thread talks to MPI (the executor's workers never do),
//! so the library is initialised for `MPI_THREAD_FUNNELED`. MPI's default
//! error handler stays: a failed call ends the job, and when a rank dies,
//! `mpirun` stops the others and names the rank that died.

use std::ops::Range;

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};
use mpi::Threading;

use super::parallel::{Collective, CollectiveError};

/// This process's place in the MPI job: `MPI_COMM_WORLD`. Dropping it
/// finalises MPI.
pub struct MpiWorld {
    world: SimpleCommunicator,
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
        let fits = |p: &Range<usize>| p.start <= p.end && p.end <= values.len();
        if parts.len() != self.size || !parts.iter().all(fits) {
            return Err(CollectiveError(format!(
                "parts {parts:?} do not split {} values among {} ranks",
                values.len(),
                self.size
            )));
        }
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
        let own = values[parts[self.rank].clone()].to_vec();
        let mut whole = PartitionMut::new(values, counts, displs);
        self.world.all_gather_varcount_into(&own[..], &mut whole);
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
