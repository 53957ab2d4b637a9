//! The output folder of a training run: the names of the files it writes
//! there, and the lock that keeps two runs from writing one model's files
//! at the same time.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::fit::FitError;
use crate::runtime::weights;

/// The files a run of model `name` writes into its output folder.
pub(super) struct RunFiles {
    /// `{name}.safetensors`: the weights after every epoch, then the final ones.
    pub(super) weights: PathBuf,
    /// `{name}.checkpoint.safetensors`: what `resume` continues from.
    pub(super) checkpoint: PathBuf,
    /// `{name}.history.csv`: every epoch's figures.
    pub(super) history: PathBuf,
    /// `.{name}.lock`: held by the run writing the others.
    pub(super) lock: PathBuf,
    /// The folder.
    folder: PathBuf,
    /// The model's name.
    model: String,
}

/// The lock of a run's files, held until it is dropped (or the process
/// ends, however it ends).
pub(super) struct RunLock {
    _file: File,
}

impl RunFiles {
    /// The files of model `model` in folder `out`.
    pub(super) fn new(out: &Path, model: &str) -> RunFiles {
        RunFiles {
            weights: out.join(format!("{model}.safetensors")),
            checkpoint: out.join(format!("{model}.checkpoint.safetensors")),
            history: out.join(format!("{model}.history.csv")),
            lock: out.join(format!(".{model}.lock")),
            folder: out.to_path_buf(),
            model: model.to_string(),
        }
    }

    /// Takes the lock of these files, then removes what writes killed in
    /// the middle left behind. Fails with [`FitError::Busy`], naming the
    /// process, when another run holds the lock.
    ///
    /// The lock is an advisory lock of the whole file (`flock` on Unix,
    /// `LockFileEx` on Windows), which the system releases when the
    /// process ends, killed or not: a run killed with SIGKILL never leaves
    /// a lock that blocks the next one, as a lock file that merely exists
    /// would, and no process id can be mistaken for a live one. The file
    /// stays (deleting it would race with a run opening it); the holder
    /// writes its process id into it, for the message.
    pub(super) fn lock(&self) -> Result<RunLock, FitError> {
        let io_error = |source| FitError::Lock {
            path: self.lock.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder may not have written its id yet: then there is none to name.
                let _ = file.read_to_string(&mut holder);
                return Err(FitError::Busy {
                    model: self.model.clone(),
                    folder: self.folder.clone(),
                    lock: self.lock.clone(),
                    pid: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io_error)?;
        for path in [&self.weights, &self.checkpoint, &self.history] {
            // Best effort: a leftover that cannot be removed takes some
            // space but harms nothing, and a folder that cannot be read
            // fails the run's first write, with a message naming it.
            let _ = weights::remove_stale_temporaries(path);
        }
        Ok(RunLock { _file: file })
    }
}
