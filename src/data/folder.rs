//! A data set of one's own: a folder of PNG and JPEG images with one
//! sub-folder per class, as Keras' `image_dataset_from_directory` reads it.
//!
//! ```text
//! DIR/                     or    DIR/train/CLASS/*.png   DIR/test/CLASS/*.png
//!   cat/  a.png b.jpg …
//!   dog/  c.jpeg …
//! ```
//!
//! The classes are the sub-folders, sorted by name; their names are the
//! class names. With `train/` and `test/` sub-folders, those are the
//! training and test sets (with the same classes); otherwise a fixed fifth
//! of each class, the same whatever the training seed, is the test set.
//! Files of other kinds are skipped, so that a stray `README` or
//! `.DS_Store` is no error. [`read_image`] converts one file to a model's
//! input; [`load`] reads a whole folder.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use rayon::prelude::*;
use thiserror::Error;

use super::{Dataset, Source, Splits};
use crate::limits::{bytes, CapError, MemoryCap};

/// How images become a model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    /// The model's input: `[height, width, channels]`, channels 1 (grey) or 3 (RGB).
    pub shape: [usize; 3],
    /// Resize images of another size and convert colour to grey (or grey
    /// to colour) to fit `shape`; otherwise such an image is an error.
    pub convert: bool,
}

/// What is wrong with a folder or an image.
#[derive(Debug, Error)]
pub enum FolderError {
    /// A folder or file could not be read.
    #[error("cannot read `{}`: {message}", path.display())]
    Read {
        /// The folder or file.
        path: PathBuf,
        /// What the system said.
        message: String,
    },
    /// A file is not an image cnnc can decode.
    #[error("`{}` is not a PNG or JPEG image cnnc can read: {message}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// An image would take more memory decoded than one image may.
    #[error(
        "`{}` is {width}x{height} pixels, {} decoded, more than the {} one image may take: \
         shrink it before reading it",
        path.display(),
        bytes(*.decoded),
        bytes(*.limit)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its width in pixels, as its header declares it.
        width: u32,
        /// Its height in pixels.
        height: u32,
        /// The bytes it takes decoded.
        decoded: u64,
        /// The most one image may take ([`decode_limit`]).
        limit: u64,
    },
    /// A folder's images, as float32, need more than the memory cap.
    #[error(
        "`{}` holds {images} images of {}x{}x{}: {} as float32, and twice that ({}) while they \
         are split into sets, more than {cap} ({})",
        dir.display(),
        shape[0],
        shape[1],
        shape[2],
        bytes(*.need / 2),
        bytes(*.need),
        .cap.help()
    )]
    OverCap {
        /// The folder.
        dir: PathBuf,
        /// The images in it.
        images: usize,
        /// The shape each becomes.
        shape: [usize; 3],
        /// The bytes reading them needs.
        need: u64,
        /// The cap.
        cap: MemoryCap,
    },
    /// The memory cap could not be read.
    #[error(transparent)]
    Cap(#[from] CapError),
    /// An image's size or colour does not fit the model's input.
    #[error(
        "`{}` is {found}, but the model takes {expected}; pass --resize to resize and convert images",
        path.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The image, e.g. `640x427 RGB`.
        found: String,
        /// The model's input, e.g. `28x28 grey`.
        expected: String,
    },
    /// The model's input is not an image of 1 or 3 channels.
    #[error("the model's input has {channels} channels; images give 1 (grey) or 3 (RGB)")]
    Channels {
        /// The channels of the model's input.
        channels: usize,
    },
    /// The folder has no class sub-folder.
    #[error("`{}` has no sub-folders: put the images of each class in a sub-folder named after it", dir.display())]
    NoClasses {
        /// The folder.
        dir: PathBuf,
    },
    /// A class folder holds no image.
    #[error("class folder `{}` holds no PNG or JPEG image", dir.display())]
    EmptyClass {
        /// The folder.
        dir: PathBuf,
    },
    /// The test set's classes are not the training set's.
    #[error("`{}` has the classes [{}], but `{}` has [{}]: they must be the same", train_dir.display(), train.join(", "), test_dir.display(), test.join(", "))]
    TestClasses {
        /// The training folder.
        train_dir: PathBuf,
        /// Its classes.
        train: Vec<String>,
        /// The test folder.
        test_dir: PathBuf,
        /// Its classes.
        test: Vec<String>,
    },
    /// A segmentation set's image has no mask of the same name.
    #[error("`{}` has no mask: expected `{}` (a greyscale PNG of class indices, the image's size)", image.display(), expected.display())]
    NoMask {
        /// The image.
        image: PathBuf,
        /// The mask looked for.
        expected: PathBuf,
    },
    /// A mask is not a greyscale image.
    #[error("mask `{}` is {found}; a mask must be a greyscale PNG whose pixel values are class indices (8 or 16 bits)", path.display())]
    MaskColour {
        /// The mask.
        path: PathBuf,
        /// Its colour type, e.g. `Rgb8`.
        found: String,
    },
    /// A mask's size differs from its image's.
    #[error("mask `{}` is {found}, but its image `{}` is {expected}: a mask has its image's size", mask.display(), image.display())]
    MaskSize {
        /// The mask.
        mask: PathBuf,
        /// The image.
        image: PathBuf,
        /// The mask's `WIDTHxHEIGHT`.
        found: String,
        /// The image's.
        expected: String,
    },
    /// A mask's pixel is not one of the classes.
    #[error("mask `{}` has the value {value} at x {x}, y {y}, but `{}` names {classes} classes: every value must be a class index below {classes}", path.display(), names.display())]
    MaskClass {
        /// The mask.
        path: PathBuf,
        /// The value.
        value: u32,
        /// Its column.
        x: usize,
        /// Its row.
        y: usize,
        /// The classes.
        classes: usize,
        /// The file naming the classes.
        names: PathBuf,
    },
    /// A segmentation folder's `images/` holds no image.
    #[error("`{}` holds no PNG or JPEG image", dir.display())]
    NoImages {
        /// The folder.
        dir: PathBuf,
    },
    /// A segmentation set's `classes.txt` names no class, or more than masks can index.
    #[error("`{}` {problem}: give one class name per line, the name of class 0 first", path.display())]
    ClassNames {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The validation set asked for would leave no training image.
    #[error("cannot hold out {requested} validation images from a training set of {available}")]
    ValidationTooLarge {
        /// The validation images asked for.
        requested: usize,
        /// The training images there are.
        available: usize,
    },
}

