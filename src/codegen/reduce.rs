//! Reduction kernels: softmax and its gradient, softmax fused with the
//! sparse categorical cross-entropy, and per-column statistics (batchnorm's
//! moments, the sums of its gradient and of a bias gradient).
//!
//! Every kernel runs over a *domain* of independent work items with the ABI
//! `extern "C" fn(args: *const *mut f32, start: u64, end: u64)`; no two items
//! write the same element and each sum is taken in a fixed order inside one
//! item, so any split of the domain across threads gives bitwise the same
//! result.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use super::{elementwise, loops, math, CodegenError, Storage};

/// Columns handled by one work item of the column reductions: one 64-byte
/// cache line of each row.
pub const COLUMN_BLOCK: usize = 16;

/// What a reduction computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReduceKind {
    /// `y = softmax(x)` along each row. Buffers: `x [rows, n]`, `y [rows, n]`.
    /// Domain: rows.
    Softmax,
    /// `dx = y * (dy - sum(dy * y))` along each row, the gradient of softmax.
    /// Buffers: `y`, `dy`, `dx`, all `[rows, n]`. Domain: rows.
    SoftmaxBackward,
    /// Softmax and sparse categorical cross-entropy on logits, per row:
    /// `loss = logsumexp(z) - sum_j t_j z_j` with the target
    /// `t = (1 - smoothing) onehot(label) + smoothing / n`, and its gradient
    /// `dz = (softmax(z) - t) * scale`. Buffers: `z [rows, n]`, `labels [rows]`
    /// (class indices stored as f32), `loss [rows]`, `dz [rows, n]`. A label
    /// that is not a whole number in [0, n) is clamped into the row and its
    /// row's loss is NaN: the kernel never reads or writes outside a row.
    /// A row of one score (`n == 1`) is a sigmoid's logit, scored with the
    /// binary cross-entropy as `tf.nn.sigmoid_cross_entropy_with_logits`:
    /// `loss = max(z, 0) - z t + log(1 + exp(-|z|))`, the gradient
    /// `dz = (sigmoid(z) - t) scale`, with `t = (1 - smoothing) label +
    /// smoothing / 2` (Keras's `BinaryCrossentropy` smoothing) and a label
    /// of 0 or 1 (any other: NaN loss). Domain: rows.
    CrossEntropy {
        /// Label smoothing in [0, 1).
        smoothing: f32,
        /// The factor of the gradient (the loss weight over the rows: the
        /// batch size, or all its pixels for a per-pixel loss).
        scale: f32,
    },
    /// The mean and biased variance of each column (two passes, as
    /// `tf.nn.moments`). Buffers: `x [rows, n]`, `mean [n]`, `variance [n]`.
    /// Domain: blocks of [`COLUMN_BLOCK`] columns.
    ColumnMoments,
    /// The sums of each column of `a` and of `a * b`. Buffers: `a [rows, n]`,
    /// `b [rows, n]`, `sum_a [n]`, `sum_ab [n]`. Domain: blocks of
    /// [`COLUMN_BLOCK`] columns.
    ColumnSums,
    /// Like [`ReduceKind::ColumnSums`], separately for each batch item's
    /// `rows_per_item` rows: the SE-block's channel-weight gradient. Buffers:
    /// `a`, `b` `[rows, n]`, `sum_a`, `sum_ab` `[rows / rows_per_item, n]`.
    /// Domain: items times blocks of [`COLUMN_BLOCK`] columns.
    ItemSums {
        /// Rows of one batch item.
        rows_per_item: usize,
    },
    /// LeNet-5's RBF units, `y[r, j] = sum_i (x[r, i] - c[i, j])^2`, with
    /// `n` inputs. Buffers: `x [rows, n]`, `c [n, units]`, `y [rows, units]`.
    /// Domain: rows.
    Rbf {
        /// Output units.
        units: usize,
    },
    /// `dx[r, i] = 2 sum_j dy[r, j] (x[r, i] - c[i, j])`. Buffers: `x`, `c`,
    /// `dy [rows, units]`, `dx [rows, n]`. Domain: rows.
    RbfBackwardData {
        /// Output units.
        units: usize,
    },
    /// `dc[i, j] = -2 sum_r dy[r, j] (x[r, i] - c[i, j])`. Buffers: `x`,
    /// `c`, `dy`, `dc [n, units]`. Domain: the `n` inputs.
    RbfBackwardCenters {
        /// Output units.
        units: usize,
    },
}

