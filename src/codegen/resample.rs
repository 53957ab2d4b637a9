//! Upsampling (Keras's `UpSampling2D`) and its gradient, as one Rust
//! kernel: both are separable resamplings, `out = A_h . in . A_w^T` for
//! each image and channel, where each row of the matrices `A` lists the
//! few input pixels that one output pixel reads (its *taps*) and their
//! weights. The gradient is the same kernel with the transposed matrices.
//!
//! The taps of one axis of `n` pixels upsampled by `f`, output pixel `o`:
//!
//! - nearest: input pixel `o / f`, weight 1 (each input pixel repeated
//!   over a block of `f`, as Keras's `ops.repeat`);
//! - bilinear: TensorFlow's `resize_bilinear` with half-pixel centres (what
//!   `tf.image.resize(method="bilinear")` does without antialiasing, which
//!   Keras 3's `UpSampling2D(interpolation="bilinear")` calls): the source
//!   position `s = (o + 0.5) / f - 0.5`, the pixels `max(floor(s), 0)` and
//!   `min(ceil(s), n - 1)` with weights `1 - t` and `t`, `t = s - floor(s)`;
//!   two taps on one pixel (at the edges) are one tap of their summed
//!   weight.
//!
//! The gradient's taps of input pixel `i` are the output pixels whose taps
//! read `i`, with the same weights, in increasing order: the nearest
//! gradient sums each block of `f x f` output gradients.

use std::ops::Range;

use super::program::Kernel;
use crate::graph::Interpolation;

/// Which way a resampling runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResamplePass {
    /// The upsampling: small input, large output.
    Forward,
    /// Its gradient: the large output's gradient in, the small input's
    /// gradient out.
    Backward,
}

/// An upsampling of NHWC images `input` by `factor`, or its gradient.
/// Buffers: forward, `x [input]` then `y [batch, h * factor[0], w *
/// factor[1], channels]`; backward, `dy` (the latter's shape) then `dx`
/// (the former's). Domain: the rows of the output (`batch` times its
/// height), each written by one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resample {
    /// A name for errors and profiles.
    pub name: String,
    /// How the new pixels are filled.
    pub mode: Interpolation,
    /// Vertical and horizontal factor.
    pub factor: [usize; 2],
    /// `[batch, height, width, channels]` of the upsampling's input.
    pub input: [usize; 4],
    /// The upsampling or its gradient.
    pub pass: ResamplePass,
}

impl Resample {
    /// `[batch, height, width, channels]` of the upsampling's output, or
    /// an error for a zero factor or a size that overflows.
    pub fn upsampled(&self) -> Result<[usize; 4], String> {
        let [batch, height, width, channels] = self.input;
        let scaled = |n: usize, f: usize| {
            if f == 0 {
                return Err("an upsampling factor is 0".to_string());
            }
            n.checked_mul(f)
                .ok_or_else(|| "the upsampled size overflows".to_string())
        };
        let up = [
            batch,
            scaled(height, self.factor[0])?,
            scaled(width, self.factor[1])?,
            channels,
        ];
        up.iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| "the upsampled size overflows".to_string())?;
        Ok(up)
    }

    /// The lengths of the buffer read and the buffer written.
    pub fn lengths(&self) -> Result<(usize, usize), String> {
        let small = self.input.iter().product();
        let large = self.upsampled()?.iter().product();
        Ok(match self.pass {
            ResamplePass::Forward => (small, large),
            ResamplePass::Backward => (large, small),
        })
    }

    /// The kernel, its tap tables built; an error for a description that
    /// [`Resample::upsampled`] refuses.
    pub fn kernel(&self) -> Result<ResampleKernel, String> {
        let [batch, height, width, channels] = self.input;
        let [_, up_height, up_width, _] = self.upsampled()?;
        let rows = Taps::upsampling(self.mode, height, self.factor[0]);
        let columns = Taps::upsampling(self.mode, width, self.factor[1]);
        Ok(match self.pass {
            ResamplePass::Forward => ResampleKernel {
                name: self.name.clone(),
                batch,
                channels,
                source: [height, width],
                target: [up_height, up_width],
                rows,
                columns,
            },
            ResamplePass::Backward => ResampleKernel {
                name: self.name.clone(),
                batch,
                channels,
                source: [up_height, up_width],
                target: [height, width],
                rows: rows.transposed(height),
                columns: columns.transposed(width),
            },
        })
    }
}

/// The taps of each target pixel of one axis: target `t` reads sources
/// `sources[offsets[t]..offsets[t + 1]]` with the weights beside them.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    offsets: Vec<usize>,
    sources: Vec<usize>,
    weights: Vec<f32>,
}

impl Taps {
    /// The taps of an axis of `n` pixels upsampled by `factor` (see the
    /// module's documentation).
    fn upsampling(mode: Interpolation, n: usize, factor: usize) -> Taps {
        let mut taps = Taps {
            offsets: vec![0],
            sources: Vec::new(),
            weights: Vec::new(),
        };
        for o in 0..n * factor {
            match mode {
                Interpolation::Nearest => taps.push(o / factor, 1.0),
                Interpolation::Bilinear => {
                    let s = (o as f64 + 0.5) / factor as f64 - 0.5;
                    let floor = s.floor();
                    let t = s - floor;
                    let last = n as f64 - 1.0;
                    let lower = floor.clamp(0.0, last) as usize;
                    let upper = s.ceil().clamp(0.0, last) as usize;
                    if lower == upper {
                        taps.push(lower, 1.0);
                    } else {
                        taps.push(lower, (1.0 - t) as f32);
                        taps.push(upper, t as f32);
                    }
                }
            }
            taps.offsets.push(taps.sources.len());
        }
        taps
    }

