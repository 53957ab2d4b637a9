//! Inference: a model compiled for batches of a fixed size
//! ([`crate::compile_inference`], or [`crate::compile_forward`] in either
//! mode), with its weights, run on arrays.

use thiserror::Error;

use crate::codegen::native::DropoutMask;
use crate::executable::Compiled;
use crate::plan::{KernelPlan, Role};

use super::binding::{self, Lent};
use super::executor::{Executor, RuntimeError};
use super::weights::TensorStore;

/// Why inference could not be set up or run.
#[derive(Debug, Error)]
pub enum InferenceError {
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

/// A compiled model with its weights, ready to run batches.
pub struct Inference {
    compiled: Compiled,
    executor: Executor,
    weights: TensorStore,
    /// Mixed into dropout's masks when the program draws them (a
    /// training-mode forward with dropout on).
    pub seed: u64,
    /// Whether a run has filled the arena's prepared buffers (Winograd's
    /// transformed kernels: the weights never change here), so that later
    /// runs skip the steps that compute them.
    prepared: bool,
}

impl Inference {
    /// Runs `compiled` (from [`crate::compile_inference`]) with `weights` on
    /// `threads` threads; every weight the program reads must be in `weights`.
    pub fn new(
        compiled: Compiled,
        weights: TensorStore,
        threads: usize,
    ) -> Result<Inference, InferenceError> {
        for buffer in &compiled.plan.buffers {
            if let Role::Weight(name) = &buffer.role {
                if weights.get(name).is_none() {
                    return Err(InferenceError::MissingWeight(name.clone()));
                }
            }
        }
        Ok(Inference {
            compiled,
            executor: Executor::new(threads)?,
            weights,
            seed: 0,
            prepared: false,
        })
    }

    /// The weights, given back.
    pub fn into_weights(self) -> TensorStore {
        self.weights
    }

    /// The kernel plan it runs.
    pub fn plan(&self) -> &KernelPlan {
        &self.compiled.plan
    }

    /// The executor, for its profile.
    pub fn executor(&mut self) -> &mut Executor {
        &mut self.executor
    }

    /// The arena's size in bytes.
    pub fn arena_bytes(&self) -> u64 {
        self.compiled.layout.arena_bytes
    }

    /// Runs one batch (`batch` examples, NHWC, flattened) and returns each
    /// output's name and values.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<(String, Vec<f32>)>, InferenceError> {
        let plan = &self.compiled.plan;
        let expected = plan.batch * plan.input_shape.iter().product::<u64>() as usize;
        if input.len() != expected {
            return Err(InferenceError::InputSize {
                actual: input.len(),
                expected,
                batch: plan.batch,
                shape: plan.input_shape.clone(),
            });
        }
        let mut input = input.to_vec();
        let mut step = DropoutMask::step_buffer(self.seed).to_vec();
        let mut outputs: Vec<(String, Vec<f32>)> = Vec::new();
        for &b in &self.compiled.layout.externals {
            if let Role::Output(name) = &plan.buffers[b].role {
                outputs.push((name.clone(), vec![0.0; plan.buffers[b].len]));
            }
        }
        let lent = Lent {
            input: Some(input.as_mut_slice()),
            weights: Some(&mut self.weights),
            scalars: vec![("step", step.as_mut_slice())],
            results: outputs.iter_mut().map(|(_, v)| v.as_mut_slice()).collect(),
            ..Lent::default()
        };
        let mut external =
            binding::bind(&self.compiled, lent).map_err(InferenceError::MissingWeight)?;
        self.executor
            .run_prepared(&self.compiled.program, &mut external, self.prepared)?;
        self.prepared = true;
        Ok(outputs)
    }
}
