//! cnnc: a compiler for a small language of convolutional networks.
//!
//! The front end, in order:
//!
//! ```text
//! .cnn source ──load (parse, imports)──▶ Program ──elaborate──▶ Graph ──infer──▶ TypedGraph
//! ```
//!
//! [`compile`] runs the stages one line each; [`load_model`] reads a file
//! (and its imports) from disk first. Every stage reports all the errors it can find as
//! [`Diagnostics`], rendered with the source line and a caret under the fault.

pub mod autodiff;
pub mod bench;
pub mod codegen;
pub mod data;
pub mod diagnostics;
pub mod elaborate;
pub mod emit;
pub mod graph;
pub mod memory;
pub mod ops;
pub mod passes;
pub mod plan;
pub mod runtime;
pub mod shapes;
pub mod stdlib;
pub mod syntax;
pub mod train;
pub mod viz;

use std::path::Path;
use std::sync::Arc;

pub use diagnostics::Diagnostics;
pub use plan::KernelPlan;
pub use shapes::{ParamCounts, TypedGraph};
pub use syntax::Program;

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

/// Compiles every model of the file at `path` (what `cnnc check` does).
pub fn check_file(path: &Path) -> Result<Vec<TypedGraph>, Diagnostics> {
    // Read, parse and resolve imports.
    let program = syntax::load_file(path)?;
    let names = elaborate::models(&program);
    if names.is_empty() {
        return compile(program, None).map(|g| vec![g]);
    }
    let mut graphs = Vec::new();
    let mut all_errors = Vec::new();
    for name in &names {
        match elaborate::elaborate(&program, Some(name)).and_then(shapes::infer) {
            Ok(g) => graphs.push(g),
            Err(e) => all_errors.extend(e),
        }
    }
    if all_errors.is_empty() {
        Ok(graphs)
    } else {
        Err(Diagnostics::new(all_errors, Arc::new(program.sources)))
    }
}

/// Compiles model `model` (or the file's only model) of a loaded program:
/// the front end's stages after loading, in order.
pub fn compile(program: Program, model: Option<&str>) -> Result<TypedGraph, Diagnostics> {
    // Instantiate blocks, arguments and loops into a graph of primitive ops.
    let graph = elaborate::elaborate(&program, model);
    // Infer and check every shape, count weights, FLOPs and bytes.
    let typed = graph.and_then(shapes::infer);
    typed.map_err(|errors| Diagnostics::new(errors, Arc::new(program.sources)))
}

/// The back end's planning stages for inference, in order.
pub fn plan_inference(
    model: &TypedGraph,
    batch: usize,
) -> Result<KernelPlan, passes::lower::LowerError> {
    // One kernel call per node, over buffers of the batch.
    let mut plan = passes::lower::inference(model, batch)?;
    // Element-wise chains into one kernel; activations into epilogues.
    passes::fuse::run(&mut plan);
    Ok(plan)
}

/// The back end's planning stages for one training step, in order.
pub fn plan_training(
    training: &autodiff::TrainingGraph,
    batch: usize,
    optimizer: &train::Optimizer,
) -> Result<KernelPlan, passes::lower::LowerError> {
    // Forward with batch statistics, loss, backward, optimizer updates.
    let mut plan = passes::lower::training(training, batch, optimizer)?;
    // Element-wise chains into one kernel; activations into epilogues.
    passes::fuse::run(&mut plan);
    Ok(plan)
}