/// The share of the images of a folder without `train/` and `test/` that
/// is held out as its test set: one in [`TEST_EVERY`].
pub const TEST_EVERY: usize = 5;

/// The default share of the training images held out for validation: one
/// in [`VALIDATION_EVERY`], as Fashion-MNIST's 12,000 of 60,000.
pub const VALIDATION_EVERY: usize = 5;

/// The seed of the test split, fixed so that changing the training seed
/// never moves images between the training and the test set.
const TEST_SPLIT_SEED: u64 = 0x7e57;

/// Reads the folder `dir` (see the module's documentation) into training,
/// validation and test sets, each image converted by `conversion`.
///
/// `validation` training images (by default a fifth of them), chosen by a
/// shuffle seeded with `seed`, are held out as the validation set.
pub fn load(
    dir: &Path,
    conversion: Conversion,
    validation: Option<usize>,
    seed: u64,
) -> Result<Splits, FolderError> {
    check_channels(conversion)?;
    let read = |folder: &Path| read_classes(folder, conversion);
    let join = |(train_dir, train): (PathBuf, Dataset), (test_dir, test): (PathBuf, Dataset)| {
        if train.class_names != test.class_names {
            return Err(FolderError::TestClasses {
                train_dir,
                train: train.class_names,
                test_dir,
                test: test.class_names,
            });
        }
        Ok((train, test))
    };
    let source = Source::Folder(dir.to_path_buf());
    split(dir, read, join, (validation, seed), source)
}

