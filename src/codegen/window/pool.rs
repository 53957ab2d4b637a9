//! Max and average pooling, global pooling and depth max pooling, forward
//! and backward.
//!
//! Max pooling keeps the first maximum of a window, scanning rows then
//! columns (a later value replaces the running maximum only if it is
//! greater); a NaN in a window is skipped unless it comes first. The
//! gradients follow TensorFlow's, recomputing what they need from `x`:
//! 2-D max pooling sends each window's `dy` to its first maximum
//! (`MaxPoolGrad`), while global and depth max pooling, which TensorFlow
//! computes with `reduce_max`, split it equally among the tied maxima
//! (`_MinOrMaxGrad`: `dx = (1[x == max] / count) * dy`).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::Variable;

use super::super::math;
use super::emit::Emitter;
use super::{block_ranges, ranges, taps, Axis, Image, Tap, WindowStorage, GLOBAL_CHUNK};
use crate::codegen::Storage;
use crate::graph::PoolKind;

/// Pooling forward. Buffers `x, y`, stored as `storage` says; work item
/// `(n, oy)` writes output row `oy` of example `n`.
pub(super) fn window_forward(
    e: &mut Emitter,
    kind: PoolKind,
    (image, storage): (Image, WindowStorage),
    rows: &Axis,
    cols: &Axis,
) {
    let (x, y) = (e.buffer(0), e.buffer(1));
    let out = output_image(image, rows, cols);
    let (row_segments, col_segments) = (rows.segments(), cols.segments());
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
                    e.over_lanes(image.c, |e, ty, lane| {
                        let from = e.add(x_pixel, lane);
                        let value = reduce(e, (kind, storage.x), ty, from, &window);
                        let to = e.add(y_pixel, lane);
                        e.store_stored(storage.y, value, to, 0);
                    });
                });
            }
        });
    });
}

/// Pooling backward. Buffers `x` (stored as `x_storage` says), `dy, dx`
/// (max) or `dy, dx` (average); work item `(n, iy)` writes input row `iy`
/// of `dx` for example `n`, adding the contributions of the windows that
/// cover it in `(oy, ox)` order.
pub(super) fn window_backward(
    e: &mut Emitter,
    kind: PoolKind,
    (image, x_storage): (Image, Storage),
    rows: &Axis,
    cols: &Axis,
) {
    let (x, dy, dx) = match kind {
        PoolKind::Max => (Some(e.buffer(0)), e.buffer(1), e.buffer(2)),
        PoolKind::Avg => (None, e.buffer(0), e.buffer(1)),
    };
    let out = output_image(image, rows, cols);
    let (row_segments, col_segments) = (rows.segments(), cols.segments());
    e.for_items(|e, item| {
        let (n, iy) = e.split(item, image.h);
        let dx_row = e.scaled(dx, item, image.row_bytes());
        e.zero(dx_row, image.w * image.c);
        let x_image = x.map(|x| e.scaled(x, n, image.image_bytes()));
        let example_rows = e.b.ins().imul_imm_s(n, rows.output as i64);
        let (first, end) = covering_rows(e, rows, iy);
        e.for_range(first, end, 1, |e, oy| {
            let output_row = e.add(example_rows, oy);
            let dy_row = e.scaled(dy, output_row, out.row_bytes());
            e.dispatch(oy, &ranges(&row_segments), |e, k| {
                let row = &row_segments[k];
                let top = e.position(rows, oy, row.taps.start);
                // Row iy is row `iy - top` of the window's taps inside the input.
                let window_row = e.b.ins().isub(iy, top);
                let x_row = x_image.map(|x| e.scaled(x, top, image.row_bytes()));
                for col in &col_segments {
                    let scatter = Scatter {
                        x_storage,
                        window: taps(image, rows, cols, row, col),
                        columns: col.taps.len(),
                        window_row,
                        x_row,
                        dy_row,
                        dx_row,
                    };
                    e.for_each(col.outputs.clone(), |e, ox| {
                        scatter_window(e, &scatter, image, cols, col.taps.start, ox)
                    });
                }
            });
        });
    });
}

