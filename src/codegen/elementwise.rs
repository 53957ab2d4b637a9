//! Fused element-wise kernels: a small SSA expression over input buffers,
//! evaluated for every element and stored into output buffers, vectorised
//! over the channel axis with `f32x4` and a scalar tail.
//!
//! Buffers are row-major `[rows, channels]`. A [`Operand::Tensor`] has one
//! value per element; a [`Operand::PerChannel`] has one value per channel,
//! broadcast over rows (biases, batchnorm scales, SE-block weights). A
//! tensor input or an output may be stored in bf16 ([`Operand::Bf16`],
//! [`Elementwise::stores`]): loads widen it exactly, stores round to the
//! nearest bf16, ties to even, as the bf16 products' packing rounds. A
//! [`Operand::LiveTaps`] input is a convolution's kernel gradient that
//! holds only the rows of its live taps: each row works out once whether
//! and where it is stored, and the other rows read zeros.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Block, Function, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use super::{math, CodegenError, Storage};

/// How an input buffer is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// One value per element, `[rows, channels]`.
    Tensor,
    /// One value per element, `[rows, channels]`, stored in bf16
    /// ([`Storage::Bf16`]).
    Bf16,
    /// One value per channel, `[channels]`, the same for every row.
    PerChannel,
    /// One value per channel and batch item, `[rows / rows_per_item, channels]`:
    /// the SE-block's channel weights, broadcast over each image's pixels.
    PerItem {
        /// Rows of one batch item (height x width).
        rows_per_item: usize,
    },
    /// A few values that are the same for every element, read with
    /// [`Expr::Scalar`]: coefficients that change from call to call (an
    /// optimizer's learning rate and bias corrections).
    Scalars,
    /// A convolution's kernel gradient `[kernel rows, channels]` (the
    /// kernel's rows are `(ky * width + kx) * in_channels + ci`) of which
    /// the buffer holds only the rows of the taps that read some input, in
    /// order; the other rows are zeros, which are not stored and read no
    /// memory. The kernel's rows are the weight rows.
    LiveTaps(LiveTaps),
}

/// The taps of a convolution's kernel that read some input: kernel rows
/// `ys` by kernel columns `xs` (half-open), a box, since the taps that
/// only ever read padding are at the kernel's edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveTaps {
    /// The kernel's height and width.
    pub kernel: [usize; 2],
    /// Input channels: the weight rows of one tap.
    pub in_channels: usize,
    /// The kernel rows that read some input, `ys[0]..ys[1]`.
    pub ys: [usize; 2],
    /// The kernel columns that do, `xs[0]..xs[1]`.
    pub xs: [usize; 2],
}

impl LiveTaps {
    /// The kernel's weight rows: `height * width * in_channels`.
    pub fn rows(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.in_channels
    }

    /// The rows the buffer holds: those of the live taps.
    pub fn stored_rows(&self) -> usize {
        (self.ys[1] - self.ys[0]) * (self.xs[1] - self.xs[0]) * self.in_channels
    }

    /// The stored row that holds weight row `row`, if its tap is live.
    pub fn stored_row(&self, row: usize) -> Option<usize> {
        let per_row = self.kernel[1] * self.in_channels;
        let (ky, within) = (row / per_row, row % per_row);
        let (kx, ci) = (within / self.in_channels, within % self.in_channels);
        let live = (self.ys[0]..self.ys[1]).contains(&ky) && (self.xs[0]..self.xs[1]).contains(&kx);
        live.then(|| {
            ((ky - self.ys[0]) * (self.xs[1] - self.xs[0]) + kx - self.xs[0]) * self.in_channels
                + ci
        })
    }

    /// Whether the box is a non-empty part of the kernel.
    fn is_valid(&self) -> bool {
        let within = |[lo, hi]: [usize; 2], len: usize| lo < hi && hi <= len;
        self.in_channels > 0 && within(self.ys, self.kernel[0]) && within(self.xs, self.kernel[1])
    }
}

/// Functions of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `sqrt(x)`
    Sqrt,
    /// `1 / x`
    Recip,
    /// `e^x`
    Exp,
    /// `e^x - 1`, accurate near zero (ELU)
    Expm1,
    /// `ln(x)` for positive `x`
    Log,
    /// `tanh(x)`
    Tanh,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `erf(x)`, to an absolute error below 2e-7 (GELU)
    Erf,
}

/// Functions of two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`
    Max,
    /// `min(a, b)`
    Min,
}

