//! The contraction kernels as the executor runs them: their buffers come from
//! the argument list, and each worker thread keeps its own scratch (the
//! im2col block), grown on first use.

use std::cell::RefCell;
use std::ops::Range;

use super::bf16::{Bf16Forward, PackWeights, Pass};
use super::winograd::{
    WinogradBackwardFilter, WinogradConv, WinogradFilter, WinogradFilterGradient,
};
use super::{
    BackwardDataBuffers, BackwardFilterBuffers, ConvBackwardData, ConvBackwardFilter, ConvForward,
    Epilogue, ForwardBuffers,
};
use crate::codegen::program::Kernel;
use crate::codegen::{CodegenError, CompiledKernel};

thread_local! {
    /// Each worker's scratch for im2col blocks.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch buffer of at least `len` f32s.
fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [f32]) -> T) -> T {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        f(&mut scratch[..])
    })
}

/// A kernel that computes a product into output rows from a source, a
/// kernel buffer and an optional bias, and runs an epilogue on each block
/// of rows it finishes: the im2col forward pass ([`ConvForward`], dense
/// layers too) and the Winograd convolutions ([`WinogradConv`]).
pub trait ProductKernel: Send + Sync {
    /// The number of work items.
    fn domain(&self) -> usize;
    /// The f32s of scratch one thread needs.
    fn scratch_len(&self) -> usize;
    /// Whether it takes a bias buffer.
    fn has_bias(&self) -> bool;
    /// How it computes, where it chose that by the CPU ([`Kernel::method`]).
    fn method(&self) -> Option<&'static str> {
        None
    }
    /// The items that write batch items `examples` ([`Kernel::example_items`]).
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>>;
    /// Runs items `items`.
    ///
    /// # Safety
    /// The contract of the kernel's own `run`.
    unsafe fn run(
        &self,
        buffers: &ForwardBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError>;
}

impl ProductKernel for ConvForward {
    fn domain(&self) -> usize {
        ConvForward::domain(self)
    }
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        ConvForward::example_items(self, batch, examples)
    }
    fn scratch_len(&self) -> usize {
        ConvForward::scratch_len(self)
    }
    fn has_bias(&self) -> bool {
        ConvForward::has_bias(self)
    }
    fn method(&self) -> Option<&'static str> {
        if self.is_direct() {
            Some("forward, direct")
        } else if self.by_positions() {
            Some("forward, by position")
        } else {
            None
        }
    }
    unsafe fn run(
        &self,
        buffers: &ForwardBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { ConvForward::run(self, buffers, epilogue, scratch, items) }
    }
}

impl ProductKernel for WinogradConv {
    fn domain(&self) -> usize {
        WinogradConv::domain(self)
    }
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        WinogradConv::example_items(self, batch, examples)
    }
    fn scratch_len(&self) -> usize {
        WinogradConv::scratch_len(self)
    }
    fn has_bias(&self) -> bool {
        WinogradConv::has_bias(self)
    }
    fn method(&self) -> Option<&'static str> {
        WinogradConv::method(self)
    }
    unsafe fn run(
        &self,
        buffers: &ForwardBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { WinogradConv::run(self, buffers, epilogue, scratch, items) }
    }
}

impl ProductKernel for Bf16Forward {
    fn domain(&self) -> usize {
        Bf16Forward::domain(self)
    }
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        Bf16Forward::example_items(self, batch, examples)
    }
    fn scratch_len(&self) -> usize {
        Bf16Forward::scratch_len(self)
    }
    fn has_bias(&self) -> bool {
        Bf16Forward::has_bias(self)
    }
    fn method(&self) -> Option<&'static str> {
        Some(self.backend().method(Pass::Forward))
    }
    unsafe fn run(
        &self,
        buffers: &ForwardBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { Bf16Forward::run(self, buffers, epilogue, scratch, items) }
    }
}

