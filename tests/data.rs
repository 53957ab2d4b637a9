//! Fashion-MNIST loading: the installed full set, the bundled subset, the
//! seeded split, and every kind of bad file, written small into a scratch
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use cnnc::data::fashion::{
    self, read_idx_images, read_idx_labels, DataError, Dataset, Source, Splits, CLASS_NAMES,
    SYSTEM_DIR,
};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-data-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An IDX file: the magic number, the dimensions, then `data`.
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

/// `count` 28×28 images, image `i` filled with the byte `i * 7 % 256`.
fn images(count: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..count)
        .flat_map(|i| std::iter::repeat_n((i * 7 % 256) as u8, 28 * 28))
        .collect();
    idx(IMAGES_MAGIC, &[count, 28, 28], &data)
}

/// Labels 0, 1, …, 9, 0, 1, … for `count` images.
fn labels(count: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
    idx(LABELS_MAGIC, &[count], &data)
}

/// Writes `bytes` gzip-compressed to `dir/name.gz`; returns its path.
fn write_gz(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(format!("{name}.gz"));
    std::fs::write(&path, gzip(bytes)).unwrap();
    path
}

/// A small well-formed data set in `dir`: `train` and `test` images.
fn write_set(dir: &Path, train: u32, test: u32) {
    write_gz(dir, "train-images-idx3-ubyte", &images(train));
    write_gz(dir, "train-labels-idx1-ubyte", &labels(train));
    write_gz(dir, "t10k-images-idx3-ubyte", &images(test));
    write_gz(dir, "t10k-labels-idx1-ubyte", &labels(test));
}

fn assert_well_formed(set: &Dataset) {
    assert_eq!(set.shape, [28, 28, 1]);
    assert_eq!(set.images.len(), set.len() * 28 * 28);
    assert_eq!(set.class_names, CLASS_NAMES);
    assert!(set.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert!(set.labels.iter().all(|&l| l < 10));
}

fn classes_present(set: &Dataset) -> usize {
    let mut seen = [false; 10];
    for &l in &set.labels {
        seen[l as usize] = true;
    }
    seen.iter().filter(|&&s| s).count()
}

/// Asserts that `error` names `path` in its message.
fn assert_names(error: &DataError, path: &Path) {
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
}

/// The environment variable that makes a missing full set a failure rather
/// than a skip. CI installs the set and sets it, so that there the test
/// below always runs; elsewhere the set is optional.
const REQUIRE_FASHION: &str = "CNNC_REQUIRE_FASHION";

/// Whether [`REQUIRE_FASHION`] is set to anything but empty or `0`.
fn full_set_required() -> bool {
    std::env::var(REQUIRE_FASHION).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// The installed full set's folder, or `None` after saying on stderr that
/// `test` is skipped and why; fails `test` instead when the set is required.
fn installed_full_set(test: &str) -> Option<&'static Path> {
    let dir = Path::new(SYSTEM_DIR);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        !full_set_required(),
        "{SYSTEM_DIR} is absent but {REQUIRE_FASHION} requires it \
         (apt-get install dataset-fashion-mnist)"
    );
    eprintln!(
        "skipped {test}: {SYSTEM_DIR} is absent (apt-get install dataset-fashion-mnist; \
         set {REQUIRE_FASHION}=1 to make this a failure)"
    );
    None
}

#[test]
fn the_installed_full_set_loads_and_splits_48_000_12_000() {
    let Some(dir) = installed_full_set("the_installed_full_set_loads_and_splits_48_000_12_000")
    else {
        return;
    };
    let splits = fashion::load(Some(dir), fashion::DEFAULT_VALIDATION, 1).unwrap();
    assert_eq!(splits.source, Source::Full(dir.to_path_buf()));
    assert_eq!(splits.source.note(), None);
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (48_000, 12_000, 10_000)
    );
    for set in [&splits.train, &splits.validation, &splits.test] {
        assert_well_formed(set);
        assert_eq!(classes_present(set), 10);
    }
    // Real images use the whole range, from background to full ink.
    let max = splits.test.images.iter().cloned().fold(0.0, f32::max);
    assert_eq!(max, 1.0);
}

#[test]
fn the_bundled_subset_loads_with_every_class() {
    let splits = fashion::load_from(Source::Bundled, fashion::DEFAULT_VALIDATION, 3).unwrap();
    assert_eq!(splits.source, Source::Bundled);
    assert!(splits
        .source
        .note()
        .unwrap()
        .contains("apt-get install dataset-fashion-mnist"));
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (6_400, 1_600, 2_000)
    );
    for set in [&splits.train, &splits.validation, &splits.test] {
        assert_well_formed(set);
        assert_eq!(classes_present(set), 10);
    }
}

