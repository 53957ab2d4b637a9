//! Fashion-MNIST: greyscale 28×28 images of clothing in ten classes, stored
//! as (usually gzip-compressed) IDX files.
//!
//! [`locate`] finds the full set: `--data DIR`, then `$CNNC_DATA/fashion-mnist`,
//! then [`SYSTEM_DIR`], where Debian's `dataset-fashion-mnist` installs it.
//! When none holds it, [`load`] falls back to the 10,000 test images embedded
//! in cnnc (from `data/fashion-mnist-subset/`), and says so in
//! [`Splits::source`] rather than printing. [`read_idx_images`] and
//! [`read_idx_labels`] read one IDX file, checking every size its header
//! declares against the bytes actually there before trusting it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

pub use super::{Dataset, Source, Splits};

/// The names of the ten classes, indexed by label, as the data set defines them.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The height and width of every image, in pixels.
pub const IMAGE_SIZE: usize = 28;

/// Where Debian's package `dataset-fashion-mnist` installs the full set.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The number of images in the full set's training files.
pub const FULL_TRAIN_IMAGES: usize = 60_000;

/// The usual number of validation images held out of the full training set
/// (leaving 48,000 to train on).
pub const DEFAULT_VALIDATION: usize = 12_000;

/// The bundled subset's fixed split: image `i` of the embedded 10,000 goes
/// to the test set when `i % BUNDLED_TEST_EVERY == BUNDLED_TEST_EVERY - 1`,
/// and to the training set otherwise (8,000 train, 2,000 test). Taking every
/// fifth image keeps the classes as balanced as the file is.
pub const BUNDLED_TEST_EVERY: usize = 5;

impl Source {
    /// For [`Source::Bundled`], the one line the CLI should print to say so
    /// and how to get the full set; `None` for the full set.
    pub fn note(&self) -> Option<&'static str> {
        match self {
            Source::Full(_) | Source::Folder(_) | Source::Masks(_) | Source::Shapes => None,
            Source::Bundled => Some(
                "using the bundled subset of Fashion-MNIST (10,000 images: 8,000 train, 2,000 test); \
                 install the full set with `apt-get install dataset-fashion-mnist` or pass --data DIR",
            ),
        }
    }
}

/// Finds the full set: `data_dir` when given (without checking it, so that
/// [`load`] reports what is wrong there), otherwise the first of
/// `$CNNC_DATA/fashion-mnist` and [`SYSTEM_DIR`] that holds all four files
/// (each `NAME.gz` or uncompressed `NAME`), otherwise [`Source::Bundled`].
pub fn locate(data_dir: Option<&Path>) -> Source {
    let cnnc_data = std::env::var_os("CNNC_DATA");
    locate_in(data_dir, cnnc_data.as_deref(), Path::new(SYSTEM_DIR))
}

/// Locates the data set (see [`locate`]), reads it and splits it.
///
/// From the full set: `validation` images, chosen by a shuffle seeded with
/// `seed`, are held out of the training files (the same seed always holds
/// out the same images); the rest are the training set; the test files are
/// the test set. Both parts keep the files' order.
///
/// From the bundled subset: the fixed [`BUNDLED_TEST_EVERY`] rule makes the
/// 8,000 training and 2,000 test images, and the validation images are held
/// out of those 8,000 as above, their number scaled from the full set's
/// 60,000 (the default 12,000 holds out 1,600), so that one default fits both.
///
/// Fails when a file cannot be read or is not valid (see [`DataError`]), and
/// with [`DataError::ValidationTooLarge`] when `validation` would leave no
/// training image. Never prints.
pub fn load(data_dir: Option<&Path>, validation: usize, seed: u64) -> Result<Splits, DataError> {
    load_from(locate(data_dir), validation, seed)
}