/// The training, validation and test sets of the data set in `dir`, each
/// folder of it read by `read`: `dir/train` and `dir/test` when `dir` has
/// both (`join` checks that they agree), else a fixed fifth of `dir` as
/// the test set, the same whatever the training seed. `validation`
/// training images (by default a fifth of them), chosen by a shuffle
/// seeded with `seed`, are held out as the validation set. `source` says
/// where they came from.
pub(super) fn split(
    dir: &Path,
    read: impl Fn(&Path) -> Result<Dataset, FolderError>,
    join: impl FnOnce((PathBuf, Dataset), (PathBuf, Dataset)) -> Result<(Dataset, Dataset), FolderError>,
    (validation, seed): (Option<usize>, u64),
    source: Source,
) -> Result<Splits, FolderError> {
    let (train, test) = if let Some((train_dir, test_dir)) = split_dirs(dir) {
        let (train, test) = (read(&train_dir)?, read(&test_dir)?);
        join((train_dir, train), (test_dir, test))?
    } else {
        let all = read(dir)?;
        all.hold_out(all.len() / TEST_EVERY, TEST_SPLIT_SEED)
    };
    let held = validation.unwrap_or(train.len() / VALIDATION_EVERY);
    if held >= train.len() {
        return Err(FolderError::ValidationTooLarge {
            requested: held,
            available: train.len(),
        });
    }
    let (train, validation) = train.hold_out(held, seed);
    Ok(Splits {
        train,
        validation,
        test,
        source,
    })
}

/// The `[height, width, channels]` of the first image [`load`] would read
/// from `dir` (channels 3 when it has colour, else 1): the size to show a
/// folder's images at when no model says it.
pub fn first_shape(dir: &Path) -> Result<[usize; 3], FolderError> {
    let dir = split_dirs(dir).map_or_else(|| dir.to_path_buf(), |(train, _)| train);
    let classes: Vec<PathBuf> = entries(&dir)?.into_iter().filter(|p| p.is_dir()).collect();
    let Some(class) = classes.first() else {
        return Err(FolderError::NoClasses { dir });
    };
    let Some(first) = entries(class)?.into_iter().find(|p| is_image(p)) else {
        return Err(FolderError::EmptyClass { dir: class.clone() });
    };
    let image = decode(&first)?;
    let channels = if image.color().has_color() { 3 } else { 1 };
    Ok([image.height() as usize, image.width() as usize, channels])
}

/// `dir/train` and `dir/test`, when the folder is split in both.
pub(super) fn split_dirs(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (train, test) = (dir.join("train"), dir.join("test"));
    (train.is_dir() && test.is_dir()).then_some((train, test))
}

/// Reads one PNG or JPEG file as a model input: `[height, width, channels]`
/// row-major, each value the pixel's byte divided by 255.
pub fn read_image(path: &Path, conversion: Conversion) -> Result<Vec<f32>, FolderError> {
    check_channels(conversion)?;
    let image = decode(path)?;
    convert(image, path, conversion)
}

/// [`read_image`] of a file already in memory, its format guessed from its
/// bytes; `path` only names it in errors. The fuzz targets call it, so that
/// no input goes through a temporary file.
pub fn read_image_bytes(
    bytes: &[u8],
    path: &Path,
    conversion: Conversion,
) -> Result<Vec<f32>, FolderError> {
    check_channels(conversion)?;
    let image = decode_from(ImageReader::new(std::io::Cursor::new(bytes)), path)?;
    convert(image, path, conversion)
}

/// `image` (read from `path`) as a model input, resized and converted to
/// grey or RGB when `conversion` allows it.
pub(super) fn convert(
    image: DynamicImage,
    path: &Path,
    conversion: Conversion,
) -> Result<Vec<f32>, FolderError> {
    let [height, width, channels] = conversion.shape;
    let fits_size = (image.height() as usize, image.width() as usize) == (height, width);
    let fits_colour = image.color().has_color() == (channels == 3);
    if !(conversion.convert || fits_size && fits_colour) {
        return Err(FolderError::Mismatch {
            path: path.to_path_buf(),
            found: format!(
                "{}x{} {}",
                image.width(),
                image.height(),
                colour_name(image.color().has_color())
            ),
            expected: format!("{width}x{height} {}", colour_name(channels == 3)),
        });
    }
    let image = if fits_size {
        image
    } else {
        resize(&image, width as u32, height as u32)
    };
    let bytes = if channels == 3 {
        image.to_rgb8().into_raw()
    } else {
        image.to_luma8().into_raw()
    };
    Ok(bytes.iter().map(|&b| f32::from(b) / 255.0).collect())
}

