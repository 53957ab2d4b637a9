//! Data augmentation, as AlexNet used it and as a train section's
//! `augment: (shift: 2, flip: true, rotation: 10, brightness: 0.1, contrast: 0.1, erase: 0.5)`
//! asks for: every training image is moved, mirrored, turned and lit a
//! little differently each time it is seen, and sometimes has a rectangle
//! blotted out (random erasing, Zhong et al. 2017), so that the network
//! learns the garment rather than its exact pixels.
//!
//! The random draws depend only on the seed, the epoch and the step, so a
//! resumed run augments exactly as an uninterrupted one.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Augment;

/// Changes a batch of images `[n, height, width, channels]` (values in
/// [0, 1]) in place, with draws seeded by (`seed`, `epoch`, `step`). Each
/// image is, in this order: mirrored left to right with probability 1/2
/// (`flip`); turned by up to `rotation` degrees about its centre and moved
/// by up to `shift` pixels along each axis (one bilinear resampling,
/// zeros where no pixel comes from); its contrast scaled by a factor in
/// 1 ± `contrast` about each channel's mean; its brightness moved by up to
/// ± `brightness`; clamped to [0, 1]; and, with probability `erase`, a
/// random rectangle of it filled with uniform noise ([`erase`]).
pub fn augment_batch(
    images: &mut [f32],
    shape: [usize; 3],
    augment: &Augment,
    key: (u64, u64, usize),
) {
    augment_items(images, shape, augment, key, 0);
}

/// [`augment_batch`] on the part of a batch from item `first` on, which
/// `images` holds (one rank's share of a data-parallel batch): the draws
/// of the items before `first` are made and dropped, so that every image
/// changes exactly as it does in the whole batch.
pub fn augment_items(
    images: &mut [f32],
    shape: [usize; 3],
    augment: &Augment,
    (seed, epoch, step): (u64, u64, usize),
    first: usize,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch, step as u64));
    // Erasing draws from a stream of its own, so that turning it on leaves
    // the other draws as they were.
    let mut erase_rng = ChaCha8Rng::seed_from_u64(mix(seed ^ ERASE_STREAM, epoch, step as u64));
    let len = shape.iter().product::<usize>();
    if len == 0 {
        return;
    }
    let mut scratch = vec![0.0f32; len];
    for _ in 0..first {
        Draw::new(&mut rng, augment);
        if augment.erase > 0.0 {
            erase(None, shape, augment.erase, &mut erase_rng);
        }
    }
    for image in images.chunks_exact_mut(len) {
        let draw = Draw::new(&mut rng, augment);
        if draw.moves() {
            scratch.copy_from_slice(image);
            resample(&scratch, image, shape, &draw);
        }
        if draw.contrast != 1.0 || draw.brightness != 0.0 {
            adjust(image, shape[2], &draw);
        }
        if augment.erase > 0.0 {
            erase(Some(image), shape, augment.erase, &mut erase_rng);
        }
    }
}

/// Told apart from the seed of the other draws.
const ERASE_STREAM: u64 = 0xe4a5_e5ee_d000_0001;

/// Random erasing as Zhong et al. (2017) define it: with probability `p`,
/// a rectangle covering 2% to 40% of the image, its height over width
/// between 0.3 and 1/0.3, at a random place, is filled with uniform noise
/// in [0, 1]. A draw that does not fit the image is drawn again, up to
/// 100 times. Without an image, the draws are made all the same.
fn erase(
    mut image: Option<&mut [f32]>,
    [height, width, channels]: [usize; 3],
    p: f64,
    rng: &mut ChaCha8Rng,
) {
    if !rng.random_bool(p.clamp(0.0, 1.0)) {
        return;
    }
    let area = (height * width) as f64;
    for _ in 0..100 {
        let target = area * rng.random_range(0.02..0.4);
        let aspect = rng.random_range(0.3..1.0 / 0.3);
        let (h, w) = (
            (target * aspect).sqrt().round() as usize,
            (target / aspect).sqrt().round() as usize,
        );
        if h == 0 || w == 0 || h >= height || w >= width {
            continue;
        }
        let (top, left) = (
            rng.random_range(0..=height - h),
            rng.random_range(0..=width - w),
        );
        for y in top..top + h {
            let row = (y * width + left) * channels;
            for x in row..row + w * channels {
                let noise = rng.random::<f32>();
                if let Some(image) = image.as_deref_mut() {
                    image[x] = noise;
                }
            }
        }
        return;
    }
}

/// One image's random draw.
#[derive(Debug, Clone, Copy)]
struct Draw {
    flip: bool,
    /// Radians.
    angle: f64,
    /// Pixels, (rows, columns).
    shift: (f64, f64),
    contrast: f32,
    brightness: f32,
}

