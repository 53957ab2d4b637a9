//! Gradients: a compiled vector-Jacobian product
//! ([`crate::compile_gradients`]) with its weights, run on a batch and an
//! upstream gradient for each output. It returns the outputs, the gradient
//! with respect to the input and the gradient of every trainable weight;
//! it never changes the weights (batchnorm's moving statistics included).

use thiserror::Error;

use crate::codegen::native::DropoutMask;
use crate::executable::Compiled;
use crate::plan::{KernelPlan, Role};
use crate::{CompiledGradients, Mode};

use super::binding::{self, Lent};
use super::executor::{Executor, RuntimeError};
use super::weights::{Tensor, TensorStore};

/// Why a gradient program could not be set up or run.
#[derive(Debug, Error)]
pub enum GradientError {
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
    /// An upstream gradient has the wrong size.
    #[error("the upstream gradient of output `{output}` has {actual} values, but the output has {expected} for a batch of {batch}")]
    UpstreamSize {
        /// The output.
        output: String,
        /// Values given.
        actual: usize,
        /// Values needed.
        expected: usize,
        /// The batch size.
        batch: usize,
    },
    /// The upstream gradients are not one per output: one is missing, one
    /// names an output the model does not have, or one is given twice.
    #[error("the upstream gradients are given for outputs [{}], but the model's outputs are [{}]", .given.join(", "), .outputs.join(", "))]
    UpstreamOutputs {
        /// The outputs given, in order.
        given: Vec<String>,
        /// The model's outputs, in order.
        outputs: Vec<String>,
    },
}

/// What one run of a gradient program returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Vjp {
    /// Each output's name and values for the batch, in the model's order.
    pub outputs: Vec<(String, Vec<f32>)>,
    /// The gradient with respect to the input batch (NHWC, flattened).
    pub input: Vec<f32>,
    /// The gradient of every trainable weight, by full name, in the
    /// weight's own shape (summed over the batch).
    pub weights: TensorStore,
}

/// A compiled gradient program with its weights, ready to run batches.
pub struct Gradients {
    compiled: Compiled,
    mode: Mode,
    executor: Executor,
    weights: TensorStore,
    /// Mixed into dropout's masks when the program's mode draws them.
    pub seed: u64,
}

impl Gradients {
    /// Runs `program` (from [`crate::compile_gradients`]) with `weights` on
    /// `threads` threads; every weight the program reads must be in
    /// `weights`, which it keeps unchanged.
    pub fn new(
        program: CompiledGradients,
        weights: TensorStore,
        threads: usize,
    ) -> Result<Gradients, GradientError> {
        let CompiledGradients { compiled, mode } = program;
        for buffer in &compiled.plan.buffers {
            if let Role::Weight(name) = &buffer.role {
                if weights.get(name).is_none() {
                    return Err(GradientError::MissingWeight(name.clone()));
                }
            }
        }
        Ok(Gradients {
            compiled,
            mode,
            executor: Executor::new(threads)?,
            weights,
            seed: 0,
        })
    }

    /// The kernel plan it runs.
    pub fn plan(&self) -> &KernelPlan {
        &self.compiled.plan
    }

    /// How its forward pass runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The weights it runs with (never changed by a run).
    pub fn weights(&self) -> &TensorStore {
        &self.weights
    }

    /// The outputs' names, in the order [`Gradients::run`] returns them.
    pub fn outputs(&self) -> Vec<String> {
        self.roles(|role| match role {
            Role::Output(name) => Some(name.clone()),
            _ => None,
        })
    }

