//! Training: one compiled program per batch size that runs the forward
//! pass, the loss, the backward pass and the optimizer's update.

use thiserror::Error;

use crate::autodiff::{self, LossSpec};
use crate::codegen::{CodegenError, Jit};
use crate::diagnostics::Diagnostic;
use crate::passes::lower::{self, LowerError};
use crate::plan::{KernelPlan, Role};
use crate::runtime::kernels::DropoutMask;
use crate::shapes::TypedGraph;
use crate::train::optimizer::StepState;
use crate::train::Optimizer;

use super::executor::{Executor, RuntimeError};
use super::program::{self, Compiled, ProgramError};
use super::weights::{Tensor, TensorStore};

/// Why training could not be set up or a step could not run.
#[derive(Debug, Error)]
pub enum TrainingError {
    /// The model could not be differentiated.
    #[error("the model cannot be differentiated: {}", .0.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; "))]
    Autodiff(Vec<Diagnostic>),
    /// The training graph could not be lowered.
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// A kernel could not be compiled.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The JIT could not start.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// The step could not run.
    #[error(transparent)]
    Run(#[from] RuntimeError),
    /// A weight the model needs is not in the store.
    #[error("the weights have no tensor `{0}`")]
    MissingWeight(String),
    /// The loss is not a finite number: the weights were left as they were.
    #[error("the loss of output `{output}` is {value} at step {step}; the weights were not updated (help: lower the learning rate, or check the data for NaN or infinite values)")]
    NonFiniteLoss {
        /// The output.
        output: String,
        /// The loss.
        value: f64,
        /// The step number (1-based).
        step: u64,
    },
    /// A batch has the wrong size.
    #[error("the {what} have {actual} values, but a batch needs {expected}")]
    BatchSize {
        /// `images` or `labels`.
        what: &'static str,
        /// Values given.
        actual: usize,
        /// Values needed.
        expected: usize,
    },
}

/// What one training step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// Each output's mean loss over the batch (unweighted).
    pub losses: Vec<(String, f64)>,
    /// Each output's values for the batch (probabilities of a softmax output).
    pub outputs: Vec<(String, Vec<f32>)>,
}

/// A model compiled for training on batches of a fixed size.
pub struct Trainer {
    compiled: Compiled,
    _jit: Jit,
    plan: KernelPlan,
    executor: Executor,
    /// The model's weights, updated by every step.
    pub weights: TensorStore,
    /// The optimizer's state tensors, by `{weight}.state{i}`.
    pub states: TensorStore,
    optimizer: Optimizer,
    /// Updates done so far, and Nadam's running product.
    pub step: StepState,
    /// Mixed into dropout's masks.
    pub seed: u64,
    /// The external slots of batchnorm's moving statistics.
    moving: Vec<usize>,
}

impl Trainer {
    /// Differentiates and compiles `model` for batches of `batch` examples.
    pub fn new(
        model: &TypedGraph,
        weights: TensorStore,
        loss: &LossSpec,
        optimizer: Optimizer,
        batch: usize,
        threads: usize,
    ) -> Result<Trainer, TrainingError> {
        let training = autodiff::differentiate(model, loss).map_err(TrainingError::Autodiff)?;
        let plan = crate::plan_training(&training, batch, &optimizer)?;
        let mut states = TensorStore::new();
        for buffer in &plan.buffers {
            match &buffer.role {
                Role::Weight(name) if weights.get(name).is_none() => {
                    return Err(TrainingError::MissingWeight(name.clone()))
                }
                Role::State(name) => {
                    states.insert(
                        name.clone(),
                        Tensor {
                            shape: vec![buffer.len],
                            data: vec![0.0; buffer.len],
                        },
                    );
                }
                _ => {}
            }
        }
        let mut jit = Jit::new()?;
        let compiled = program::compile(&plan, &mut jit)?;
        let moving = compiled
            .externals
            .iter()
            .enumerate()
            .filter(|(_, &b)| {
                matches!(&plan.buffers[b].role, Role::Weight(n) if n.ends_with(".moving_mean") || n.ends_with(".moving_variance"))
            })
            .map(|(slot, _)| slot)
            .collect();
        Ok(Trainer {
            compiled,
            _jit: jit,
            plan,
            executor: Executor::new(threads)?,
            weights,
            states,
            optimizer,
            step: StepState::new(),
            seed: 0,
            moving,
        })
    }

