//! A segmentation set of one's own: a folder of images and a folder of
//! their masks, a class index per pixel.
//!
//! ```text
//! DIR/                         or   DIR/train/images/ DIR/train/masks/
//!   images/  a.png b.jpg …          DIR/test/images/  DIR/test/masks/
//!   masks/   a.png b.png …          (classes.txt in DIR)
//!   classes.txt   (optional: one class name per line, class 0 first)
//! ```
//!
//! Each image `images/NAME.EXT` has the mask `masks/NAME.png`: a greyscale
//! PNG (8 or 16 bits) of the image's size whose pixel values are class
//! indices, as Keras's segmentation examples and the Oxford-IIIT Pet
//! trimaps store them. The classes are named by `classes.txt`, or else
//! numbered `0` to the largest index found. With `--resize`, images are
//! resized as [`super::folder`] resizes them and masks by the nearest
//! pixel, so that every value stays a class. The test set is `train/` and
//! `test/`'s split, or a fixed fifth of the images, as for a class folder.

use std::path::{Path, PathBuf};

use image::DynamicImage;
use rayon::prelude::*;

use super::folder::{
    check_cap, check_channels, convert, decode, entries, is_image, split, split_dirs, Conversion,
    FolderError,
};
use super::{Dataset, Source, Splits};
use crate::limits::MemoryCap;

/// The file naming the classes, in the set's folder.
pub const CLASS_NAMES_FILE: &str = "classes.txt";

/// The most classes a mask can name: a 16-bit PNG's values.
const MAX_CLASSES: usize = 1 << 16;

/// Whether `dir` is laid out as a segmentation set: `images/` and `masks/`,
/// in it or in its `train/`.
pub fn is_mask_folder(dir: &Path) -> bool {
    let laid_out = |d: &Path| d.join("images").is_dir() && d.join("masks").is_dir();
    laid_out(dir) || laid_out(&dir.join("train"))
}

/// The `[height, width, channels]` of the first image [`load`] would read
/// from `dir` (channels 3 when it has colour, else 1): the size to show a
/// set's images at when no model says it.
pub fn first_shape(dir: &Path) -> Result<[usize; 3], FolderError> {
    let images =
        split_dirs(dir).map_or_else(|| dir.join("images"), |(train, _)| train.join("images"));
    let Some(first) = entries(&images)?.into_iter().find(|p| is_image(p)) else {
        return Err(FolderError::NoImages { dir: images });
    };
    let image = decode(&first)?;
    let channels = if image.color().has_color() { 3 } else { 1 };
    Ok([image.height() as usize, image.width() as usize, channels])
}

/// Reads the segmentation set in `dir` (see the module's documentation)
/// into training, validation and test sets, each image converted by
/// `conversion` and each mask brought to its size.
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
    let names_file = dir.join(CLASS_NAMES_FILE);
    let names = class_names(&names_file)?;
    let names = (names.as_deref(), names_file.as_path());
    let read = |folder: &Path| read_pairs(folder, conversion, names);
    // Numbered classes, when no file names them, cover both sets' masks.
    let join = |(_, train): (PathBuf, Dataset), (_, test): (PathBuf, Dataset)| {
        let classes = train.class_names.len().max(test.class_names.len());
        Ok((with_classes(train, classes), with_classes(test, classes)))
    };
    let source = Source::Masks(dir.to_path_buf());
    split(dir, read, join, (validation, seed), source)
}