/// Global pooling forward. Buffers `x, y`; work item `(n, chunk)` writes
/// channels `16 * chunk ..` (up to 16) of `y[n]`.
pub(super) fn global_forward(e: &mut Emitter, kind: PoolKind, image: Image) {
    let (x, y) = (e.buffer(0), e.buffer(1));
    for_chunks(e, image, x, y, |e, lanes, x_base, y_base| {
        let accumulators: Vec<Variable> = lanes
            .iter()
            .map(|&(ty, offset)| {
                let first = e.load(ty, x_base, offset);
                e.var(ty, first)
            })
            .collect();
        let (start, end) = (e.int(1), e.int(image.pixels() as i64));
        e.for_range(start, end, 1, |e, p| {
            let pixel = e.scaled(x_base, p, image.pixel_bytes());
            for (&var, &(ty, offset)) in accumulators.iter().zip(lanes) {
                let (value, acc) = (e.load(ty, pixel, offset), e.get(var));
                let next = combine(e, kind, ty, acc, value);
                e.set(var, next);
            }
        });
        for (&var, &(ty, offset)) in accumulators.iter().zip(lanes) {
            let mut value = e.get(var);
            if kind == PoolKind::Avg {
                let scale = e.constant(ty, 1.0 / image.pixels() as f32);
                value = e.b.ins().fmul(value, scale);
            }
            e.store(value, y_base, offset);
        }
    });
}

/// Global pooling backward. Buffers `x, dy, dx` (max) or `dy, dx`
/// (average); work item `(n, chunk)` writes channels `16 * chunk ..` (up
/// to 16) of `dx[n]` at every pixel.
pub(super) fn global_backward(e: &mut Emitter, kind: PoolKind, image: Image) {
    match kind {
        PoolKind::Max => global_max_backward(e, image),
        PoolKind::Avg => global_avg_backward(e, image),
    }
}

/// `dx = dy / (H * W)` at every pixel. Buffers `dy, dx`.
fn global_avg_backward(e: &mut Emitter, image: Image) {
    let (dy, dx) = (e.buffer(0), e.buffer(1));
    for_chunks(e, image, dx, dy, |e, lanes, dx_base, dy_base| {
        let gradients: Vec<Value> = lanes
            .iter()
            .map(|&(ty, offset)| {
                let g = e.load(ty, dy_base, offset);
                let scale = e.constant(ty, 1.0 / image.pixels() as f32);
                e.b.ins().fmul(g, scale)
            })
            .collect();
        let (start, end) = (e.int(0), e.int(image.pixels() as i64));
        e.for_range(start, end, 1, |e, p| {
            let pixel = e.scaled(dx_base, p, image.pixel_bytes());
            for (&g, &(_, offset)) in gradients.iter().zip(lanes) {
                e.store(g, pixel, offset);
            }
        });
    });
}

/// `dx = (1[x == max] / count) * dy` at every pixel, `count` being how many
/// pixels hold the maximum: TensorFlow's gradient of `reduce_max`, in its
/// order of rounding, so tied maxima share `dy` equally and bit for bit as
/// TensorFlow computes it. Buffers `x, dy, dx`.
fn global_max_backward(e: &mut Emitter, image: Image) {
    let (x, dy, dx) = (e.buffer(0), e.buffer(1), e.buffer(2));
    for_chunks(e, image, dx, dy, |e, lanes, dx_base, dy_base| {
        // The x chunk starts at the same channel offset as the dx chunk.
        let offset = e.b.ins().isub(dx_base, dx);
        let x_base = e.add(x, offset);
        let maxima = global_max_and_count(e, image, lanes, x_base);
        let shares: Vec<(Value, Value, Value)> = maxima
            .iter()
            .zip(lanes)
            .map(|(&(max, count), &(ty, offset))| {
                let g = e.load(ty, dy_base, offset);
                (max, share(e, count), lift(e, ty, g))
            })
            .collect();
        let (start, end) = (e.int(0), e.int(image.pixels() as i64));
        e.for_range(start, end, 1, |e, p| {
            let x_pixel = e.scaled(x_base, p, image.pixel_bytes());
            let dx_pixel = e.scaled(dx_base, p, image.pixel_bytes());
            for (&(max, share, g), &(ty, offset)) in shares.iter().zip(lanes) {
                let value = e.load(ty, x_pixel, offset);
                let value = lift(e, ty, value);
                let gradient = split_tied(e, value, max, share, g);
                let gradient = lower(e, ty, gradient);
                e.store(gradient, dx_pixel, offset);
            }
        });
    });
}

