//! A grid of labelled images from a data set: the seed's 4×10 figure of
//! Fashion-MNIST training images, each under its class name, drawn dark on
//! light (matplotlib's `gray_r`).

use std::path::Path;

use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::text::{set_labels, Label};
use super::{save_png, Format, VizError};
use crate::data::fashion::Dataset;

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridConfig {
    /// Rows of images.
    pub rows: usize,
    /// Images per row.
    pub cols: usize,
    /// How many screen pixels each image pixel becomes, across and down.
    pub scale: u32,
    /// `None` shows the first images in the data set's order (as the seed
    /// does); `Some(seed)` a random choice, the same for the same seed.
    pub seed: Option<u64>,
}

impl Default for GridConfig {
    /// The seed's figure: 4 rows of 10, each 28×28 image at 3×.
    fn default() -> Self {
        GridConfig {
            rows: 4,
            cols: 10,
            scale: 3,
            seed: None,
        }
    }
}

/// Height of the band above each image that holds its class name.
const TITLE: u32 = 20;
/// Space around each image.
const PAD: u32 = 8;

/// Draws `config.rows × config.cols` images of `data` (fewer when it holds
/// fewer), each with its class name above it, into `path` as PNG.
/// Returns how many images were drawn.
pub fn render(data: &Dataset, config: &GridConfig, path: &Path) -> Result<usize, VizError> {
    Format::of(path, &[Format::Png])?;
    let chosen = choose(data, config);
    if chosen.is_empty() {
        return Err(VizError::Empty(format!(
            "{} rows of {} images from a data set of {}",
            config.rows,
            config.cols,
            data.len()
        )));
    }
    let [height, width, _] = data.shape;
    let scale = config.scale.max(1);
    let cell = (
        width as u32 * scale + 2 * PAD,
        height as u32 * scale + TITLE + PAD,
    );
    let size = (cell.0 * config.cols as u32, cell.1 * config.rows as u32);
    let mut picture = RgbImage::from_pixel(size.0, size.1, Rgb([255, 255, 255]));
    let mut labels = Vec::new();
    for (slot, &index) in chosen.iter().enumerate() {
        let x = (slot % config.cols) as u32 * cell.0;
        let y = (slot / config.cols) as u32 * cell.1;
        paint(&mut picture, data, index, (x + PAD, y + TITLE), scale);
        labels.push(Label {
            text: class_name(data, index),
            x: (x + cell.0 / 2) as i32,
            y: y as i32 + 3,
            size: 13.0,
            width: cell.0 as f32 - 4.0,
            color: Rgb([0, 0, 0]),
        });
    }
    set_labels(&mut picture, &labels).map_err(|e| super::draw_error(path, e))?;
    save_png(&picture, path)?;
    Ok(chosen.len())
}

/// The indices of the images to show, in the order to show them.
fn choose(data: &Dataset, config: &GridConfig) -> Vec<usize> {
    let wanted = config.rows.saturating_mul(config.cols).min(data.len());
    let mut indices: Vec<usize> = (0..data.len()).collect();
    if let Some(seed) = config.seed {
        indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    indices.truncate(wanted);
    indices
}

/// The class of image `index`: its label's name, or for a mask the names
/// of the classes it holds other than the background (class 0), the
/// largest first.
fn class_name(data: &Dataset, index: usize) -> String {
    let labels = data.labels_of(index);
    let name = |label: usize| {
        data.class_names
            .get(label)
            .cloned()
            .unwrap_or_else(|| format!("class {label}"))
    };
    if !data.is_segmentation() {
        return name(labels[0] as usize);
    }
    let mut counts = vec![0usize; data.class_names.len()];
    for &l in labels {
        if let Some(count) = counts.get_mut(l as usize) {
            *count += 1;
        }
    }
    let mut present: Vec<(usize, usize)> = counts
        .into_iter()
        .enumerate()
        .skip(1)
        .filter(|&(_, n)| n > 0)
        .collect();
    present.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let names: Vec<String> = present.iter().map(|&(c, _)| name(c)).collect();
    if names.is_empty() {
        name(0)
    } else {
        names.join(", ")
    }
}

/// The tint of each mask class after the background: distinct hues.
const MASK_COLOURS: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [128, 128, 0],
];

/// Paints image `index` of `data` with its top-left corner at `at`, each
/// pixel a `scale × scale` square: grey images dark on light, colour images
/// as they are, and where a segmentation set's mask has a class other
/// than the background, that class's colour over the pixel.
fn paint(picture: &mut RgbImage, data: &Dataset, index: usize, at: (u32, u32), scale: u32) {
    let [height, width, channels] = data.shape;
    let pixels = data.image(index);
    let labels = if data.is_segmentation() {
        data.labels_of(index)
    } else {
        &[]
    };
    for row in 0..height {
        for col in 0..width {
            let base = (row * width + col) * channels;
            let byte = |c: usize| (pixels[base + c].clamp(0.0, 1.0) * 255.0).round() as u8;
            let mut color = if channels >= 3 {
                Rgb([byte(0), byte(1), byte(2)])
            } else {
                let ink = 255 - byte(0);
                Rgb([ink, ink, ink])
            };
            let class = labels.get(row * width + col).copied().unwrap_or(0) as usize;
            if class > 0 {
                let tint = MASK_COLOURS[(class - 1) % MASK_COLOURS.len()];
                for (c, t) in color.0.iter_mut().zip(tint) {
                    *c = ((u16::from(*c) * 2 + u16::from(t) * 3) / 5) as u8;
                }
            }
            for dy in 0..scale {
                for dx in 0..scale {
                    let x = at.0 + col as u32 * scale + dx;
                    let y = at.1 + row as u32 * scale + dy;
                    picture.put_pixel(x, y, color);
                }
            }
        }
    }
}