/// `image` resized to `width` × `height` with a triangle filter (bilinear,
/// antialiased). An image over 8 times larger in a dimension is first
/// averaged down to 4 times the size, over boxes of whole pixels
/// (`thumbnail_exact`, whose time grows with the pixels alone, not with the
/// filter's support as well): a 15 KB JPEG of 65,408 × 427 pixels, found by
/// fuzzing, took 0.39 s to convert (`cnnc predict … --resize`), and over a
/// second under the fuzzer's instrumentation.
fn resize(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    const LARGER: u32 = 8;
    let (w, h) = (image.width(), image.height());
    if w > LARGER * width || h > LARGER * height {
        let reduced = image.thumbnail_exact(w.min(4 * width), h.min(4 * height));
        reduced.resize_exact(width, height, FilterType::Triangle)
    } else {
        image.resize_exact(width, height, FilterType::Triangle)
    }
}

pub(super) fn check_channels(conversion: Conversion) -> Result<(), FolderError> {
    match conversion.shape[2] {
        1 | 3 => Ok(()),
        channels => Err(FolderError::Channels { channels }),
    }
}

fn colour_name(colour: bool) -> &'static str {
    if colour {
        "RGB"
    } else {
        "grey"
    }
}

/// The most bytes one image may take decoded: the `image` crate's default
/// of 512 MiB (an 8-bit RGBA image of about 11,500 × 11,500 pixels), or
/// less where the memory cap shared by the decoding threads is smaller, so
/// that a folder decoded on every core stays within half the cap.
pub fn decode_limit() -> Result<u64, FolderError> {
    const DEFAULT: u64 = 512 << 20;
    let threads = rayon::current_num_threads().max(1) as u64;
    Ok(DEFAULT.min(MemoryCap::current()?.bytes / (2 * threads)))
}

/// Decodes the image in `path`, as [`decode_from`] does.
pub(super) fn decode(path: &Path) -> Result<DynamicImage, FolderError> {
    let reader = ImageReader::open(path).map_err(|e| FolderError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    decode_from(reader, path)
}

/// Decodes the image `reader` holds, of the format its bytes say, refusing
/// before decoding one that would take more than [`decode_limit`] (a small
/// file can declare a huge image).
fn decode_from<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    path: &Path,
) -> Result<DynamicImage, FolderError> {
    let decode_error = |message: String| FolderError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| decode_error(e.to_string()))?;
    // The header is read without limits so that a huge image is refused
    // below with its size, not as the decoder's bare "limit exceeded".
    reader.no_limits();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(e.to_string()))?;
    let limit = decode_limit()?;
    let (width, height) = decoder.dimensions();
    if decoder.total_bytes() > limit {
        return Err(FolderError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            decoded: decoder.total_bytes(),
            limit,
        });
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(limit);
    decoder
        .set_limits(limits)
        .map_err(|e| decode_error(e.to_string()))?;
    DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e.to_string()))
}