/// Depth max pooling forward. Buffers `x, y`; work item `p` writes pixel `p`
/// (of all `N * H * W`) of `y`. Groups of channels are not aligned with
/// vector lanes, so this one is scalar.
pub(super) fn depth_forward(e: &mut Emitter, image: Image, size: usize) {
    let (x, y) = (e.buffer(0), e.buffer(1));
    let groups = image.c / size;
    e.for_items(|e, item| {
        let x_pixel = e.scaled(x, item, image.pixel_bytes());
        let y_pixel = e.scaled(y, item, groups as i64 * 4);
        e.for_each(0..groups, |e, g| {
            let from = e.scaled(x_pixel, g, size as i64 * 4);
            let (max, _) = argmax(
                e,
                (types::F32, Storage::F32),
                from,
                (0..size).map(|k| k as i64 * 4),
            );
            let to = e.scaled(y_pixel, g, 4);
            e.store(max, to, 0);
        });
    });
}

/// Depth max pooling backward. Buffers `x, dy, dx`; work item `p` writes
/// pixel `p` of `dx`: each group's `dy` is split equally among the group's
/// tied maxima, `dx = (1[x == max] / count) * dy`, as TensorFlow's gradient
/// of `reduce_max` over the group. Scalar, in the first lane of `f32x4`s.
pub(super) fn depth_backward(e: &mut Emitter, image: Image, size: usize) {
    let (x, dy, dx) = (e.buffer(0), e.buffer(1), e.buffer(2));
    let groups = image.c / size;
    e.for_items(|e, item| {
        let x_pixel = e.scaled(x, item, image.pixel_bytes());
        let dx_pixel = e.scaled(dx, item, image.pixel_bytes());
        let dy_pixel = e.scaled(dy, item, groups as i64 * 4);
        e.for_each(0..groups, |e, g| {
            let from = e.scaled(x_pixel, g, size as i64 * 4);
            let values: Vec<Value> = (0..size)
                .map(|k| {
                    let value = e.load(types::F32, from, k as i64 * 4);
                    lift(e, types::F32, value)
                })
                .collect();
            let max = values[1..]
                .iter()
                .fold(values[0], |max, &value| running_max(e, value, max));
            let mut count = e.b.ins().fcmp(FloatCC::Equal, values[0], max);
            for &value in &values[1..] {
                let equal = e.b.ins().fcmp(FloatCC::Equal, value, max);
                count = e.b.ins().iadd(count, equal);
            }
            let share = share(e, count);
            let gy_at = e.scaled(dy_pixel, g, 4);
            let gy = e.load(types::F32, gy_at, 0);
            let gy = lift(e, types::F32, gy);
            let to = e.scaled(dx_pixel, g, size as i64 * 4);
            for (k, &value) in values.iter().enumerate() {
                let gradient = split_tied(e, value, max, share, gy);
                let gradient = lower(e, types::F32, gradient);
                e.store(gradient, to, k as i64 * 4);
            }
        });
    });
}

