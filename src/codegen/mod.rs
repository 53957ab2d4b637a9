//! Code generation: the kernels a plan can call, each described by a value
//! (an element-wise expression, a reduction, a window op, a contraction's
//! shape, a row copy) and compiled to native code.
//!
//! One long-lived [`Jit`] per program owns the `JITModule` and its contexts;
//! each kind of generated kernel has its own translator ([`elementwise`],
//! [`reduce`], [`window`]). Cranelift emits 128-bit vectors on x86-64, so the
//! loops are written by hand over `f32x4` with `fma`. Convolutions and dense
//! layers run on a tuned GEMM ([`contraction`]) with a generated epilogue;
//! pure data movement and dropout masks are Rust ([`native`]), and so are
//! upsampling and its gradient ([`resample`]).

pub(crate) mod axis;
pub mod contraction;
pub mod elementwise;
pub mod grouped;
mod loops;
mod math;
pub mod native;
pub mod program;
pub mod reduce;
pub mod resample;
pub mod window;

use cranelift_codegen::ir::{self, AbiParam, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{isa, Context};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Module};
use thiserror::Error;

/// How a buffer's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// One f32 per value.
    #[default]
    F32,
    /// One bfloat16 per value, two to a 32-bit slot (value `i` at byte
    /// `2i`): written rounded to the nearest, ties to even, as
    /// [`contraction::bf16::round`] rounds; read exactly.
    Bf16,
}

impl Storage {
    /// The 32-bit slots `len` values take.
    pub fn slots(self, len: usize) -> usize {
        match self {
            Storage::F32 => len,
            Storage::Bf16 => len.div_ceil(2),
        }
    }
}

/// Why a kernel could not be compiled. Never a panic: a JIT failure is an
/// error the caller reports.
#[derive(Debug, Error)]
pub enum CodegenError {
    /// The host CPU is not one Cranelift can generate code for.
    #[error("this CPU is not supported by the code generator: {0}")]
    UnsupportedHost(String),
    /// Cranelift rejected a setting or the generated function.
    #[error("code generation failed for kernel `{kernel}`: {message}")]
    Cranelift {
        /// The kernel's name.
        kernel: String,
        /// Cranelift's message.
        message: String,
    },
    /// The kernel description is inconsistent (a reference to a missing value).
    #[error("kernel `{kernel}` is malformed: {message}")]
    Malformed {
        /// The kernel's name.
        kernel: String,
        /// What is wrong.
        message: String,
    },
}

/// The signature of every row-parallel kernel: buffer pointers, the first
/// and one-past-last row to process, and the row length (channels).
pub type RowKernelFn =
    unsafe extern "C" fn(args: *const *mut f32, row_start: u64, row_end: u64, channels: u64);

/// A compiled kernel: its entry point and the Cranelift IR it came from.
pub struct CompiledKernel {
    /// The kernel's name.
    pub name: String,
    /// The Cranelift IR, as text (`cnnc compile --emit clif`).
    pub clif: String,
    entry: RowKernelFn,
}

impl CompiledKernel {
    /// Runs the kernel over rows `rows` of buffers `args`.
    ///
    /// # Safety
    /// `args` must hold one valid pointer per buffer the kernel was compiled
    /// for, each to at least `rows.end * channels` f32s (a per-channel buffer:
    /// `channels` f32s), and the [`Jit`] that compiled the kernel must still
    /// be alive.
    pub unsafe fn run(&self, args: &[*mut f32], rows: std::ops::Range<usize>, channels: usize) {
        // SAFETY: the caller upholds the buffer contract above; the code was
        // generated for exactly this signature.
        unsafe {
            (self.entry)(
                args.as_ptr(),
                rows.start as u64,
                rows.end as u64,
                channels as u64,
            )
        }
    }
}

/// The signature of kernels that run over a domain of independent work
/// items: buffer pointers, and the first and one-past-last item to process.
pub type DomainKernelFn = unsafe extern "C" fn(args: *const *mut f32, start: u64, end: u64);

/// A compiled kernel over a domain of independent work items (reductions,
/// window kernels): any split of the domain gives bitwise the same result.
pub struct DomainKernel {
    /// The kernel's name.
    pub name: String,
    /// The Cranelift IR, as text (`cnnc compile --emit clif`).
    pub clif: String,
    /// The number of work items.
    pub domain: usize,
    /// The batch size whose items the work items follow in order, the same
    /// number each (a per-example window kernel's images), if they do.
    pub batch: Option<usize>,
    entry: DomainKernelFn,
}

impl DomainKernel {
    /// Runs work items `items` (a sub-range of `0..self.domain`).
    ///
    /// # Safety
    /// `args` must hold one valid pointer per buffer of the kernel, each to
    /// as many f32s as the kernel's description says, and the [`Jit`] that
    /// compiled it must still be alive.
    pub unsafe fn run(&self, args: &[*mut f32], items: std::ops::Range<usize>) {
        debug_assert!(items.end <= self.domain);
        // SAFETY: the caller upholds the buffer contract above; the code was
        // generated for exactly this signature.
        unsafe { (self.entry)(args.as_ptr(), items.start as u64, items.end as u64) }
    }
}

