//! safetensors files: encoding and decoding a [`TensorStore`], the atomic
//! write (a synced temporary file renamed over the target), and the header
//! checks that keep a corrupt file from panicking the reader.

use std::borrow::Cow;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Writes `bytes` to a new temporary file next to `path`, syncs it, renames
/// it over `path` and syncs the folder. On failure the temporary file is
/// removed and `path` is untouched.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (temp, file) = create_temp(folder, path)?;
    let written = write_and_sync(file, bytes).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        // Best effort: the write already failed, and that is the error to report.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_folder(folder);
    Ok(())
}

/// Writes `bytes` to `file`, flushes them to disk and closes it.
fn write_and_sync(mut file: fs::File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
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