/// A product with an optional epilogue. Arguments: the source (`x`, or
/// `dy` for a Winograd input gradient), the kernel (`W`, or the transformed
/// kernel for Winograd), `b` (when the kernel takes one), the output, the
/// epilogue's extra inputs, its extra outputs.
pub struct ProductStep<K> {
    /// The kernel.
    pub kernel: K,
    /// A name for errors.
    pub name: String,
    /// The compiled epilogue and its numbers of extra inputs and outputs.
    pub epilogue: Option<(CompiledKernel, usize, usize)>,
}

impl<K: ProductKernel> Kernel for ProductStep<K> {
    fn name(&self) -> &str {
        &self.name
    }
    fn clif(&self) -> Option<&str> {
        self.epilogue
            .as_ref()
            .map(|(kernel, _, _)| kernel.clif.as_str())
    }
    fn domain(&self) -> usize {
        self.kernel.domain()
    }
    fn method(&self) -> Option<&'static str> {
        self.kernel.method()
    }
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        self.kernel.example_items(batch, examples)
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let bias = self.kernel.has_bias();
        let output = if bias { 3 } else { 2 };
        let buffers = ForwardBuffers {
            input: args[0],
            kernel: args[1],
            bias: bias.then(|| args[2].cast_const()),
            output: args[output],
        };
        let extra = &args[output + 1..];
        let epilogue = self.epilogue.as_ref().map(|(kernel, inputs, outputs)| {
            let inputs: Vec<*const f32> = extra[..*inputs].iter().map(|p| p.cast_const()).collect();
            // SAFETY: the lowering compiled the epilogue for exactly these
            // extra buffers, each as long as the output's rows need.
            unsafe {
                Epilogue::new(
                    kernel,
                    &inputs,
                    &extra[inputs.len()..inputs.len() + outputs],
                )
            }
        });
        with_scratch(self.kernel.scratch_len(), |scratch| {
            // SAFETY: the executor bound buffers of the planned sizes.
            unsafe { self.kernel.run(&buffers, epilogue.as_ref(), scratch, items) }
        })
        .map_err(|e| e.to_string())
    }
}

/// A kernel that transforms one buffer into another: the Winograd
/// transform of a layer's kernel (`W` into `U`), the kernel gradient from
/// the transformed kernel's gradient (`dU` into `dW`), a layer's weights
/// packed for its bf16 products (`W` into the packed weights).
pub trait Transform: Send + Sync {
    /// The number of work items.
    fn domain(&self) -> usize;
    /// Runs items `items` from `from` into `to`.
    ///
    /// # Safety
    /// The contract of the kernel's own `run`.
    unsafe fn run(
        &self,
        from: *const f32,
        to: *mut f32,
        items: Range<usize>,
    ) -> Result<(), CodegenError>;
}

impl Transform for WinogradFilter {
    fn domain(&self) -> usize {
        WinogradFilter::domain(self)
    }
    unsafe fn run(
        &self,
        from: *const f32,
        to: *mut f32,
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { WinogradFilter::run(self, from, to, items) }
    }
}

impl Transform for WinogradFilterGradient {
    fn domain(&self) -> usize {
        WinogradFilterGradient::domain(self)
    }
    unsafe fn run(
        &self,
        from: *const f32,
        to: *mut f32,
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { WinogradFilterGradient::run(self, from, to, items) }
    }
}

impl Transform for PackWeights {
    fn domain(&self) -> usize {
        PackWeights::domain(self)
    }
    unsafe fn run(
        &self,
        from: *const f32,
        to: *mut f32,
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { PackWeights::run(self, from, to, items) }
    }
}

/// A [`Transform`] as the executor runs it. Arguments: the source, the
/// destination.
pub struct TransformStep<K> {
    /// The kernel.
    pub kernel: K,
    /// A name for errors.
    pub name: String,
}

impl<K: Transform> Kernel for TransformStep<K> {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.kernel.domain()
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        // SAFETY: the executor bound buffers of the planned sizes.
        unsafe { self.kernel.run(args[0], args[1], items) }.map_err(|e| e.to_string())
    }
}

/// `dx = dy . W^T`. Arguments: `dy`, `W`, `dx`.
pub struct BackwardDataStep {
    /// The kernel.
    pub kernel: ConvBackwardData,
    /// A name for errors.
    pub name: String,
}