/// The class names in `path` (`classes.txt`), when it exists.
fn class_names(path: &Path) -> Result<Option<Vec<String>>, FolderError> {
    let path = path.to_path_buf();
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| FolderError::Read {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let problem = if names.is_empty() {
        Some("names no class".to_string())
    } else if names.len() > MAX_CLASSES {
        Some(format!(
            "names {} classes, more than the {MAX_CLASSES} a 16-bit mask can index",
            names.len()
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(FolderError::ClassNames { path, problem }),
        None => Ok(Some(names)),
    }
}

/// `set` with numbered classes up to `classes`.
fn with_classes(mut set: Dataset, classes: usize) -> Dataset {
    for c in set.class_names.len()..classes {
        set.class_names.push(c.to_string());
    }
    set
}

/// The images of `dir/images` with their masks from `dir/masks`; the
/// classes are `names`, read from `names_file`, when it exists.
fn read_pairs(
    dir: &Path,
    conversion: Conversion,
    (names, names_file): (Option<&[String]>, &Path),
) -> Result<Dataset, FolderError> {
    let (images_dir, masks_dir) = (dir.join("images"), dir.join("masks"));
    let images: Vec<PathBuf> = entries(&images_dir)?
        .into_iter()
        .filter(|p| is_image(p))
        .collect();
    if images.is_empty() {
        return Err(FolderError::NoImages { dir: images_dir });
    }
    let pairs: Vec<(PathBuf, PathBuf)> = images
        .into_iter()
        .map(|image| {
            let stem = image.file_stem().unwrap_or_default().to_os_string();
            let mask = masks_dir.join(stem).with_extension("png");
            if mask.is_file() {
                Ok((image, mask))
            } else {
                Err(FolderError::NoMask {
                    image,
                    expected: mask,
                })
            }
        })
        .collect::<Result<_, _>>()?;
    let image_len: usize = conversion.shape.iter().product();
    let mask_len = conversion.shape[0] * conversion.shape[1];
    check_cap(dir, pairs.len(), conversion.shape, MemoryCap::current()?)?;
    let mut pixels = vec![0.0f32; pairs.len() * image_len];
    let mut labels = vec![0u32; pairs.len() * mask_len];
    pixels
        .par_chunks_mut(image_len.max(1))
        .zip(labels.par_chunks_mut(mask_len.max(1)))
        .zip(pairs.par_iter())
        .try_for_each(|((place, mask_place), (image, mask))| {
            read_pair(image, mask, conversion, (place, mask_place))
        })?;
    let classes = match names {
        Some(names) => names.len(),
        None => labels.iter().max().map_or(1, |&m| m as usize + 1),
    };
    if let Some(position) = labels.iter().position(|&l| l as usize >= classes) {
        let (item, pixel) = (position / mask_len, position % mask_len);
        return Err(FolderError::MaskClass {
            path: pairs[item].1.clone(),
            value: labels[position],
            x: pixel % conversion.shape[1],
            y: pixel / conversion.shape[1],
            classes,
            names: names_file.to_path_buf(),
        });
    }
    Ok(Dataset {
        images: pixels,
        labels,
        shape: conversion.shape,
        label_shape: vec![conversion.shape[0], conversion.shape[1]],
        class_names: names.map_or_else(
            || (0..classes).map(|c| c.to_string()).collect(),
            <[String]>::to_vec,
        ),
    })
}

/// Reads `image` into `pixels` and its `mask` into `labels`.
fn read_pair(
    image: &Path,
    mask: &Path,
    conversion: Conversion,
    (pixels, labels): (&mut [f32], &mut [u32]),
) -> Result<(), FolderError> {
    let picture = decode(image)?;
    let size = (picture.width() as usize, picture.height() as usize);
    pixels.copy_from_slice(&convert(picture, image, conversion)?);
    let (found, values) = read_mask(mask)?;
    if found != size {
        return Err(FolderError::MaskSize {
            mask: mask.to_path_buf(),
            image: image.to_path_buf(),
            found: format!("{}x{}", found.0, found.1),
            expected: format!("{}x{}", size.0, size.1),
        });
    }
    // `convert` has refused another size unless asked to resize; a mask is
    // resized by the nearest pixel, so that every value stays a class.
    let [height, width, _] = conversion.shape;
    for (y, row) in labels.chunks_exact_mut(width).enumerate() {
        let from_y = (y * size.1 + size.1 / 2) / height;
        for (x, label) in row.iter_mut().enumerate() {
            let from_x = (x * size.0 + size.0 / 2) / width;
            *label = values[from_y.min(size.1 - 1) * size.0 + from_x.min(size.0 - 1)];
        }
    }
    Ok(())
}

/// Decodes a mask, which must be greyscale (a colour or alpha channel
/// would have to be guessed into classes): its `(width, height)` and values.
fn read_mask(path: &Path) -> Result<((usize, usize), Vec<u32>), FolderError> {
    let mask = decode(path)?;
    let size = (mask.width() as usize, mask.height() as usize);
    let values = match mask {
        DynamicImage::ImageLuma8(v) => v.into_raw().into_iter().map(u32::from).collect(),
        DynamicImage::ImageLuma16(v) => v.into_raw().into_iter().map(u32::from).collect(),
        other => {
            return Err(FolderError::MaskColour {
                path: path.to_path_buf(),
                found: format!("{:?}", other.color()),
            })
        }
    };
    Ok((size, values))
}
