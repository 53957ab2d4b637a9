//! `cnnc predict --masks DIR`: a segmentation model's per-pixel scores
//! `[height, width, classes]` on image files, reduced to one class index
//! per pixel (the arg max) and written as greyscale PNGs of class indices,
//! the format of a segmentation data set's `masks/` folder.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma};

use super::{predicted_class, run_in_batches, Batches, PredictError};
use crate::data::folder::{self, Conversion, FolderError};
use crate::runtime::weights::{self, TensorStore};
use crate::shapes::TypedGraph;

/// The most classes a mask can hold: the values of a 16-bit grey PNG.
pub const MAX_MASK_CLASSES: usize = 1 << 16;

/// The most classes an 8-bit grey PNG holds (indices 0 to 255); a model
/// with more writes 16-bit masks.
const MAX_BYTE_CLASSES: usize = 1 << 8;

/// Images per batch. A per-pixel model's activations are larger than a
/// classifier's, so fewer images than classification's 256 keep the arena
/// small; each batch's scores are reduced to class indices before the next
/// batch runs, so the scores of all images are never held at once.
const BATCH: usize = 16;

/// A model's per-pixel output: the first output, when it has rank 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelOutput {
    /// The output's name.
    pub name: String,
    /// The mask's height.
    pub height: usize,
    /// The mask's width.
    pub width: usize,
    /// Scores per pixel.
    pub scores: usize,
    /// The classes a pixel can be: one per score, or two for a single
    /// score (a sigmoid's probability of class 1).
    pub classes: usize,
}

/// The first output of `model`, when it holds per-pixel scores (rank 3,
/// `[height, width, classes]`): such a model's images are segmented rather
/// than classified. Any other first output is [`PredictError::NotPerPixel`].
pub fn pixel_output(model: &TypedGraph) -> Result<PixelOutput, PredictError> {
    let (name, shape) = model.outputs().into_iter().next().unwrap_or_default();
    match shape[..] {
        [height, width, scores] => Ok(PixelOutput {
            name,
            height: height as usize,
            width: width as usize,
            scores: scores as usize,
            classes: if scores == 1 { 2 } else { scores as usize },
        }),
        _ => Err(PredictError::NotPerPixel {
            output: name,
            shape: shape.iter().map(|&d| d as usize).collect(),
        }),
    }
}

/// One image's class per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmentation {
    /// The image file.
    pub image: PathBuf,
    /// The class index of each pixel of the model's output, row by row: the
    /// arg max of its scores, the first on ties (for a single score, class 1
    /// where it is above one half), as training's accuracy counts it
    /// ([`super::predicted_class`]).
    pub labels: Vec<u32>,
}

/// The images a per-pixel model segmented, and its classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmented {
    /// The output segmented; its height and width are every mask's.
    pub output: PixelOutput,
    /// The class names stored with the weights, in label order (`class N`
    /// where there are none, as classification names them).
    pub names: Vec<String>,
    /// Each image's classes, in the order the images were given.
    pub images: Vec<Segmentation>,
}

impl Segmented {
    /// The share of `segmentation`'s pixels that each class holds, in
    /// label order.
    pub fn shares(&self, segmentation: &Segmentation) -> Vec<f64> {
        let mut counts = vec![0usize; self.output.classes];
        for &label in &segmentation.labels {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
        let pixels = segmentation.labels.len().max(1) as f64;
        counts.into_iter().map(|n| n as f64 / pixels).collect()
    }
}

/// How [`segment_images`] reads images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentOptions {
    /// How each image becomes the model's input ([`folder::read_image`]).
    pub conversion: Conversion,
    /// Worker threads.
    pub threads: usize,
    /// The arithmetic of the convolutions and dense layers.
    pub precision: crate::Precision,
}