    /// The kernel plan of one step.
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

    /// Runs one step on `images` (NHWC, flattened) and `labels` (class
    /// indices) with learning rate `lr`.
    pub fn train_step(
        &mut self,
        images: &[f32],
        labels: &[u32],
        lr: f64,
    ) -> Result<StepResult, TrainingError> {
        let (mut images, mut labels) = self.check_batch(images, labels)?;
        let (mut coefficients, next) = self.optimizer.coefficients(self.step, lr);
        coefficients.resize(lower::COEFFICIENTS, 0.0);
        let mut step_buffer =
            DropoutMask::step_buffer(self.seed.rotate_left(32) ^ self.step.iterations).to_vec();
        let mut results: Vec<(Role, Vec<f32>)> = Vec::new();
        for &b in &self.compiled.externals {
            let role = &self.plan.buffers[b].role;
            if matches!(role, Role::Output(_) | Role::Loss(_)) {
                results.push((role.clone(), vec![0.0; self.plan.buffers[b].len]));
            }
        }
        {
            let lent = program::Lent {
                input: Some(images.as_mut_slice()),
                labels: Some(labels.as_mut_slice()),
                weights: Some(&mut self.weights),
                states: Some(&mut self.states),
                scalars: vec![
                    ("coefficients", coefficients.as_mut_slice()),
                    ("step", step_buffer.as_mut_slice()),
                ],
                results: results.iter_mut().map(|(_, v)| v.as_mut_slice()).collect(),
            };
            let mut external = program::bind(&self.plan, &self.compiled, lent)
                .map_err(TrainingError::MissingWeight)?;
            // Forward and backward, then the loss is checked before anything
            // is updated; batchnorm's moving statistics, which the forward
            // pass moves, are restored if it is not finite.
            let updates = self
                .plan
                .steps
                .iter()
                .position(|s| s.nodes.iter().any(|n| n.starts_with("update:")))
                .unwrap_or(self.plan.steps.len());
            let saved: Vec<Vec<f32>> = self.moving.iter().map(|&i| external[i].to_vec()).collect();
            self.executor
                .run_steps(&self.compiled.program, 0..updates, &mut external)?;
            if let Some((output, value)) =
                first_non_finite(&self.plan, &self.compiled.externals, &external)
            {
                for (&i, values) in self.moving.iter().zip(saved) {
                    external[i].copy_from_slice(&values);
                }
                return Err(TrainingError::NonFiniteLoss {
                    output,
                    value,
                    step: self.step.iterations + 1,
                });
            }
            self.executor.run_steps(
                &self.compiled.program,
                updates..self.plan.steps.len(),
                &mut external,
            )?;
        }
        self.step = next;
        let mut losses = Vec::new();
        let mut outputs = Vec::new();
        for (role, values) in results {
            match role {
                Role::Loss(name) => losses.push((
                    name,
                    values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len().max(1) as f64,
                )),
                Role::Output(name) => outputs.push((name, values)),
                _ => {}
            }
        }
        Ok(StepResult { losses, outputs })
    }

    fn check_batch(
        &self,
        images: &[f32],
        labels: &[u32],
    ) -> Result<(Vec<f32>, Vec<f32>), TrainingError> {
        let expected = |role: &Role| {
            self.plan
                .buffers
                .iter()
                .find(|b| b.role == *role)
                .map_or(0, |b| b.len)
        };
        let (image_len, label_len) = (expected(&Role::Input), expected(&Role::Labels));
        if images.len() != image_len {
            return Err(TrainingError::BatchSize {
                what: "images",
                actual: images.len(),
                expected: image_len,
            });
        }
        if labels.len() != label_len {
            return Err(TrainingError::BatchSize {
                what: "labels",
                actual: labels.len(),
                expected: label_len,
            });
        }
        Ok((images.to_vec(), labels.iter().map(|&l| l as f32).collect()))
    }
}

/// The first loss buffer holding a value that is not finite, with its mean.
fn first_non_finite(
    plan: &KernelPlan,
    externals: &[usize],
    external: &[&mut [f32]],
) -> Option<(String, f64)> {
    externals
        .iter()
        .zip(external)
        .find_map(|(&b, values)| match &plan.buffers[b].role {
            Role::Loss(name) if values.iter().any(|v| !v.is_finite()) => Some((
                name.clone(),
                values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len().max(1) as f64,
            )),
            _ => None,
        })
}