#[test]
fn the_split_is_deterministic_per_seed_and_loses_no_image() {
    let dir = scratch("split");
    write_set(&dir, 100, 10);
    let load = |seed| fashion::load(Some(&dir), 20, seed).unwrap();
    let first = load(5);
    assert_eq!(first, load(5));
    let other: Splits = load(6);
    assert_ne!(first.validation.images, other.validation.images);
    assert_eq!(
        (first.train.len(), first.validation.len(), first.test.len()),
        (80, 20, 10)
    );
    // Image i is filled with i * 7 % 256 and labelled i % 10: every
    // training image lands in exactly one part, with its own label.
    let mut firsts: Vec<(u32, u32)> = [&first.train, &first.validation]
        .iter()
        .flat_map(|set| {
            (0..set.len()).map(|i| ((set.image(i)[0] * 255.0).round() as u32, set.labels[i]))
        })
        .collect();
    firsts.sort_unstable();
    let expected: Vec<(u32, u32)> = {
        let mut all: Vec<_> = (0..100).map(|i| (i * 7 % 256, i % 10)).collect();
        all.sort_unstable();
        all
    };
    assert_eq!(firsts, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_validation_set_as_large_as_the_training_set_is_an_error() {
    let dir = scratch("too-large");
    write_set(&dir, 10, 2);
    let error = fashion::load(Some(&dir), 10, 0).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::ValidationTooLarge {
                requested: 10,
                available: 10
            }
        ),
        "{error:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn uncompressed_files_are_read_too() {
    let dir = scratch("plain");
    let path = dir.join("images");
    std::fs::write(&path, images(3)).unwrap();
    let (pixels, count, rows, cols) = read_idx_images(&path).unwrap();
    assert_eq!((pixels.len(), count, rows, cols), (3 * 784, 3, 28, 28));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_file_in_the_data_dir_is_named() {
    let dir = scratch("missing");
    write_set(&dir, 10, 2);
    let labels = dir.join("t10k-labels-idx1-ubyte.gz");
    std::fs::remove_file(&labels).unwrap();
    let error = fashion::load(Some(&dir), 2, 0).unwrap_err();
    assert!(matches!(error, DataError::Read { .. }), "{error:?}");
    assert_names(&error, &labels);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_magic_number_is_an_error() {
    let dir = scratch("magic");
    // A label file where an image file should be.
    let path = write_gz(&dir, "images", &labels(4));
    let error = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::BadMagic {
                expected: IMAGES_MAGIC,
                found: LABELS_MAGIC,
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(&error, &path);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_header_is_an_error() {
    let dir = scratch("header");
    let path = write_gz(&dir, "images", &images(1)[..10]);
    let error = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::TruncatedHeader {
                expected: 16,
                found: 10,
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(&error, &path);
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let error = read_idx_labels(&empty).unwrap_err();
    assert!(
        matches!(error, DataError::TruncatedHeader { found: 0, .. }),
        "{error:?}"
    );
    assert_names(&error, &empty);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_data_is_an_error() {
    let dir = scratch("data");
    let whole = images(3);
    let path = write_gz(&dir, "images", &whole[..whole.len() - 1]);
    let error = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::TruncatedData {
                expected: 2352,
                found: 2351,
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(&error, &path);
    let labels_path = write_gz(&dir, "labels", &idx(LABELS_MAGIC, &[5], &[1, 2]));
    let error = read_idx_labels(&labels_path).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::TruncatedData {
                expected: 5,
                found: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(&error, &labels_path);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_header_claiming_absurd_sizes_is_an_error_not_an_allocation() {
    // 2^32 - 1 images of 28×28 would take 24.5 TiB as float32 (counted
    // twice for the split): more than any machine, refused unread.
    let dir = scratch("absurd");
    let path = write_gz(
        &dir,
        "images",
        &idx(IMAGES_MAGIC, &[u32::MAX, 28, 28], &[0; 784]),
    );
    let error = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(error, DataError::OverCap { need, .. } if need == u64::from(u32::MAX) * 784 * 8),
        "{error:?}"
    );
    assert_names(&error, &path);
    // A million labels fit any machine: the three bytes there are read,
    // and no more is allocated than they take.
    let labels_path = dir.join("labels");
    std::fs::write(&labels_path, idx(LABELS_MAGIC, &[1_000_000], &[1, 2, 3])).unwrap();
    let error = read_idx_labels(&labels_path).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::TruncatedData {
                expected: 1_000_000,
                found: 3,
                ..
            }
        ),
        "{error:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_label_count_unlike_the_image_count_is_an_error() {
    let dir = scratch("count");
    write_set(&dir, 10, 3);
    let labels = write_gz(&dir, "t10k-labels-idx1-ubyte", &self::labels(2));
    let error = fashion::load(Some(&dir), 2, 0).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::CountMismatch {
                image_count: 3,
                label_count: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(&error, &labels);
    assert_names(&error, &dir.join("t10k-images-idx3-ubyte.gz"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_label_of_10_or_more_is_an_error() {
    let dir = scratch("label");
    write_set(&dir, 10, 3);
    let labels = write_gz(
        &dir,
        "train-labels-idx1-ubyte",
        &idx(LABELS_MAGIC, &[10], &[0, 1, 2, 3, 4, 5, 6, 10, 8, 9]),
    );
    let error = fashion::load(Some(&dir), 2, 0).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::LabelOutOfRange {
                index: 7,
                label: 10,
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(&error, &labels);
    let message = error.to_string().replace(&dir.display().to_string(), "DIR");
    insta::assert_snapshot!("idx_label_out_of_range", message);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn images_not_28_by_28_are_an_error() {
    let dir = scratch("size");
    write_set(&dir, 10, 3);
    let images = write_gz(
        &dir,
        "t10k-images-idx3-ubyte",
        &idx(IMAGES_MAGIC, &[3, 32, 32], &[0; 3 * 32 * 32]),
    );
    let error = fashion::load(Some(&dir), 2, 0).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::ImageSize {
                rows: 32,
                cols: 32,
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(&error, &images);
    std::fs::remove_dir_all(&dir).unwrap();
}
