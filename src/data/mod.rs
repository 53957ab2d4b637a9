//! Data sets to train and evaluate models on.
//!
//! [`fashion`] reads Fashion-MNIST from its IDX files: the full set when it
//! is installed (or named with `--data DIR`), otherwise a small real subset
//! embedded in cnnc. [`folder`] reads a folder of PNG and JPEG images with
//! one sub-folder per class. Both give [`Splits`]: training, validation and
//! test sets. [`augment`] changes training images at random, as AlexNet did.

use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub mod augment;
pub mod fashion;
pub mod folder;
pub mod masks;
pub mod shapes;

/// A set of labelled images, pixels scaled to [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The pixels, `[n, height, width, channels]` row-major (NHWC), each
    /// in [0, 1] (a file's byte divided by 255).
    pub images: Vec<f32>,
    /// The labels, each below `class_names.len()`: one per image, or for a
    /// segmentation set one per pixel (`label_shape` per image, row-major).
    pub labels: Vec<u32>,
    /// The shape of one image: `[height, width, channels]`.
    pub shape: [usize; 3],
    /// The shape of one image's labels: empty for one label per image,
    /// `[height, width]` for a mask of a class per pixel.
    pub label_shape: Vec<usize>,
    /// The class names, indexed by label.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len() / self.label_len()
    }

    /// The number of labels of one image: 1, or its mask's pixels.
    pub fn label_len(&self) -> usize {
        self.label_shape.iter().product::<usize>().max(1)
    }

    /// Whether the labels are masks, a class per pixel.
    pub fn is_segmentation(&self) -> bool {
        !self.label_shape.is_empty()
    }

    /// The labels of image `index`: one, or its mask's.
    ///
    /// Panics when `index >= self.len()`, like slice indexing.
    pub fn labels_of(&self, index: usize) -> &[u32] {
        let len = self.label_len();
        &self.labels[index * len..(index + 1) * len]
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The number of f32 values in one image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The pixels of image `index`, `[height, width, channels]` row-major.
    ///
    /// Panics when `index >= self.len()`, like slice indexing.
    pub fn image(&self, index: usize) -> &[f32] {
        let len = self.image_len();
        &self.images[index * len..(index + 1) * len]
    }

    /// The images at `indices`, in that order.
    /// Holds `count` images, chosen by a shuffle seeded with `seed`, out of
    /// the set; returns (the rest, the held-out), each in this set's order.
    /// `count` must be below [`Dataset::len`].
    pub(crate) fn hold_out(&self, count: usize, seed: u64) -> (Dataset, Dataset) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let (held, rest) = order.split_at_mut(count.min(self.len()));
        held.sort_unstable();
        rest.sort_unstable();
        (self.select(rest), self.select(held))
    }

    /// The images at `indices` with their labels, in that order.
    ///
    /// Panics when an index is not below [`Dataset::len`].
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let len = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * len);
        let mut labels = Vec::with_capacity(indices.len() * self.label_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.extend_from_slice(self.labels_of(i));
        }
        Dataset {
            images,
            labels,
            shape: self.shape,
            label_shape: self.label_shape.clone(),
            class_names: self.class_names.clone(),
        }
    }
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The full Fashion-MNIST, read from this directory.
    Full(PathBuf),
    /// The subset embedded in cnnc: the 10,000 test images of the full set.
    Bundled,
    /// A folder of images with one sub-folder per class (see [`folder`]).
    Folder(PathBuf),
    /// A folder of images and their masks (see [`masks`]).
    Masks(PathBuf),
    /// The synthetic segmentation set cnnc generates (see [`shapes`]).
    Shapes,
}

/// The training, validation and test sets, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// The images to train on.
    pub train: Dataset,
    /// The images held out of the training files to validate on.
    pub validation: Dataset,
    /// The test images.
    pub test: Dataset,
    /// Where the images came from (the CLI reports a fallback to the bundled subset).
    pub source: Source,
}
