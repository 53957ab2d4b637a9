//! cnnc: a compiler for a small language of convolutional networks.
//!
//! The pipeline, one module and one entry function per stage:
//!
//! ```text
//! .cnn source ──load (parse, imports)──▶ Program ──elaborate──▶ Graph ──infer──▶ TypedGraph
//!   ──autodiff──▶ TrainingGraph / GradientGraph ──lower──▶ KernelPlan ──fuse──▶ KernelPlan
//!   ──precision──▶ KernelPlan ──algorithm──▶ KernelPlan ──storage──▶ KernelPlan
//!   ──schedule──▶ KernelPlan
//!   ──memory::plan──▶ Layout ──executable::build──▶ Compiled
//!   ──runtime──▶ Inference / Trainer / Gradients
//! ```
//!
//! The front end ([`load_model`], [`compile_source`], [`compile`]) reports
//! every error it can find as [`Diagnostics`], rendered with the source line
//! and a caret under the fault. The back end ([`compile_inference`],
//! [`compile_forward`], [`compile_training`], [`compile_gradients`], and the
//! `*_in` forms of the first three, in a [`Precision`]) turns a
//! [`TypedGraph`] into a [`Compiled`] program that
//! [`runtime::inference::Inference`], [`runtime::training::Trainer`] and
//! [`runtime::gradients::Gradients`] run; the runtime never compiles.

pub mod autodiff;
pub mod bench;
pub mod codegen;
pub mod config;
pub mod data;
pub mod diagnostics;
pub mod elaborate;
pub mod emit;
pub mod executable;
pub mod graph;
pub mod limits;
pub mod lsp;
pub mod memory;
pub mod onnx;
pub mod ops;
pub mod optimizer;
pub mod passes;
pub mod plan;
pub mod predict;
pub mod runtime;
pub mod shapes;
pub mod stdlib;
pub mod syntax;
pub mod train;
pub mod viz;

use std::path::Path;

use thiserror::Error;

pub use diagnostics::Diagnostics;
pub use executable::Compiled;
pub use passes::lower::Mode;
pub use plan::{KernelPlan, Precision};
pub use shapes::{ParamCounts, TypedGraph};
pub use syntax::Program;

use autodiff::LossSpec;
use config::Optimizer;
use diagnostics::Diagnostic;

/// Loads `path` and its imports and compiles model `model` (or the file's
/// only model) into a shape-checked graph.
pub fn load_model(path: &Path, model: Option<&str>) -> Result<TypedGraph, Diagnostics> {
    // Read, parse and resolve imports.
    let program = syntax::load_file(path)?;
    compile(program, model)
}

/// Like [`load_model`], for source text in memory; relative imports resolve
/// against `base` when given.
pub fn compile_source(
    name: &str,
    text: &str,
    base: Option<&Path>,
    model: Option<&str>,
) -> Result<TypedGraph, Diagnostics> {
    // Parse and resolve imports.
    let program = syntax::load_source(name, text, base)?;
    compile(program, model)
}

/// Compiles every model of the file at `path` (what `cnnc check` does),
/// reporting the errors of all of them.
pub fn check_file(path: &Path) -> Result<Vec<TypedGraph>, Diagnostics> {
    // Read, parse and resolve imports.
    let program = syntax::load_file(path)?;
    if elaborate::models(&program).is_empty() {
        return compile(program, None).map(|g| vec![g]);
    }
    let (graphs, errors) = check_models(&program);
    if errors.is_empty() {
        Ok(graphs)
    } else {
        Err(Diagnostics::new(errors, program.sources.clone()))
    }
}

/// Compiles every model a loaded program defines into shape-checked
/// graphs: those of the models that compile, and the errors of those
/// that do not (none for a file of blocks alone).
pub fn check_models(program: &Program) -> (Vec<TypedGraph>, Vec<Diagnostic>) {
    let mut graphs = Vec::new();
    let mut errors = Vec::new();
    for name in &elaborate::models(program) {
        match front_end(program, Some(name)) {
            Ok(graph) => graphs.push(graph),
            Err(e) => errors.extend(e),
        }
    }
    (graphs, errors)
}

/// Compiles model `model` (or the file's only model) of a loaded program
/// into a shape-checked graph.
pub fn compile(program: Program, model: Option<&str>) -> Result<TypedGraph, Diagnostics> {
    front_end(&program, model).map_err(|errors| Diagnostics::new(errors, program.sources.clone()))
}

/// The front end's stages after loading, in order.
fn front_end(program: &Program, model: Option<&str>) -> Result<TypedGraph, Vec<Diagnostic>> {
    // Instantiate blocks, arguments and loops into a graph of primitive ops.
    let graph = elaborate::elaborate(program, model)?;
    // Infer and check every shape, count weights, FLOPs and bytes.
    shapes::infer(graph)
}