/// Like [`load`], from a source already chosen (by [`locate`], or
/// [`Source::Bundled`] to use the embedded subset even when the full set is
/// installed).
pub fn load_from(source: Source, validation: usize, seed: u64) -> Result<Splits, DataError> {
    let (train, validation, test) = match &source {
        // A folder named as an image folder is read for IDX files all the same.
        Source::Full(dir) | Source::Folder(dir) | Source::Masks(dir) => {
            let train = read_pair(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
            let test = read_pair(dir, TEST_IMAGES, TEST_LABELS)?;
            let (train, validation) = hold_out(&train, validation, seed)?;
            (train, validation, test)
        }
        // Only `locate`'s sources are Fashion-MNIST's; the generated
        // segmentation set is not, and reads as the bundled subset.
        Source::Bundled | Source::Shapes => {
            let all = read_bundled()?;
            let (train, test) = split_bundled(&all);
            let scaled = scale_validation(validation, train.len())?;
            let (train, validation) = hold_out(&train, scaled, seed)?;
            (train, validation, test)
        }
    };
    Ok(Splits {
        train,
        validation,
        test,
        source,
    })
}

/// Reads an IDX image file (magic 0x00000803: unsigned bytes, three
/// dimensions), gzip-compressed or not, and returns its pixels (row-major)
/// with the number of images, rows and columns.
///
/// Fails with [`DataError::Read`] or [`DataError::Gzip`] when the file
/// cannot be read or decompressed, [`DataError::BadMagic`],
/// [`DataError::TruncatedHeader`], [`DataError::TruncatedData`] when it
/// holds fewer bytes than its header declares (however absurd the
/// declaration: nothing is allocated from it), and [`DataError::TrailingData`]
/// when it holds more.
pub fn read_idx_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    let file = open(path)?;
    read_images_from(file, path)
}

/// Reads an IDX label file (magic 0x00000801: unsigned bytes, one
/// dimension), gzip-compressed or not, and returns its labels. Fails as
/// [`read_idx_images`] does; the range of the labels is checked by [`load`].
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let file = open(path)?;
    read_labels_from(file, path)
}

/// [`read_idx_images`] of a file already in memory; `path` only names it in
/// errors. The fuzz targets call it, so that no input goes through a
/// temporary file.
pub fn read_idx_images_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    read_images_from(bytes, path)
}

/// [`read_idx_labels`] of a file already in memory; `path` only names it in
/// errors.
pub fn read_idx_labels_bytes(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    read_labels_from(bytes, path)
}

/// Why a data set could not be read. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read data file `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file starts like gzip but does not decompress (corrupt or truncated).
    #[error("`{}` is not a valid gzip file (corrupt or truncated): {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decompressor said.
        source: io::Error,
    },
    /// The file does not start with the IDX magic number expected.
    #[error(
        "`{}` is not an IDX {} file: its magic number is {found:#010x}, expected {expected:#010x}",
        path.display(),
        idx_kind(*expected)
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number expected (0x00000803 images, 0x00000801 labels).
        expected: u32,
        /// The first four bytes of the (decompressed) file, big-endian.
        found: u32,
    },
    /// The file ends inside its header.
    #[error("`{}` is truncated: its header should be {expected} bytes, but the file holds only {found}", path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// The header's length in bytes.
        expected: usize,
        /// The bytes the file holds.
        found: usize,
    },
    /// The file holds fewer bytes of data than its header declares.
    #[error(
        "`{}` is truncated: its header declares dimensions {} ({expected} bytes of data), but the file holds only {found}",
        path.display(),
        dims_text(dims)
    )]
    TruncatedData {
        /// The file.
        path: PathBuf,
        /// The dimensions its header declares.
        dims: Vec<u32>,
        /// The bytes of data they call for (up to 2^96).
        expected: u128,
        /// The bytes of data the file holds after its header.
        found: usize,
    },
    /// The data the header declares, as 32-bit values, needs more than the
    /// memory cap: refused before any of it is read.
    #[error(
        "`{}` declares dimensions {}: {} as 32-bit values, and twice that ({}) while the set is \
         split, more than {cap} ({})",
        path.display(),
        dims_text(dims),
        crate::limits::bytes(*need / 2),
        crate::limits::bytes(*need),
        cap.help()
    )]
    OverCap {
        /// The file.
        path: PathBuf,
        /// The dimensions its header declares.
        dims: Vec<u32>,
        /// The bytes reading it needs.
        need: u64,
        /// The cap.
        cap: crate::limits::MemoryCap,
    },
    /// The memory cap could not be read.
    #[error(transparent)]
    Cap(#[from] crate::limits::CapError),
    /// The file holds more bytes than its header declares.
    #[error(
        "`{}` holds more data than its header declares (dimensions {}, {expected} bytes)",
        path.display(),
        dims_text(dims)
    )]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// The dimensions its header declares.
        dims: Vec<u32>,
        /// The bytes of data they call for.
        expected: usize,
    },
    /// The images are not 28×28.
    #[error("`{}` holds images of {rows}×{cols} pixels, but Fashion-MNIST images are 28×28", path.display())]
    ImageSize {
        /// The image file.
        path: PathBuf,
        /// The rows its header declares.
        rows: usize,
        /// The columns its header declares.
        cols: usize,
    },
    /// The label file does not hold one label per image.
    #[error(
        "`{}` holds {label_count} labels, but `{}` holds {image_count} images",
        labels.display(),
        images.display()
    )]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// The images it holds.
        image_count: usize,
        /// The labels it holds.
        label_count: usize,
    },
    /// A label is not a class of the data set: found as the file is read,
    /// before anything indexes by it.
    #[error(
        "`{}`: received a label value of {label} (image {index}), which is outside the valid range of [0, {classes}) of Fashion-MNIST's {classes} classes",
        path.display(),
        classes = CLASS_NAMES.len()
    )]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// The image's index, from 0.
        index: usize,
        /// Its label.
        label: u8,
    },
    /// The validation set asked for would leave no training image.
    #[error("cannot hold out {requested} validation images from a training set of {available}")]
    ValidationTooLarge {
        /// The validation images asked for.
        requested: usize,
        /// The training images there are (60,000 for the bundled subset,
        /// whose validation count is scaled from the full set's).
        available: usize,
    },
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The repository folder the embedded subset was copied from; errors in
/// the embedded bytes name these files.
const BUNDLED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist-subset");

