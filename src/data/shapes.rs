//! A synthetic segmentation data set that cnnc generates itself: grey
//! images of filled discs, squares and triangles on a noisy background,
//! each with the mask that says which kind of shape covers every pixel.
//!
//! It is small and honest: every image is drawn from its own seeded stream
//! (the seed and the image's index), so the set is the same on every
//! machine and a longer set starts with the images of a shorter one. The
//! task is not trivial: the shapes have random sizes, rotations and
//! contrasts (some darker than the background, some lighter), overlap and
//! run off the edges, and noise covers everything, so a model must tell
//! the kinds apart by their outlines rather than by their brightness.

use std::path::Path;

use image::GrayImage;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use thiserror::Error;

use super::folder::VALIDATION_EVERY;
use super::masks::CLASS_NAMES_FILE;
use super::{Dataset, Source, Splits};

/// The classes of a mask, by index: 0 is the background.
pub const CLASS_NAMES: [&str; 4] = ["background", "disc", "square", "triangle"];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapesConfig {
    /// How many images.
    pub count: usize,
    /// Their height and width, in pixels.
    pub size: usize,
    /// The seed every image's stream derives from.
    pub seed: u64,
}

/// Images and their masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Shapes {
    /// The pixels, `[count, size, size, 1]` row-major, each in [0, 1].
    pub images: Vec<f32>,
    /// The class of every pixel, `[count, size, size]`, an index into
    /// [`CLASS_NAMES`].
    pub masks: Vec<u8>,
    /// The height and width of an image.
    pub size: usize,
}

/// Generates `config.count` images of `config.size` squared pixels with
/// their masks. Image `i` depends only on the seed, `i` and the size.
pub fn generate(config: &ShapesConfig) -> Shapes {
    let pixels = config.size * config.size;
    let mut images = vec![0.0; config.count * pixels];
    let mut masks = vec![0; config.count * pixels];
    let chunks = images
        .chunks_mut(pixels.max(1))
        .zip(masks.chunks_mut(pixels.max(1)));
    for (index, (image, mask)) in chunks.enumerate() {
        draw(config, index as u64, image, mask);
    }
    Shapes {
        images,
        masks,
        size: config.size,
    }
}

/// Images of the training and validation sets of [`load`].
pub const TRAIN_IMAGES: usize = 2000;
/// Images of its test set.
pub const TEST_IMAGES: usize = 400;
/// The seeds of its training and test images: fixed, so that every run
/// sees the same images (the training seed only chooses the validation
/// set among them), and the test images are none of the training ones.
const TRAIN_SEED: u64 = 0x5ea9_0001;
const TEST_SEED: u64 = 0x5ea9_7e57;

/// Why the set cannot be made as asked.
#[derive(Debug, Error)]
pub enum ShapesError {
    /// The model does not take square grey images large enough to draw on.
    #[error("the shapes set is of square grey images, at least 8x8, but the model's input is {shape:?}: give it an input [size, size, 1]")]
    Input {
        /// The model's input.
        shape: Vec<u64>,
    },
    /// The validation set asked for would leave no training image.
    #[error("cannot hold out {requested} validation images from the shapes set's {TRAIN_IMAGES} training images")]
    ValidationTooLarge {
        /// The validation images asked for.
        requested: usize,
    },
    /// A file of [`write_folder`] could not be written.
    #[error("cannot write `{path}`: {message}")]
    Write {
        /// The file.
        path: String,
        /// What the system said.
        message: String,
    },
}