/// The window's values reduced: the max, or the mean of the taps.
fn reduce(
    e: &mut Emitter,
    (kind, storage): (PoolKind, Storage),
    ty: Type,
    from: Value,
    window: &[Tap],
) -> Value {
    let mut acc = e.load_stored(storage, ty, from, window[0].offset);
    for tap in &window[1..] {
        let value = e.load_stored(storage, ty, from, tap.offset);
        acc = combine(e, kind, ty, acc, value);
    }
    if kind == PoolKind::Avg && window.len() > 1 {
        let scale = e.constant(ty, 1.0 / window.len() as f32);
        acc = e.b.ins().fmul(acc, scale);
    }
    acc
}

/// One step of a max (the first maximum stays) or a sum.
fn combine(e: &mut Emitter, kind: PoolKind, ty: Type, acc: Value, value: Value) -> Value {
    match kind {
        PoolKind::Max => e.choose(ty, FloatCC::GreaterThan, value, acc, value, acc),
        PoolKind::Avg => e.b.ins().fadd(acc, value),
    }
}

/// The maximum of the values at `offsets` from `from` (in a buffer stored
/// as `storage`), and the position of its first occurrence among them (as
/// f32 lanes).
fn argmax(
    e: &mut Emitter,
    (ty, storage): (Type, Storage),
    from: Value,
    offsets: impl IntoIterator<Item = i64>,
) -> (Value, Value) {
    let mut offsets = offsets.into_iter();
    let first = offsets.next().unwrap_or(0);
    let mut max = e.load_stored(storage, ty, from, first);
    let mut index = e.constant(ty, 0.0);
    for (k, offset) in offsets.enumerate() {
        let value = e.load_stored(storage, ty, from, offset);
        let position = e.constant(ty, (k + 1) as f32);
        index = e.choose(ty, FloatCC::GreaterThan, value, max, position, index);
        max = e.choose(ty, FloatCC::GreaterThan, value, max, value, max);
    }
    (max, index)
}

/// What the backward pass of one (row segment, column segment) pair needs.
struct Scatter {
    /// How `x` is stored.
    x_storage: Storage,
    /// The window's taps inside the input.
    window: Vec<Tap>,
    /// Taps per window row.
    columns: usize,
    /// Which row of the window input row `iy` is (runtime).
    window_row: Value,
    /// `x` at the window's first tap row (max pooling only).
    x_row: Option<Value>,
    dy_row: Value,
    dx_row: Value,
}

/// Adds the gradient of window `(oy, ox)` to the `dx` row it covers.
fn scatter_window(
    e: &mut Emitter,
    s: &Scatter,
    image: Image,
    cols: &Axis,
    first_tap: usize,
    ox: Value,
) {
    let ix = e.position(cols, ox, first_tap);
    let dx_pixel = e.scaled(s.dx_row, ix, image.pixel_bytes());
    let dy_pixel = e.scaled(s.dy_row, ox, image.pixel_bytes());
    let x_pixel = s.x_row.map(|x| e.scaled(x, ix, image.pixel_bytes()));
    // The index, among the window's taps, of the first one in row iy.
    let row_start = e.b.ins().imul_imm_s(s.window_row, s.columns as i64);
    let row_start = e.b.ins().fcvt_from_sint(types::F32, row_start);
    e.over_lanes(image.c, |e, ty, lane| {
        let gy_at = e.add(dy_pixel, lane);
        let mut gy = e.load(ty, gy_at, 0);
        let to = e.add(dx_pixel, lane);
        let first_max = x_pixel.map(|x| {
            let from = e.add(x, lane);
            argmax(
                e,
                (ty, s.x_storage),
                from,
                s.window.iter().map(|t| t.offset),
            )
            .1
        });
        if first_max.is_none() {
            let scale = e.constant(ty, 1.0 / s.window.len() as f32);
            gy = e.b.ins().fmul(gy, scale);
        }
        for j in 0..s.columns {
            let offset = j as i64 * image.pixel_bytes();
            let old = e.load(ty, to, offset);
            let sum = e.b.ins().fadd(old, gy);
            let new = match first_max {
                Some(index) => {
                    let tap = e.widen(ty, row_start);
                    let column = e.constant(ty, j as f32);
                    let tap = e.b.ins().fadd(tap, column);
                    e.choose(ty, FloatCC::Equal, index, tap, sum, old)
                }
                None => sum,
            };
            e.store(new, to, offset);
        }
    });
}