    fn push(&mut self, source: usize, weight: f32) {
        self.sources.push(source);
        self.weights.push(weight);
    }

    /// The transposed taps, for `sources` source pixels: each source's
    /// targets, in increasing order.
    fn transposed(&self, sources: usize) -> Taps {
        let mut lists: Vec<Vec<(usize, f32)>> = vec![Vec::new(); sources];
        for target in 0..self.offsets.len() - 1 {
            for tap in self.offsets[target]..self.offsets[target + 1] {
                lists[self.sources[tap]].push((target, self.weights[tap]));
            }
        }
        let mut taps = Taps {
            offsets: vec![0],
            sources: Vec::new(),
            weights: Vec::new(),
        };
        for list in lists {
            for (target, weight) in list {
                taps.push(target, weight);
            }
            taps.offsets.push(taps.sources.len());
        }
        taps
    }

    /// The taps of target `t`: its sources and weights.
    fn of(&self, t: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let range = self.offsets[t]..self.offsets[t + 1];
        self.sources[range.clone()]
            .iter()
            .copied()
            .zip(self.weights[range].iter().copied())
    }
}

/// A resampling ready to run: `target[b, y, x, :] = sum over the taps
/// (sy, wy) of row y and (sx, wx) of column x of wy * wx * source[b, sy,
/// sx, :]`, the taps in their order. Every tap's source lies inside the
/// source image, by construction ([`Resample::kernel`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResampleKernel {
    name: String,
    batch: usize,
    channels: usize,
    /// Height and width of the images read.
    source: [usize; 2],
    /// Height and width of the images written.
    target: [usize; 2],
    rows: Taps,
    columns: Taps,
}

impl Kernel for ResampleKernel {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.batch * self.target[0]
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let c = self.channels;
        let [source_h, source_w] = self.source;
        let target_w = self.target[1];
        let items = items.start..items.end.min(self.domain());
        if items.is_empty() {
            return Ok(());
        }
        // SAFETY: the caller guarantees `args[0]` holds the whole batch of
        // source images and `args[1]` of target images; the items of one
        // call are whole rows of the target, written by this call alone.
        let (source, target) = unsafe {
            (
                std::slice::from_raw_parts(args[0], self.batch * source_h * source_w * c),
                std::slice::from_raw_parts_mut(
                    args[1].add(items.start * target_w * c),
                    items.len() * target_w * c,
                ),
            )
        };
        for (row, item) in target.chunks_exact_mut((target_w * c).max(1)).zip(items) {
            let (b, y) = (item / self.target[0], item % self.target[0]);
            row.fill(0.0);
            for (x, pixel) in row.chunks_exact_mut(c.max(1)).enumerate() {
                for (sy, wy) in self.rows.of(y) {
                    for (sx, wx) in self.columns.of(x) {
                        let weight = wy * wx;
                        let start = ((b * source_h + sy) * source_w + sx) * c;
                        for (out, &value) in pixel.iter_mut().zip(&source[start..start + c]) {
                            *out += weight * value;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taps(t: &Taps) -> Vec<Vec<(usize, f32)>> {
        (0..t.offsets.len() - 1)
            .map(|i| t.of(i).collect())
            .collect()
    }

    #[test]
    fn nearest_repeats_and_its_transpose_sums_blocks() {
        let forward = Taps::upsampling(Interpolation::Nearest, 2, 3);
        assert_eq!(
            taps(&forward),
            [0, 0, 0, 1, 1, 1].map(|s| vec![(s, 1.0)]).to_vec()
        );
        let backward = forward.transposed(2);
        assert_eq!(
            taps(&backward),
            vec![
                vec![(0, 1.0), (1, 1.0), (2, 1.0)],
                vec![(3, 1.0), (4, 1.0), (5, 1.0)]
            ]
        );
    }

    #[test]
    fn bilinear_uses_half_pixel_centres_and_clamps_the_edges() {
        // Three pixels doubled: sources -0.25, 0.25, 0.75, ..., 2.25.
        let forward = Taps::upsampling(Interpolation::Bilinear, 3, 2);
        assert_eq!(
            taps(&forward),
            vec![
                vec![(0, 1.0)],
                vec![(0, 0.75), (1, 0.25)],
                vec![(0, 0.25), (1, 0.75)],
                vec![(1, 0.75), (2, 0.25)],
                vec![(1, 0.25), (2, 0.75)],
                vec![(2, 1.0)],
            ]
        );
        // Every output pixel's weights sum to 1; every input pixel's
        // gradient weights to the factor.
        for list in taps(&forward.transposed(3)) {
            let total: f32 = list.iter().map(|(_, w)| w).sum();
            assert_eq!(total, 2.0);
        }
    }

    #[test]
    fn a_factor_of_zero_is_refused() {
        let resample = Resample {
            name: "up".into(),
            mode: Interpolation::Nearest,
            factor: [2, 0],
            input: [1, 2, 2, 1],
            pass: ResamplePass::Forward,
        };
        assert!(resample.kernel().is_err());
        assert!(resample.lengths().is_err());
    }
}