// Embedded, not read from BUNDLED_DIR at run time, so that a binary
// installed with `cargo install` still has them.
static BUNDLED_IMAGES: &[u8] =
    include_bytes!("../../data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz");
static BUNDLED_LABELS: &[u8] =
    include_bytes!("../../data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz");

/// [`locate`] with its environment passed in, so that tests need not set
/// process-wide variables.
fn locate_in(data_dir: Option<&Path>, cnnc_data: Option<&OsStr>, system: &Path) -> Source {
    if let Some(dir) = data_dir {
        return Source::Full(dir.to_path_buf());
    }
    let from_env = cnnc_data
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join("fashion-mnist"));
    from_env
        .into_iter()
        .chain([system.to_path_buf()])
        .find(|dir| holds_full_set(dir))
        .map_or(Source::Bundled, Source::Full)
}

fn holds_full_set(dir: &Path) -> bool {
    [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
        .iter()
        .all(|name| file_in(dir, name).is_file())
}

/// `dir/NAME.gz` when it exists, else `dir/NAME` when that exists, else
/// `dir/NAME.gz` (the usual name, for the error saying it is missing).
fn file_in(dir: &Path, name: &str) -> PathBuf {
    let compressed = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    if !compressed.is_file() && plain.is_file() {
        plain
    } else {
        compressed
    }
}

/// Reads one image file and its label file from `dir` into a [`Dataset`].
fn read_pair(dir: &Path, images: &str, labels: &str) -> Result<Dataset, DataError> {
    let images_path = file_in(dir, images);
    let labels_path = file_in(dir, labels);
    let pixels = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    to_dataset(pixels, &images_path, labels, &labels_path)
}

fn read_bundled() -> Result<Dataset, DataError> {
    let images_path = Path::new(BUNDLED_DIR).join(format!("{TEST_IMAGES}.gz"));
    let labels_path = Path::new(BUNDLED_DIR).join(format!("{TEST_LABELS}.gz"));
    let pixels = read_images_from(BUNDLED_IMAGES, &images_path)?;
    let labels = read_labels_from(BUNDLED_LABELS, &labels_path)?;
    to_dataset(pixels, &images_path, labels, &labels_path)
}

/// Checks the images' size, the labels' count and range, and scales the pixels.
fn to_dataset(
    (pixels, count, rows, cols): (Vec<u8>, usize, usize, usize),
    images_path: &Path,
    labels: Vec<u8>,
    labels_path: &Path,
) -> Result<Dataset, DataError> {
    if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE) {
        return Err(DataError::ImageSize {
            path: images_path.to_path_buf(),
            rows,
            cols,
        });
    }
    if labels.len() != count {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            image_count: count,
            label_count: labels.len(),
        });
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &label)| usize::from(label) >= CLASS_NAMES.len())
    {
        return Err(DataError::LabelOutOfRange {
            path: labels_path.to_path_buf(),
            index,
            label,
        });
    }
    Ok(Dataset {
        images: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: labels.into_iter().map(u32::from).collect(),
        shape: [IMAGE_SIZE, IMAGE_SIZE, 1],
        label_shape: Vec::new(),
        class_names: CLASS_NAMES.iter().map(|name| name.to_string()).collect(),
    })
}