/// The output rows whose windows cover input row `iy` (no dilation):
/// `o * stride - before <= iy <= o * stride - before + kernel - 1`.
fn covering_rows(e: &mut Emitter, rows: &Axis, iy: Value) -> (Value, Value) {
    let lowest =
        e.b.ins()
            .iadd_imm_s(iy, rows.before as i64 + 1 - rows.kernel as i64);
    let zero = e.int(0);
    let lowest = e.b.ins().smax(lowest, zero);
    let rounded = e.b.ins().iadd_imm_s(lowest, rows.stride as i64 - 1);
    let first = e.b.ins().udiv_imm_u(rounded, rows.stride as i64);
    let highest = e.b.ins().iadd_imm_s(iy, rows.before as i64);
    let last = e.b.ins().udiv_imm_u(highest, rows.stride as i64);
    let end = e.b.ins().iadd_imm_s(last, 1);
    let outputs = e.int(rows.output as i64);
    let end = e.b.ins().smin(end, outputs);
    (first, end)
}

/// Runs `body(lanes, image_base, vector_base)` for the channel chunk of
/// each work item `(n, chunk)`: the bases point at the chunk's first
/// channel in example `n` of the `[N, H, W, C]` buffer `image_buffer` (at
/// its first pixel) and of the `[N, C]` buffer `vector_buffer`. `lanes`
/// lists the chunk's vectors and scalars as `(type, byte offset)`.
fn for_chunks(
    e: &mut Emitter,
    image: Image,
    image_buffer: Value,
    vector_buffer: Value,
    mut body: impl FnMut(&mut Emitter, &[(Type, i64)], Value, Value),
) {
    let chunks = image.c.div_ceil(GLOBAL_CHUNK);
    let full = image.c / GLOBAL_CHUNK;
    let ranges = block_ranges(full, !image.c.is_multiple_of(GLOBAL_CHUNK));
    e.for_items(|e, item| {
        let (n, chunk) = e.split(item, chunks);
        let chunk_bytes = GLOBAL_CHUNK as i64 * 4;
        let image_base = e.scaled(image_buffer, n, image.image_bytes());
        let image_base = e.scaled(image_base, chunk, chunk_bytes);
        let vector_base = e.scaled(vector_buffer, n, image.pixel_bytes());
        let vector_base = e.scaled(vector_base, chunk, chunk_bytes);
        e.dispatch(chunk, &ranges, |e, k| {
            let width = if ranges[k].start < full {
                GLOBAL_CHUNK
            } else {
                image.c % GLOBAL_CHUNK
            };
            body(e, &lanes(width), image_base, vector_base)
        });
    });
}

/// The vectors, then the scalars, of `width` consecutive channels.
fn lanes(width: usize) -> Vec<(Type, i64)> {
    let vectors = (0..width / 4).map(|v| (types::F32X4, v as i64 * 16));
    let scalars = (width / 4 * 4..width).map(|c| (types::F32, c as i64 * 4));
    vectors.chain(scalars).collect()
}

