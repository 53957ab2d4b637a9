//! Depthwise convolution: forward, backward-data and backward-filter.
//!
//! The filter `[kh, kw, C, M]` is, flat, `[kh * kw, C * M]`: row `t` (tap
//! `ky * kw + kx`) is contiguous in the output channel `o = c * M + m`, like
//! `y`. The forward and backward-filter kernels are vectorised over output
//! channels in blocks of `lcm(4, M)`, whole vectors holding whole input
//! channels, so each lane's input channel is a constant of the code; a tail
//! of fewer channels is scalar. The backward-data kernel is vectorised over
//! input channels for `M = 1` and scalar otherwise (each `dx` channel sums
//! `M` output channels, which lie across lanes).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::Variable;

use super::emit::Emitter;
use super::{block_ranges, ranges, taps, Depthwise, Segment};

/// Depthwise forward. Buffers `x, filter, [bias,] y`; work item `(n, oy)`
/// writes output row `oy` of example `n`.
pub(super) fn forward(e: &mut Emitter, conv: &Depthwise) {
    let (x, filter) = (e.buffer(0), e.buffer(1));
    let bias = conv.bias.then(|| e.buffer(2));
    let y = e.buffer(2 + usize::from(conv.bias));
    let (image, out, rows, cols) = (conv.image, conv.output(), &conv.rows, &conv.cols);
    let (row_segments, col_segments) = (rows.segments(), cols.segments());
    let blocks = Blocks::new(conv);
    e.for_items(|e, item| {
        let (n, oy) = e.split(item, rows.output);
        let x_image = e.scaled(x, n, image.image_bytes());
        let y_row = e.scaled(y, item, out.row_bytes());
        e.dispatch(oy, &ranges(&row_segments), |e, k| {
            let row = &row_segments[k];
            let iy = e.position(rows, oy, row.taps.start);
            let x_row = e.scaled(x_image, iy, image.row_bytes());
            for col in &col_segments {
                let window = taps(image, rows, cols, row, col);
                e.for_each(col.outputs.clone(), |e, ox| {
                    let ix = e.position(cols, ox, col.taps.start);
                    let x_pixel = e.scaled(x_row, ix, image.pixel_bytes());
                    let y_pixel = e.scaled(y_row, ox, out.pixel_bytes());
                    blocks.for_each(e, |e, lanes, output, input| {
                        let [x_at, y_at, w_at] =
                            [(x_pixel, input), (y_pixel, output), (filter, output)]
                                .map(|(base, offset)| e.add(base, offset));
                        let b_at = bias.map(|b| e.add(b, output));
                        for group in lanes {
                            let mut acc = match b_at {
                                Some(b) => e.load(group.ty, b, group.output as i64 * 4),
                                None => e.constant(group.ty, 0.0),
                            };
                            for tap in &window {
                                let xv = load_inputs(e, group, x_at, tap.offset);
                                let weight = (tap.filter * out.c + group.output) as i64 * 4;
                                let wv = e.load(group.ty, w_at, weight);
                                acc = e.fma(xv, wv, acc);
                            }
                            e.store(acc, y_at, group.output as i64 * 4);
                        }
                    });
                });
            }
        });
    });
}

/// Depthwise backward-data. Buffers `dy, filter, dx`; work item `(n, iy)`
/// writes input row `iy` of `dx` for example `n`, adding the contributions
/// of the output positions that read it in `(ky, ox, kx)` order.
pub(super) fn backward_data(e: &mut Emitter, conv: &Depthwise) {
    let (dy, filter, dx) = (e.buffer(0), e.buffer(1), e.buffer(2));
    let (image, out, rows, cols) = (conv.image, conv.output(), &conv.rows, &conv.cols);
    let col_segments = cols.segments();
    e.for_items(|e, item| {
        let (n, iy) = e.split(item, image.h);
        let dx_row = e.scaled(dx, item, image.row_bytes());
        e.zero(dx_row, image.w * image.c);
        for ky in 0..rows.kernel {
            // Output row oy reads iy through tap ky if oy * stride = iy + before - ky * dilation.
            let reach =
                e.b.ins()
                    .iadd_imm_s(iy, rows.before as i64 - (ky * rows.dilation) as i64);
            let limit = (rows.output * rows.stride) as i64;
            let mut reads = e.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, reach, limit);
            if rows.stride > 1 {
                let rest = e.b.ins().urem_imm_u(reach, rows.stride as i64);
                let aligned = e.b.ins().icmp_imm_s(IntCC::Equal, rest, 0);
                reads = e.b.ins().band(reads, aligned);
            }
            e.when(reads, |e| {
                let oy = e.b.ins().udiv_imm_u(reach, rows.stride as i64);
                let example_rows = e.b.ins().imul_imm_s(n, rows.output as i64);
                let output_row = e.add(example_rows, oy);
                let dy_row = e.scaled(dy, output_row, out.row_bytes());
                for col in &col_segments {
                    e.for_each(col.outputs.clone(), |e, ox| {
                        let ix = e.position(cols, ox, col.taps.start);
                        let dx_pixel = e.scaled(dx_row, ix, image.pixel_bytes());
                        let dy_pixel = e.scaled(dy_row, ox, out.pixel_bytes());
                        let pixels = Pixels {
                            dx: dx_pixel,
                            dy: dy_pixel,
                            filter,
                        };
                        scatter(e, conv, &pixels, ky, col);
                    });
                }
            });
        }
    });
}