/// Splits the embedded subset into training and test sets by the
/// [`BUNDLED_TEST_EVERY`] rule.
fn split_bundled(all: &Dataset) -> (Dataset, Dataset) {
    let (test, train): (Vec<usize>, Vec<usize>) =
        (0..all.len()).partition(|i| i % BUNDLED_TEST_EVERY == BUNDLED_TEST_EVERY - 1);
    (all.select(&train), all.select(&test))
}

/// The validation count for a bundled training set of `available` images:
/// `validation` out of the full set's 60,000, scaled and rounded.
pub(crate) fn scale_validation(validation: usize, available: usize) -> Result<usize, DataError> {
    if validation >= FULL_TRAIN_IMAGES {
        return Err(DataError::ValidationTooLarge {
            requested: validation,
            available: FULL_TRAIN_IMAGES,
        });
    }
    // Both factors are below 60,000 here, so the product cannot overflow.
    Ok((validation * available + FULL_TRAIN_IMAGES / 2) / FULL_TRAIN_IMAGES)
}

/// Holds `validation` images, chosen by a shuffle seeded with `seed`, out
/// of `train`; returns (the rest, the held-out), each in `train`'s order.
fn hold_out(
    train: &Dataset,
    validation: usize,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    if validation >= train.len() {
        return Err(DataError::ValidationTooLarge {
            requested: validation,
            available: train.len(),
        });
    }
    Ok(train.hold_out(validation, seed))
}

fn open(path: &Path) -> Result<BufReader<File>, DataError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_images_from(
    reader: impl BufRead,
    path: &Path,
) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    let cap = crate::limits::MemoryCap::current()?;
    let (dims, data) = read_idx(reader, path, IMAGES_MAGIC, cap)?;
    // read_idx has checked that `data` holds the product of the dimensions,
    // so each of them fits in usize.
    let [count, rows, cols] = [dims[0], dims[1], dims[2]].map(|d| d as usize);
    Ok((data, count, rows, cols))
}

fn read_labels_from(reader: impl BufRead, path: &Path) -> Result<Vec<u8>, DataError> {
    let cap = crate::limits::MemoryCap::current()?;
    read_idx(reader, path, LABELS_MAGIC, cap).map(|(_, data)| data)
}

/// Reads an IDX file of unsigned bytes whose magic number must be `magic`,
/// decompressing it first when it starts like gzip; returns its dimensions
/// and its data. A header declaring more than `cap` allows is refused
/// before its data is read.
fn read_idx(
    mut reader: impl BufRead,
    path: &Path,
    magic: u32,
    cap: crate::limits::MemoryCap,
) -> Result<(Vec<u32>, Vec<u8>), DataError> {
    let start = reader.fill_buf().map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if start.starts_with(&GZIP_MAGIC) {
        let mut idx = IdxReader::new(MultiGzDecoder::new(reader), path, true);
        idx.read(magic, cap)
    } else {
        let mut idx = IdxReader::new(reader, path, false);
        idx.read(magic, cap)
    }
}

/// The (decompressed) bytes of one IDX file, with what its errors need.
struct IdxReader<'a, R> {
    inner: R,
    path: &'a Path,
    compressed: bool,
}

impl<'a, R: Read> IdxReader<'a, R> {
    fn new(inner: R, path: &'a Path, compressed: bool) -> Self {
        IdxReader {
            inner,
            path,
            compressed,
        }
    }