/// Per lane group, the maximum over the whole image and minus the number
/// of pixels that hold it ([`max_and_count_step`]), as `f32x4` and `i32x4`.
fn global_max_and_count(
    e: &mut Emitter,
    image: Image,
    lanes: &[(Type, i64)],
    x_base: Value,
) -> Vec<(Value, Value)> {
    let mut maxima = Vec::with_capacity(lanes.len());
    for &(ty, offset) in lanes {
        let first = e.load(ty, x_base, offset);
        let first = lift(e, ty, first);
        let minus_one = e.b.ins().iconst(types::I32, -1);
        let minus_one = e.b.ins().splat(types::I32X4, minus_one);
        let max = e.var(types::F32X4, first);
        maxima.push((max, e.var(types::I32X4, minus_one)));
    }
    let (start, end) = (e.int(1), e.int(image.pixels() as i64));
    e.for_range(start, end, 1, |e, p| {
        let pixel = e.scaled(x_base, p, image.pixel_bytes());
        for (&(max, count), &(ty, offset)) in maxima.iter().zip(lanes) {
            let value = e.load(ty, pixel, offset);
            let value = lift(e, ty, value);
            let (old_max, old_count) = (e.get(max), e.get(count));
            let (new_max, new_count) = max_and_count_step(e, value, old_max, old_count);
            e.set(max, new_max);
            e.set(count, new_count);
        }
    });
    maxima
        .into_iter()
        .map(|(max, count)| (e.get(max), e.get(count)))
        .collect()
}

/// One step of a running maximum and of minus the count of values equal
/// to it, on `f32x4` lanes. A comparison's true lane is -1, so a greater
/// `value` restarts the count at -1 and an equal one adds -1, without a
/// branch: `count = (count & !greater) + (value >= max)`.
fn max_and_count_step(e: &mut Emitter, value: Value, max: Value, count: Value) -> (Value, Value) {
    let greater = e.b.ins().fcmp(FloatCC::LessThan, max, value);
    let not_less = e.b.ins().fcmp(FloatCC::LessThanOrEqual, max, value);
    let kept = e.b.ins().band_not(count, greater);
    let count = e.b.ins().iadd(kept, not_less);
    (running_max(e, value, max), count)
}

/// `value` where it is greater than `max`, else `max` (so the first of
/// tied values, and a NaN only if it came first), written so that Cranelift
/// emits one `maxps`.
fn running_max(e: &mut Emitter, value: Value, max: Value) -> Value {
    let greater = e.b.ins().fcmp(FloatCC::LessThan, max, value);
    math::select(&mut e.b, types::F32X4, greater, value, max)
}

/// `1 / count` as `f32x4`, from minus the count as `i32x4`. The count is at
/// least 1 unless the maximum is a NaN, which no value equals, so that an
/// infinite share is always masked out by [`split_tied`].
fn share(e: &mut Emitter, minus_count: Value) -> Value {
    let count = e.b.ins().ineg(minus_count);
    let count = e.b.ins().fcvt_from_sint(types::F32X4, count);
    let one = e.constant(types::F32X4, 1.0);
    e.b.ins().fdiv(one, count)
}

/// `(1[value == max] * share) * dy` on `f32x4` lanes, with `share = 1 /
/// count`: TensorFlow's `divide(indicators, num_selected) * grad`, rounded
/// as it rounds (`0 * dy` keeps the sign of `dy`, as there).
fn split_tied(e: &mut Emitter, value: Value, max: Value, share: Value, dy: Value) -> Value {
    let equal = e.b.ins().fcmp(FloatCC::Equal, value, max);
    let equal = e.b.ins().bitcast(types::F32X4, MemFlagsData::new(), equal);
    let share = e.b.ins().band(equal, share);
    e.b.ins().fmul(share, dy)
}

/// A lane group as `f32x4`: vectors as they are, a scalar in lane 0, so
/// that the counts of ties use vector masks and need no branch.
fn lift(e: &mut Emitter, ty: Type, value: Value) -> Value {
    if ty.is_vector() {
        value
    } else {
        e.b.ins().scalar_to_vector(types::F32X4, value)
    }
}

/// The inverse of [`lift`]: a scalar lane group's value from lane 0.
fn lower(e: &mut Emitter, ty: Type, value: Value) -> Value {
    if ty.is_vector() {
        value
    } else {
        e.b.ins().extractlane(value, 0)
    }
}

fn output_image(image: Image, rows: &Axis, cols: &Axis) -> Image {
    Image {
        n: image.n,
        h: rows.output,
        w: cols.output,
        c: image.c,
    }
}
