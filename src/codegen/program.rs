//! The executable program: one native kernel per plan step, with the slots
//! its arguments live in. [`compile`] builds it from a fused kernel plan and
//! its memory layout; the runtime's executor runs it.

use std::ops::Range;

use super::contraction::step::{BackwardDataStep, BackwardFilterStep, ForwardStep};
use super::contraction::{ConvBackwardData, ConvBackwardFilter, ConvForward};
use super::{CodegenError, CompiledKernel, DomainKernel, Jit};
use crate::memory::{Layout, Slot};
use crate::plan::{ContractionPass, Geometry, KernelDesc, KernelPlan};

/// Element counts below which a kernel runs on one thread: below this,
/// waking a second thread costs more than it saves.
const SERIAL_ELEMENTS: usize = 16 * 1024;

/// A kernel the executor can run: a domain of independent work items.
pub trait Kernel: Send + Sync {
    /// A name for errors and profiles.
    fn name(&self) -> &str;
    /// The number of work items.
    fn domain(&self) -> usize;
    /// The Cranelift IR the kernel was generated from, if it was.
    fn clif(&self) -> Option<&str> {
        None
    }
    /// Runs work items `items`; an error is a message naming what failed.
    ///
    /// # Safety
    /// `args` must point to buffers of the sizes the kernel was built for.
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String>;
}

/// An element-wise kernel bound to its matrix shape: its work items are rows.
pub struct RowKernel {
    /// The compiled kernel.
    pub kernel: CompiledKernel,
    /// Rows of the matrix.
    pub rows: usize,
    /// Channels of each row.
    pub channels: usize,
}

impl Kernel for RowKernel {
    fn name(&self) -> &str {
        &self.kernel.name
    }
    fn clif(&self) -> Option<&str> {
        Some(&self.kernel.clif)
    }
    fn domain(&self) -> usize {
        self.rows
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        // SAFETY: forwarded from the caller.
        unsafe { self.kernel.run(args, items, self.channels) };
        Ok(())
    }
}

impl Kernel for DomainKernel {
    fn name(&self) -> &str {
        &self.name
    }
    fn clif(&self) -> Option<&str> {
        Some(&self.clif)
    }
    fn domain(&self) -> usize {
        self.domain
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        // SAFETY: forwarded from the caller.
        unsafe { DomainKernel::run(self, args, items) };
        Ok(())
    }
}

/// One kernel call: the kernel and where its arguments live.
pub struct Step {
    /// The kernel.
    pub kernel: Box<dyn Kernel>,
    /// Its arguments, in the kernel's order.
    pub args: Vec<Slot>,
    /// Work items below which threading costs more than it saves.
    pub serial_below: usize,
}

/// A program of native kernels: steps over an arena of `arena_len` f32s.
pub struct Program {
    /// The steps, in execution order.
    pub steps: Vec<Step>,
    /// The arena's size in f32s.
    pub arena_len: usize,
}

impl Program {
    /// The Cranelift IR of every generated kernel, in step order:
    /// `(kernel name, IR)`. Contractions show their epilogue's IR (the GEMM
    /// is not generated).
    pub fn clif(&self) -> Vec<(String, String)> {
        self.steps
            .iter()
            .filter_map(|s| {
                s.kernel
                    .clif()
                    .map(|c| (s.kernel.name().to_string(), c.to_string()))
            })
            .collect()
    }
}

/// A kernel plan compiled to native code: what the runtime runs.
pub struct Compiled {
    /// What the program computes: its buffers (with their roles) and steps.
    pub plan: KernelPlan,
    /// Where each buffer lives.
    pub layout: Layout,
    /// The native kernels, one per plan step.
    pub program: Program,
    // The kernels' code lives in the JIT, which must outlive `program`
    // (fields drop in declaration order).
    _jit: Jit,
}

/// Compiles every step of `plan`, whose buffers live where `layout` says,
/// into one program with a JIT of its own.
pub fn compile(plan: KernelPlan, layout: Layout) -> Result<Compiled, CodegenError> {
    let mut jit = Jit::new()?;
    let mut steps = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let (kernel, elements) = kernel(&mut jit, &step.kernel)?;
        // Small kernels run on one thread.
        let serial_below = if elements < SERIAL_ELEMENTS {
            usize::MAX
        } else {
            0
        };
        steps.push(Step {
            kernel,
            args: step.args.iter().map(|&b| layout.slots[b]).collect(),
            serial_below,
        });
    }
    let arena_len = (layout.arena_bytes / 4) as usize;
    Ok(Compiled {
        plan,
        layout,
        program: Program { steps, arena_len },
        _jit: jit,
    })
}

/// The native kernel of one step, and its size in elements (for the
/// threading threshold).
fn kernel(jit: &mut Jit, desc: &KernelDesc) -> Result<(Box<dyn Kernel>, usize), CodegenError> {
    Ok(match desc {
        KernelDesc::Elementwise {
            kernel,
            rows,
            channels,
        } => {
            let compiled = jit.compile_elementwise(kernel)?;
            let kernel = RowKernel {
                kernel: compiled,
                rows: *rows,
                channels: *channels,
            };
            (Box::new(kernel), rows * channels)
        }
        KernelDesc::Reduce(r) => (Box::new(jit.compile_reduce(r)?), r.rows * r.n),
        KernelDesc::Window(w) => {
            let elements = w.input.iter().product();
            (Box::new(jit.compile_window(w)?), elements)
        }
        KernelDesc::Contraction {
            name,
            geometry,
            pass,
        } => contraction(jit, name, geometry, pass)?,
        KernelDesc::Copy(c) => (Box::new(c.clone()), c.rows * c.len),
        KernelDesc::Mask(m) => (Box::new(m.clone()), m.len),
    })
}

/// The kernel of a contraction step, and its size in multiply-adds (for
/// the threading threshold).
fn contraction(
    jit: &mut Jit,
    name: &str,
    geometry: &Geometry,
    pass: &ContractionPass,
) -> Result<(Box<dyn Kernel>, usize), CodegenError> {
    let (bias, work) = match geometry {
        Geometry::Conv(s) => (
            s.bias,
            s.batch * s.height * s.width * s.in_channels * s.out_channels,
        ),
        Geometry::Dense(s) => (s.bias, s.rows * s.inputs * s.units),
    };
    let kernel: Box<dyn Kernel> = match pass {
        ContractionPass::Forward { epilogue } => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvForward::new(name, s)?,
                Geometry::Dense(s) => ConvForward::dense(name, s)?,
            };
            let epilogue = match epilogue {
                Some(e) => Some((
                    jit.compile_elementwise(e)?,
                    e.inputs.len() - 1,
                    e.outputs.len() - 1,
                )),
                None => None,
            };
            Box::new(ForwardStep {
                kernel,
                name: name.to_string(),
                bias,
                epilogue,
            })
        }
        ContractionPass::BackwardData => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardData::new(name, s)?,
                Geometry::Dense(s) => ConvBackwardData::dense(name, s)?,
            };
            Box::new(BackwardDataStep {
                kernel,
                name: name.to_string(),
            })
        }
        ContractionPass::BackwardFilter => {
            let kernel = match geometry {
                Geometry::Conv(s) => ConvBackwardFilter::new(name, s)?,
                Geometry::Dense(s) => ConvBackwardFilter::dense(name, s)?,
            };
            Box::new(BackwardFilterStep {
                kernel,
                name: name.to_string(),
                bias,
            })
        }
    };
    Ok((kernel, work))
}