impl Kernel for BackwardDataStep {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.kernel.domain()
    }
    fn method(&self) -> Option<&'static str> {
        match self.kernel.bf16_backend() {
            Some(backend) => Some(backend.method(Pass::BackwardData)),
            None => self
                .kernel
                .by_positions()
                .then_some("backward-data, by position"),
        }
    }
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        self.kernel.example_items(batch, examples)
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let buffers = BackwardDataBuffers {
            output_grad: args[0],
            kernel: args[1],
            input_grad: args[2],
        };
        with_scratch(self.kernel.scratch_len(), |scratch| {
            // SAFETY: the executor bound buffers of the planned sizes.
            unsafe { self.kernel.run(&buffers, None, scratch, items) }
        })
        .map_err(|e| e.to_string())
    }
}

/// A kernel that computes a layer's kernel gradient (or, on Winograd's
/// transforms, the transformed kernel's) and its bias gradient from the
/// input and the output gradient: [`ConvBackwardFilter`] (dense layers too)
/// and [`WinogradBackwardFilter`].
pub trait FilterGradientKernel: Send + Sync {
    /// The number of work items.
    fn domain(&self) -> usize;
    /// The f32s of scratch one thread needs.
    fn scratch_len(&self) -> usize;
    /// Whether it computes a bias gradient.
    fn has_bias(&self) -> bool;
    /// How it computes, where it chose that by the shape and the CPU
    /// ([`Kernel::method`]).
    fn method(&self) -> Option<&'static str> {
        None
    }
    /// Runs items `items`.
    ///
    /// # Safety
    /// The contract of the kernel's own `run`.
    unsafe fn run(
        &self,
        buffers: &BackwardFilterBuffers,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError>;
}

impl FilterGradientKernel for ConvBackwardFilter {
    fn domain(&self) -> usize {
        ConvBackwardFilter::domain(self)
    }
    fn scratch_len(&self) -> usize {
        ConvBackwardFilter::scratch_len(self)
    }
    fn has_bias(&self) -> bool {
        ConvBackwardFilter::has_bias(self)
    }
    fn method(&self) -> Option<&'static str> {
        match self.bf16_backend() {
            Some(backend) => Some(backend.method(Pass::BackwardFilter)),
            None => self.is_direct().then_some("backward-filter, direct"),
        }
    }
    unsafe fn run(
        &self,
        buffers: &BackwardFilterBuffers,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { ConvBackwardFilter::run(self, buffers, scratch, items) }
    }
}

impl FilterGradientKernel for WinogradBackwardFilter {
    fn domain(&self) -> usize {
        WinogradBackwardFilter::domain(self)
    }
    fn scratch_len(&self) -> usize {
        WinogradBackwardFilter::scratch_len(self)
    }
    fn has_bias(&self) -> bool {
        WinogradBackwardFilter::has_bias(self)
    }
    unsafe fn run(
        &self,
        buffers: &BackwardFilterBuffers,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        // SAFETY: the caller's contract.
        unsafe { WinogradBackwardFilter::run(self, buffers, scratch, items) }
    }
}

/// `dW = x^T . dy` (or the transformed kernel's gradient `dU`), `db = sum
/// dy`. Arguments: `x`, `dy`, `dW` (or `dU`), `db` (when the kernel has a
/// bias).
pub struct BackwardFilterStep<K> {
    /// The kernel.
    pub kernel: K,
    /// A name for errors.
    pub name: String,
}

impl<K: FilterGradientKernel> Kernel for BackwardFilterStep<K> {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.kernel.domain()
    }
    fn method(&self) -> Option<&'static str> {
        self.kernel.method()
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let buffers = BackwardFilterBuffers {
            input: args[0],
            output_grad: args[1],
            kernel_grad: args[2],
            bias_grad: self.kernel.has_bias().then(|| args[3]),
        };
        with_scratch(self.kernel.scratch_len(), |scratch| {
            // SAFETY: the executor bound buffers of the planned sizes.
            unsafe { self.kernel.run(&buffers, scratch, items) }
        })
        .map_err(|e| e.to_string())
    }
}