impl Shapes {
    /// The images and masks as a segmentation [`Dataset`].
    pub fn into_dataset(self) -> Dataset {
        Dataset {
            images: self.images,
            labels: self.masks.into_iter().map(u32::from).collect(),
            shape: [self.size, self.size, 1],
            label_shape: vec![self.size, self.size],
            class_names: CLASS_NAMES.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// The shapes set for a model with input `input` (`[size, size, 1]`):
/// [`TRAIN_IMAGES`] training images, of which `validation` (by default a
/// fifth), chosen by a shuffle seeded with `seed`, are held out to
/// validate on, and [`TEST_IMAGES`] test images.
pub fn load(input: &[u64], validation: Option<usize>, seed: u64) -> Result<Splits, ShapesError> {
    let size = match *input {
        [h, w, 1] if h == w && h >= 8 => h as usize,
        _ => {
            return Err(ShapesError::Input {
                shape: input.to_vec(),
            })
        }
    };
    let held = validation.unwrap_or(TRAIN_IMAGES / VALIDATION_EVERY);
    if held >= TRAIN_IMAGES {
        return Err(ShapesError::ValidationTooLarge { requested: held });
    }
    let set = |count, seed| generate(&ShapesConfig { count, size, seed }).into_dataset();
    let (train, validation) = set(TRAIN_IMAGES, TRAIN_SEED).hold_out(held, seed);
    Ok(Splits {
        train,
        validation,
        test: set(TEST_IMAGES, TEST_SEED),
        source: Source::Shapes,
    })
}

/// Writes `shapes` as a segmentation folder (`super::masks`'s layout):
/// `images/NNNNN.png` (8-bit grey, each value rounded to the nearest of
/// 256 levels), `masks/NNNNN.png` (class indices) and `classes.txt`.
/// Returns the number of images written.
pub fn write_folder(shapes: &Shapes, dir: &Path) -> Result<usize, ShapesError> {
    let fail = |path: &Path, e: &dyn std::fmt::Display| ShapesError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let (images_dir, masks_dir) = (dir.join("images"), dir.join("masks"));
    for d in [&images_dir, &masks_dir] {
        std::fs::create_dir_all(d).map_err(|e| fail(d, &e))?;
    }
    let names = dir.join(CLASS_NAMES_FILE);
    std::fs::write(&names, CLASS_NAMES.join("\n") + "\n").map_err(|e| fail(&names, &e))?;
    let pixels = shapes.size * shapes.size;
    let side = shapes.size as u32;
    let pairs = shapes
        .images
        .chunks_exact(pixels.max(1))
        .zip(shapes.masks.chunks_exact(pixels.max(1)));
    let mut written = 0;
    for (index, (image, mask)) in pairs.enumerate() {
        let name = format!("{index:05}.png");
        let bytes = image.iter().map(|&p| (p * 255.0).round() as u8).collect();
        for (path, raw) in [
            (images_dir.join(&name), bytes),
            (masks_dir.join(&name), mask.to_vec()),
        ] {
            let picture = GrayImage::from_raw(side, side, raw)
                .ok_or_else(|| fail(&path, &"the image's size"))?;
            picture.save(&path).map_err(|e| fail(&path, &e))?;
        }
        written += 1;
    }
    Ok(written)
}

/// One filled shape: its kind (a class index), where it is and how it is
/// turned, and its grey level.
struct Shape {
    class: u8,
    centre: (f32, f32),
    radius: f32,
    angle: f32,
    level: f32,
}

impl Shape {
    /// Whether the point `(y, x)` (pixel centres) is inside.
    fn covers(&self, y: f32, x: f32) -> bool {
        let (dy, dx) = (y - self.centre.0, x - self.centre.1);
        let (sin, cos) = self.angle.sin_cos();
        // The point in the shape's own frame, turned back by its angle.
        let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
        match self.class {
            1 => u * u + v * v <= self.radius * self.radius,
            2 => u.abs().max(v.abs()) <= self.radius * 0.8,
            // An equilateral triangle inscribed in the circle of `radius`,
            // pointing up in its own frame: inside all three edges.
            _ => (0..3).all(|k| {
                let normal =
                    std::f32::consts::FRAC_PI_2 + k as f32 * 2.0 * std::f32::consts::PI / 3.0;
                u * normal.cos() - v * normal.sin() <= self.radius * 0.5
            }),
        }
    }
}

/// Draws image `index` and its mask.
fn draw(config: &ShapesConfig, index: u64, image: &mut [f32], mask: &mut [u8]) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(config.seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let size = config.size as f32;
    let background = rng.random_range(0.25..0.75f32);
    let noise = rng.random_range(0.04..0.12f32);
    // A gentle slope of light across the image.
    let slope = (
        rng.random_range(-0.2..0.2f32),
        rng.random_range(-0.2..0.2f32),
    );
    let shapes: Vec<Shape> = (0..rng.random_range(2..=5))
        .map(|_| {
            let contrast = rng.random_range(0.2..0.45f32);
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            Shape {
                class: rng.random_range(1..=3u8),
                centre: (rng.random_range(0.0..size), rng.random_range(0.0..size)),
                radius: rng.random_range(size / 10.0..size / 4.0),
                angle: rng.random_range(0.0..std::f32::consts::TAU),
                level: (background + sign * contrast).clamp(0.0, 1.0),
            }
        })
        .collect();
    for (p, (pixel, class)) in image.iter_mut().zip(mask.iter_mut()).enumerate() {
        let (y, x) = (
            (p / config.size) as f32 + 0.5,
            (p % config.size) as f32 + 0.5,
        );
        let lit = background + slope.0 * (y / size - 0.5) + slope.1 * (x / size - 0.5);
        // Later shapes lie on top of earlier ones.
        let top = shapes.iter().rev().find(|s| s.covers(y, x));
        *class = top.map_or(0, |s| s.class);
        let level = top.map_or(lit, |s| s.level);
        let grain: f32 = StandardNormal.sample(&mut rng);
        *pixel = (level + noise * grain).clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(count: usize, seed: u64) -> ShapesConfig {
        ShapesConfig {
            count,
            size: 32,
            seed,
        }
    }

    #[test]
    fn the_set_depends_only_on_the_seed_and_a_longer_set_extends_a_shorter() {
        let short = generate(&config(3, 7));
        let long = generate(&config(5, 7));
        assert_eq!(short, generate(&config(3, 7)));
        assert_eq!(&long.images[..short.images.len()], &short.images[..]);
        assert_eq!(&long.masks[..short.masks.len()], &short.masks[..]);
        assert_ne!(short, generate(&config(3, 8)));
    }

    #[test]
    fn every_class_appears_and_pixels_stay_in_range() {
        let set = generate(&config(40, 1));
        assert_eq!(set.images.len(), 40 * 32 * 32);
        assert!(set.images.iter().all(|p| (0.0..=1.0).contains(p)));
        let mut counts = [0usize; 4];
        set.masks.iter().for_each(|&c| counts[c as usize] += 1);
        // Shapes cover a fair share of the pixels, each kind some.
        let total = set.masks.len();
        assert!(counts.iter().all(|&c| c > total / 30), "{counts:?}");
        assert!(counts[0] > total / 3, "{counts:?}");
    }

    #[test]
    fn each_kind_covers_about_its_area() {
        // Radius 10 at the centre of a 64x64 frame: a disc of pi r^2, a
        // square of side 1.6 r, an equilateral triangle inscribed in the
        // circle of radius r (3 sqrt(3) / 4 r^2).
        let area = |class: u8| {
            let shape = Shape {
                class,
                centre: (32.0, 32.0),
                radius: 10.0,
                angle: 0.3,
                level: 1.0,
            };
            (0..64 * 64)
                .filter(|p| shape.covers((p / 64) as f32 + 0.5, (p % 64) as f32 + 0.5))
                .count() as f32
        };
        let expected = [314.16, 256.0, 129.9];
        for (class, want) in (1..=3).zip(expected) {
            let got = area(class);
            assert!(
                (got - want).abs() < 0.06 * want,
                "class {class}: {got} pixels, {want} expected"
            );
        }
    }
}