/// Segments the image files `paths` with `model` (whose first output holds
/// per-pixel scores, [`pixel_output`]) and the weights in `store`, in
/// inference mode: each image is read and converted as `options.conversion`
/// says, and each pixel of the output gets the class with the highest score.
pub fn segment_images(
    model: &TypedGraph,
    store: TensorStore,
    paths: &[PathBuf],
    options: SegmentOptions,
) -> Result<Segmented, PredictError> {
    let output = pixel_output(model)?;
    let names = weights::class_names(&store, output.classes);
    let mut values = Vec::new();
    for path in paths {
        values.extend(folder::read_image(path, options.conversion)?);
    }
    let per_image = values.len() / paths.len().max(1);
    let batches = Batches {
        count: paths.len(),
        batch: BATCH,
        threads: options.threads,
        precision: options.precision,
    };
    let examples =
        |start: usize, size: usize| values[start * per_image..(start + size) * per_image].to_vec();
    let mut images = Vec::with_capacity(paths.len());
    run_in_batches::<PredictError>(model, &store, batches, examples, |start, outputs| {
        let scores = outputs
            .into_iter()
            .find(|(name, _)| *name == output.name)
            .map(|(_, scores)| scores)
            .unwrap_or_default();
        let per_mask = (output.height * output.width * output.scores).max(1);
        for (path, image) in paths[start..].iter().zip(scores.chunks_exact(per_mask)) {
            images.push(Segmentation {
                image: path.clone(),
                labels: image
                    .chunks_exact(output.scores.max(1))
                    .map(|pixel| predicted_class(pixel) as u32)
                    .collect(),
            });
        }
    })?;
    Ok(Segmented {
        output,
        names,
        images,
    })
}

/// The files the masks of some images go to, checked before anything is
/// run or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskFiles {
    folder: PathBuf,
    paths: Vec<PathBuf>,
}

impl MaskFiles {
    /// Where the masks of `images` go in `folder`: `folder/NAME.png` for an
    /// image `NAME.png` or `NAME.jpg`, the format of a data set's `masks/`
    /// folder. Refuses two images of the same name (whose masks would be
    /// one file), a mask that would replace its own image, a mask file
    /// that already exists unless `overwrite` (as `cnnc run` keeps an
    /// earlier run's weights unless told `--overwrite`), and an `output`
    /// with more classes than a 16-bit PNG holds.
    pub fn plan(
        output: &PixelOutput,
        images: &[PathBuf],
        folder: &Path,
        overwrite: bool,
    ) -> Result<MaskFiles, PredictError> {
        if output.classes > MAX_MASK_CLASSES {
            return Err(PredictError::TooManyClasses {
                output: output.name.clone(),
                classes: output.classes,
            });
        }
        let mut taken: HashMap<PathBuf, &PathBuf> = HashMap::new();
        let mut paths = Vec::with_capacity(images.len());
        for image in images {
            let Some(stem) = image.file_stem() else {
                return Err(PredictError::Image(FolderError::Read {
                    path: image.clone(),
                    message: "it names no file".into(),
                }));
            };
            // Pushed rather than `with_extension`, which would take the
            // `.v2` of `street.v2` for an extension and replace it.
            let mut name = stem.to_os_string();
            name.push(".png");
            let mask = folder.join(name);
            if let Some(first) = taken.insert(mask.clone(), image) {
                return Err(PredictError::SameMask {
                    first: first.clone(),
                    second: image.clone(),
                    mask,
                });
            }
            check_free(&mask, image, overwrite)?;
            paths.push(mask);
        }
        Ok(MaskFiles {
            folder: folder.to_path_buf(),
            paths,
        })
    }