/// Depthwise backward-filter. Buffers `x, dy, dfilter, [dbias]`; work item
/// `q` writes output channels `[q * B, (q + 1) * B)` (`B = lcm(4, M)`; the
/// last item the rest) of `dfilter` and `dbias`, each summed over `n`, `oy`,
/// `ox` in that order.
pub(super) fn backward_filter(e: &mut Emitter, conv: &Depthwise) {
    let blocks = Blocks::new(conv);
    let ranges = block_ranges(blocks.full, blocks.tail > 0);
    let vector = blocks.lanes(blocks.block, types::F32X4);
    let scalar = blocks.lanes(blocks.tail, types::F32);
    e.for_items(|e, item| {
        e.dispatch(item, &ranges, |e, k| {
            if ranges[k].start < blocks.full {
                let output = e.b.ins().imul_imm_s(item, blocks.output_bytes());
                let input = e.b.ins().imul_imm_s(item, blocks.input_bytes());
                filter_block(e, conv, &vector, output, input);
            } else {
                let output = e.int(blocks.full as i64 * blocks.output_bytes());
                let input = e.int(blocks.full as i64 * blocks.input_bytes());
                filter_block(e, conv, &scalar, output, input);
            }
        });
    });
}

/// Output channels computed together: one `f32x4` or one `f32`, relative to
/// the first output and input channel of a block.
struct Lanes {
    ty: Type,
    /// The first output channel.
    output: usize,
    /// The input channel of each lane.
    inputs: Vec<usize>,
}

/// The output channels in full blocks of `lcm(4, M)`, then a tail.
struct Blocks {
    multiplier: usize,
    block: usize,
    full: usize,
    tail: usize,
}

impl Blocks {
    fn new(conv: &Depthwise) -> Blocks {
        let block = conv.block();
        Blocks {
            multiplier: conv.multiplier,
            block,
            full: conv.output_channels() / block,
            tail: conv.output_channels() % block,
        }
    }

    fn output_bytes(&self) -> i64 {
        self.block as i64 * 4
    }

    fn input_bytes(&self) -> i64 {
        (self.block / self.multiplier) as i64 * 4
    }

    /// The lane groups of `outputs` channels, as vectors or scalars.
    fn lanes(&self, outputs: usize, ty: Type) -> Vec<Lanes> {
        let width = ty.lane_count() as usize;
        (0..outputs / width)
            .map(|g| Lanes {
                ty,
                output: g * width,
                inputs: (g * width..(g + 1) * width)
                    .map(|o| o / self.multiplier)
                    .collect(),
            })
            .collect()
    }

    /// Runs `body(lanes, output, input)` for every block, `output` and
    /// `input` the byte offsets of its first output and input channel: a
    /// loop over the full blocks, then the tail.
    fn for_each(
        &self,
        e: &mut Emitter,
        mut body: impl FnMut(&mut Emitter, &[Lanes], Value, Value),
    ) {
        let vector = self.lanes(self.block, types::F32X4);
        e.for_each(0..self.full, |e, q| {
            let output = e.b.ins().imul_imm_s(q, self.output_bytes());
            let input = e.b.ins().imul_imm_s(q, self.input_bytes());
            body(e, &vector, output, input);
        });
        if self.tail > 0 {
            let scalar = self.lanes(self.tail, types::F32);
            let output = e.int(self.full as i64 * self.output_bytes());
            let input = e.int(self.full as i64 * self.input_bytes());
            body(e, &scalar, output, input);
        }
    }
}

/// `x` at the input channels of `lanes`' lanes, from `address + offset`: one
/// vector load when they are consecutive, else scalar loads put together.
fn load_inputs(e: &mut Emitter, lanes: &Lanes, address: Value, offset: i64) -> Value {
    let at = |c: usize| offset + c as i64 * 4;
    let first = lanes.inputs[0];
    if lanes.ty == types::F32 {
        return e.load(types::F32, address, at(first));
    }
    if lanes
        .inputs
        .iter()
        .enumerate()
        .all(|(l, &c)| c == first + l)
    {
        return e.load(lanes.ty, address, at(first));
    }
    let mut scalar = e.load(types::F32, address, at(first));
    let mut vector = e.b.ins().splat(lanes.ty, scalar);
    let mut loaded = first;
    for (l, &c) in lanes.inputs.iter().enumerate().skip(1) {
        if c != first {
            if c != loaded {
                scalar = e.load(types::F32, address, at(c));
                loaded = c;
            }
            vector = e.b.ins().insertlane(vector, scalar, l as u8);
        }
    }
    vector
}

/// Where the backward-data kernel reads and writes for one output position.
struct Pixels {
    dx: Value,
    dy: Value,
    filter: Value,
}