/// A reduction over a `[rows, n]` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduce {
    /// A name for dumps and errors.
    pub name: String,
    /// What it computes.
    pub kind: ReduceKind,
    /// Rows of the matrix.
    pub rows: usize,
    /// Length of a row (classes, channels).
    pub n: usize,
    /// How each input buffer is stored, f32 past the end: bf16 (two values
    /// to a slot, widened as loaded) only for [`ReduceKind::ColumnMoments`]'
    /// `x`.
    pub loads: Vec<Storage>,
}

impl Reduce {
    /// The number of work items the kernel's domain has.
    pub fn domain(&self) -> usize {
        match self.kind {
            ReduceKind::Softmax | ReduceKind::SoftmaxBackward | ReduceKind::CrossEntropy { .. } => {
                self.rows
            }
            ReduceKind::ColumnMoments | ReduceKind::ColumnSums => self.n.div_ceil(COLUMN_BLOCK),
            ReduceKind::ItemSums { rows_per_item } => {
                self.rows / rows_per_item.max(1) * self.n.div_ceil(COLUMN_BLOCK)
            }
            ReduceKind::Rbf { .. } | ReduceKind::RbfBackwardData { .. } => self.rows,
            ReduceKind::RbfBackwardCenters { .. } => self.n,
        }
    }

    /// How input buffer `i` is stored.
    pub fn load(&self, i: usize) -> Storage {
        self.loads.get(i).copied().unwrap_or_default()
    }

    /// The number of buffers the kernel takes.
    pub fn buffers(&self) -> usize {
        match self.kind {
            ReduceKind::Softmax => 2,
            ReduceKind::SoftmaxBackward => 3,
            ReduceKind::CrossEntropy { .. }
            | ReduceKind::ColumnSums
            | ReduceKind::ItemSums { .. } => 4,
            ReduceKind::ColumnMoments | ReduceKind::Rbf { .. } => 3,
            ReduceKind::RbfBackwardData { .. } | ReduceKind::RbfBackwardCenters { .. } => 4,
        }
    }

    /// Checks the sizes and attributes.
    pub fn validate(&self) -> Result<(), CodegenError> {
        let malformed = |message: &str| {
            Err(CodegenError::Malformed {
                kernel: self.name.clone(),
                message: message.into(),
            })
        };
        if self.rows == 0 || self.n == 0 {
            return malformed("a reduction needs at least one row and one column");
        }
        let bf16 = (0..self.loads.len()).any(|i| self.load(i) == Storage::Bf16);
        let only_x = self.kind == ReduceKind::ColumnMoments
            && (1..self.loads.len()).all(|i| self.load(i) == Storage::F32);
        if bf16 && !only_x {
            return malformed("only the column moments' input may be stored in bf16");
        }
        if let ReduceKind::Rbf { units }
        | ReduceKind::RbfBackwardData { units }
        | ReduceKind::RbfBackwardCenters { units } = self.kind
        {
            if units == 0
                || i64::try_from(
                    units
                        .saturating_mul(self.n.max(self.rows))
                        .saturating_mul(4),
                )
                .is_err()
            {
                return malformed("an RBF layer needs at least one unit, and addressable sizes");
            }
        }
        if let ReduceKind::ItemSums { rows_per_item } = self.kind {
            if rows_per_item == 0 || !self.rows.is_multiple_of(rows_per_item) {
                return malformed("the rows must split into whole items");
            }
        }
        if let ReduceKind::CrossEntropy { smoothing, scale } = self.kind {
            if !(0.0..1.0).contains(&smoothing) || !scale.is_finite() {
                return malformed(
                    "label smoothing must lie in [0, 1) and the scale must be finite",
                );
            }
        }
        if i64::try_from(self.rows.saturating_mul(self.n).saturating_mul(4)).is_err() {
            return malformed("the matrix is too large to address");
        }
        Ok(())
    }
}