/// The images of every class sub-folder of `dir`, labelled by the
/// sub-folders' sorted order.
fn read_classes(dir: &Path, conversion: Conversion) -> Result<Dataset, FolderError> {
    let classes = entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect::<Vec<_>>();
    if classes.is_empty() {
        return Err(FolderError::NoClasses {
            dir: dir.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let images: Vec<PathBuf> = entries(class)?
            .into_iter()
            .filter(|p| is_image(p))
            .collect();
        if images.is_empty() {
            return Err(FolderError::EmptyClass { dir: class.clone() });
        }
        // In range by construction: a label is the index of its class among
        // `classes`, which become the set's class names, so no label of a
        // folder needs the check Fashion-MNIST's label files get.
        files.extend(images.into_iter().map(|p| (p, label as u32)));
    }
    let image_len: usize = conversion.shape.iter().product();
    check_cap(dir, files.len(), conversion.shape, MemoryCap::current()?)?;
    // Each image is decoded straight into its place, so that the set is in
    // memory once, beside one image per decoding thread.
    let mut images = vec![0.0f32; files.len() * image_len];
    images
        .par_chunks_mut(image_len.max(1))
        .zip(files.par_iter())
        .try_for_each(|(place, (path, _))| {
            // `read_image` gives exactly `conversion.shape`'s values.
            read_image(path, conversion).map(|pixels| place.copy_from_slice(&pixels))
        })?;
    Ok(Dataset {
        images,
        labels: files.iter().map(|&(_, label)| label).collect(),
        shape: conversion.shape,
        label_shape: Vec::new(),
        class_names: classes
            .iter()
            .map(|c| {
                c.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
    })
}

/// Refuses `images` images of `shape` from `dir` when they need more than
/// `cap` as float32: counted twice, since splitting a set into training,
/// validation and test sets copies it.
pub(super) fn check_cap(
    dir: &Path,
    images: usize,
    shape: [usize; 3],
    cap: MemoryCap,
) -> Result<(), FolderError> {
    let image_bytes = shape.iter().fold(4u64, |n, &d| n.saturating_mul(d as u64));
    let need = image_bytes.saturating_mul(images as u64).saturating_mul(2);
    if cap.allows(need) {
        return Ok(());
    }
    Err(FolderError::OverCap {
        dir: dir.to_path_buf(),
        images,
        shape,
        need,
        cap,
    })
}

/// The entries of `dir`, sorted by name, hidden ones (`.name`) left out.
pub(super) fn entries(dir: &Path) -> Result<Vec<PathBuf>, FolderError> {
    let read_error = |e: std::io::Error| FolderError::Read {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

pub(super) fn is_image(path: &Path) -> bool {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    path.is_file() && matches!(extension.as_deref(), Some("png" | "jpg" | "jpeg"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::CapSource;

    #[test]
    fn a_folder_larger_than_the_cap_is_refused_with_its_sizes() {
        let cap = MemoryCap {
            bytes: 64 << 30,
            source: CapSource::Physical,
        };
        let dir = Path::new("photos");
        // A million 224x224 RGB images: 561 GiB as float32.
        let error = check_cap(dir, 1_000_000, [224, 224, 3], cap).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`photos` holds 1000000 images of 224x224x3: 560.76 GiB as float32, and twice that \
             (1.10 TiB) while they are split into sets, more than the machine's 64.00 GiB of \
             physical memory (set CNNC_MAX_MEMORY=SIZE to allow more, if swap can hold it)"
        );
        // A hundred thousand 28x28 grey ones take 598 MiB: they fit.
        assert!(check_cap(dir, 100_000, [28, 28, 1], cap).is_ok());
    }

    /// A grey image of `width` × `height` whose pixels are `value(x, y)`.
    fn grey(width: u32, height: u32, value: impl Fn(u32, u32) -> u8) -> DynamicImage {
        DynamicImage::ImageLuma8(image::GrayImage::from_fn(width, height, |x, y| {
            image::Luma([value(x, y)])
        }))
    }

    #[test]
    fn a_much_larger_image_is_resized_as_the_triangle_filter_resizes_it() {
        // A horizontal ramp and a checkerboard of 2x2 squares, 40 times
        // the target's width and 10 times its height: both over the ratio
        // where the box average comes first.
        let ramp: fn(u32, u32) -> u8 = |x, _| (x / 5) as u8;
        let checkerboard: fn(u32, u32) -> u8 = |x, y| 255 * ((x / 2 + y / 2) % 2) as u8;
        for value in [ramp, checkerboard] {
            let large = grey(1120, 280, value);
            let direct = large.resize_exact(28, 28, FilterType::Triangle).to_luma8();
            let staged = resize(&large, 28, 28).to_luma8();
            for (a, b) in direct.pixels().zip(staged.pixels()) {
                assert!(a[0].abs_diff(b[0]) <= 2, "{a:?} against {b:?}");
            }
        }
    }

    /// Found by `fuzz/fuzz_targets/image.rs`: a 15 KB JPEG of 65,408 × 427
    /// pixels took over a second to resize under the fuzzer (see [`resize`]).
    #[test]
    fn a_wide_fuzzed_jpeg_converts() {
        let path = Path::new("tests/fuzzed/image-timeout-65408x427.jpg");
        let bytes = std::fs::read(path).expect("the fuzzed file");
        let grey = Conversion {
            shape: [28, 28, 1],
            convert: true,
        };
        let values = read_image_bytes(&bytes, path, grey).expect("converted");
        assert_eq!(values.len(), 28 * 28);
    }
}