    fn read(
        &mut self,
        magic: u32,
        cap: crate::limits::MemoryCap,
    ) -> Result<(Vec<u32>, Vec<u8>), DataError> {
        let dims = self.read_header(magic)?;
        let expected: u128 = dims.iter().map(|&d| u128::from(d)).product();
        self.check_cap(&dims, expected, cap)?;
        // Read at most one byte more than declared, so that neither an
        // absurd header nor a gzip bomb makes us hold more than the file
        // has or the header promises; the buffer grows with the bytes read.
        let limit = u64::try_from(expected)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut data = Vec::new();
        (&mut self.inner)
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|source| self.error(source))?;
        if (data.len() as u128) < expected {
            return Err(DataError::TruncatedData {
                path: self.path.to_path_buf(),
                dims,
                expected,
                found: data.len(),
            });
        }
        if data.len() as u128 > expected {
            return Err(DataError::TrailingData {
                path: self.path.to_path_buf(),
                dims,
                // Below data.len(), so it fits in usize.
                expected: expected as usize,
            });
        }
        Ok((dims, data))
    }

    /// Refuses a file whose `expected` values, each becoming a 32-bit
    /// number (a float32 pixel, a u32 label) and counted twice because
    /// splitting the set copies it, need more than the memory cap. What
    /// passes bounds the read too: at most `expected` + 1 bytes are read.
    fn check_cap(
        &self,
        dims: &[u32],
        expected: u128,
        cap: crate::limits::MemoryCap,
    ) -> Result<(), DataError> {
        let need = u64::try_from(expected.saturating_mul(8)).unwrap_or(u64::MAX);
        if cap.allows(need) {
            return Ok(());
        }
        Err(DataError::OverCap {
            path: self.path.to_path_buf(),
            dims: dims.to_vec(),
            need,
            cap,
        })
    }

    /// Reads the magic number and the dimensions (as many as the magic
    /// number's low byte says: ours, not the file's).
    fn read_header(&mut self, magic: u32) -> Result<Vec<u32>, DataError> {
        let header_len = 4 + 4 * (magic & 0xff) as usize;
        let mut header = vec![0; header_len];
        let found = self.read_up_to(&mut header)?;
        let truncated = || DataError::TruncatedHeader {
            path: self.path.to_path_buf(),
            expected: header_len,
            found,
        };
        if found < 4 {
            return Err(truncated());
        }
        let found_magic = be_u32(&header[..4]);
        if found_magic != magic {
            return Err(DataError::BadMagic {
                path: self.path.to_path_buf(),
                expected: magic,
                found: found_magic,
            });
        }
        if found < header_len {
            return Err(truncated());
        }
        Ok(header[4..].chunks_exact(4).map(be_u32).collect())
    }

    /// Fills `buf` as far as the file allows; returns the bytes read.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(self.error(source)),
            }
        }
        Ok(filled)
    }

    fn error(&self, source: io::Error) -> DataError {
        let path = self.path.to_path_buf();
        if self.compressed {
            DataError::Gzip { path, source }
        } else {
            DataError::Read { path, source }
        }
    }
}

/// `bytes` (four of them) as a big-endian u32.
fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn idx_kind(magic: u32) -> &'static str {
    if magic == IMAGES_MAGIC {
        "image"
    } else {
        "label"
    }
}