/// `dx[ix(kx)] += sum_m dy[o] * filter[ky, kx, o]` over the taps `kx` of
/// column segment `col` and output channels `o = c * M + m`.
fn scatter(e: &mut Emitter, conv: &Depthwise, at: &Pixels, ky: usize, col: &Segment) {
    let (image, cols, out_c) = (conv.image, &conv.cols, conv.output_channels());
    let dx_offset = |j: usize| (j * cols.dilation) as i64 * image.pixel_bytes();
    let weight = |kx: usize, m: usize| ((ky * cols.kernel + kx) * out_c + m) as i64 * 4;
    if conv.multiplier == 1 {
        e.over_lanes(image.c, |e, ty, lane| {
            let [dx_at, dy_at, w_at] = [at.dx, at.dy, at.filter].map(|p| e.add(p, lane));
            let gy = e.load(ty, dy_at, 0);
            for (j, kx) in col.taps.clone().enumerate() {
                let w = e.load(ty, w_at, weight(kx, 0));
                let old = e.load(ty, dx_at, dx_offset(j));
                let new = e.fma(gy, w, old);
                e.store(new, dx_at, dx_offset(j));
            }
        });
        return;
    }
    let m_count = conv.multiplier;
    e.for_each(0..image.c, |e, c| {
        let dx_at = e.scaled(at.dx, c, 4);
        let dy_at = e.scaled(at.dy, c, m_count as i64 * 4);
        let w_at = e.scaled(at.filter, c, m_count as i64 * 4);
        for (j, kx) in col.taps.clone().enumerate() {
            let mut acc = e.load(types::F32, dx_at, dx_offset(j));
            for m in 0..m_count {
                let gy = e.load(types::F32, dy_at, m as i64 * 4);
                let w = e.load(types::F32, w_at, weight(kx, m));
                acc = e.fma(gy, w, acc);
            }
            e.store(acc, dx_at, dx_offset(j));
        }
    });
}

/// Sums `dfilter` (and `dbias`) of one block of output channels over the
/// batch and all output positions, then stores them.
fn filter_block(e: &mut Emitter, conv: &Depthwise, lanes: &[Lanes], output: Value, input: Value) {
    let (image, out, rows, cols) = (conv.image, conv.output(), &conv.rows, &conv.cols);
    let (x, dy, dfilter) = (e.buffer(0), e.buffer(1), e.buffer(2));
    let dbias = conv.bias.then(|| e.buffer(3));
    let zero = |e: &mut Emitter, ty: Type| {
        let z = e.constant(ty, 0.0);
        e.var(ty, z)
    };
    let sums: Vec<Vec<Variable>> = (0..rows.kernel * cols.kernel)
        .map(|_| lanes.iter().map(|g| zero(e, g.ty)).collect())
        .collect();
    let bias_sums: Vec<Variable> = match dbias {
        Some(_) => lanes.iter().map(|g| zero(e, g.ty)).collect(),
        None => Vec::new(),
    };
    let (row_segments, col_segments) = (rows.segments(), cols.segments());
    let x_block = e.add(x, input);
    let dy_block = e.add(dy, output);
    let (start, end) = (e.int(0), e.int((image.n * rows.output) as i64));
    e.for_range(start, end, 1, |e, r| {
        let (n, oy) = e.split(r, rows.output);
        let x_image = e.scaled(x_block, n, image.image_bytes());
        let dy_row = e.scaled(dy_block, r, out.row_bytes());
        e.dispatch(oy, &ranges(&row_segments), |e, k| {
            let row = &row_segments[k];
            let iy = e.position(rows, oy, row.taps.start);
            let x_row = e.scaled(x_image, iy, image.row_bytes());
            for col in &col_segments {
                let window = taps(image, rows, cols, row, col);
                e.for_each(col.outputs.clone(), |e, ox| {
                    let ix = e.position(cols, ox, col.taps.start);
                    let x_pixel = e.scaled(x_row, ix, image.pixel_bytes());
                    let dy_pixel = e.scaled(dy_row, ox, out.pixel_bytes());
                    for (g, group) in lanes.iter().enumerate() {
                        let gy = e.load(group.ty, dy_pixel, group.output as i64 * 4);
                        if let Some(&sum) = bias_sums.get(g) {
                            let acc = e.get(sum);
                            let acc = e.b.ins().fadd(acc, gy);
                            e.set(sum, acc);
                        }
                        for tap in &window {
                            let xv = load_inputs(e, group, x_pixel, tap.offset);
                            let sum = sums[tap.filter][g];
                            let acc = e.get(sum);
                            let acc = e.fma(gy, xv, acc);
                            e.set(sum, acc);
                        }
                    }
                });
            }
        });
    });
    let dfilter_block = e.add(dfilter, output);
    for (t, per_tap) in sums.iter().enumerate() {
        for (group, &sum) in lanes.iter().zip(per_tap) {
            let value = e.get(sum);
            e.store(value, dfilter_block, (t * out.c + group.output) as i64 * 4);
        }
    }
    if let Some(dbias) = dbias {
        let dbias_block = e.add(dbias, output);
        for (group, &sum) in lanes.iter().zip(&bias_sums) {
            let value = e.get(sum);
            e.store(value, dbias_block, group.output as i64 * 4);
        }
    }
}