    /// Runs one batch (`batch` examples, NHWC, flattened) with `upstream`,
    /// the gradient of some scalar with respect to each output (one entry
    /// per output, by name, in any order, each of the output's size over
    /// the batch), and returns the outputs and the gradients of that scalar.
    pub fn run(
        &mut self,
        input: &[f32],
        upstream: &[(String, Vec<f32>)],
    ) -> Result<Vjp, GradientError> {
        self.check(input, upstream)?;
        let mut input = input.to_vec();
        let mut upstream = upstream.to_vec();
        let mut step = DropoutMask::step_buffer(self.seed).to_vec();
        let mut results = self.result_buffers();
        let lent = Lent {
            input: Some(input.as_mut_slice()),
            weights: Some(&mut self.weights),
            scalars: vec![("step", step.as_mut_slice())],
            results: results.iter_mut().map(|(_, v)| v.as_mut_slice()).collect(),
            ..Lent::default()
        };
        let upstream = upstream
            .iter_mut()
            .map(|(name, values)| (name.clone(), values.as_mut_slice()))
            .collect();
        let mut external = binding::bind_with_upstream(&self.compiled, lent, upstream)
            .map_err(GradientError::MissingWeight)?;
        self.executor.run(&self.compiled.program, &mut external)?;
        Ok(self.collect(results))
    }

    /// A zeroed buffer for each result the program returns, in the order
    /// of its external slots.
    fn result_buffers(&self) -> Vec<(Role, Vec<f32>)> {
        let plan = &self.compiled.plan;
        self.compiled
            .layout
            .externals
            .iter()
            .map(|&b| &plan.buffers[b])
            .filter(|b| {
                matches!(
                    b.role,
                    Role::Output(_) | Role::InputGradient | Role::Gradient(_)
                )
            })
            .map(|b| (b.role.clone(), vec![0.0; b.len]))
            .collect()
    }

    /// The buffers of `results` sorted into outputs, the input's gradient
    /// and the weights' gradients (in their weights' shapes).
    fn collect(&self, results: Vec<(Role, Vec<f32>)>) -> Vjp {
        let mut vjp = Vjp {
            outputs: Vec::new(),
            input: Vec::new(),
            weights: TensorStore::new(),
        };
        for (role, data) in results {
            match role {
                Role::Output(name) => vjp.outputs.push((name, data)),
                Role::InputGradient => vjp.input = data,
                Role::Gradient(name) => {
                    let shape = self
                        .weights
                        .get(&name)
                        .map_or_else(|| vec![data.len()], |w| w.shape.clone());
                    vjp.weights.insert(name, Tensor { shape, data });
                }
                _ => {}
            }
        }
        vjp
    }

    /// Checks the sizes of the input and of each upstream gradient, and
    /// that there is one upstream gradient per output.
    fn check(&self, input: &[f32], upstream: &[(String, Vec<f32>)]) -> Result<(), GradientError> {
        let plan = &self.compiled.plan;
        let expected = plan.batch * plan.input_shape.iter().product::<u64>() as usize;
        if input.len() != expected {
            return Err(GradientError::InputSize {
                actual: input.len(),
                expected,
                batch: plan.batch,
                shape: plan.input_shape.clone(),
            });
        }
        let outputs = self.outputs();
        let given: Vec<String> = upstream.iter().map(|(n, _)| n.clone()).collect();
        let (mut sorted_given, mut sorted_outputs) = (given.clone(), outputs.clone());
        sorted_given.sort();
        sorted_outputs.sort();
        if sorted_given != sorted_outputs {
            return Err(GradientError::UpstreamOutputs { given, outputs });
        }
        for (output, values) in upstream {
            let role = Role::Upstream(output.clone());
            let expected = plan
                .with_role(&role)
                .first()
                .map_or(0, |&b| plan.buffers[b].len);
            if values.len() != expected {
                return Err(GradientError::UpstreamSize {
                    output: output.clone(),
                    actual: values.len(),
                    expected,
                    batch: plan.batch,
                });
            }
        }
        Ok(())
    }

    /// What `pick` makes of each buffer's role, in buffer order.
    fn roles<T>(&self, pick: impl Fn(&Role) -> Option<T>) -> Vec<T> {
        self.compiled
            .plan
            .buffers
            .iter()
            .filter_map(|b| pick(&b.role))
            .collect()
    }
}