/// One SSA step; operands refer to earlier steps by index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expr {
    /// The element of input buffer `i` (element 0 of a [`Operand::Scalars`] buffer).
    Load(usize),
    /// Element `index` of the [`Operand::Scalars`] input `input`.
    Scalar {
        /// The input buffer.
        input: usize,
        /// The element.
        index: usize,
    },
    /// A constant.
    Const(f32),
    /// A unary function of an earlier value.
    Unary(Unary, usize),
    /// A binary function of two earlier values.
    Binary(Binary, usize, usize),
    /// `a * b + c` in one rounding.
    Fma(usize, usize, usize),
    /// `then` where `cond > 0`, else `otherwise` (ReLU and its gradient, ELU).
    IfPositive {
        /// The value tested.
        cond: usize,
        /// The result where it is positive.
        then: usize,
        /// The result elsewhere.
        otherwise: usize,
    },
}

/// A fused element-wise kernel. Its buffer arguments are the inputs in
/// order, then one output buffer per entry of `outputs`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Elementwise {
    /// A name for dumps and errors.
    pub name: String,
    /// The input buffers.
    pub inputs: Vec<Operand>,
    /// The computation, in SSA order.
    pub exprs: Vec<Expr>,
    /// For each output buffer, the step whose value is stored there.
    pub outputs: Vec<usize>,
    /// How each output is stored, in order; outputs past its end are f32.
    pub stores: Vec<Storage>,
}

impl Elementwise {
    /// How output `k` is stored.
    pub fn store(&self, k: usize) -> Storage {
        self.stores.get(k).copied().unwrap_or_default()
    }

    /// Checks that every reference points backwards to an existing step and
    /// every load to an existing input.
    pub fn validate(&self) -> Result<(), CodegenError> {
        let malformed = |message: String| {
            Err(CodegenError::Malformed {
                kernel: self.name.clone(),
                message,
            })
        };
        for (i, expr) in self.exprs.iter().enumerate() {
            let refs: Vec<usize> = match *expr {
                Expr::Load(input) if input >= self.inputs.len() => {
                    return malformed(format!(
                        "step {i} loads input {input} of {}",
                        self.inputs.len()
                    ))
                }
                Expr::Scalar { input, .. } if self.inputs.get(input) != Some(&Operand::Scalars) => {
                    return malformed(format!(
                        "step {i} reads scalars from input {input}, which does not hold scalars"
                    ))
                }
                Expr::Load(_) | Expr::Scalar { .. } | Expr::Const(_) => vec![],
                Expr::Unary(_, a) => vec![a],
                Expr::Binary(_, a, b) => vec![a, b],
                Expr::Fma(a, b, c) => vec![a, b, c],
                Expr::IfPositive {
                    cond,
                    then,
                    otherwise,
                } => vec![cond, then, otherwise],
            };
            if let Some(r) = refs.iter().find(|&&r| r >= i) {
                return malformed(format!(
                    "step {i} refers to step {r}, which does not come before it"
                ));
            }
        }
        if self.stores.len() > self.outputs.len() {
            return malformed(format!(
                "{} outputs are stored, of {}",
                self.stores.len(),
                self.outputs.len()
            ));
        }
        if self.inputs.contains(&Operand::PerItem { rows_per_item: 0 }) {
            return malformed("a per-item operand needs at least one row per item".into());
        }
        let bad_taps = self.inputs.iter().find_map(|op| match op {
            Operand::LiveTaps(taps) if !taps.is_valid() => Some(*taps),
            _ => None,
        });
        if let Some(taps) = bad_taps {
            return malformed(format!("live taps {taps:?} outside their kernel"));
        }
        match self.outputs.iter().find(|&&o| o >= self.exprs.len()) {
            Some(o) => malformed(format!(
                "an output refers to step {o} of {}",
                self.exprs.len()
            )),
            None if self.outputs.is_empty() => malformed("the kernel has no output".into()),
            None => Ok(()),
        }
    }
}