/// The JIT: owns the compiled code, which lives as long as it does.
pub struct Jit {
    module: JITModule,
    context: Context,
    builder_context: FunctionBuilderContext,
}

impl Jit {
    /// A JIT for the host CPU, optimising for speed.
    pub fn new() -> Result<Jit, CodegenError> {
        let mut flags = settings::builder();
        let cranelift = |e: settings::SetError| CodegenError::Cranelift {
            kernel: "<setup>".into(),
            message: e.to_string(),
        };
        flags.set("opt_level", "speed").map_err(cranelift)?;
        flags
            .set("use_colocated_libcalls", "false")
            .map_err(cranelift)?;
        flags.set("is_pic", "false").map_err(cranelift)?;
        let isa = cranelift_native::builder()
            .map_err(|m| CodegenError::UnsupportedHost(m.to_string()))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| CodegenError::Cranelift {
                kernel: "<setup>".into(),
                message: e.to_string(),
            })?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let context = module.make_context();
        Ok(Jit {
            module,
            context,
            builder_context: FunctionBuilderContext::new(),
        })
    }

    /// Compiles a fused element-wise kernel.
    pub fn compile_elementwise(
        &mut self,
        kernel: &elementwise::Elementwise,
    ) -> Result<CompiledKernel, CodegenError> {
        kernel.validate()?;
        let (code, clif) = self.define(&kernel.name, 3, |func, context, target| {
            elementwise::translate(kernel, func, context, target)
        })?;
        // SAFETY: the function was generated with exactly `RowKernelFn`'s
        // signature (a pointer and three i64s, the platform's C convention).
        let entry = unsafe { std::mem::transmute::<*const u8, RowKernelFn>(code) };
        Ok(CompiledKernel {
            name: kernel.name.clone(),
            clif,
            entry,
        })
    }

    /// Compiles a reduction (softmax, cross-entropy, column statistics).
    pub fn compile_reduce(
        &mut self,
        kernel: &reduce::Reduce,
    ) -> Result<DomainKernel, CodegenError> {
        kernel.validate()?;
        let (code, clif) = self.define(&kernel.name, 2, |func, context, target| {
            reduce::translate(kernel, func, context, target)
        })?;
        // SAFETY: generated with exactly `DomainKernelFn`'s signature.
        let entry = unsafe { std::mem::transmute::<*const u8, DomainKernelFn>(code) };
        Ok(DomainKernel {
            name: kernel.name.clone(),
            clif,
            domain: kernel.domain(),
            batch: None,
            entry,
        })
    }

    /// Compiles a window kernel (pooling, LRN, depthwise convolution, and
    /// their gradients); [`window`] states each kernel's buffers and domain.
    pub fn compile_window(
        &mut self,
        kernel: &window::Window,
    ) -> Result<DomainKernel, CodegenError> {
        let plan = kernel.plan()?;
        let (code, clif) = self.define(&kernel.name, 2, |func, context, target| {
            window::translate(&plan, func, context, target)
        })?;
        // SAFETY: generated with exactly `DomainKernelFn`'s signature.
        let entry = unsafe { std::mem::transmute::<*const u8, DomainKernelFn>(code) };
        // Every pass but a depthwise kernel gradient runs over images in
        // order (`window`'s domains).
        let per_image = kernel.pass != window::Pass::BackwardFilter;
        Ok(DomainKernel {
            name: kernel.name.clone(),
            clif,
            domain: plan.domain(),
            batch: per_image.then_some(kernel.input[0]),
            entry,
        })
    }

    /// Declares, translates (with `translate`), compiles and links one
    /// function taking a pointer and `integers` i64s; returns its code and IR.
    fn define(
        &mut self,
        name: &str,
        integers: usize,
        translate: impl FnOnce(
            &mut ir::Function,
            &mut FunctionBuilderContext,
            isa::TargetFrontendConfig,
        ),
    ) -> Result<(*const u8, String), CodegenError> {
        let pointer = self.module.target_config().pointer_type();
        let mut signature = self.module.make_signature();
        signature.params.push(AbiParam::new(pointer));
        for _ in 0..integers {
            signature.params.push(AbiParam::new(ir::types::I64));
        }
        let error = |e: cranelift_module::ModuleError| CodegenError::Cranelift {
            kernel: name.to_string(),
            message: e.to_string(),
        };
        let id = self
            .module
            .declare_anonymous_function(&signature)
            .map_err(error)?;
        self.context.func.signature = signature;
        self.context.func.name = UserFuncName::user(0, id.as_u32());
        translate(
            &mut self.context.func,
            &mut self.builder_context,
            self.module.target_config(),
        );
        let clif = self.context.func.display().to_string();
        let defined = self.module.define_function(id, &mut self.context);
        self.module.clear_context(&mut self.context);
        defined.map_err(error)?;
        self.module.finalize_definitions().map_err(error)?;
        Ok((self.module.get_finalized_function(id), clif))
    }
}
