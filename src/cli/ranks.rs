//! The MPI job `cnnc run --train` may be one rank of (`mpirun -np N cnnc
//! run …`): found from the variables MPI launchers set, joined through MPI
//! when cnnc was built with `--features mpi`, refused with the way to build
//! it otherwise.

#[cfg(feature = "mpi")]
use std::io::IsTerminal;

use cnnc::runtime::parallel::Collective;
use cnnc::Diagnostics;

/// This process's rank and the job's size, from the variables MPI
/// launchers set (OpenMPI's `mpirun`; MPICH's and Intel MPI's Hydra);
/// `None` when no launcher started it.
pub fn launched() -> Option<(usize, usize)> {
    let var = |name: &str| std::env::var(name).ok()?.trim().parse::<usize>().ok();
    [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
    ]
    .into_iter()
    .find_map(|(rank, size)| Some((var(rank)?, var(size)?)))
}

/// The ranks this process trains with.
pub enum Ranks {
    /// Not started by an MPI launcher (or as its only rank, without MPI
    /// support): one process trains on whole batches.
    Alone,
    /// One rank of an MPI job.
    #[cfg(feature = "mpi")]
    Mpi(cnnc::runtime::mpi::MpiWorld),
}

impl Ranks {
    /// Joins the MPI job that started this process, if one did.
    pub fn join() -> Result<Ranks, String> {
        match launched() {
            None => Ok(Ranks::Alone),
            Some((rank, size)) => Ranks::mpi(rank, size),
        }
    }

    #[cfg(feature = "mpi")]
    fn mpi(_rank: usize, _size: usize) -> Result<Ranks, String> {
        cnnc::runtime::mpi::MpiWorld::init()
            .map(Ranks::Mpi)
            .map_err(|e| format!("cannot join the MPI job: {e}"))
    }

    #[cfg(not(feature = "mpi"))]
    fn mpi(rank: usize, size: usize) -> Result<Ranks, String> {
        if size <= 1 {
            return Ok(Ranks::Alone);
        }
        Err(format!(
            "this cnnc was built without MPI support, but an MPI launcher started it as \
             rank {rank} of {size}: the {size} processes would each train the whole model \
             alone, so it stops here\nhelp: build cnnc with MPI support (Debian: `apt-get install \
             openmpi-bin libopenmpi-dev libclang-dev`), then `cargo build --release \
             --features mpi`, and start that binary with mpirun; or run cnnc without mpirun"
        ))
    }

    /// The ranks to train with; `None` for one process alone.
    pub fn world(&self) -> Option<&dyn Collective> {
        match self {
            Ranks::Alone => None,
            #[cfg(feature = "mpi")]
            Ranks::Mpi(world) => Some(world),
        }
    }

    /// Whether this process is the one that prints and writes: rank 0.
    pub fn leads(&self) -> bool {
        self.world().is_none_or(|w| w.rank() == 0)
    }

    /// After every rank stopped at the same step on Ctrl-C, which mpirun
    /// passed on as SIGTERM: mpirun is ending the job and will not answer
    /// MPI's closing handshake, so rank 0 says why it stopped at once and
    /// every rank ends without it. No rank ends before rank 0 has saved
    /// the checkpoint and said so: mpirun kills the whole job as soon as
    /// one rank ends with a failure. Returns when this process trains
    /// alone.
    pub fn stopped(&self, why: &Diagnostics) {
        #[cfg(feature = "mpi")]
        if let Ranks::Mpi(world) = self {
            if world.rank() == 0 {
                let color =
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                eprint!("{}", why.render(color));
            }
            // A rank that cannot meet the others any more has nothing to
            // wait for: it ends all the same.
            let _ = world.barrier();
            // `exit` would run the MPI library's exit handlers, which wait
            // for mpirun's answer; stderr is unbuffered, the checkpoint
            // synced, and nothing else is left to flush.
            // SAFETY: `_exit` ends the process at once; no Rust state is
            // observed afterwards.
            unsafe { libc::_exit(1) }
        }
        let _ = why;
    }

    /// Passes `result` on; but when it failed on one of several ranks, the
    /// others may wait for this one forever: then it prints the failure
    /// and ends the whole job. (A stop every rank agreed on, Ctrl-C, is
    /// no failure here: rank 0 reports it, the others end quietly.)
    pub fn or_end_job<T>(&self, result: Result<T, Diagnostics>) -> Result<T, Diagnostics> {
        #[cfg(feature = "mpi")]
        if let (Ranks::Mpi(world), Err(diagnostics)) = (self, &result) {
            if world.size() > 1 {
                let color =
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                eprint!("{}", diagnostics.render(color));
                world.abort(1);
            }
        }
        result
    }
}