    /// The mask file of each image, in the order the images were given.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Writes each image's mask of `segmented` (the images this plan was
    /// made for) to its file, creating the folder when it is missing. Each
    /// file is written atomically ([`weights::write_atomically`]): an
    /// 8-bit greyscale PNG of the output's size whose values are the class
    /// indices, or 16-bit when the model has more than 256 classes.
    pub fn write(&self, segmented: &Segmented) -> Result<(), PredictError> {
        let write_error = |path: &Path, message: String| PredictError::Write {
            path: path.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(&self.folder)
            .map_err(|e| write_error(&self.folder, e.to_string()))?;
        for (path, segmentation) in self.paths.iter().zip(&segmented.images) {
            let bytes = png(&segmented.output, segmentation).map_err(|e| write_error(path, e))?;
            weights::write_atomically(path, &bytes)
                .map_err(|e| write_error(path, e.to_string()))?;
        }
        Ok(())
    }
}

/// Refuses `mask` when it is `image` itself (even with `overwrite`: the
/// picture segmented would be lost), or when it exists and `overwrite` is
/// not given. A link counts as existing even when it points nowhere.
fn check_free(mask: &Path, image: &Path, overwrite: bool) -> Result<(), PredictError> {
    if std::fs::symlink_metadata(mask).is_err() {
        return Ok(());
    }
    let same = match (mask.canonicalize(), image.canonicalize()) {
        (Ok(mask), Ok(image)) => mask == image,
        _ => false,
    };
    if same {
        return Err(PredictError::MaskIsImage {
            image: image.to_path_buf(),
        });
    }
    if !overwrite {
        return Err(PredictError::MaskExists {
            path: mask.to_path_buf(),
        });
    }
    Ok(())
}

/// The mask of `segmentation` as PNG bytes: 8-bit grey when every class of
/// `output` fits in a byte, 16-bit grey otherwise.
fn png(output: &PixelOutput, segmentation: &Segmentation) -> Result<Vec<u8>, String> {
    let (width, height) = (output.width as u32, output.height as u32);
    let labels = &segmentation.labels;
    // Class indices are below `output.classes`, checked against the bit
    // depth by `MaskFiles::plan`, so the narrowing casts keep every value.
    let image = if output.classes <= MAX_BYTE_CLASSES {
        let pixels = labels.iter().map(|&l| l as u8).collect();
        ImageBuffer::<Luma<u8>, Vec<u8>>::from_raw(width, height, pixels).map(DynamicImage::from)
    } else {
        let pixels = labels.iter().map(|&l| l as u16).collect();
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(width, height, pixels).map(DynamicImage::from)
    };
    let image = image.ok_or_else(|| {
        format!(
            "{} class indices do not make a {width}x{height} mask",
            labels.len()
        )
    })?;
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(classes: usize) -> PixelOutput {
        PixelOutput {
            name: "output".into(),
            height: 2,
            width: 3,
            scores: classes,
            classes,
        }
    }

    #[test]
    fn a_mask_takes_the_images_name_up_to_its_last_extension() {
        let images = [
            PathBuf::from("in/street.v2.jpg"),
            PathBuf::from("field.PNG"),
        ];
        let folder = Path::new("no-such-folder-of-masks");
        let plan = MaskFiles::plan(&output(3), &images, folder, false).expect("planned");
        assert_eq!(
            plan.paths(),
            [folder.join("street.v2.png"), folder.join("field.png")]
        );
    }

    #[test]
    fn an_image_path_without_a_file_name_is_refused() {
        let images = [PathBuf::from("..")];
        let error =
            MaskFiles::plan(&output(3), &images, Path::new("masks"), false).expect_err("refused");
        assert_eq!(error.to_string(), "cannot read `..`: it names no file");
    }

    #[test]
    fn the_first_of_equal_scores_wins_and_one_score_is_thresholded_at_a_half() {
        assert_eq!(predicted_class(&[0.25, 0.5, 0.5, 0.1]), 1);
        assert_eq!(predicted_class(&[0.0, 0.0]), 0);
        assert_eq!(predicted_class(&[-1.0, -2.0, -0.5]), 2);
        assert_eq!(predicted_class(&[0.5]), 0);
        assert_eq!(predicted_class(&[0.51]), 1);
    }

    #[test]
    fn masks_hold_bytes_up_to_256_classes_and_16_bits_beyond() {
        for (classes, colour) in [(256, image::ColorType::L8), (257, image::ColorType::L16)] {
            let labels: Vec<u32> = (0..6).map(|i| (classes as u32 - 1) - i).collect();
            let segmentation = Segmentation {
                image: PathBuf::from("x.png"),
                labels: labels.clone(),
            };
            let bytes = png(&output(classes), &segmentation).expect("encoded");
            let mask = image::load_from_memory(&bytes).expect("a PNG");
            assert_eq!(mask.color(), colour);
            assert_eq!((mask.width(), mask.height()), (3, 2));
            let values: Vec<u32> = match &mask {
                DynamicImage::ImageLuma8(grey) => grey.pixels().map(|p| p.0[0].into()).collect(),
                DynamicImage::ImageLuma16(grey) => grey.pixels().map(|p| p.0[0].into()).collect(),
                other => panic!("a grey mask, not {:?}", other.color()),
            };
            assert_eq!(values, labels, "{classes} classes");
        }
    }
}
