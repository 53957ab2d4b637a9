//! The contraction kernels as the executor runs them: their buffers come from
//! the argument list, and each worker thread keeps its own scratch (the
//! im2col block), grown on first use.

use std::cell::RefCell;
use std::ops::Range;

use super::winograd::{WinogradBuffers, WinogradConv, WinogradFilter};
use super::{
    BackwardDataBuffers, BackwardFilterBuffers, ConvBackwardData, ConvBackwardFilter, ConvForward,
    Epilogue, ForwardBuffers,
};
use crate::codegen::program::Kernel;
use crate::codegen::CompiledKernel;

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

/// A forward contraction with an optional epilogue. Arguments: `x`, `W`,
/// `b` (when `bias`), `y`, the epilogue's extra inputs, its extra outputs.
pub struct ForwardStep {
    /// The kernel.
    pub kernel: ConvForward,
    /// A name for errors.
    pub name: String,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// The compiled epilogue and its numbers of extra inputs and outputs.
    pub epilogue: Option<(CompiledKernel, usize, usize)>,
}

impl Kernel for ForwardStep {
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
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let output = if self.bias { 3 } else { 2 };
        let buffers = ForwardBuffers {
            input: args[0],
            kernel: args[1],
            bias: self.bias.then(|| args[2].cast_const()),
            output: args[output],
        };
        // SAFETY: the executor bound the buffers the plan lists.
        let epilogue = unsafe { epilogue(self.epilogue.as_ref(), &args[output + 1..]) };
        with_scratch(self.kernel.scratch_len(), |scratch| {
            // SAFETY: the executor bound buffers of the planned sizes.
            unsafe { self.kernel.run(&buffers, epilogue.as_ref(), scratch, items) }
        })
        .map_err(|e| e.to_string())
    }
}

/// The epilogue of a step whose extra arguments (after its output) are
/// `extra`.
///
/// # Safety
/// `extra` holds the buffers the epilogue was compiled for, in the order
/// the plan lists them (its extra inputs, then its extra outputs), each as
/// long as the output's rows need.
unsafe fn epilogue<'a>(
    compiled: Option<&'a (CompiledKernel, usize, usize)>,
    extra: &[*mut f32],
) -> Option<Epilogue<'a>> {
    compiled.map(|(kernel, inputs, outputs)| {
        let inputs: Vec<*const f32> = extra[..*inputs].iter().map(|p| p.cast_const()).collect();
        // SAFETY: the caller's contract.
        unsafe {
            Epilogue::new(
                kernel,
                &inputs,
                &extra[inputs.len()..inputs.len() + outputs],
            )
        }
    })
}

/// The Winograd transform of a layer's kernel. Arguments: `W`, `U`.
pub struct WinogradFilterStep {
    /// The kernel.
    pub kernel: WinogradFilter,
    /// A name for errors.
    pub name: String,
}

impl Kernel for WinogradFilterStep {
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

/// A Winograd convolution with an optional epilogue. Arguments: the
/// source, `U`, the bias (when the kernel adds one), the destination, the
/// epilogue's extra inputs, its extra outputs.
pub struct WinogradStep {
    /// The kernel.
    pub kernel: WinogradConv,
    /// A name for errors.
    pub name: String,
    /// The compiled epilogue and its numbers of extra inputs and outputs.
    pub epilogue: Option<(CompiledKernel, usize, usize)>,
}

impl Kernel for WinogradStep {
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
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let bias = self.kernel.has_bias();
        let output = if bias { 3 } else { 2 };
        let buffers = WinogradBuffers {
            input: args[0],
            kernel: args[1],
            bias: bias.then(|| args[2].cast_const()),
            output: args[output],
        };
        // SAFETY: the executor bound the buffers the plan lists.
        let epilogue = unsafe { epilogue(self.epilogue.as_ref(), &args[output + 1..]) };
        with_scratch(self.kernel.scratch_len(), |scratch| {
            // SAFETY: the executor bound buffers of the planned sizes.
            unsafe { self.kernel.run(&buffers, epilogue.as_ref(), scratch, items) }
        })
        .map_err(|e| e.to_string())
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

/// `dW = x^T . dy`, `db = sum dy`. Arguments: `x`, `dy`, `dW`, `db` (when `bias`).
pub struct BackwardFilterStep {
    /// The kernel.
    pub kernel: ConvBackwardFilter,
    /// A name for errors.
    pub name: String,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Kernel for BackwardFilterStep {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.kernel.domain()
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let buffers = BackwardFilterBuffers {
            input: args[0],
            output_grad: args[1],
            kernel_grad: args[2],
            bias_grad: self.bias.then(|| args[3]),
        };
        with_scratch(self.kernel.scratch_len(), |scratch| {
            // SAFETY: the executor bound buffers of the planned sizes.
            unsafe { self.kernel.run(&buffers, scratch, items) }
        })
        .map_err(|e| e.to_string())
    }
}
