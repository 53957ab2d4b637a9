//! Training: a compiled step ([`crate::compile_training`]) that runs the
//! forward pass, the loss, the backward pass and the optimizer's update,
//! with the weights and optimizer state it keeps between steps.

use std::ops::Range;

use thiserror::Error;

use crate::codegen::native::DropoutMask;
use crate::config::Optimizer;
use crate::executable::Compiled;
use crate::optimizer::{StepState, MAX_COEFFICIENTS};
use crate::plan::{KernelPlan, Role, Step};
use crate::CompiledStep;

use super::binding::{self, Lent};
use super::executor::{Executor, RuntimeError};
use super::parallel::{shares, Collective, Exchanged, Sharding};
use super::weights::{Tensor, TensorStore};

/// Why training could not be set up or a step could not run.
#[derive(Debug, Error)]
pub enum TrainingError {
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
    /// A label is not the index of one of an output's class scores (Keras:
    /// "Received a label value of 3 which is outside the valid range of
    /// [0, 2)"): nothing was run.
    #[error("received a label value of {label} (position {position} in the batch), which is outside the valid range of [0, {scores}) for output `{output}`: a label must be the index of one of the output's {scores} class scores")]
    LabelOutOfRange {
        /// The label.
        label: u32,
        /// Its position in the batch, from 0.
        position: usize,
        /// An output that has no score for it (the first in the plan).
        output: String,
        /// That output's number of class scores.
        scores: usize,
    },
    /// An output has more class scores than labels can index exactly: they
    /// reach the kernels as f32, which hold every whole number up to 2^24
    /// but not every one above it.
    #[error("output `{output}` gives {scores} class scores, but labels reach the kernels as f32, which name class indices exactly only up to {MAX_EXACT_LABEL} (2^24)")]
    TooManyScores {
        /// The output.
        output: String,
        /// Its number of class scores.
        scores: usize,
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

/// The largest label the kernels read exactly: labels reach them as f32,
/// whose 24-bit significand holds every whole number up to 2^24 but not
/// 2^24 + 1. A trainer refuses an output with more scores than this label
/// can index ([`TrainingError::TooManyScores`]), so that every label below
/// an output's number of scores is exact.
pub const MAX_EXACT_LABEL: u32 = 1 << 24;

/// What one training step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// Each output's mean loss over the batch (unweighted).
    pub losses: Vec<(String, f64)>,
    /// Each output's values for the batch (probabilities of a softmax output).
    pub outputs: Vec<(String, Vec<f32>)>,
}

/// A compiled training step with the weights and optimizer state it updates.
pub struct Trainer {
    compiled: Compiled,
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
    /// Each output's name and number of class scores: a label must be
    /// below every one of them.
    scores: Vec<(String, usize)>,
    /// What the last data-parallel step exchanged with the other ranks.
    exchanged: Exchanged,
}

/// `len` zeros in memory already mapped in.
///
/// A fresh zeroed vector is pages the kernel maps in at their first write,
/// and the first write to the optimizer's state is the first step's update
/// kernels, on every thread at once. Faulting the pages in there, threads
/// contending, made ResNet-34's first step about 0.23 s slower than one
/// thread writing them here (`cnnc bench examples/resnet34.cnn`, Intel
/// Xeon, 2 threads: 0.46 s to the first step done, 0.23 s with this).
fn touched_zeros(len: usize) -> Vec<f32> {
    let mut values = vec![0.0f32; len];
    // One write a page, volatile so that it is not dropped as writing
    // what is there.
    for value in values.iter_mut().step_by(1024) {
        // SAFETY: `value` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(value, 0.0) };
    }
    values
}

impl Trainer {
    /// Runs `step` (from [`crate::compile_training`]) on `threads` threads,
    /// starting from `weights` (every weight the step reads must be there)
    /// and zeroed optimizer state.
    pub fn new(
        step: CompiledStep,
        weights: TensorStore,
        threads: usize,
    ) -> Result<Trainer, TrainingError> {
        let CompiledStep {
            compiled,
            optimizer,
        } = step;
        let plan = &compiled.plan;
        let scores = class_scores(plan);
        if let Some((output, count)) = scores
            .iter()
            .find(|(_, count)| *count > MAX_EXACT_LABEL as usize + 1)
        {
            return Err(TrainingError::TooManyScores {
                output: output.clone(),
                scores: *count,
            });
        }
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
                            data: touched_zeros(buffer.len),
                        },
                    );
                }
                _ => {}
            }
        }
        let moving = compiled
            .layout
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
            executor: Executor::new(threads)?,
            weights,
            states,
            optimizer,
            step: StepState::new(),
            seed: 0,
            moving,
            scores,
            exchanged: Exchanged::default(),
        })
    }

    /// The kernel plan of one step.
    pub fn plan(&self) -> &KernelPlan {
        &self.compiled.plan
    }

    /// The executor, for its profile.
    pub fn executor(&mut self) -> &mut Executor {
        &mut self.executor
    }

    /// What the last step of [`Self::train_step_shared`] exchanged with
    /// the other ranks.
    pub fn exchanged(&self) -> Exchanged {
        self.exchanged
    }

    /// How each step of the program runs as a rank of `world`
    /// ([`Sharding::modes`]).
    pub fn modes(&self, world: &dyn Collective) -> Result<Vec<&'static str>, TrainingError> {
        Ok(Sharding::new(&self.compiled.plan, world)?.modes())
    }

    /// The arena's size in bytes.
    pub fn arena_bytes(&self) -> u64 {
        self.compiled.layout.arena_bytes
    }

    /// Runs one step on `images` (NHWC, flattened) and `labels` (class
    /// indices) with learning rate `lr`.
    ///
    /// Every label must be below every output's number of class scores, as
    /// Keras's sparse categorical cross-entropy requires (an output may have
    /// more scores than the data set has classes); otherwise the step fails
    /// with [`TrainingError::LabelOutOfRange`] before anything runs, and the
    /// weights are left as they were.
    pub fn train_step(
        &mut self,
        images: &[f32],
        labels: &[u32],
        lr: f64,
    ) -> Result<StepResult, TrainingError> {
        self.check_images(images.len(), 0..self.compiled.plan.batch)?;
        self.run_step(images.to_vec(), labels, lr, None)
    }

    /// Runs one step as one rank of a data-parallel run over `world`
    /// ([`super::parallel`]): `images` holds this rank's share of the batch
    /// (its items of [`super::parallel::shares`]), `labels` the whole
    /// batch's labels. Every rank of `world` makes this call with the same
    /// weights, state and labels, and gets bitwise the same result, weights
    /// and state as [`Self::train_step`] on the whole batch.
    pub fn train_step_shared(
        &mut self,
        images: &[f32],
        labels: &[u32],
        lr: f64,
        world: &dyn Collective,
    ) -> Result<StepResult, TrainingError> {
        let plan = &self.compiled.plan;
        let own = shares(plan.batch, world.size())[world.rank().min(world.size() - 1)].clone();
        let per_item = expected_len(plan, &Role::Input) / plan.batch.max(1);
        self.check_images(images.len(), own.clone())?;
        // The other ranks' items are NaN: a kernel that read them before
        // they were gathered would spoil the loss visibly, not silently.
        let mut whole = vec![f32::NAN; per_item * plan.batch];
        whole[own.start * per_item..own.end * per_item].copy_from_slice(images);
        self.run_step(whole, labels, lr, Some(world))
    }

    /// Checks that `len` image values are batch items `items`.
    fn check_images(&self, len: usize, items: Range<usize>) -> Result<(), TrainingError> {
        let plan = &self.compiled.plan;
        let whole = expected_len(plan, &Role::Input);
        let expected = whole / plan.batch.max(1) * items.len();
        if len != expected {
            return Err(TrainingError::BatchSize {
                what: "images",
                actual: len,
                expected,
            });
        }
        Ok(())
    }

    /// One step on the whole batch's `images` (only this rank's items when
    /// `world` is given) and `labels`.
    fn run_step(
        &mut self,
        mut images: Vec<f32>,
        labels: &[u32],
        lr: f64,
        world: Option<&dyn Collective>,
    ) -> Result<StepResult, TrainingError> {
        let mut labels = self.check_labels_len(labels)?;
        let (mut coefficients, next) = self.optimizer.coefficients(self.step, lr);
        coefficients.resize(MAX_COEFFICIENTS, 0.0);
        let mut step_buffer =
            DropoutMask::step_buffer(self.seed.rotate_left(32) ^ self.step.iterations).to_vec();
        let plan = &self.compiled.plan;
        let mut results: Vec<(Role, Vec<f32>)> = Vec::new();
        for &b in &self.compiled.layout.externals {
            let role = &plan.buffers[b].role;
            if matches!(role, Role::Output(_) | Role::Loss(_)) {
                results.push((role.clone(), vec![0.0; plan.buffers[b].len]));
            }
        }
        {
            let lent = Lent {
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
            let mut external =
                binding::bind(&self.compiled, lent).map_err(TrainingError::MissingWeight)?;
            // Forward and backward, then the loss is checked before anything
            // is updated; batchnorm's moving statistics, which the forward
            // pass moves, are restored if it is not finite.
            let updates = plan
                .steps
                .iter()
                .position(Step::is_update)
                .unwrap_or(plan.steps.len());
            let saved: Vec<Vec<f32>> = self.moving.iter().map(|&i| external[i].to_vec()).collect();
            let mut sharding = world.map(|w| Sharding::new(plan, w)).transpose()?;
            let program = &self.compiled.program;
            match &mut sharding {
                None => self
                    .executor
                    .run_steps(program, 0..updates, &mut external)?,
                Some(sharding) => {
                    let executor = &mut self.executor;
                    executor.run_sharded((program, plan), 0..updates, &mut external, sharding)?;
                    // The outputs and losses, whole on every rank.
                    for (values, &b) in external.iter_mut().zip(&self.compiled.layout.externals) {
                        if matches!(plan.buffers[b].role, Role::Output(_) | Role::Loss(_)) {
                            sharding.complete(b, values)?;
                        }
                    }
                }
            }
            if let Some((output, value)) =
                first_non_finite(plan, &self.compiled.layout.externals, &external)
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
            let rest = updates..plan.steps.len();
            match &mut sharding {
                None => self.executor.run_steps(program, rest, &mut external)?,
                Some(sharding) => {
                    self.executor
                        .run_sharded((program, plan), rest, &mut external, sharding)?;
                    self.exchanged = sharding.exchanged();
                }
            }
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

    /// Checks the labels' number and values; returns them as the kernels
    /// take them.
    fn check_labels_len(&self, labels: &[u32]) -> Result<Vec<f32>, TrainingError> {
        let label_len = expected_len(&self.compiled.plan, &Role::Labels);
        if labels.len() != label_len {
            return Err(TrainingError::BatchSize {
                what: "labels",
                actual: labels.len(),
                expected: label_len,
            });
        }
        self.check_labels(labels)?;
        // Exact: every label is below an output's number of scores, which
        // `new` has checked to be at most MAX_EXACT_LABEL + 1.
        Ok(labels.iter().map(|&l| l as f32).collect())
    }

    /// The first label (by position) that some output has no score for.
    /// The kernels index each output's row by the label, so this is what
    /// keeps them inside their buffers.
    fn check_labels(&self, labels: &[u32]) -> Result<(), TrainingError> {
        for (position, &label) in labels.iter().enumerate() {
            let short = self
                .scores
                .iter()
                .find(|(_, count)| label as usize >= *count);
            if let Some((output, count)) = short {
                return Err(TrainingError::LabelOutOfRange {
                    label,
                    position,
                    output: output.clone(),
                    scores: *count,
                });
            }
        }
        Ok(())
    }
}

/// The length of `plan`'s buffer with role `role` (0 when it has none).
fn expected_len(plan: &KernelPlan, role: &Role) -> usize {
    plan.buffers
        .iter()
        .find(|b| b.role == *role)
        .map_or(0, |b| b.len)
}

/// Each output's name and the number of classes its labels may name: its
/// class scores per label (training checks that every output takes labels
/// of one shape, a label per row of scores, so that is its length over the
/// labels'), or 2 for one score, which the binary cross-entropy scores
/// against labels 0 and 1.
fn class_scores(plan: &KernelPlan) -> Vec<(String, usize)> {
    let labels = plan
        .buffers
        .iter()
        .find(|b| b.role == Role::Labels)
        .map_or(plan.batch, |b| b.len);
    plan.buffers
        .iter()
        .filter_map(|buffer| match &buffer.role {
            Role::Output(name) => Some((name.clone(), (buffer.len / labels.max(1)).max(2))),
            _ => None,
        })
        .collect()
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
