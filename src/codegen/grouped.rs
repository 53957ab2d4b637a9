//! Grouped convolution (Keras's `Conv2D(groups=g)`): forward, input
//! gradient and kernel gradient, written in Rust.
//!
//! Input channels split into `g` consecutive blocks of `cin = C / g`, filters
//! into `g` blocks of `cout = F / g`; output channel `o` reads input block
//! `o / cout`. The kernel `[kh, kw, cin, F]` is, flat, `[kh * kw * cin, F]`:
//! row `(tap, i)` is contiguous in the output channel, like `y`.
//!
//! # Why not the GEMM, nor the depthwise kernel
//!
//! Each group is a convolution of its own, but a small one: ResNeXt's 3x3
//! layers have 32 groups of 4 channels, so a group's product is
//! `[pixels, 36] x [36, 4]`, far below the sizes where the GEMM (and
//! im2col, Winograd) pay off, and 32 of them per layer. The depthwise
//! kernel is the other end (`cin = 1`), generated lane by lane for it.
//! Here every loop runs over all `F` output channels at once, which the
//! compiler vectorises: the input is first *expanded*, `xe[i][o] =
//! x[(o / cout) * cin + i]`, so that the product of input channel `i` of
//! every group with its filters is one element-wise multiply-add of two
//! contiguous rows of `F` values (`xe[i]` and the kernel row `(tap, i)`).
//! The expansion costs `cout` copies per input value, against `taps * cout`
//! multiply-adds. An ordinary convolution (`groups: 1`) never comes here.
//!
//! # Domains
//!
//! | pass | buffers | one work item |
//! |---|---|---|
//! | forward | `x, kernel, [bias,] y` | one output row `(n, oy)`: `N * OH` items |
//! | backward-data | `dy, kernel, dx` | one input row `(n, iy)`: `N * H` items |
//! | backward-filter | `x, dy, dkernel, [dbias]` | one tap's `cin` kernel rows; the last item the bias |
//!
//! Every item writes its own elements only, each as a sum in a fixed order
//! (the kernel gradient: each output row's positions in order, then the
//! rows in order), so any split of the domain gives bitwise the same result.
//! Every index comes from [`Axis`] (checked when the kernel is built) and
//! every buffer is a slice of the length the kernel was built for, so no
//! access leaves its buffer.

use std::ops::Range;

use super::axis::Axis;
use super::contraction::ConvShape;
use super::program::Kernel;
use super::CodegenError;

/// Which computation of a grouped convolution a kernel performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupedPass {
    /// `y` from `x`, the kernel and the bias.
    Forward,
    /// `dx` from `dy` and the kernel.
    BackwardData,
    /// `dkernel` and `dbias` from `x` and `dy`.
    BackwardFilter,
}

/// A grouped convolution kernel to build: the layer's sizes (`in_channels`
/// and `out_channels` are the totals), its groups and the pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupedConv {
    /// A name for errors and profiles.
    pub name: String,
    /// The layer's sizes.
    pub shape: ConvShape,
    /// Channel groups, at least 2 (one is an ordinary convolution).
    pub groups: usize,
    /// Which pass.
    pub pass: GroupedPass,
}

impl GroupedConv {
    /// The kernel's arguments' lengths in order: read lengths then written
    /// ones, as `(length, written)`.
    pub fn buffers(&self) -> Result<Vec<(usize, bool)>, CodegenError> {
        let g = Checked::new(self)?;
        let (x, y, w, b) = (g.input_len, g.output_len, g.kernel_len, g.filters);
        let bias = self.shape.bias;
        Ok(match self.pass {
            GroupedPass::Forward => {
                let mut args = vec![(x, false), (w, false)];
                if bias {
                    args.push((b, false));
                }
                args.push((y, true));
                args
            }
            GroupedPass::BackwardData => vec![(y, false), (w, false), (x, true)],
            GroupedPass::BackwardFilter => {
                let mut args = vec![(x, false), (y, false), (w, true)];
                if bias {
                    args.push((b, true));
                }
                args
            }
        })
    }

    /// The kernel, checked: sizes that fit, channels that split into the
    /// groups.
    pub fn build(&self) -> Result<GroupedKernel, CodegenError> {
        Ok(GroupedKernel {
            name: self.name.clone(),
            pass: self.pass,
            bias: self.shape.bias,
            g: Checked::new(self)?,
        })
    }

    /// Multiply-adds of the pass (the threading threshold's measure).
    pub fn work(&self) -> usize {
        let s = &self.shape;
        let per_group = s.in_channels / self.groups.max(1);
        [
            s.batch,
            s.height,
            s.width,
            s.kernel[0],
            s.kernel[1],
            per_group,
            s.out_channels,
        ]
        .iter()
        .fold(1usize, |p, &d| p.saturating_mul(d))
    }
}