impl Draw {
    /// Draws every parameter, even those `augment` leaves at zero, so that
    /// turning one on does not change the draws of the others.
    fn new(rng: &mut ChaCha8Rng, augment: &Augment) -> Draw {
        let mut symmetric = |limit: f64| limit * (2.0 * rng.random::<f64>() - 1.0);
        let angle = symmetric(augment.rotation).to_radians();
        let shift = augment.shift as f64;
        let (dy, dx) = (symmetric(shift).round(), symmetric(shift).round());
        let contrast = 1.0 + symmetric(augment.contrast) as f32;
        let brightness = symmetric(augment.brightness) as f32;
        let flip = rng.random_bool(0.5) && augment.flip;
        Draw {
            flip,
            angle,
            shift: (dy, dx),
            contrast,
            brightness,
        }
    }

    fn moves(&self) -> bool {
        self.flip || self.angle != 0.0 || self.shift != (0.0, 0.0)
    }
}

/// Writes into `out` the image `source` mirrored, turned and moved by `draw`:
/// each output pixel takes the bilinear interpolation of the source at the
/// inverse transform of its position.
fn resample(source: &[f32], out: &mut [f32], [height, width, channels]: [usize; 3], draw: &Draw) {
    let centre = ((height as f64 - 1.0) / 2.0, (width as f64 - 1.0) / 2.0);
    let (sin, cos) = draw.angle.sin_cos();
    let at = |y: isize, x: isize, c: usize| -> f32 {
        if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
            0.0
        } else {
            source[(y as usize * width + x as usize) * channels + c]
        }
    };
    for y in 0..height {
        for x in 0..width {
            let x_unflipped = if draw.flip { width - 1 - x } else { x };
            let v = y as f64 - centre.0 - draw.shift.0;
            let u = x_unflipped as f64 - centre.1 - draw.shift.1;
            // The inverse rotation of (v, u) about the centre.
            let sy = cos * v - sin * u + centre.0;
            let sx = sin * v + cos * u + centre.1;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = ((sy - y0) as f32, (sx - x0) as f32);
            let (y0, x0) = (y0 as isize, x0 as isize);
            for c in 0..channels {
                let top = at(y0, x0, c) * (1.0 - fx) + at(y0, x0 + 1, c) * fx;
                let bottom = at(y0 + 1, x0, c) * (1.0 - fx) + at(y0 + 1, x0 + 1, c) * fx;
                out[(y * width + x) * channels + c] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
}

/// Contrast about each channel's mean, then brightness, then the clamp.
fn adjust(image: &mut [f32], channels: usize, draw: &Draw) {
    let pixels = (image.len() / channels.max(1)).max(1);
    for c in 0..channels {
        let mean = image.iter().skip(c).step_by(channels).sum::<f32>() / pixels as f32;
        for v in image.iter_mut().skip(c).step_by(channels) {
            *v = ((*v - mean) * draw.contrast + mean + draw.brightness).clamp(0.0, 1.0);
        }
    }
}

/// A seed for one step's draws (SplitMix64's finaliser over the three).
fn mix(seed: u64, epoch: u64, step: u64) -> u64 {
    let mut z = seed ^ epoch.rotate_left(40) ^ step.rotate_left(20) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: [usize; 3]) -> Vec<f32> {
        let n = shape.iter().product::<usize>();
        (0..n).map(|i| i as f32 / n as f32).collect()
    }

    #[test]
    fn a_share_of_a_batch_changes_as_in_the_whole_batch() {
        let shape = [6, 5, 2];
        let augment = Augment {
            shift: 2,
            flip: true,
            rotation: 15.0,
            brightness: 0.1,
            contrast: 0.2,
            erase: 0.6,
        };
        let len = shape.iter().product::<usize>();
        let batch: Vec<f32> = (0..7).flat_map(|_| ramp(shape)).collect();
        let mut whole = batch.clone();
        augment_batch(&mut whole, shape, &augment, (5, 2, 9));
        for first in [0, 3, 6] {
            let mut share = batch[first * len..].to_vec();
            augment_items(&mut share, shape, &augment, (5, 2, 9), first);
            assert_eq!(share, whole[first * len..], "from item {first}");
        }
        assert_ne!(whole, batch);
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let shape = [5, 7, 3];
        let mut images = ramp(shape);
        let before = images.clone();
        augment_batch(&mut images, shape, &Augment::default(), (1, 2, 3));
        assert_eq!(images, before);
    }

    #[test]
    fn a_flip_mirrors_rows_exactly() {
        let shape = [4, 6, 1];
        let augment = Augment {
            flip: true,
            ..Augment::default()
        };
        // Find a step whose draw flips, and check the mirror pixel by pixel.
        let original = ramp(shape);
        let flipped = (0..64).find_map(|step| {
            let mut images = original.clone();
            augment_batch(&mut images, shape, &augment, (9, 1, step));
            (images != original).then_some(images)
        });
        let flipped = flipped.expect("some step flips");
        for y in 0..4 {
            for x in 0..6 {
                assert_eq!(flipped[y * 6 + x], original[y * 6 + (5 - x)]);
            }
        }
    }

    #[test]
    fn a_shift_moves_pixels_by_whole_steps_and_fills_zeros() {
        let shape = [6, 6, 1];
        let augment = Augment {
            shift: 2,
            ..Augment::default()
        };
        let original: Vec<f32> = (0..36).map(|i| 0.1 + i as f32 / 100.0).collect();
        let mut moved_once = false;
        for step in 0..16 {
            let mut images = original.clone();
            augment_batch(&mut images, shape, &augment, (4, 1, step));
            // Every value is an original value or a zero: no blending.
            assert!(images.iter().all(|v| *v == 0.0 || original.contains(v)));
            moved_once |= images != original;
        }
        assert!(moved_once);
    }

    #[test]
    fn draws_depend_on_seed_epoch_and_step_only() {
        let shape = [8, 8, 1];
        let augment = Augment {
            shift: 2,
            flip: true,
            rotation: 15.0,
            brightness: 0.2,
            contrast: 0.2,
            erase: 0.5,
        };
        let run = |key: (u64, u64, usize)| {
            let mut images = ramp(shape).repeat(3);
            augment_batch(&mut images, shape, &augment, key);
            images
        };
        assert_eq!(run((1, 2, 3)), run((1, 2, 3)));
        assert_ne!(run((1, 2, 3)), run((1, 2, 4)));
        assert_ne!(run((1, 2, 3)), run((1, 3, 3)));
        assert_ne!(run((1, 2, 3)), run((2, 2, 3)));
        assert!(run((5, 1, 1)).iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn a_quarter_turn_moves_the_top_to_the_right() {
        let mut source = vec![0.0f32; 25];
        source[2] = 1.0; // row 0, column 2: the middle of the top edge
        let mut out = vec![0.0f32; 25];
        let draw = Draw {
            flip: false,
            angle: std::f64::consts::FRAC_PI_2,
            shift: (0.0, 0.0),
            contrast: 1.0,
            brightness: 0.0,
        };
        resample(&source, &mut out, [5, 5, 1], &draw);
        assert!((out[2 * 5 + 4] - 1.0).abs() < 1e-5, "{out:?}");
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn erasing_fills_one_rectangle_with_noise_and_leaves_other_draws_alone() {
        let shape = [10, 12, 2];
        let original: Vec<f32> = vec![-1.0; 240];
        let always = Augment {
            erase: 1.0,
            ..Augment::default()
        };
        for step in 0..20 {
            let mut image = original.clone();
            augment_batch(&mut image, shape, &always, (7, 1, step));
            // The changed pixels (both channels) make one rectangle of 2% to 40%.
            let changed: Vec<(usize, usize)> = (0..10)
                .flat_map(|y| (0..12).map(move |x| (y, x)))
                .filter(|&(y, x)| image[(y * 12 + x) * 2] != -1.0)
                .collect();
            for &(y, x) in &changed {
                let pixel = &image[(y * 12 + x) * 2..][..2];
                assert!(pixel.iter().all(|v| (0.0..1.0).contains(v)), "{pixel:?}");
            }
            let rows = changed.iter().map(|p| p.0);
            let cols = changed.iter().map(|p| p.1);
            let (top, bottom) = (
                rows.clone().min().expect("erased"),
                rows.max().expect("erased"),
            );
            let (left, right) = (
                cols.clone().min().expect("erased"),
                cols.max().expect("erased"),
            );
            assert_eq!(changed.len(), (bottom - top + 1) * (right - left + 1));
            let share = changed.len() as f64 / 120.0;
            assert!((0.01..=0.45).contains(&share), "{share}");
        }
        // Never with probability 0; about half the time with 0.5.
        let half = Augment {
            erase: 0.5,
            ..Augment::default()
        };
        let mut images = original.repeat(200);
        augment_batch(&mut images, shape, &half, (7, 1, 0));
        let erased = images
            .chunks(240)
            .filter(|i| *i != original.as_slice())
            .count();
        assert!((70..=130).contains(&erased), "{erased} of 200");
        // The flips, shifts and lighting drawn with erasing on are those drawn without it.
        let others = Augment {
            shift: 2,
            flip: true,
            brightness: 0.1,
            ..Augment::default()
        };
        let with_erasing = Augment {
            erase: 1.0,
            ..others
        };
        let run = |augment: &Augment| {
            let mut images = ramp([8, 8, 1]).repeat(4);
            augment_batch(&mut images, [8, 8, 1], augment, (3, 2, 1));
            images
        };
        let (plain, erased) = (run(&others), run(&with_erasing));
        let same = plain.iter().zip(&erased).filter(|(a, b)| a == b).count();
        assert!(same >= plain.len() / 2 && same < plain.len(), "{same}");
    }

    #[test]
    fn brightness_changes_the_whole_image_alike() {
        let shape = [2, 2, 1];
        let augment = Augment {
            brightness: 0.1,
            ..Augment::default()
        };
        let mut images = vec![0.2, 0.4, 0.6, 0.5];
        augment_batch(&mut images, shape, &augment, (3, 1, 1));
        let delta: Vec<f32> = images
            .iter()
            .zip([0.2, 0.4, 0.6, 0.5])
            .map(|(a, b)| a - b)
            .collect();
        // One brightness change for the whole image, within its limit.
        assert!(delta.iter().all(|d| (d - delta[0]).abs() < 1e-6));
        assert!(delta[0].abs() <= 0.1 + 1e-6 && delta[0] != 0.0);
    }
}
