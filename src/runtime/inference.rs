//! Inference: a model compiled for batches of a fixed size, with its
//! weights, run on arrays.

use thiserror::Error;

use crate::codegen::{CodegenError, Jit};
use crate::passes::lower::LowerError;
use crate::plan::{KernelPlan, Role};
use crate::shapes::TypedGraph;

use super::executor::{Executor, RuntimeError};
use super::program::{self, Compiled, ProgramError};
use super::weights::TensorStore;

/// Why inference could not be set up or run.
#[derive(Debug, Error)]
pub enum InferenceError {
    /// The graph could not be lowered.
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// A kernel could not be compiled.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The JIT could not start.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// The program could not run.
    #[error(transparent)]
    Run(#[from] RuntimeError),
    /// A weight the model needs is not in the store.
    #[error("the weights have no tensor `{0}`")]
    MissingWeight(String),
    /// The input batch has the wrong size.
    #[error("the input has {actual} values, but a batch of {batch} examples of shape {shape:?} has {expected}")]
    InputSize {
        /// Values given.
        actual: usize,
        /// Values needed.
        expected: usize,
        /// The batch size.
        batch: usize,
        /// The per-example shape.
        shape: Vec<u64>,
    },
}

/// A model compiled for inference on batches of `batch` examples.
pub struct Inference {
    // The program's code lives in the JIT, which must outlive it.
    compiled: Compiled,
    _jit: Jit,
    plan: KernelPlan,
    executor: Executor,
    weights: TensorStore,
    input_shape: Vec<u64>,
}

impl Inference {
    /// Compiles `model` for batches of `batch`, running on `threads` threads.
    pub fn new(
        model: &TypedGraph,
        weights: TensorStore,
        batch: usize,
        threads: usize,
    ) -> Result<Inference, InferenceError> {
        let plan = crate::plan_inference(model, batch)?;
        for buffer in &plan.buffers {
            if let Role::Weight(name) = &buffer.role {
                if weights.get(name).is_none() {
                    return Err(InferenceError::MissingWeight(name.clone()));
                }
            }
        }
        let mut jit = Jit::new()?;
        let compiled = program::compile(&plan, &mut jit)?;
        let input_shape = model.input_shape().map(|s| s.0.clone()).unwrap_or_default();
        Ok(Inference {
            compiled,
            _jit: jit,
            plan,
            executor: Executor::new(threads)?,
            weights,
            input_shape,
        })
    }

    /// The kernel plan it runs.
    pub fn plan(&self) -> &KernelPlan {
        &self.plan
    }

    /// The executor, for its profile.
    pub fn executor(&mut self) -> &mut Executor {
        &mut self.executor
    }

    /// The arena's size in bytes.
    pub fn arena_bytes(&self) -> u64 {
        self.compiled.arena_bytes
    }

    /// Runs one batch (`batch` examples, NHWC, flattened) and returns each
    /// output's name and values.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<(String, Vec<f32>)>, InferenceError> {
        let expected = self.plan.batch * self.input_shape.iter().product::<u64>() as usize;
        if input.len() != expected {
            return Err(InferenceError::InputSize {
                actual: input.len(),
                expected,
                batch: self.plan.batch,
                shape: self.input_shape.clone(),
            });
        }
        let mut input = input.to_vec();
        let mut outputs: Vec<(String, Vec<f32>)> = Vec::new();
        for &b in &self.compiled.externals {
            if let Role::Output(name) = &self.plan.buffers[b].role {
                outputs.push((name.clone(), vec![0.0; self.plan.buffers[b].len]));
            }
        }
        let lent = program::Lent {
            input: Some(input.as_mut_slice()),
            weights: Some(&mut self.weights),
            results: outputs.iter_mut().map(|(_, v)| v.as_mut_slice()).collect(),
            ..program::Lent::default()
        };
        let mut external = program::bind(&self.plan, &self.compiled, lent)
            .map_err(InferenceError::MissingWeight)?;
        self.executor.run(&self.compiled.program, &mut external)?;
        Ok(outputs)
    }
}

/// Runs `model` on `count` examples (`examples(start, size)` gives the
/// values of examples `start..start + size`) in batches of at most `batch`;
/// the last, smaller batch gets a program of its own. Calls `each` with the
/// first example of every batch and its outputs.
pub fn run_in_batches(
    model: &TypedGraph,
    weights: &TensorStore,
    (count, batch, threads): (usize, usize, usize),
    mut examples: impl FnMut(usize, usize) -> Vec<f32>,
    mut each: impl FnMut(usize, Vec<(String, Vec<f32>)>),
) -> Result<(), InferenceError> {
    let batch = batch.max(1);
    let mut program: Option<Inference> = None;
    let mut start = 0;
    while start < count {
        let size = batch.min(count - start);
        if program.as_ref().is_none_or(|p| p.plan().batch != size) {
            program = Some(Inference::new(model, weights.clone(), size, threads)?);
        }
        let outputs = program
            .as_mut()
            .map(|p| p.run(&examples(start, size)))
            .transpose()?
            .unwrap_or_default();
        each(start, outputs);
        start += size;
    }
    Ok(())
}