/// A built grouped convolution kernel ([`GroupedConv::build`]).
#[derive(Debug, Clone)]
pub struct GroupedKernel {
    name: String,
    pass: GroupedPass,
    bias: bool,
    g: Checked,
}

/// The sizes of a grouped convolution, checked.
#[derive(Debug, Clone, Copy)]
struct Checked {
    batch: usize,
    rows: Axis,
    cols: Axis,
    channels: usize,
    filters: usize,
    /// Input channels per group.
    cin: usize,
    /// Filters per group.
    cout: usize,
    input_len: usize,
    output_len: usize,
    kernel_len: usize,
}

impl Checked {
    fn new(conv: &GroupedConv) -> Result<Checked, CodegenError> {
        let malformed = |message: String| CodegenError::Malformed {
            kernel: conv.name.clone(),
            message,
        };
        let s = conv.shape;
        let groups = conv.groups;
        let sizes = [
            s.batch,
            s.height,
            s.width,
            s.in_channels,
            s.out_channels,
            groups,
        ];
        if sizes.contains(&0) {
            return Err(malformed(format!("a size is zero: {s:?}, {groups} groups")));
        }
        if !s.in_channels.is_multiple_of(groups) || !s.out_channels.is_multiple_of(groups) {
            return Err(malformed(format!(
                "{} input channels and {} filters do not both split into {groups} groups",
                s.in_channels, s.out_channels
            )));
        }
        let (Some(rows), Some(cols)) = (s.axis(0), s.axis(1)) else {
            return Err(malformed(format!(
                "a {}x{} kernel does not fit a {}x{} input",
                s.kernel[0], s.kernel[1], s.height, s.width
            )));
        };
        let product = |factors: &[usize]| {
            factors
                .iter()
                .try_fold(1usize, |p, &f| p.checked_mul(f))
                .filter(|&p| p <= isize::MAX as usize / 4)
                .ok_or_else(|| malformed(format!("the buffer sizes of {s:?} overflow")))
        };
        let cin = s.in_channels / groups;
        Ok(Checked {
            batch: s.batch,
            rows,
            cols,
            channels: s.in_channels,
            filters: s.out_channels,
            cin,
            cout: s.out_channels / groups,
            input_len: product(&[s.batch, s.height, s.width, s.in_channels])?,
            output_len: product(&[s.batch, rows.output, cols.output, s.out_channels])?,
            kernel_len: product(&[s.kernel[0], s.kernel[1], cin, s.out_channels])?,
        })
    }

    fn taps(&self) -> usize {
        self.rows.kernel * self.cols.kernel
    }

    /// `out[o] = pixel[(o / cout) * cin + i]` for every output channel `o`:
    /// input channel `i` of each group, repeated for the group's filters.
    fn expand(&self, pixel: &[f32], i: usize, out: &mut [f32]) {
        for (block, group) in out
            .chunks_exact_mut(self.cout)
            .zip(pixel.chunks_exact(self.cin))
        {
            block.fill(group[i]);
        }
    }