/// Writes the kernel's code into `func`, whose signature is
/// `(args: ptr, row_start: i64, row_end: i64, channels: i64)`.
pub(super) fn translate(
    kernel: &Elementwise,
    func: &mut Function,
    context: &mut FunctionBuilderContext,
    target: TargetFrontendConfig,
) {
    let pointer = target.pointer_type();
    let mut b = FunctionBuilder::new(func, context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (args, row_start, row_end, channels) = (params[0], params[1], params[2], params[3]);
    let flags = MemFlagsData::new().with_notrap();
    let buffers = kernel.inputs.len() + kernel.outputs.len();
    let bases: Vec<Value> = (0..buffers)
        .map(|i| b.ins().load(pointer, flags, args, (i * 8) as i32))
        .collect();
    let vector_end = b.ins().band_imm_s(channels, !3i64);
    let row_bytes = b.ins().imul_imm_s(channels, 4);

    let row_loop = loop_block(&mut b);
    let vector_loop = loop_block(&mut b);
    let tail_loop = loop_block(&mut b);
    let next_row = loop_block(&mut b);
    let exit = b.create_block();
    b.ins().jump(row_loop, &[row_start.into()]);

    // row_loop(row): for row in row_start..row_end
    b.switch_to_block(row_loop);
    let row = b.block_params(row_loop)[0];
    let zero = b.ins().iconst(types::I64, 0);
    let taps: Vec<Option<RowTaps>> = kernel
        .inputs
        .iter()
        .map(|op| match op {
            Operand::LiveTaps(taps) => Some(row_taps(&mut b, taps, row, row_bytes)),
            _ => None,
        })
        .collect();
    let done = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, row, row_end);
    b.ins().brif(done, exit, &[], vector_loop, &[zero.into()]);

    // vector_loop(c): four channels at a time
    b.switch_to_block(vector_loop);
    let c = b.block_params(vector_loop)[0];
    let row_offset = b.ins().imul(row, row_bytes);
    let vector_done = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, c, vector_end);
    let body = b.create_block();
    b.ins().brif(vector_done, tail_loop, &[c.into()], body, &[]);
    b.switch_to_block(body);
    element(
        &mut b,
        kernel,
        (&bases, &taps),
        (row, row_offset, row_bytes),
        c,
        types::F32X4,
        flags,
    );
    let next = b.ins().iadd_imm_s(c, 4);
    b.ins().jump(vector_loop, &[next.into()]);

    // tail_loop(c): the remaining channels one by one
    b.switch_to_block(tail_loop);
    let c = b.block_params(tail_loop)[0];
    let row_offset = b.ins().imul(row, row_bytes);
    let tail_done = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, c, channels);
    let body = b.create_block();
    b.ins().brif(tail_done, next_row, &[row.into()], body, &[]);
    b.switch_to_block(body);
    element(
        &mut b,
        kernel,
        (&bases, &taps),
        (row, row_offset, row_bytes),
        c,
        types::F32,
        flags,
    );
    let next = b.ins().iadd_imm_s(c, 1);
    b.ins().jump(tail_loop, &[next.into()]);

    b.switch_to_block(next_row);
    let row = b.block_params(next_row)[0];
    let next = b.ins().iadd_imm_s(row, 1);
    b.ins().jump(row_loop, &[next.into()]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(target);
}

/// A block with one i64 parameter (a loop counter).
fn loop_block(b: &mut FunctionBuilder) -> Block {
    let block = b.create_block();
    b.append_block_param(block, types::I64);
    block
}

/// Where a row of the kernel reads a [`Operand::LiveTaps`] input.
#[derive(Clone, Copy)]
struct RowTaps {
    /// Whether the row's tap is live (an `i8` truth value).
    live: Value,
    /// The byte offset of its stored row, where it is.
    offset: Value,
}

/// [`RowTaps`] of `row` (rows `row_bytes` long), computed once a row.
fn row_taps(b: &mut FunctionBuilder, taps: &LiveTaps, row: Value, row_bytes: Value) -> RowTaps {
    let cin = taps.in_channels as i64;
    let per_row = taps.kernel[1] as i64 * cin;
    let (ky, within) = div_rem(b, row, per_row);
    let (kx, ci) = div_rem(b, within, cin);
    // Below the box, the differences wrap to huge unsigned values.
    let dy = b.ins().iadd_imm_s(ky, -(taps.ys[0] as i64));
    let dx = b.ins().iadd_imm_s(kx, -(taps.xs[0] as i64));
    let width = (taps.xs[1] - taps.xs[0]) as i64;
    let live_y = b.ins().icmp_imm_u(
        IntCC::UnsignedLessThan,
        dy,
        (taps.ys[1] - taps.ys[0]) as i64,
    );
    let live_x = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, dx, width);
    let live = b.ins().band(live_y, live_x);
    let tap = b.ins().imul_imm_s(dy, width);
    let tap = b.ins().iadd(tap, dx);
    let stored = b.ins().imul_imm_s(tap, cin);
    let stored = b.ins().iadd(stored, ci);
    let offset = b.ins().imul(stored, row_bytes);
    RowTaps { live, offset }
}