/// Writes the kernel's code into `func`: `(args: ptr, start: i64, end: i64)`.
pub(super) fn translate(
    kernel: &Reduce,
    func: &mut Function,
    context: &mut FunctionBuilderContext,
    target: TargetFrontendConfig,
) {
    let mut b = FunctionBuilder::new(func, context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (args, start, end) = (params[0], params[1], params[2]);
    let pointer = target.pointer_type();
    let flags = MemFlagsData::new().with_notrap();
    let bases: Vec<Value> = (0..kernel.buffers())
        .map(|i| b.ins().load(pointer, flags, args, (i * 8) as i32))
        .collect();
    let k = Kernel {
        n: kernel.n,
        rows: kernel.rows,
        flags,
        x: kernel.load(0),
    };
    match kernel.kind {
        ReduceKind::Softmax => {
            loops::counted(&mut b, start, end, 1, &[], |b, row, _| {
                k.softmax_row(b, &bases, row);
                vec![]
            });
        }
        ReduceKind::SoftmaxBackward => {
            loops::counted(&mut b, start, end, 1, &[], |b, row, _| {
                k.softmax_backward_row(b, &bases, row);
                vec![]
            });
        }
        ReduceKind::CrossEntropy { smoothing, scale } => {
            loops::counted(&mut b, start, end, 1, &[], |b, row, _| {
                if kernel.n == 1 {
                    k.binary_cross_entropy_row(b, &bases, row, smoothing, scale);
                } else {
                    k.cross_entropy_row(b, &bases, row, smoothing, scale);
                }
                vec![]
            });
        }
        ReduceKind::Rbf { units }
        | ReduceKind::RbfBackwardData { units }
        | ReduceKind::RbfBackwardCenters { units } => {
            loops::counted(&mut b, start, end, 1, &[], |b, item, _| {
                k.rbf(b, &bases, item, units, kernel.kind);
                vec![]
            });
        }
        ReduceKind::ColumnMoments | ReduceKind::ColumnSums | ReduceKind::ItemSums { .. } => {
            let moments = kernel.kind == ReduceKind::ColumnMoments;
            let rows_per_item = match kernel.kind {
                ReduceKind::ItemSums { rows_per_item } => rows_per_item,
                _ => kernel.rows,
            };
            let blocks = kernel.n.div_ceil(COLUMN_BLOCK) as i64;
            let k = Kernel {
                rows: rows_per_item,
                ..k
            };
            loops::counted(&mut b, start, end, 1, &[], |b, work, _| {
                let item = b.ins().udiv_imm_u(work, blocks);
                let block = b.ins().urem_imm_u(work, blocks);
                k.column_block(b, &bases, item, block, moments);
                vec![]
            });
        }
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(target);
}

/// The constants of one kernel, for the emitters below.
struct Kernel {
    n: usize,
    rows: usize,
    flags: MemFlagsData,
    /// How buffer 0 is stored (read by the column moments alone).
    x: Storage,
}

impl Kernel {
    /// The address of element `index` (an i64 element count) of `base`.
    fn address(&self, b: &mut FunctionBuilder, base: Value, index: Value) -> Value {
        let bytes = b.ins().imul_imm_s(index, 4);
        b.ins().iadd(base, bytes)
    }

    /// The address of the start of `row` of an `[rows, n]` buffer.
    fn row_start(&self, b: &mut FunctionBuilder, base: Value, row: Value) -> Value {
        let bytes = b.ins().imul_imm_s(row, (self.n * 4) as i64);
        b.ins().iadd(base, bytes)
    }

    fn load(&self, b: &mut FunctionBuilder, ty: Type, row: Value, i: Value) -> Value {
        let address = self.address(b, row, i);
        b.ins().load(ty, self.flags, address, 0)
    }

    fn store(&self, b: &mut FunctionBuilder, value: Value, row: Value, i: Value) {
        let address = self.address(b, row, i);
        b.ins().store(self.flags, value, address, 0);
    }

    /// Folds `f(acc, element)` over a row: four lanes at a time, then the
    /// tail, then across the lanes with `combine`. Returns the scalar.
    fn fold_row(
        &self,
        b: &mut FunctionBuilder,
        init: f32,
        mut step: impl FnMut(&mut FunctionBuilder, Type, Value, Value) -> Value,
        combine: impl Fn(&mut FunctionBuilder, Value, Value) -> Value,
    ) -> Value {
        let zero = b.ins().iconst(types::I64, 0);
        let vector_end = b.ins().iconst(types::I64, (self.n & !3) as i64);
        let end = b.ins().iconst(types::I64, self.n as i64);
        let v0 = math::constant(b, types::F32X4, init);
        let lanes = loops::counted(b, zero, vector_end, 4, &[v0], |b, i, acc| {
            vec![step(b, types::F32X4, i, acc[0])]
        });
        let mut scalar = b.ins().extractlane(lanes[0], 0);
        for lane in 1..4 {
            let x = b.ins().extractlane(lanes[0], lane);
            scalar = combine(b, scalar, x);
        }
        loops::counted(b, vector_end, end, 1, &[scalar], |b, i, acc| {
            vec![step(b, types::F32, i, acc[0])]
        })[0]
    }

    /// Applies `f(index)` to every element of a row, vector then tail.
    fn each(&self, b: &mut FunctionBuilder, mut f: impl FnMut(&mut FunctionBuilder, Type, Value)) {
        let zero = b.ins().iconst(types::I64, 0);
        let vector_end = b.ins().iconst(types::I64, (self.n & !3) as i64);
        let end = b.ins().iconst(types::I64, self.n as i64);
        loops::counted(b, zero, vector_end, 4, &[], |b, i, _| {
            f(b, types::F32X4, i);
            vec![]
        });
        loops::counted(b, vector_end, end, 1, &[], |b, i, _| {
            f(b, types::F32, i);
            vec![]
        });
    }

    fn splat(b: &mut FunctionBuilder, ty: Type, scalar: Value) -> Value {
        if ty.is_vector() {
            b.ins().splat(ty, scalar)
        } else {
            scalar
        }
    }

    fn row_max(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        self.fold_row(
            b,
            f32::NEG_INFINITY,
            |b, ty, i, acc| {
                let v = self.load(b, ty, x, i);
                b.ins().fmax(acc, v)
            },
            |b, p, q| b.ins().fmax(p, q),
        )
    }

    /// `y = exp(x - max)`, returning the sum of `y`.
    fn exp_row(&self, b: &mut FunctionBuilder, x: Value, y: Value, max: Value) -> Value {
        self.fold_row(
            b,
            0.0,
            |b, ty, i, acc| {
                let v = self.load(b, ty, x, i);
                let m = Self::splat(b, ty, max);
                let shifted = b.ins().fsub(v, m);
                let e = math::exp(b, ty, shifted);
                self.store(b, e, y, i);
                b.ins().fadd(acc, e)
            },
            |b, p, q| b.ins().fadd(p, q),
        )
    }

    fn scale_row(&self, b: &mut FunctionBuilder, y: Value, factor: Value) {
        self.each(b, |b, ty, i| {
            let v = self.load(b, ty, y, i);
            let f = Self::splat(b, ty, factor);
            let scaled = b.ins().fmul(v, f);
            self.store(b, scaled, y, i);
        });
    }

    fn softmax_row(&self, b: &mut FunctionBuilder, bases: &[Value], row: Value) {
        let x = self.row_start(b, bases[0], row);
        let y = self.row_start(b, bases[1], row);
        let max = self.row_max(b, x);
        let sum = self.exp_row(b, x, y, max);
        let one = b.ins().f32const(1.0);
        let inverse = b.ins().fdiv(one, sum);
        self.scale_row(b, y, inverse);
    }

    fn softmax_backward_row(&self, b: &mut FunctionBuilder, bases: &[Value], row: Value) {
        let y = self.row_start(b, bases[0], row);
        let dy = self.row_start(b, bases[1], row);
        let dx = self.row_start(b, bases[2], row);
        let dot = self.fold_row(
            b,
            0.0,
            |b, ty, i, acc| {
                let yv = self.load(b, ty, y, i);
                let dyv = self.load(b, ty, dy, i);
                b.ins().fma(yv, dyv, acc)
            },
            |b, p, q| b.ins().fadd(p, q),
        );
        self.each(b, |b, ty, i| {
            let yv = self.load(b, ty, y, i);
            let dyv = self.load(b, ty, dy, i);
            let d = Self::splat(b, ty, dot);
            let centred = b.ins().fsub(dyv, d);
            let g = b.ins().fmul(yv, centred);
            self.store(b, g, dx, i);
        });
    }

    fn cross_entropy_row(
        &self,
        b: &mut FunctionBuilder,
        bases: &[Value],
        row: Value,
        smoothing: f32,
        scale: f32,
    ) {
        let z = self.row_start(b, bases[0], row);
        let dz = self.row_start(b, bases[3], row);
        let label_f = self.load(b, types::F32, bases[1], row);
        let (label, label_valid) = self.label_column(b, label_f);
        let max = self.row_max(b, z);
        // dz temporarily holds exp(z - max).
        let sum = self.exp_row(b, z, dz, max);
        let log_sum = math::log(b, types::F32, sum);
        let log_sum_exp = b.ins().fadd(max, log_sum);
        // sum_j t_j z_j = (1 - s) z_label + s/n sum_j z_j
        let z_sum = self.fold_row(
            b,
            0.0,
            |b, ty, i, acc| {
                let v = self.load(b, ty, z, i);
                b.ins().fadd(acc, v)
            },
            |b, p, q| b.ins().fadd(p, q),
        );
        let z_label = self.load(b, types::F32, z, label);
        let on = b.ins().f32const(1.0 - smoothing);
        let off = b.ins().f32const(smoothing / self.n as f32);
        let target_dot = b.ins().fmul(on, z_label);
        let target_dot = b.ins().fma(off, z_sum, target_dot);
        let loss = b.ins().fsub(log_sum_exp, target_dot);
        let nan = b.ins().f32const(f32::NAN);
        let loss = b.ins().select(label_valid, loss, nan);
        self.store(b, loss, bases[2], row);
        // dz = (e / sum - t) * scale = e * (scale / sum) - t * scale
        let one = b.ins().f32const(1.0);
        let inverse = b.ins().fdiv(one, sum);
        let scale_value = b.ins().f32const(scale);
        let factor = b.ins().fmul(inverse, scale_value);
        let off_scaled = b.ins().f32const(smoothing / self.n as f32 * scale);
        self.each(b, |b, ty, i| {
            let e = self.load(b, ty, dz, i);
            let f = Self::splat(b, ty, factor);
            let o = Self::splat(b, ty, off_scaled);
            let p = b.ins().fmul(e, f);
            let g = b.ins().fsub(p, o);
            self.store(b, g, dz, i);
        });
        let current = self.load(b, types::F32, dz, label);
        let on_scaled = b.ins().f32const((1.0 - smoothing) * scale);
        let fixed = b.ins().fsub(current, on_scaled);
        self.store(b, fixed, dz, label);
    }

    /// The binary cross-entropy of one logit (a row of one score) and its
    /// gradient; see [`ReduceKind::CrossEntropy`].
    fn binary_cross_entropy_row(
        &self,
        b: &mut FunctionBuilder,
        bases: &[Value],
        row: Value,
        smoothing: f32,
        scale: f32,
    ) {
        let f = types::F32;
        let z = self.load(b, f, bases[0], row);
        let label = self.load(b, f, bases[1], row);
        let (zero, one) = (b.ins().f32const(0.0), b.ins().f32const(1.0));
        let is_zero = b.ins().fcmp(FloatCC::Equal, label, zero);
        let is_one = b.ins().fcmp(FloatCC::Equal, label, one);
        let valid = b.ins().bor(is_zero, is_one);
        let on = b.ins().select(is_one, one, zero);
        let keep = b.ins().f32const(1.0 - smoothing);
        let half = b.ins().f32const(smoothing / 2.0);
        let target = b.ins().fma(on, keep, half);
        // max(z, 0) - z t + log(1 + exp(-|z|)): no overflow for any z.
        let positive = b.ins().fmax(z, zero);
        let magnitude = b.ins().fabs(z);
        let minus = b.ins().fneg(magnitude);
        let e = math::exp(b, f, minus);
        let one_plus = b.ins().fadd(one, e);
        let softplus = math::log(b, f, one_plus);
        let zt = b.ins().fmul(z, target);
        let loss = b.ins().fsub(positive, zt);
        let loss = b.ins().fadd(loss, softplus);
        let nan = b.ins().f32const(f32::NAN);
        let loss = b.ins().select(valid, loss, nan);
        self.store(b, loss, bases[2], row);
        let p = math::sigmoid(b, f, z);
        let difference = b.ins().fsub(p, target);
        let scale_value = b.ins().f32const(scale);
        let gradient = b.ins().fmul(difference, scale_value);
        self.store(b, gradient, bases[3], row);
    }

    /// The column a row's label names, clamped into the row, and whether
    /// the label was a whole number in [0, n) (an i8 truth value).
    /// `Trainer::train_step` refuses any other label before a kernel runs,
    /// but the executor runs whatever buffers it is given: the clamp keeps
    /// every read and write inside the row whatever the label (NaN, -1,
    /// 4e9, 2.5), and the caller makes that row's loss NaN, so that a bad
    /// label cannot pass unnoticed.
    fn label_column(&self, b: &mut FunctionBuilder, label: Value) -> (Value, Value) {
        // Saturating: NaN becomes 0, and values beyond i64 its bounds.
        let whole = b.ins().fcvt_to_sint_sat(types::I64, label);
        let first = b.ins().iconst(types::I64, 0);
        // `validate` has checked that n is at least 1.
        let last = b.ins().iconst(types::I64, self.n as i64 - 1);
        let column = b.ins().smax(whole, first);
        let column = b.ins().smin(column, last);
        let back = b.ins().fcvt_from_sint(types::F32, column);
        let valid = b.ins().fcmp(FloatCC::Equal, back, label);
        (column, valid)
    }

    /// One work item of the RBF kernels: a row (forward, backward-data) or
    /// an input (backward-centres); plain scalar loops, as the layer is tiny.
    fn rbf(
        &self,
        b: &mut FunctionBuilder,
        bases: &[Value],
        item: Value,
        units: usize,
        kind: ReduceKind,
    ) {
        let (n, rows) = (self.n as i64, self.rows as i64);
        let zero = b.ins().iconst(types::I64, 0);
        let f = types::F32;
        // x[r, i] - c[i, j]
        let difference = |b: &mut FunctionBuilder, r: Value, i: Value, j: Value| {
            let xi = b.ins().imul_imm_s(r, n);
            let xi = b.ins().iadd(xi, i);
            let x = self.load(b, f, bases[0], xi);
            let ci = b.ins().imul_imm_s(i, units as i64);
            let ci = b.ins().iadd(ci, j);
            let c = self.load(b, f, bases[1], ci);
            b.ins().fsub(x, c)
        };
        let dy = |b: &mut FunctionBuilder, r: Value, j: Value| {
            let index = b.ins().imul_imm_s(r, units as i64);
            let index = b.ins().iadd(index, j);
            self.load(b, f, bases[2], index)
        };
        let (units_end, n_end, rows_end) = (
            b.ins().iconst(types::I64, units as i64),
            b.ins().iconst(types::I64, n),
            b.ins().iconst(types::I64, rows),
        );
        let z = b.ins().f32const(0.0);
        match kind {
            ReduceKind::Rbf { .. } => {
                loops::counted(b, zero, units_end, 1, &[], |b, j, _| {
                    let sum = loops::counted(b, zero, n_end, 1, &[z], |b, i, acc| {
                        let d = difference(b, item, i, j);
                        vec![b.ins().fma(d, d, acc[0])]
                    })[0];
                    let index = b.ins().imul_imm_s(item, units as i64);
                    let index = b.ins().iadd(index, j);
                    self.store(b, sum, bases[2], index);
                    vec![]
                });
            }
            ReduceKind::RbfBackwardData { .. } => {
                loops::counted(b, zero, n_end, 1, &[], |b, i, _| {
                    let sum = loops::counted(b, zero, units_end, 1, &[z], |b, j, acc| {
                        let d = difference(b, item, i, j);
                        let g = dy(b, item, j);
                        vec![b.ins().fma(g, d, acc[0])]
                    })[0];
                    let two = b.ins().f32const(2.0);
                    let value = b.ins().fmul(two, sum);
                    let index = b.ins().imul_imm_s(item, n);
                    let index = b.ins().iadd(index, i);
                    self.store(b, value, bases[3], index);
                    vec![]
                });
            }
            _ => {
                loops::counted(b, zero, units_end, 1, &[], |b, j, _| {
                    let sum = loops::counted(b, zero, rows_end, 1, &[z], |b, r, acc| {
                        let d = difference(b, r, item, j);
                        let g = dy(b, r, j);
                        vec![b.ins().fma(g, d, acc[0])]
                    })[0];
                    let minus_two = b.ins().f32const(-2.0);
                    let value = b.ins().fmul(minus_two, sum);
                    let index = b.ins().imul_imm_s(item, units as i64);
                    let index = b.ins().iadd(index, j);
                    self.store(b, value, bases[3], index);
                    vec![]
                });
            }
        }
    }

    /// One block of columns of one item's `self.rows` rows: moments (mean,
    /// biased variance) or sums (of `a` and `a * b`). Whole vectors where
    /// four columns remain, scalars after.
    fn column_block(
        &self,
        b: &mut FunctionBuilder,
        bases: &[Value],
        item: Value,
        block: Value,
        moments: bool,
    ) {
        let first = b.ins().imul_imm_s(block, COLUMN_BLOCK as i64);
        let limit = b.ins().iconst(types::I64, self.n as i64);
        let block_end = b.ins().iadd_imm_s(first, COLUMN_BLOCK as i64);
        let last = b.ins().smin(block_end, limit);
        let vector_end = b.ins().iconst(types::I64, (self.n & !3) as i64);
        let vector_last = b.ins().smin(last, vector_end);
        loops::counted(b, first, vector_last, 4, &[], |b, column, _| {
            self.column(b, bases, (item, column), types::F32X4, moments);
            vec![]
        });
        let tail_start = b.ins().smax(first, vector_last);
        loops::counted(b, tail_start, last, 1, &[], |b, column, _| {
            self.column(b, bases, (item, column), types::F32, moments);
            vec![]
        });
    }

    /// Sums column(s) `column` over the rows of `item` in row order; the
    /// results go to row `item` of the outputs.
    fn column(
        &self,
        b: &mut FunctionBuilder,
        bases: &[Value],
        (item, column): (Value, Value),
        ty: Type,
        moments: bool,
    ) {
        let first_row = b.ins().imul_imm_s(item, self.rows as i64);
        let zero = b.ins().iconst(types::I64, 0);
        let rows = b.ins().iconst(types::I64, self.rows as i64);
        let n = self.n as i64;
        let output = b.ins().imul_imm_s(item, n);
        let output = b.ins().iadd(output, column);
        let index = |b: &mut FunctionBuilder, row: Value| {
            let row = b.ins().iadd(row, first_row);
            let index = b.ins().imul_imm_s(row, n);
            b.ins().iadd(index, column)
        };
        let element = |b: &mut FunctionBuilder, base: Value, row: Value| {
            let index = index(b, row);
            self.load(b, ty, base, index)
        };
        // The moments' input, widened from bf16 where it is stored so.
        let x = |b: &mut FunctionBuilder, row: Value| match self.x {
            Storage::F32 => element(b, bases[0], row),
            Storage::Bf16 => {
                let index = index(b, row);
                let bytes = b.ins().imul_imm_s(index, 2);
                let address = b.ins().iadd(bases[0], bytes);
                elementwise::load_bf16(b, ty, address, self.flags)
            }
        };
        let z = math::constant(b, ty, 0.0);
        if moments {
            let sum = loops::counted(b, zero, rows, 1, &[z], |b, row, acc| {
                let x = x(b, row);
                vec![b.ins().fadd(acc[0], x)]
            })[0];
            let inverse = math::constant(b, ty, 1.0 / self.rows as f32);
            let mean = b.ins().fmul(sum, inverse);
            let squares = loops::counted(b, zero, rows, 1, &[z], |b, row, acc| {
                let x = x(b, row);
                let d = b.ins().fsub(x, mean);
                vec![b.ins().fma(d, d, acc[0])]
            })[0];
            let variance = b.ins().fmul(squares, inverse);
            self.store(b, mean, bases[1], output);
            self.store(b, variance, bases[2], output);
        } else {
            let sums = loops::counted(b, zero, rows, 1, &[z, z], |b, row, acc| {
                let x = element(b, bases[0], row);
                let y = element(b, bases[1], row);
                vec![b.ins().fadd(acc[0], x), b.ins().fma(x, y, acc[1])]
            });
            self.store(b, sums[0], bases[2], output);
            self.store(b, sums[1], bases[3], output);
        }
    }
}