    /// The kernel row `(tap, i)`: `F` values.
    fn kernel_row<'k>(&self, kernel: &'k [f32], tap: usize, i: usize) -> &'k [f32] {
        let f = self.filters;
        &kernel[(tap * self.cin + i) * f..][..f]
    }

    /// `y` row `(n, oy)`: the bias (or zero), plus each tap's products;
    /// `expanded` is scratch for one expanded input row, `[w][cin][F]`.
    fn forward_row(
        &self,
        x: &[f32],
        weights: Weights<'_>,
        row: usize,
        y: &mut [f32],
        expanded: &mut [f32],
    ) {
        let Weights { kernel, bias } = weights;
        let (f, c, w) = (self.filters, self.channels, self.cols.input);
        let (n, oy) = (row / self.rows.output, row % self.rows.output);
        for pixel in y.chunks_exact_mut(f) {
            match bias {
                Some(b) => pixel.copy_from_slice(b),
                None => pixel.fill(0.0),
            }
        }
        for ky in 0..self.rows.kernel {
            let Some(iy) = self.rows.source(oy, ky) else {
                continue;
            };
            let x_row = &x[(n * self.rows.input + iy) * w * c..][..w * c];
            for (pixel, out) in x_row
                .chunks_exact(c)
                .zip(expanded.chunks_exact_mut(self.cin * f))
            {
                for (i, line) in out.chunks_exact_mut(f).enumerate() {
                    self.expand(pixel, i, line);
                }
            }
            for (ox, acc) in y.chunks_exact_mut(f).enumerate() {
                for kx in 0..self.cols.kernel {
                    let Some(ix) = self.cols.source(ox, kx) else {
                        continue;
                    };
                    let tap = ky * self.cols.kernel + kx;
                    let lines = &expanded[ix * self.cin * f..][..self.cin * f];
                    for (i, line) in lines.chunks_exact(f).enumerate() {
                        multiply_add(acc, line, self.kernel_row(kernel, tap, i));
                    }
                }
            }
        }
    }

    /// `dx` row `(n, iy)`: for each input pixel, the products of the `dy`
    /// pixels that read it with their kernel rows, summed over taps in
    /// order into `acc`, `[cin][F]`, then over each group's filters.
    fn backward_data_row(
        &self,
        dy: &[f32],
        kernel: &[f32],
        row: usize,
        dx: &mut [f32],
        acc: &mut [f32],
    ) {
        let (f, c) = (self.filters, self.channels);
        let (n, iy) = (row / self.rows.input, row % self.rows.input);
        let out_w = self.cols.output;
        for (ix, target) in dx.chunks_exact_mut(c).enumerate() {
            acc.fill(0.0);
            for ky in 0..self.rows.kernel {
                let Some(oy) = self.rows.reader(iy, ky) else {
                    continue;
                };
                for kx in 0..self.cols.kernel {
                    let Some(ox) = self.cols.reader(ix, kx) else {
                        continue;
                    };
                    let tap = ky * self.cols.kernel + kx;
                    let at = ((n * self.rows.output + oy) * out_w + ox) * f;
                    let gy = &dy[at..][..f];
                    for (i, line) in acc.chunks_exact_mut(f).enumerate() {
                        multiply_add(line, gy, self.kernel_row(kernel, tap, i));
                    }
                }
            }
            // dx[j * cin + i] = sum over group j's filters of acc[i].
            for (j, group) in target.chunks_exact_mut(self.cin).enumerate() {
                for (i, value) in group.iter_mut().enumerate() {
                    *value = acc[i * f + j * self.cout..][..self.cout].iter().sum();
                }
            }
        }
    }

    /// The kernel gradient of tap `tap`: `[cin][F]`, summed over every
    /// output position whose tap reads the input, row by row.
    fn filter_tap(&self, x: &[f32], dy: &[f32], tap: usize, out: &mut [f32]) {
        let (f, c, w) = (self.filters, self.channels, self.cols.input);
        let (ky, kx) = (tap / self.cols.kernel, tap % self.cols.kernel);
        let (out_h, out_w) = (self.rows.output, self.cols.output);
        out.fill(0.0);
        let mut partial = vec![0.0f32; self.cin * f];
        let mut line = vec![0.0f32; f];
        for row in 0..self.batch * out_h {
            let (n, oy) = (row / out_h, row % out_h);
            let Some(iy) = self.rows.source(oy, ky) else {
                continue;
            };
            partial.fill(0.0);
            for ox in 0..out_w {
                let Some(ix) = self.cols.source(ox, kx) else {
                    continue;
                };
                let pixel = &x[((n * self.rows.input + iy) * w + ix) * c..][..c];
                let gy = &dy[(row * out_w + ox) * f..][..f];
                for (i, sum) in partial.chunks_exact_mut(f).enumerate() {
                    self.expand(pixel, i, &mut line);
                    multiply_add(sum, &line, gy);
                }
            }
            add_assign(out, &partial);
        }
    }

    /// The bias gradient: `dy` summed over every position, row by row.
    fn filter_bias(&self, dy: &[f32], out: &mut [f32]) {
        let f = self.filters;
        out.fill(0.0);
        let mut partial = vec![0.0f32; f];
        for row in dy.chunks_exact(self.cols.output * f) {
            partial.fill(0.0);
            for gy in row.chunks_exact(f) {
                add_assign(&mut partial, gy);
            }
            add_assign(out, &partial);
        }
    }
}

/// A forward pass's kernel and bias.
#[derive(Clone, Copy)]
struct Weights<'a> {
    kernel: &'a [f32],
    bias: Option<&'a [f32]>,
}

/// `acc[o] += a[o] * b[o]`.
fn multiply_add(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((s, &p), &q) in acc.iter_mut().zip(a).zip(b) {
        *s += p * q;
    }
}

/// `acc[o] += a[o]`.
fn add_assign(acc: &mut [f32], a: &[f32]) {
    for (s, &p) in acc.iter_mut().zip(a) {
        *s += p;
    }
}

impl Kernel for GroupedKernel {
    fn name(&self) -> &str {
        &self.name
    }