/// The quotient and remainder of unsigned `x` by the constant `d`.
fn div_rem(b: &mut FunctionBuilder, x: Value, d: i64) -> (Value, Value) {
    let quotient = b.ins().udiv_imm_u(x, d);
    let start = b.ins().imul_imm_s(quotient, d);
    (quotient, b.ins().isub(x, start))
}

/// Computes and stores one element (or one vector of four) at channel `c`
/// of `row` (whose byte offset is `row_offset`; rows are `row_bytes` long).
/// `bases` are the buffers' addresses, `taps` the row's [`RowTaps`] of
/// each [`Operand::LiveTaps`] input.
fn element(
    b: &mut FunctionBuilder,
    kernel: &Elementwise,
    (bases, taps): (&[Value], &[Option<RowTaps>]),
    (row, row_offset, row_bytes): (Value, Value, Value),
    c: Value,
    ty: Type,
    flags: MemFlagsData,
) {
    let channel_offset = b.ins().imul_imm_s(c, 4);
    let element_offset = b.ins().iadd(row_offset, channel_offset);
    let mut values: Vec<Value> = Vec::with_capacity(kernel.exprs.len());
    for expr in &kernel.exprs {
        let v = match *expr {
            Expr::Load(i) => {
                if kernel.inputs[i] == Operand::Scalars {
                    values.push(scalar(b, ty, bases[i], 0, flags));
                    continue;
                }
                if let Some(RowTaps { live, offset }) = taps[i] {
                    // A dead row reads the buffer's first element (inside
                    // it), then takes zero instead.
                    let offset = b.ins().iadd(offset, channel_offset);
                    let zero = b.ins().iconst(types::I64, 0);
                    let offset = b.ins().select(live, offset, zero);
                    let address = b.ins().iadd(bases[i], offset);
                    let loaded = b.ins().load(ty, flags, address, 0);
                    let zero = math::constant(b, ty, 0.0);
                    values.push(b.ins().select(live, loaded, zero));
                    continue;
                }
                let offset = match kernel.inputs[i] {
                    Operand::Bf16 => {
                        // Half the bytes of an f32 element's offset.
                        let offset = b.ins().ushr_imm_u(element_offset, 1);
                        let address = b.ins().iadd(bases[i], offset);
                        values.push(load_bf16(b, ty, address, flags));
                        continue;
                    }
                    // A live-taps input is read above.
                    Operand::Tensor | Operand::Scalars | Operand::LiveTaps(_) => element_offset,
                    Operand::PerChannel => channel_offset,
                    Operand::PerItem { rows_per_item } => {
                        // Row `item` of an [items, channels] buffer.
                        let item = b.ins().udiv_imm_u(row, rows_per_item as i64);
                        let item_offset = b.ins().imul(item, row_bytes);
                        b.ins().iadd(item_offset, channel_offset)
                    }
                };
                let address = b.ins().iadd(bases[i], offset);
                b.ins().load(ty, flags, address, 0)
            }
            Expr::Scalar { input, index } => scalar(b, ty, bases[input], index, flags),
            Expr::Const(x) => math::constant(b, ty, x),
            Expr::Unary(op, a) => unary(b, ty, op, values[a]),
            Expr::Binary(op, x, y) => {
                let (x, y) = (values[x], values[y]);
                match op {
                    Binary::Add => b.ins().fadd(x, y),
                    Binary::Sub => b.ins().fsub(x, y),
                    Binary::Mul => b.ins().fmul(x, y),
                    Binary::Div => b.ins().fdiv(x, y),
                    Binary::Max => b.ins().fmax(x, y),
                    Binary::Min => b.ins().fmin(x, y),
                }
            }
            Expr::Fma(x, y, z) => b.ins().fma(values[x], values[y], values[z]),
            Expr::IfPositive {
                cond,
                then,
                otherwise,
            } => {
                let zero = math::constant(b, ty, 0.0);
                let positive = b.ins().fcmp(FloatCC::GreaterThan, values[cond], zero);
                math::select(b, ty, positive, values[then], values[otherwise])
            }
        };
        values.push(v);
    }
    for (k, &out) in kernel.outputs.iter().enumerate() {
        let base = bases[kernel.inputs.len() + k];
        match kernel.store(k) {
            Storage::F32 => {
                let address = b.ins().iadd(base, element_offset);
                b.ins().store(flags, values[out], address, 0);
            }
            Storage::Bf16 => {
                let offset = b.ins().ushr_imm_u(element_offset, 1);
                let address = b.ins().iadd(base, offset);
                store_bf16(b, ty, values[out], address, flags);
            }
        }
    }
}

