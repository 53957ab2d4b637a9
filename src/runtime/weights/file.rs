//! safetensors files: encoding and decoding a [`TensorStore`], the atomic
//! write (a synced temporary file renamed over the target), and the header
//! checks that keep a corrupt file from panicking the reader.

use std::borrow::Cow;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

use super::error::WeightsError;
use super::store::{Tensor, TensorStore};

/// Writes `store` to `path` as a safetensors file: dtype F32, the shapes as
/// given, the metadata kept (tensors are stored sorted by name, as
/// safetensors does).
///
/// The write is atomic: the bytes go to a temporary file in the same folder,
/// which is flushed to disk and then renamed over `path`, so a crash leaves
/// either the previous file or the new one, never a torn one; the folder is
/// then synced where the platform allows. A tensor whose data does not fit
/// its shape is refused before anything is written.
pub fn save(store: &TensorStore, path: &Path) -> Result<(), WeightsError> {
    let bytes = encode(store, path)?;
    write_atomically(path, &bytes).map_err(|source| WeightsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically, as [`save`] writes a safetensors
/// file: to a new temporary file in the same folder (named
/// `.{file name}.{process id}.{counter}.tmp`), flushed to disk, renamed over
/// `path`, then the folder synced where the platform allows. A crash at any
/// instant leaves either the previous file or the new one, whole; on an
/// error (a full disk, a file-size limit) the temporary file is removed and
/// `path` is untouched.
///
/// Writes do not overlap [`exit_between_writes`]: a file being written is
/// renamed into place before that exit, and none starts after it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A poisoned lock only means that another write panicked; its temporary
    // file is at worst left over, and this write is unaffected.
    let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    let folder = folder_of(path);
    let (temp, file) = create_temp(folder, path)?;
    let written = write_and_sync(file, bytes).and_then(|()| {
        test_pace::pause();
        fs::rename(&temp, path)
    });
    if let Err(e) = written {
        // Best effort: the write already failed, and that is the error to report.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    test_pace::pause();
    sync_folder(folder);
    Ok(())
}

/// Ends the process with exit status `code`, but never in the middle of a
/// [`write_atomically`] (or [`save`]): a write under way is first renamed
/// into place, and no write starts after this is called. For a signal
/// handler that quits at once (a second Ctrl-C) without tearing a file or
/// leaving its temporary file behind. Must not be called from the thread
/// that is writing.
pub fn exit_between_writes(code: i32) -> ! {
    let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    std::process::exit(code)
}

/// Removes the temporary files that interrupted writes of `path` (by
/// [`write_atomically`] or [`save`], in any process) left in its folder,
/// and returns how many there were. A process killed in the middle of a
/// write cannot clean up after itself; its successor can, once it knows
/// that no other process is writing `path` (the caller's lock says so:
/// a write in progress would lose its temporary file).
pub fn remove_stale_temporaries(path: &Path) -> io::Result<usize> {
    let Some(name) = path.file_name() else {
        return Ok(0);
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut removed = 0;
    for entry in fs::read_dir(folder_of(path))? {
        let entry = entry?;
        let entry_name = entry.file_name();
        let entry_name = entry_name.to_string_lossy();
        if is_temporary_of(&entry_name, &prefix) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Reads any safetensors file whose tensors are all F32, in the file's order
/// (by data offset), with its metadata.
///
/// Fails with [`WeightsError::Read`] when the file cannot be read,
/// [`WeightsError::Format`] when it is not a well-formed safetensors file
/// (too short, truncated, a corrupt header), and [`WeightsError::Dtype`] for
/// a tensor of another dtype. It does not panic on any input bytes.
pub fn load_file(path: &Path) -> Result<TensorStore, WeightsError> {
    let bytes = fs::read(path).map_err(|source| WeightsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// Reads a safetensors file already in memory, as [`load_file`] reads one
/// from disk; `path` only names it in errors. The fuzz targets call it, so
/// that no input goes through a temporary file.
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<TensorStore, WeightsError> {
    decode(bytes, path)
}

/// Held while a file is written, renamed and synced, so that
/// [`exit_between_writes`] waits for the rename.
static WRITING: Mutex<()> = Mutex::new(());

/// The folder of `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `name` is a temporary file that [`create_temp`] names for a
/// target whose temporary names start with `prefix` (`.{name}.`): the
/// prefix, then a process id and a counter, then `.tmp`.
fn is_temporary_of(name: &str, prefix: &str) -> bool {
    let Some(numbers) = name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    let parts: Vec<&str> = numbers.split('.').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Slow writes for the crash tests, in debug builds only: with
/// `CNNC_TEST_SLOW_WRITES=MS` in the environment, each atomic write takes
/// about MS milliseconds more, spread over its steps (a pause after each of
/// `SLICES - 2` parts of the data, one before the rename and one before the
/// folder's sync), so that a kill at a random moment often lands inside
/// one. Release builds never read the variable.
mod test_pace {
    use super::Duration;

    /// The pauses of one write.
    pub(super) const SLICES: u32 = 10;

    /// How long each pause lasts: `None` (the usual case) for no pause.
    pub(super) fn slice() -> Option<Duration> {
        #[cfg(debug_assertions)]
        {
            static SLICE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
            *SLICE.get_or_init(|| {
                let ms: u64 = std::env::var("CNNC_TEST_SLOW_WRITES").ok()?.parse().ok()?;
                Some(Duration::from_millis(ms) / SLICES)
            })
        }
        #[cfg(not(debug_assertions))]
        None
    }

    /// One pause, when slow writes are asked for.
    pub(super) fn pause() {
        if let Some(slice) = slice() {
            std::thread::sleep(slice);
        }
    }
}

/// A tensor as safetensors sees it: F32, little-endian.
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * size_of::<f32>()
    }
}

/// The bytes of the safetensors file of `store` (to be written to `path`).
fn encode(store: &TensorStore, path: &Path) -> Result<Vec<u8>, WeightsError> {
    // safetensors trusts `data_len`; a tensor whose data does not fit its
    // shape would make a file no reader accepts.
    for (name, tensor) in store.iter() {
        let elements = tensor
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements != Some(tensor.data.len()) {
            return Err(WeightsError::Inconsistent {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                shape: tensor.shape.clone(),
                len: tensor.data.len(),
            });
        }
    }
    let metadata = (!store.metadata.is_empty()).then(|| {
        store
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let views = store.iter().map(|(name, tensor)| (name, F32View(tensor)));
    safetensors::serialize(views, metadata).map_err(|source| WeightsError::Encode {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `file`, flushes them to disk and closes it (in
/// slices, with a pause after each, when the crash tests slow writes down).
fn write_and_sync(mut file: fs::File, bytes: &[u8]) -> io::Result<()> {
    match test_pace::slice() {
        None => file.write_all(bytes)?,
        Some(_) => {
            let slices = (test_pace::SLICES - 2) as usize;
            for slice in bytes.chunks(bytes.len().div_ceil(slices).max(1)) {
                file.write_all(slice)?;
                test_pace::pause();
            }
        }
    }
    file.sync_all()
}

/// Creates a file in `folder` with a name no other writer uses: the target's
/// name, this process's id and a counter, never overwriting an existing file.
fn create_temp(folder: &Path, path: &Path) -> io::Result<(PathBuf, fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
        .to_string_lossy();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = folder.join(format!(".{stem}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            // A leftover of a crashed run with the same pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes the rename durable where directories can be synced (Unix). A
/// failure is ignored: the new file is already complete on disk, and at
/// worst a power cut brings back the previous file, which is also whole.
fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = folder;
}

/// The tensors and metadata of the safetensors file `bytes` (read from `path`).
fn decode(bytes: &[u8], path: &Path) -> Result<TensorStore, WeightsError> {
    let format = |source| WeightsError::Format {
        path: path.to_path_buf(),
        source,
    };
    if offsets_overflow(bytes) {
        return Err(format(SafeTensorError::ValidationOverflow));
    }
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(format)?;
    let file = SafeTensors::deserialize(bytes).map_err(format)?;
    let mut store = TensorStore::new();
    for name in header.offset_keys() {
        let view = file.tensor(&name).map_err(format)?;
        if view.dtype() != Dtype::F32 {
            return Err(WeightsError::Dtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype: view.dtype(),
            });
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        store.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    if let Some(metadata) = header.metadata() {
        store.metadata = metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    Ok(store)
}

/// Whether the JSON header of the safetensors file `bytes` holds an integer
/// so large that adding the header's length to it overflows. safetensors 0.8's
/// `read_metadata` adds the end of the data (the last data offset) to the
/// header's length unchecked: a panic in debug builds, and in release builds
/// a wrapped sum that can pass its size check and make a later slice panic.
/// No well-formed file has such an offset. Digits inside strings (metadata
/// values, names) are skipped; a file too short to hold its header is left
/// to safetensors, which reports it without overflowing.
fn offsets_overflow(bytes: &[u8]) -> bool {
    let Some(&length) = bytes.first_chunk::<8>() else {
        return false;
    };
    let Some(header) = usize::try_from(u64::from_le_bytes(length))
        .ok()
        .and_then(|n| bytes.get(8..n.checked_add(8)?))
    else {
        return false;
    };
    let limit = (usize::MAX - 8 - header.len()) as u128;
    let mut number: u128 = 0;
    let (mut in_string, mut escaped) = (false, false);
    for &b in header {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b.is_ascii_digit() {
            number = number
                .saturating_mul(10)
                .saturating_add(u128::from(b - b'0'));
            if number > limit {
                return true;
            }
        } else {
            number = 0;
            in_string = b == b'"';
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    fn valid_file() -> Vec<u8> {
        let mut store = TensorStore::new();
        store.insert(
            "w",
            Tensor {
                shape: vec![2, 2],
                data: vec![1.0, -2.0, 0.5, 3.0],
            },
        );
        store.insert(
            "b",
            Tensor {
                shape: vec![2],
                data: vec![0.25, 0.0],
            },
        );
        store.metadata.insert("epoch".into(), "3".into());
        encode(&store, Path::new("valid.safetensors")).expect("a consistent store encodes")
    }

    fn format_error(bytes: &[u8]) -> bool {
        matches!(
            decode(bytes, Path::new("x.safetensors")),
            Err(WeightsError::Format { .. })
        )
    }

    /// A fresh folder of its own for test `name`.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cnnc-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temporary_names_are_the_targets_with_a_process_id_and_a_counter() {
        let prefix = ".m.safetensors.";
        assert!(is_temporary_of(".m.safetensors.123.0.tmp", prefix));
        assert!(is_temporary_of(".m.safetensors.9.41.tmp", prefix));
        for other in [
            "m.safetensors",
            ".m.safetensors.123.tmp",
            ".m.safetensors.1.2.3.tmp",
            ".m.safetensors.12a.0.tmp",
            ".m.safetensors..0.tmp",
            ".m.checkpoint.safetensors.123.0.tmp",
            ".m.safetensors.123.0.tmp.bak",
        ] {
            assert!(!is_temporary_of(other, prefix), "{other}");
        }
    }

    #[test]
    fn stale_temporaries_of_a_file_alone_are_removed() {
        let dir = scratch("stale");
        let target = dir.join("m.safetensors");
        for name in [
            ".m.safetensors.77.0.tmp",
            ".m.safetensors.78.3.tmp",
            ".m.checkpoint.safetensors.77.1.tmp",
            "m.safetensors",
            "notes.tmp",
        ] {
            fs::write(dir.join(name), b"x").expect("written");
        }
        assert_eq!(remove_stale_temporaries(&target).expect("removed"), 2);
        assert_eq!(
            names_in(&dir),
            [
                ".m.checkpoint.safetensors.77.1.tmp",
                "m.safetensors",
                "notes.tmp"
            ]
        );
    }

    #[test]
    fn a_failed_write_leaves_the_target_as_it_was_and_no_temporary_file() {
        let dir = scratch("failed");
        // A folder in the target's place: the rename over it fails.
        let target = dir.join("m.safetensors");
        fs::create_dir_all(target.join("inside")).expect("dir");
        let error = write_atomically(&target, b"new").expect_err("fails");
        assert_ne!(error.kind(), io::ErrorKind::NotFound, "{error}");
        assert_eq!(names_in(&dir), ["m.safetensors"]);
        assert!(target.join("inside").is_dir());
        // A file is replaced whole.
        let file = dir.join("h.csv");
        fs::write(&file, b"old").expect("written");
        write_atomically(&file, b"new").expect("written");
        assert_eq!(fs::read(&file).expect("read"), b"new");
        assert_eq!(names_in(&dir), ["h.csv", "m.safetensors"]);
    }

    #[test]
    fn decode_round_trips_encode() {
        let store = decode(&valid_file(), Path::new("x")).expect("valid");
        // safetensors orders tensors by name.
        assert_eq!(store.names().collect::<Vec<_>>(), ["b", "w"]);
        assert_eq!(
            bits(&store.get("w").expect("saved").data),
            bits(&[1.0, -2.0, 0.5, 3.0])
        );
        assert_eq!(store.metadata.get("epoch").map(String::as_str), Some("3"));
    }

    #[test]
    fn every_truncation_is_a_format_error() {
        let bytes = valid_file();
        for end in 0..bytes.len() {
            assert!(format_error(&bytes[..end]), "prefix of {end} bytes");
        }
    }

    #[test]
    fn corrupted_headers_never_panic() {
        let bytes = valid_file();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..3000 {
            let mut corrupt = bytes.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..corrupt.len());
                corrupt[at] = rng.random();
            }
            // Any outcome but a panic will do.
            let _ = decode(&corrupt, Path::new("x"));
        }
    }

    #[test]
    fn offsets_near_usize_max_are_a_format_error() {
        // Eight U8 tensors of 2^61 - 1 bytes each: offsets valid one by one,
        // but their end plus the header's length overflows a usize.
        let size: u64 = (1 << 61) - 1;
        let tensors: Vec<String> = (0..8u64)
            .map(|i| {
                format!(
                    r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
                    i * size,
                    (i + 1) * size
                )
            })
            .collect();
        let header = format!("{{{}}}", tensors.join(","));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        assert!(offsets_overflow(&bytes));
        assert!(format_error(&bytes));
    }

    #[test]
    fn digits_in_strings_are_not_offsets() {
        let header = r#"{"__metadata__":{"id":"99999999999999999999999"}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        assert!(!offsets_overflow(&bytes));
        let store = decode(&bytes, Path::new("x")).expect("a file with no tensors");
        assert!(store.is_empty());
        assert_eq!(store.metadata.len(), 1);
    }
}
