//! What the executor runs: native kernels over a domain of independent work
//! items ([`Kernel`]), each called with its arguments' slots ([`Step`]), in
//! order ([`Program`]). `crate::executable::build` makes one from a plan.

use std::ops::Range;

use super::contraction::Epilogue;
use super::{CompiledKernel, DomainKernel};

/// Where a kernel argument lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `len` f32s at `offset` (in f32s) in the arena.
    Arena {
        /// Start, in f32s.
        offset: usize,
        /// Length, in f32s.
        len: usize,
    },
    /// The caller's external buffer number `index`, of `len` f32s.
    External {
        /// Which external buffer.
        index: usize,
        /// Its required length, in f32s.
        len: usize,
    },
}

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
    /// How it computes, where the kernel chose that by the CPU when it was
    /// built, in the terms of [`crate::plan::KernelDesc::method`]; `None`
    /// where the plan's method says it.
    fn method(&self) -> Option<&'static str> {
        None
    }
    /// The work items that compute batch items `examples` of the kernel's
    /// `batch`: a range holding every item that writes a row of theirs,
    /// where the kernel's work items follow the batch in order. `None`
    /// where they do not, or the kernel cannot say: a caller that needs
    /// only those rows then runs every item.
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        let _ = (batch, examples);
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
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        rows_of(self.rows, batch, examples)
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
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        if self.batch != Some(batch) {
            return None;
        }
        rows_of(self.domain, batch, examples)
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        // SAFETY: forwarded from the caller.
        unsafe { DomainKernel::run(self, args, items) };
        Ok(())
    }
}

/// The f32s of the written rows a [`RowEpilogue`] finishes at a time: a
/// chunk and the epilogue's other rows of it stay in L1.
const EPILOGUE_CHUNK: usize = 4096;

/// A domain kernel whose work item `i` writes row `i` of its last buffer
/// (`pixels` rows of `channels` f32s each, in the element-wise kernels'
/// terms), then an element-wise epilogue in place on each chunk of rows it
/// has finished, while they are in cache ([`crate::plan::KernelDesc::Window`]).
/// Arguments: the kernel's `buffers`, then the epilogue's extra inputs and
/// outputs. Its items are independent, and so are the epilogue's rows:
/// any split gives bitwise what the kernel and then the epilogue give.
pub struct RowEpilogue {
    /// The kernel.
    pub kernel: DomainKernel,
    /// How many buffers the kernel takes.
    pub buffers: usize,
    /// The compiled epilogue, whose input 0 and output 0 are the kernel's
    /// last buffer, and its numbers of extra inputs and outputs.
    pub epilogue: (CompiledKernel, usize, usize),
    /// Rows of the epilogue's matrix per work item.
    pub pixels: usize,
    /// Channels of each row.
    pub channels: usize,
}

impl Kernel for RowEpilogue {
    fn name(&self) -> &str {
        &self.kernel.name
    }
    fn clif(&self) -> Option<&str> {
        Some(&self.kernel.clif)
    }
    fn domain(&self) -> usize {
        self.kernel.domain
    }
    fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        Kernel::example_items(&self.kernel, batch, examples)
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let (kernel, inputs, outputs) = &self.epilogue;
        let malformed = || {
            format!(
                "{}: {} arguments for {} buffers and an epilogue's {} inputs and {} outputs",
                self.kernel.name,
                args.len(),
                self.buffers,
                inputs,
                outputs
            )
        };
        if args.len() != self.buffers + inputs + outputs {
            return Err(malformed());
        }
        let (own, extra) = args.split_at(self.buffers);
        let &written = own.last().ok_or_else(malformed)?;
        let extra_inputs: Vec<*const f32> =
            extra[..*inputs].iter().map(|p| p.cast_const()).collect();
        // SAFETY: the lowering compiled the epilogue for exactly these
        // extra buffers, each as long as the written buffer's rows need.
        let epilogue = unsafe { Epilogue::new(kernel, &extra_inputs, &extra[*inputs..]) };
        let row = (self.pixels * self.channels).max(1);
        let chunk = (EPILOGUE_CHUNK / row).max(1);
        for start in items.clone().step_by(chunk) {
            let end = (start + chunk).min(items.end);
            // SAFETY: the caller's contract: the kernel's buffers, then
            // the epilogue's, each as long as the plan says; item `i`
            // writes row `i` of the last buffer, rows `i * pixels..` of
            // the epilogue's matrix, which these items own.
            unsafe {
                self.kernel.run(own, start..end);
                epilogue.apply(
                    written,
                    start * self.pixels..end * self.pixels,
                    self.channels,
                );
            }
        }
        Ok(())
    }
}

/// The rows of batch items `examples` where `rows` rows hold a batch of
/// `batch` items in order, the same number each; `None` when `rows` is not
/// a multiple of `batch`.
pub fn rows_of(rows: usize, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
    if batch == 0 || !rows.is_multiple_of(batch) || examples.end > batch {
        return None;
    }
    let per = rows / batch;
    Some(examples.start * per..examples.end * per)
}

/// One kernel call: the kernel and where its arguments live.
pub struct Step {
    /// The kernel.
    pub kernel: Box<dyn Kernel>,
    /// Its arguments, in the kernel's order.
    pub args: Vec<Slot>,
    /// Work items below which threading costs more than it saves.
    pub serial_below: usize,
    /// Whether it prepares a buffer from frozen weights
    /// ([`crate::plan::KernelPlan::prepared`]): a caller that keeps the
    /// arena and the weights may skip it after the first run.
    pub prepared: bool,
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