/// Why the back end could not compile a model.
#[derive(Debug, Error)]
pub enum CompileError {
    /// The model cannot be differentiated: errors at their places in the
    /// model's source, rendered by their `Display`.
    #[error("{0}")]
    Autodiff(#[source] Diagnostics),
    /// The graph could not be lowered to kernels.
    #[error(transparent)]
    Lower(#[from] passes::lower::LowerError),
    /// A pass left the kernel plan inconsistent (a compiler defect).
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// The buffers could not be placed in memory, or the program would
    /// need more than the memory cap ([`limits::MemoryCap`]) allows.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// A kernel could not be generated.
    #[error(transparent)]
    Codegen(#[from] codegen::CodegenError),
    /// The precision asked for needs instructions this CPU does not run.
    #[error(
        "precision {} needs {}; this CPU runs neither (or CNNC_NO_BF16 is set). \
         Leave out --precision (or `precision:` in the train section) to run in f32",
        .0.name(),
        .0.requirement()
    )]
    Precision(Precision),
}

/// A training step compiled for batches of a fixed size, with the optimizer
/// whose update it runs (the runtime computes that optimizer's per-step
/// coefficients).
pub struct CompiledStep {
    /// The program: forward, loss, backward, updates.
    pub compiled: Compiled,
    /// The optimizer the update kernels were generated for.
    pub optimizer: Optimizer,
}

/// A gradient program compiled for batches of a fixed size: the forward
/// pass in `mode`, and the backward pass from the caller's upstream
/// gradients to the input's and every trainable weight's gradient.
pub struct CompiledGradients {
    /// The program.
    pub compiled: Compiled,
    /// How its forward pass runs.
    pub mode: Mode,
}

/// The kernel plan of `model`'s inference on batches of `batch`: the back
/// end's planning stages, in order.
pub fn plan_inference(model: &TypedGraph, batch: usize) -> Result<KernelPlan, CompileError> {
    plan_inference_in(model, batch, Precision::F32)
}

/// [`plan_inference`] with the contractions in `precision`.
pub fn plan_inference_in(
    model: &TypedGraph,
    batch: usize,
    precision: Precision,
) -> Result<KernelPlan, CompileError> {
    plan_forward_in(model, Mode::Inference, batch, precision)
}

/// The kernel plan of one training step of `model` on batches of `batch`,
/// scored by `loss` and updated by `optimizer`: the back end's planning
/// stages, in order.
pub fn plan_training(
    model: &TypedGraph,
    loss: &LossSpec,
    optimizer: &Optimizer,
    batch: usize,
) -> Result<KernelPlan, CompileError> {
    plan_training_in(model, loss, optimizer, batch, Precision::F32)
}

/// [`plan_training`] with the contractions in `precision`.
pub fn plan_training_in(
    model: &TypedGraph,
    loss: &LossSpec,
    optimizer: &Optimizer,
    batch: usize,
    precision: Precision,
) -> Result<KernelPlan, CompileError> {
    // The losses and the backward pass, as nodes of the same IR.
    let training = autodiff::differentiate(model, loss).map_err(CompileError::Autodiff)?;
    // Forward with batch statistics, loss, backward, optimizer updates.
    let plan = passes::lower::training(&training, batch, optimizer)?;
    rewrite(plan, precision)
}

/// The kernel plan of `model`'s forward pass in `mode` on batches of
/// `batch` (with `Mode::Inference`, the inference plan).
pub fn plan_forward(
    model: &TypedGraph,
    mode: Mode,
    batch: usize,
) -> Result<KernelPlan, CompileError> {
    plan_forward_in(model, mode, batch, Precision::F32)
}

/// [`plan_forward`] with the contractions in `precision`.
pub fn plan_forward_in(
    model: &TypedGraph,
    mode: Mode,
    batch: usize,
    precision: Precision,
) -> Result<KernelPlan, CompileError> {
    // One kernel call per node; batch statistics and masks by the mode.
    let mut plan = passes::lower::forward(model, batch, mode)?;
    // Inference runs with weights that never change (`Inference` owns them).
    plan.frozen_weights = mode == Mode::Inference;
    rewrite(plan, precision)
}

/// The kernel plan of the vector-Jacobian product of `model` on batches of
/// `batch`, its forward pass in `mode`: the training step's stages, seeded
/// by upstream gradients instead of a loss, and without updates.
pub fn plan_gradients(
    model: &TypedGraph,
    mode: Mode,
    batch: usize,
) -> Result<KernelPlan, CompileError> {
    // The backward pass from upstream gradients, as nodes of the same IR.
    let graph = autodiff::vector_jacobian(model).map_err(CompileError::Autodiff)?;
    // Forward in the mode, backward; gradients returned, no weight written.
    let plan = passes::lower::gradients(&graph, batch, mode)?;
    rewrite(plan, Precision::F32)
}

/// `model`'s forward pass in `mode` compiled for batches of `batch`; run it
/// with [`runtime::inference::Inference`].
pub fn compile_forward(
    model: &TypedGraph,
    mode: Mode,
    batch: usize,
) -> Result<Compiled, CompileError> {
    compile_forward_in(model, mode, batch, Precision::F32)
}

/// [`compile_forward`] with the contractions in `precision`.
pub fn compile_forward_in(
    model: &TypedGraph,
    mode: Mode,
    batch: usize,
    precision: Precision,
) -> Result<Compiled, CompileError> {
    check_precision(precision)?;
    generate(plan_forward_in(model, mode, batch, precision)?)
}

/// The vector-Jacobian product of `model` compiled for batches of `batch`,
/// its forward pass in `mode`; run it with [`runtime::gradients::Gradients`].
pub fn compile_gradients(
    model: &TypedGraph,
    mode: Mode,
    batch: usize,
) -> Result<CompiledGradients, CompileError> {
    Ok(CompiledGradients {
        compiled: generate(plan_gradients(model, mode, batch)?)?,
        mode,
    })
}

/// `model` compiled for inference on batches of `batch`.
pub fn compile_inference(model: &TypedGraph, batch: usize) -> Result<Compiled, CompileError> {
    generate(plan_inference(model, batch)?)
}

/// [`compile_inference`] with the contractions in `precision`.
pub fn compile_inference_in(
    model: &TypedGraph,
    batch: usize,
    precision: Precision,
) -> Result<Compiled, CompileError> {
    check_precision(precision)?;
    generate(plan_inference_in(model, batch, precision)?)
}

/// One training step of `model` compiled for batches of `batch`.
pub fn compile_training(
    model: &TypedGraph,
    loss: &LossSpec,
    optimizer: &Optimizer,
    batch: usize,
) -> Result<CompiledStep, CompileError> {
    compile_training_in(model, loss, optimizer, batch, Precision::F32)
}

/// [`compile_training`] with the contractions in `precision`.
pub fn compile_training_in(
    model: &TypedGraph,
    loss: &LossSpec,
    optimizer: &Optimizer,
    batch: usize,
    precision: Precision,
) -> Result<CompiledStep, CompileError> {
    check_precision(precision)?;
    let plan = plan_training_in(model, loss, optimizer, batch, precision)?;
    Ok(CompiledStep {
        compiled: generate(plan)?,
        optimizer: *optimizer,
    })
}

/// Checks that this CPU runs `precision`'s products
/// ([`CompileError::Precision`] if not). The `compile_*_in` functions check
/// before anything is planned (a plan alone, as `cnnc summary` makes,
/// needs no such CPU); a caller that writes files checks first.
pub fn check_precision(precision: Precision) -> Result<(), CompileError> {
    match precision {
        Precision::F32 => Ok(()),
        Precision::Bf16 if codegen::contraction::bf16::Backend::best().is_some() => Ok(()),
        Precision::Bf16 => Err(CompileError::Precision(precision)),
    }
}

/// The rewrites of a lowered plan, shared by every program.
fn rewrite(mut plan: KernelPlan, precision: Precision) -> Result<KernelPlan, CompileError> {
    // Every call against its kernel's signature (fusion checks again).
    plan.verify()?;
    // Element-wise chains into one kernel; activations into epilogues.
    passes::fuse::run(&mut plan)?;
    // Forward products in bf16 where asked, each layer's weights packed by
    // a step of their own (before Winograd, which a bf16 layer skips).
    passes::precision::run(&mut plan, precision)?;
    // Winograd where the cost model says it wins, its kernel transform a
    // step of its own.
    passes::algorithm::run(&mut plan)?;
    // Epilogues on the input gradients that run on Winograd's transforms,
    // which only the algorithm pass has said.
    passes::fuse::run(&mut plan)?;
    // Activations that only bf16 products and element-wise kernels read,
    // stored in bf16 (after fusion, which decides who reads what).
    passes::storage::run(&mut plan, precision)?;
    // Kernel gradients without the rows of taps that only read padding,
    // which their updates read as zeros.
    passes::live_rows::run(&mut plan)?;
    // Each optimizer update right after the last step that needs its
    // weight's old value, so that its gradient's memory is free early.
    passes::schedule::run(&mut plan)?;
    Ok(plan)
}

/// The last stages, shared by every program.
fn generate(plan: KernelPlan) -> Result<Compiled, CompileError> {
    // Temporaries into one arena by liveness; the rest lent by the caller.
    let layout = memory::plan(&plan)?;
    // Arena, weights, optimizer state and batch under the memory cap, before
    // any of them is allocated.
    let cap = limits::MemoryCap::current().map_err(memory::MemoryError::from)?;
    memory::check_cap(&plan, &layout, &cap)?;
    // Native kernels: Cranelift translators and the GEMM.
    Ok(executable::build(plan, layout)?)
}
