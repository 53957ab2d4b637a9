//! What every window translator is built from: counted loops, loops over
//! channels (`f32x4` with a scalar tail), dispatch of a runtime position to
//! code specialised for its segment, loads and stores.
//!
//! Addresses and positions are `i64` values; loop-carried values
//! (accumulators) are frontend `Variable`s, so the loops need no block
//! parameters beyond their counters.

use std::ops::Range;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, Function, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

use super::super::{elementwise, math, Storage};
use super::Axis;

/// A function being generated, with its buffer pointers and work range.
pub(super) struct Emitter<'a> {
    /// The builder, for instructions the helpers do not cover.
    pub(super) b: FunctionBuilder<'a>,
    flags: MemFlagsData,
    buffers: Vec<Value>,
    start: Value,
    end: Value,
}

impl<'a> Emitter<'a> {
    /// Starts `func`, whose signature is `(args: ptr, start: i64, end: i64)`,
    /// loading the pointers of buffers stored as `buffers` from `args`.
    ///
    /// The translators address every buffer as f32s; a bf16 buffer's
    /// addresses are twice its values' (its base doubled, so that an f32
    /// offset of `4 i` is value `i`'s `2 i` bytes), which its loads and
    /// stores ([`Self::load_stored`], [`Self::store_stored`]) halve.
    pub(super) fn new(
        func: &'a mut Function,
        context: &'a mut FunctionBuilderContext,
        target: TargetFrontendConfig,
        buffers: &[Storage],
    ) -> Emitter<'a> {
        let mut b = FunctionBuilder::new(func, context);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let flags = MemFlagsData::new().with_notrap();
        let pointer = target.pointer_type();
        let buffers = buffers
            .iter()
            .enumerate()
            .map(|(i, storage)| {
                let base = b.ins().load(pointer, flags, params[0], (i * 8) as i32);
                match storage {
                    Storage::F32 => base,
                    // User-space addresses are below 2^47: doubled, one
                    // still fits.
                    Storage::Bf16 => b.ins().ishl_imm_u(base, 1),
                }
            })
            .collect();
        Emitter {
            b,
            flags,
            buffers,
            start: params[1],
            end: params[2],
        }
    }

    /// Returns from the function and finishes it.
    pub(super) fn finish(mut self, target: TargetFrontendConfig) {
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
        self.b.finalize(target);
    }

    /// The base address of buffer `i` (in [`super::Window::buffers`] order).
    pub(super) fn buffer(&self, i: usize) -> Value {
        self.buffers[i]
    }

    /// `for item in start..end { body(item) }` over the work items.
    pub(super) fn for_items(&mut self, body: impl FnOnce(&mut Self, Value)) {
        let (start, end) = (self.start, self.end);
        self.for_range(start, end, 1, body);
    }

    /// `for i in (start..end).step_by(step) { body(i) }`.
    pub(super) fn for_range(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) {
        let header = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        let inside = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[start.into()]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let done = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, i, end);
        self.b.ins().brif(done, exit, &[], inside, &[]);
        self.b.switch_to_block(inside);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[next.into()]);
        self.b.switch_to_block(exit);
    }

    /// [`Self::for_range`] over constant bounds; a single iteration is
    /// emitted straight.
    pub(super) fn for_each(&mut self, range: Range<usize>, body: impl FnOnce(&mut Self, Value)) {
        let start = self.int(range.start as i64);
        if range.len() == 1 {
            body(self, start);
        } else if !range.is_empty() {
            let end = self.int(range.end as i64);
            self.for_range(start, end, 1, body);
        }
    }

    /// Runs `body(ty, offset)` over `count` consecutive f32s: `f32x4`
    /// vectors at byte offsets `0, 16, ...` (a loop), then the remaining
    /// ones as `f32` scalars.
    pub(super) fn over_lanes(
        &mut self,
        count: usize,
        mut body: impl FnMut(&mut Self, Type, Value),
    ) {
        let vectors = count / 4;
        if vectors == 1 {
            let zero = self.int(0);
            body(self, types::F32X4, zero);
        } else if vectors > 1 {
            let start = self.int(0);
            let end = self.int(vectors as i64 * 16);
            self.for_range(start, end, 16, |e, offset| body(e, types::F32X4, offset));
        }
        for lane in vectors * 4..count {
            let offset = self.int(lane as i64 * 4);
            body(self, types::F32, offset);
        }
    }

    /// Branches on `index` to `body(k)` for the range `ranges[k]` holding it;
    /// the ranges cover all values `index` takes, in increasing order.
    pub(super) fn dispatch(
        &mut self,
        index: Value,
        ranges: &[Range<usize>],
        mut body: impl FnMut(&mut Self, usize),
    ) {
        let join = self.b.create_block();
        for (k, range) in ranges.iter().enumerate() {
            if k + 1 < ranges.len() {
                let here = self.b.create_block();
                let next = self.b.create_block();
                let inside =
                    self.b
                        .ins()
                        .icmp_imm_s(IntCC::UnsignedLessThan, index, range.end as i64);
                self.b.ins().brif(inside, here, &[], next, &[]);
                self.b.switch_to_block(here);
                body(self, k);
                self.b.ins().jump(join, &[]);
                self.b.switch_to_block(next);
            } else {
                body(self, k);
                self.b.ins().jump(join, &[]);
            }
        }
        self.b.switch_to_block(join);
    }

    /// `if condition { body() }`.
    pub(super) fn when(&mut self, condition: Value, body: impl FnOnce(&mut Self)) {
        let then = self.b.create_block();
        let join = self.b.create_block();
        self.b.ins().brif(condition, then, &[], join, &[]);
        self.b.switch_to_block(then);
        body(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
    }

    /// An `i64` constant.
    pub(super) fn int(&mut self, value: i64) -> Value {
        self.b.ins().iconst(types::I64, value)
    }

    /// `base + bytes`.
    pub(super) fn offset(&mut self, base: Value, bytes: i64) -> Value {
        self.b.ins().iadd_imm_s(base, bytes)
    }

    /// `base + index * scale`.
    pub(super) fn scaled(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let bytes = self.b.ins().imul_imm_s(index, scale);
        self.b.ins().iadd(base, bytes)
    }

    /// `a + b` on addresses and positions.
    pub(super) fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().iadd(a, b)
    }

    /// `(index / divisor, index % divisor)`, for a nonnegative `index`.
    pub(super) fn split(&mut self, index: Value, divisor: usize) -> (Value, Value) {
        let quotient = self.b.ins().udiv_imm_u(index, divisor as i64);
        let remainder = self.b.ins().urem_imm_u(index, divisor as i64);
        (quotient, remainder)
    }

    /// The input position of the first tap `tap` of output position `o`
    /// (a runtime value) on `axis`: `o * stride - before + tap * dilation`.
    pub(super) fn position(&mut self, axis: &Axis, o: Value, tap: usize) -> Value {
        let scaled = self.b.ins().imul_imm_s(o, axis.stride as i64);
        self.b
            .ins()
            .iadd_imm_s(scaled, (tap * axis.dilation) as i64 - axis.before as i64)
    }

    /// Loads an `ty` at `address + offset`. Offsets stay within one example
    /// of a buffer, which validation keeps under 2 GiB.
    pub(super) fn load(&mut self, ty: Type, address: Value, offset: i64) -> Value {
        self.b.ins().load(ty, self.flags, address, offset as i32)
    }

    /// Stores `value` at `address + offset`.
    pub(super) fn store(&mut self, value: Value, address: Value, offset: i64) {
        self.b
            .ins()
            .store(self.flags, value, address, offset as i32);
    }

    /// [`Self::load`] from a buffer stored as `storage`: a bf16 value (or
    /// four), widened exactly.
    pub(super) fn load_stored(
        &mut self,
        storage: Storage,
        ty: Type,
        address: Value,
        offset: i64,
    ) -> Value {
        match storage {
            Storage::F32 => self.load(ty, address, offset),
            Storage::Bf16 => {
                let at = self.halved(address, offset);
                elementwise::load_bf16(&mut self.b, ty, at, self.flags)
            }
        }
    }

    /// [`Self::store`] into a buffer stored as `storage`: rounded to bf16
    /// as the rest of the bf16 path rounds.
    pub(super) fn store_stored(
        &mut self,
        storage: Storage,
        value: Value,
        address: Value,
        offset: i64,
    ) {
        match storage {
            Storage::F32 => self.store(value, address, offset),
            Storage::Bf16 => {
                let ty = self.b.func.dfg.value_type(value);
                let at = self.halved(address, offset);
                elementwise::store_bf16(&mut self.b, ty, value, at, self.flags);
            }
        }
    }

    /// The real address of a bf16 buffer's `address + offset` (see
    /// [`Self::new`]).
    fn halved(&mut self, address: Value, offset: i64) -> Value {
        let doubled = self.b.ins().iadd_imm_s(address, offset);
        self.b.ins().ushr_imm_u(doubled, 1)
    }

    /// `x` as a constant of type `ty`.
    pub(super) fn constant(&mut self, ty: Type, x: f32) -> Value {
        math::constant(&mut self.b, ty, x)
    }

    /// A scalar `f32` value splatted to `ty`'s lanes.
    pub(super) fn widen(&mut self, ty: Type, x: Value) -> Value {
        if ty.is_vector() {
            self.b.ins().splat(ty, x)
        } else {
            x
        }
    }

    /// `then` in the lanes where `a cc b`, else `otherwise`.
    pub(super) fn choose(
        &mut self,
        ty: Type,
        cc: FloatCC,
        a: Value,
        b: Value,
        then: Value,
        otherwise: Value,
    ) -> Value {
        let mask = self.b.ins().fcmp(cc, a, b);
        math::select(&mut self.b, ty, mask, then, otherwise)
    }

    /// `a * b + c` in one rounding.
    pub(super) fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        self.b.ins().fma(a, b, c)
    }

    /// A new variable holding `value`.
    pub(super) fn var(&mut self, ty: Type, value: Value) -> Variable {
        let var = self.b.declare_var(ty);
        self.b.def_var(var, value);
        var
    }

    /// The current value of `var`.
    pub(super) fn get(&mut self, var: Variable) -> Value {
        self.b.use_var(var)
    }

    /// Sets `var` to `value`.
    pub(super) fn set(&mut self, var: Variable, value: Value) {
        self.b.def_var(var, value)
    }

    /// The address of a new scratch array of `floats` f32s on the stack.
    pub(super) fn scratch(&mut self, floats: usize) -> Value {
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (floats * 4) as u32,
            4,
        ));
        self.b.ins().stack_addr(types::I64, slot, 0)
    }

    /// Stores zeros over `floats` f32s from `address`.
    pub(super) fn zero(&mut self, address: Value, floats: usize) {
        self.over_lanes(floats, |e, ty, offset| {
            let zero = e.constant(ty, 0.0);
            let at = e.add(address, offset);
            e.store(zero, at, 0);
        });
    }
}