/// The bf16 value (or four) at `address`, widened to f32 exactly: its bits
/// are the upper half of the f32's.
pub(super) fn load_bf16(
    b: &mut FunctionBuilder,
    ty: Type,
    address: Value,
    flags: MemFlagsData,
) -> Value {
    let (bits, int) = if ty.is_vector() {
        (b.ins().uload16x4(flags, address, 0), types::I32X4)
    } else {
        (b.ins().uload16(types::I32, flags, address, 0), types::I32)
    };
    debug_assert_eq!(b.func.dfg.value_type(bits), int);
    let shifted = b.ins().ishl_imm_u(bits, 16);
    b.ins().bitcast(ty, MemFlagsData::new(), shifted)
}

/// Stores `value` (f32, or four) at `address` as bf16, rounded as
/// [`crate::codegen::contraction::bf16::round`] rounds: to the nearest,
/// ties to even; a NaN stays a quiet NaN, a subnormal becomes a zero of
/// its sign.
pub(super) fn store_bf16(
    b: &mut FunctionBuilder,
    ty: Type,
    value: Value,
    address: Value,
    flags: MemFlagsData,
) {
    let int = if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    };
    let constant = |b: &mut FunctionBuilder, k: u32| {
        let scalar = b.ins().iconst(types::I32, i64::from(k));
        if ty.is_vector() {
            b.ins().splat(int, scalar)
        } else {
            scalar
        }
    };
    let bits = b.ins().bitcast(int, MemFlagsData::new(), value);
    let upper = b.ins().ushr_imm_u(bits, 16);
    // Just under half a unit of the last kept bit, plus that bit: carries
    // into it when the dropped half is above a half, or a half with the
    // kept bit odd.
    let one = constant(b, 1);
    let odd = b.ins().band(upper, one);
    let half = constant(b, 0x7fff);
    let biased = b.ins().iadd(bits, half);
    let carried = b.ins().iadd(biased, odd);
    let rounded = b.ins().ushr_imm_u(carried, 16);
    let magnitude_mask = constant(b, 0x7fff_ffff);
    let magnitude = b.ins().band(bits, magnitude_mask);
    let infinity = constant(b, 0x7f80_0000);
    let nan = b
        .ins()
        .icmp(IntCC::UnsignedGreaterThan, magnitude, infinity);
    let quiet_bit = constant(b, 0x0040);
    let quiet = b.ins().bor(upper, quiet_bit);
    let smallest_normal = constant(b, 0x0080_0000);
    let subnormal = b
        .ins()
        .icmp(IntCC::UnsignedLessThan, magnitude, smallest_normal);
    let sign_bit = constant(b, 0x8000);
    let sign = b.ins().band(upper, sign_bit);
    let word = if ty.is_vector() {
        let finite = b.ins().bitselect(subnormal, sign, rounded);
        b.ins().bitselect(nan, quiet, finite)
    } else {
        let finite = b.ins().select(subnormal, sign, rounded);
        b.ins().select(nan, quiet, finite)
    };
    if ty.is_vector() {
        // The four words' low halves, then their bits as one i64.
        let halves = b.ins().unarrow(word, word);
        let little = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let pair = b.ins().bitcast(types::I64X2, little, halves);
        let low = b.ins().extractlane(pair, 0);
        b.ins().store(flags, low, address, 0);
    } else {
        b.ins().istore16(flags, word, address, 0);
    }
}

/// Element `index` of the buffer at `base`, splatted for vectors.
fn scalar(
    b: &mut FunctionBuilder,
    ty: Type,
    base: Value,
    index: usize,
    flags: MemFlagsData,
) -> Value {
    let value = b.ins().load(types::F32, flags, base, (index * 4) as i32);
    if ty.is_vector() {
        b.ins().splat(ty, value)
    } else {
        value
    }
}

fn unary(b: &mut FunctionBuilder, ty: Type, op: Unary, x: Value) -> Value {
    match op {
        Unary::Neg => b.ins().fneg(x),
        Unary::Abs => b.ins().fabs(x),
        Unary::Sqrt => b.ins().sqrt(x),
        Unary::Recip => {
            let one = math::constant(b, ty, 1.0);
            b.ins().fdiv(one, x)
        }
        Unary::Exp => math::exp(b, ty, x),
        Unary::Expm1 => math::expm1(b, ty, x),
        Unary::Log => math::log(b, ty, x),
        Unary::Tanh => math::tanh(b, ty, x),
        Unary::Sigmoid => math::sigmoid(b, ty, x),
        Unary::Erf => math::erf(b, ty, x),
    }
}