fn dims_text(dims: &[u32]) -> String {
    let dims: Vec<String> = dims.iter().map(u32::to_string).collect();
    dims.join("×")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn path() -> &'static Path {
        Path::new("mem/images.idx")
    }

    #[test]
    fn reads_plain_and_gzipped_idx_alike() {
        let bytes = idx(IMAGES_MAGIC, &[2, 1, 3], &[0, 1, 2, 3, 4, 255]);
        let plain = read_images_from(&bytes[..], path()).unwrap();
        let compressed = read_images_from(&gzip(&bytes)[..], path()).unwrap();
        assert_eq!(plain, (vec![0, 1, 2, 3, 4, 255], 2, 1, 3));
        assert_eq!(compressed, plain);
    }

    fn cap(bytes: u64) -> crate::limits::MemoryCap {
        crate::limits::MemoryCap {
            bytes,
            source: crate::limits::CapSource::Variable,
        }
    }

    #[test]
    fn an_absurd_header_is_truncated_data_not_an_allocation() {
        let bytes = idx(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[7; 10]);
        match read_idx(&bytes[..], path(), IMAGES_MAGIC, cap(u64::MAX)) {
            Err(DataError::TruncatedData {
                expected, found, ..
            }) => {
                assert_eq!(expected, u128::from(u32::MAX).pow(3));
                assert_eq!(found, 10);
            }
            other => panic!("expected TruncatedData, got {other:?}"),
        }
    }

    #[test]
    fn a_header_declaring_more_than_the_cap_is_refused_before_reading() {
        // 2^32 - 1 images: 3.4 TB of pixels, 27 TB as float32 counted twice.
        let bytes = idx(IMAGES_MAGIC, &[u32::MAX, 28, 28], &[7; 10]);
        let error = read_idx(&bytes[..], path(), IMAGES_MAGIC, cap(8 << 30)).unwrap_err();
        match &error {
            DataError::OverCap { dims, need, .. } => {
                assert_eq!(dims, &[u32::MAX, 28, 28]);
                assert_eq!(*need, u64::from(u32::MAX) * 784 * 8);
            }
            other => panic!("expected OverCap, got {other:?}"),
        }
        assert_eq!(
            error.to_string(),
            "`mem/images.idx` declares dimensions 4294967295×28×28: 12.25 TiB as 32-bit values, \
             and twice that (24.50 TiB) while the set is split, more than the cap of 8.00 GiB set \
             by CNNC_MAX_MEMORY (raise CNNC_MAX_MEMORY if the machine has the memory)"
        );
        // Just under the cap, the same header reads on (and finds the data short).
        let under = read_idx(
            &bytes[..],
            path(),
            IMAGES_MAGIC,
            cap(u64::from(u32::MAX) * 784 * 8),
        );
        assert!(
            matches!(under, Err(DataError::TruncatedData { found: 10, .. })),
            "{under:?}"
        );
    }

    #[test]
    fn a_truncated_gzip_stream_is_a_gzip_error() {
        let bytes = gzip(&idx(LABELS_MAGIC, &[1000], &[3; 1000]));
        let cut = &bytes[..bytes.len() / 2];
        let error = read_labels_from(cut, path()).unwrap_err();
        assert!(matches!(error, DataError::Gzip { .. }), "{error:?}");
        assert!(error.to_string().contains("mem/images.idx"), "{error}");
    }

    #[test]
    fn extra_bytes_after_the_data_are_an_error() {
        let bytes = idx(LABELS_MAGIC, &[2], &[1, 2, 3]);
        let error = read_labels_from(&bytes[..], path()).unwrap_err();
        assert!(
            matches!(error, DataError::TrailingData { expected: 2, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn locate_prefers_the_argument_then_cnnc_data_then_the_system_dir() {
        let root = std::env::temp_dir().join(format!("cnnc-locate-{}", std::process::id()));
        let env_dir = root.join("env");
        let system = root.join("system");
        for dir in [env_dir.join("fashion-mnist"), system.clone()] {
            std::fs::create_dir_all(&dir).unwrap();
            for name in [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS] {
                std::fs::write(dir.join(name), b"").unwrap();
            }
        }
        let given = root.join("given");
        let empty = root.join("nothing");
        assert_eq!(
            locate_in(Some(&given), Some(env_dir.as_os_str()), &system),
            Source::Full(given.clone())
        );
        assert_eq!(
            locate_in(None, Some(env_dir.as_os_str()), &system),
            Source::Full(env_dir.join("fashion-mnist"))
        );
        assert_eq!(
            locate_in(None, Some(empty.as_os_str()), &system),
            Source::Full(system.clone())
        );
        assert_eq!(locate_in(None, None, &empty), Source::Bundled);
        // A directory missing one of the four files does not count.
        std::fs::remove_file(system.join(TEST_LABELS)).unwrap();
        assert_eq!(locate_in(None, None, &system), Source::Bundled);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_bundled_split_takes_every_fifth_image_for_test() {
        let all = read_bundled().unwrap();
        let (train, test) = split_bundled(&all);
        assert_eq!((train.len(), test.len()), (8_000, 2_000));
        assert_eq!(test.image(0), all.image(4));
        assert_eq!(train.image(4), all.image(5));
        assert_eq!(test.labels[1], all.labels[9]);
    }

    #[test]
    fn validation_counts_scale_from_the_full_set() {
        assert_eq!(scale_validation(DEFAULT_VALIDATION, 8_000).unwrap(), 1_600);
        assert_eq!(scale_validation(0, 8_000).unwrap(), 0);
        assert!(matches!(
            scale_validation(60_000, 8_000),
            Err(DataError::ValidationTooLarge {
                requested: 60_000,
                available: 60_000
            })
        ));
    }
}