    fn domain(&self) -> usize {
        let g = &self.g;
        match self.pass {
            GroupedPass::Forward => g.batch * g.rows.output,
            GroupedPass::BackwardData => g.batch * g.rows.input,
            GroupedPass::BackwardFilter => g.taps() + usize::from(self.bias),
        }
    }

    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let g = &self.g;
        let expected = match self.pass {
            GroupedPass::Forward | GroupedPass::BackwardFilter => 3 + usize::from(self.bias),
            GroupedPass::BackwardData => 3,
        };
        if args.len() != expected || items.end > self.domain() || items.start > items.end {
            return Err(format!(
                "{}: {} buffers and items {items:?}; the kernel takes {expected} buffers and a domain of {}",
                self.name,
                args.len(),
                self.domain()
            ));
        }
        // SAFETY (for every slice below): the caller guarantees the buffers
        // hold the lengths the kernel was built for (`GroupedConv::buffers`);
        // read buffers are not written while the kernel runs, and each item
        // makes a mutable slice of only the part of its output it writes,
        // which no other item touches.
        let read =
            |b: usize, len: usize| unsafe { std::slice::from_raw_parts(args[b].cast_const(), len) };
        let write = |b: usize, start: usize, len: usize| unsafe {
            std::slice::from_raw_parts_mut(args[b].add(start), len)
        };
        let f = g.filters;
        match self.pass {
            GroupedPass::Forward => {
                let (x, kernel) = (read(0, g.input_len), read(1, g.kernel_len));
                let bias = self.bias.then(|| read(2, f));
                let weights = Weights { kernel, bias };
                let y = 2 + usize::from(self.bias);
                let row_len = g.cols.output * f;
                // One expanded input row, reused by every item of the call.
                let mut expanded = vec![0.0f32; g.cols.input * g.cin * f];
                for row in items {
                    let out = write(y, row * row_len, row_len);
                    g.forward_row(x, weights, row, out, &mut expanded);
                }
            }
            GroupedPass::BackwardData => {
                let (dy, kernel) = (read(0, g.output_len), read(1, g.kernel_len));
                let row_len = g.cols.input * g.channels;
                let mut acc = vec![0.0f32; g.cin * f];
                for row in items {
                    let out = write(2, row * row_len, row_len);
                    g.backward_data_row(dy, kernel, row, out, &mut acc);
                }
            }
            GroupedPass::BackwardFilter => {
                let (x, dy) = (read(0, g.input_len), read(1, g.output_len));
                let tap_len = g.cin * f;
                for item in items {
                    if item < g.taps() {
                        g.filter_tap(x, dy, item, write(2, item * tap_len, tap_len));
                    } else {
                        g.filter_bias(dy, write(3, 0, f));
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
    use crate::graph::Padding;

    fn shape(in_channels: usize, out_channels: usize) -> ConvShape {
        ConvShape {
            batch: 2,
            height: 5,
            width: 4,
            in_channels,
            out_channels,
            kernel: [3, 2],
            stride: [2, 1],
            dilation: [1, 1],
            padding: Padding::Same,
            bias: true,
        }
    }

    fn conv(pass: GroupedPass) -> GroupedConv {
        GroupedConv {
            name: "g".into(),
            shape: shape(4, 6),
            groups: 2,
            pass,
        }
    }

    #[test]
    fn buffers_are_in_keras_layouts() {
        // x [2, 5, 4, 4], kernel [3, 2, 2, 6], bias [6], y [2, 3, 4, 6].
        let forward = conv(GroupedPass::Forward).buffers().unwrap();
        assert_eq!(
            forward,
            vec![(160, false), (72, false), (6, false), (144, true)]
        );
        let filter = conv(GroupedPass::BackwardFilter).buffers().unwrap();
        assert_eq!(
            filter,
            vec![(160, false), (144, false), (72, true), (6, true)]
        );
        let kernel = conv(GroupedPass::BackwardFilter).build().unwrap();
        assert_eq!(kernel.domain(), 3 * 2 + 1);
    }

    #[test]
    fn channels_that_do_not_split_are_refused() {
        let bad = GroupedConv {
            shape: shape(4, 5),
            ..conv(GroupedPass::Forward)
        };
        let err = bad.build().unwrap_err().to_string();
        assert!(err.contains("4 input channels and 5 filters"), "{err}");
    }

    #[test]
    fn a_call_with_the_wrong_buffers_is_refused() {
        let kernel = conv(GroupedPass::Forward).build().unwrap();
        let mut x = vec![0.0f32; 4];
        // SAFETY: the kernel refuses the call before it reads a buffer.
        let err = unsafe { kernel.run(&[x.as_mut_ptr()], 0..1) }.unwrap_err();
        assert!(err.contains("takes 4 buffers"), "{err}");
    }
}
