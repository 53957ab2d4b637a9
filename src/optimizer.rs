//! Optimizer updates as one fused element-wise kernel over all weights.
//!
//! Each optimizer is Keras 3's update rule, written as an element-wise
//! kernel over `[weights, gradients, state...]`; what changes from step to
//! step (the learning rate of a schedule, Adam's and Nadam's bias
//! corrections) is computed on the host by [`Optimizer::coefficients`] and
//! read by the kernel as scalars, so the kernel is compiled once.
//! Weight decay, when asked for, scales the weights by `1 - lr * decay`
//! (one more scalar) before the update, as Keras 3 does.

use crate::codegen::elementwise::{Binary, Elementwise, Expr, Operand, Unary};

use crate::config::{Optimizer, OptimizerKind};

/// The most scalars any update kernel reads: Nadam's four and the weight
/// decay's factor.
pub const MAX_COEFFICIENTS: usize = 5;

/// How many state tensors (moments, velocities) per weight the optimizer keeps.
pub fn state_count(optimizer: &Optimizer) -> usize {
    match optimizer.kind {
        OptimizerKind::Sgd => 0,
        OptimizerKind::Momentum | OptimizerKind::Nesterov => 1,
        OptimizerKind::RmsProp if optimizer.momentum > 0.0 => 2,
        OptimizerKind::RmsProp => 1,
        OptimizerKind::Adam | OptimizerKind::Nadam => 2,
    }
}

/// The per-step values the update kernel reads as scalars, and the running
/// product Nadam carries from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepState {
    /// The number of updates done so far.
    pub iterations: u64,
    /// Nadam's product of momentum coefficients, `prod u_t` (1 at the start).
    pub u_product: f64,
}

impl StepState {
    /// The state before the first update.
    pub fn new() -> StepState {
        StepState {
            iterations: 0,
            u_product: 1.0,
        }
    }
}

impl Optimizer {
    /// The element-wise update kernel. Its inputs are the weights, the
    /// gradients, the state tensors (in [`state_count`] order) and the
    /// coefficients of [`Optimizer::coefficients`]; its outputs the new
    /// weights and new state, which may be written in place over the inputs
    /// (each element is read before it is written).
    pub fn update_kernel(&self) -> Elementwise {
        let mut k = KernelBuilder::new(self, state_count(self));
        if self.weight_decay > 0.0 {
            // The decayed weights replace the loaded ones in every rule below.
            let keep = k.coefficient(rule_scalars(self.kind) - 1);
            k.w = k.mul(k.w, keep);
        }
        match self.kind {
            // w -= lr g
            OptimizerKind::Sgd => {
                let step = k.mul(k.lr, k.g);
                let w = k.sub(k.w, step);
                k.outputs(&[w])
            }
            // m = momentum m - lr g; w += m (Nesterov: w += momentum m - lr g)
            OptimizerKind::Momentum | OptimizerKind::Nesterov => {
                let momentum = k.constant(self.momentum);
                let lr_g = k.mul(k.lr, k.g);
                let decayed = k.mul(momentum, k.state[0]);
                let m = k.sub(decayed, lr_g);
                let delta = if self.kind == OptimizerKind::Nesterov {
                    let ahead = k.mul(momentum, m);
                    k.sub(ahead, lr_g)
                } else {
                    m
                };
                let w = k.add(k.w, delta);
                k.outputs(&[w, m])
            }
            // v = rho v + (1 - rho) g^2; inc = lr g / sqrt(v + eps);
            // with momentum: mom = momentum mom + inc, w -= mom; else w -= inc
            OptimizerKind::RmsProp => {
                let rho = k.constant(self.rho);
                let one_minus_rho = k.constant(1.0 - self.rho);
                let g2 = k.mul(k.g, k.g);
                let fresh = k.mul(one_minus_rho, g2);
                let v = k.fma(rho, k.state[0], fresh);
                let epsilon = k.constant(self.epsilon);
                let denominator = k.add(v, epsilon);
                let root = k.unary(Unary::Sqrt, denominator);
                let lr_g = k.mul(k.lr, k.g);
                let increment = k.div(lr_g, root);
                if self.momentum > 0.0 {
                    let momentum = k.constant(self.momentum);
                    let mom = k.fma(momentum, k.state[1], increment);
                    let w = k.sub(k.w, mom);
                    k.outputs(&[w, v, mom])
                } else {
                    let w = k.sub(k.w, increment);
                    k.outputs(&[w, v])
                }
            }
            // m += (g - m)(1 - beta1); v += (g^2 - v)(1 - beta2);
            // Adam: w -= alpha m / (sqrt(v) + eps), alpha = lr sqrt(1 - beta2^t) / (1 - beta1^t)
            // Nadam: m_hat = c1 m + c2 g, v_hat = c3 v, w -= lr m_hat / (sqrt(v_hat) + eps)
            OptimizerKind::Adam | OptimizerKind::Nadam => {
                let (m, v) = k.moments();
                let epsilon = k.constant(self.epsilon);
                let (numerator, second) = if self.kind == OptimizerKind::Adam {
                    let alpha = k.coefficient(0);
                    (k.mul(alpha, m), v)
                } else {
                    let (c1, c2, c3) = (k.coefficient(0), k.coefficient(1), k.coefficient(2));
                    let first = k.mul(c1, m);
                    let m_hat = k.fma(c2, k.g, first);
                    (k.mul(k.lr, m_hat), k.mul(c3, v))
                };
                let root = k.unary(Unary::Sqrt, second);
                let denominator = k.add(root, epsilon);
                let step = k.div(numerator, denominator);
                let w = k.sub(k.w, step);
                k.outputs(&[w, m, v])
            }
        }
    }

    /// The coefficients of update number `state.iterations + 1` with learning
    /// rate `lr`, in the order the kernel reads them, and the state after it.
    /// At most [`MAX_COEFFICIENTS`] of them.
    pub fn coefficients(&self, state: StepState, lr: f64) -> (Vec<f32>, StepState) {
        let t = (state.iterations + 1) as f64;
        let mut next = StepState {
            iterations: state.iterations + 1,
            u_product: state.u_product,
        };
        let mut values = match self.kind {
            OptimizerKind::Sgd
            | OptimizerKind::Momentum
            | OptimizerKind::Nesterov
            | OptimizerKind::RmsProp => vec![lr],
            OptimizerKind::Adam => {
                let alpha = lr * (1.0 - self.beta2.powf(t)).sqrt() / (1.0 - self.beta1.powf(t));
                vec![lr, alpha]
            }
            OptimizerKind::Nadam => {
                // Keras 3's Nadam: the momentum schedule u_t = beta1 (1 - 0.5 * 0.96^t).
                let u_t = self.beta1 * (1.0 - 0.5 * 0.96f64.powf(t));
                let u_next = self.beta1 * (1.0 - 0.5 * 0.96f64.powf(t + 1.0));
                let u_product = state.u_product * u_t;
                let u_product_next = u_product * u_next;
                next.u_product = u_product;
                let c1 = u_next / (1.0 - u_product_next);
                let c2 = (1.0 - u_t) / (1.0 - u_product);
                let c3 = 1.0 / (1.0 - self.beta2.powf(t));
                vec![lr, c1, c2, c3]
            }
        };
        debug_assert_eq!(values.len(), rule_scalars(self.kind));
        if self.weight_decay > 0.0 {
            values.push(1.0 - lr * self.weight_decay);
        }
        (values.into_iter().map(|v| v as f32).collect(), next)
    }
}

/// How many scalars an update rule reads before the weight decay's factor:
/// the learning rate, then Adam's step size or Nadam's three coefficients.
fn rule_scalars(kind: OptimizerKind) -> usize {
    match kind {
        OptimizerKind::Sgd
        | OptimizerKind::Momentum
        | OptimizerKind::Nesterov
        | OptimizerKind::RmsProp => 1,
        OptimizerKind::Adam => 2,
        OptimizerKind::Nadam => 4,
    }
}

/// Builds the SSA steps of an update kernel.
struct KernelBuilder<'o> {
    optimizer: &'o Optimizer,
    exprs: Vec<Expr>,
    inputs: Vec<Operand>,
    w: usize,
    g: usize,
    state: Vec<usize>,
    lr: usize,
    coefficients: usize,
    outputs: Vec<usize>,
}

impl<'o> KernelBuilder<'o> {
    fn new(optimizer: &'o Optimizer, states: usize) -> KernelBuilder<'o> {
        let mut inputs = vec![Operand::Tensor; 2 + states];
        let coefficients = inputs.len();
        inputs.push(Operand::Scalars);
        let mut exprs: Vec<Expr> = (0..2 + states).map(Expr::Load).collect();
        exprs.push(Expr::Load(coefficients));
        KernelBuilder {
            optimizer,
            w: 0,
            g: 1,
            state: (2..2 + states).collect(),
            lr: 2 + states,
            coefficients,
            exprs,
            inputs,
            outputs: Vec::new(),
        }
    }

    fn push(&mut self, expr: Expr) -> usize {
        self.exprs.push(expr);
        self.exprs.len() - 1
    }

    /// Coefficient `i` after the learning rate (scalar `i + 1`).
    fn coefficient(&mut self, i: usize) -> usize {
        self.push(Expr::Scalar {
            input: self.coefficients,
            index: i + 1,
        })
    }

    fn constant(&mut self, value: f64) -> usize {
        self.push(Expr::Const(value as f32))
    }
    fn add(&mut self, a: usize, b: usize) -> usize {
        self.push(Expr::Binary(Binary::Add, a, b))
    }
    fn sub(&mut self, a: usize, b: usize) -> usize {
        self.push(Expr::Binary(Binary::Sub, a, b))
    }
    fn mul(&mut self, a: usize, b: usize) -> usize {
        self.push(Expr::Binary(Binary::Mul, a, b))
    }
    fn div(&mut self, a: usize, b: usize) -> usize {
        self.push(Expr::Binary(Binary::Div, a, b))
    }
    fn fma(&mut self, a: usize, b: usize, c: usize) -> usize {
        self.push(Expr::Fma(a, b, c))
    }
    fn unary(&mut self, op: Unary, a: usize) -> usize {
        self.push(Expr::Unary(op, a))
    }

    /// Adam's moments: m += (g - m)(1 - beta1); v += (g^2 - v)(1 - beta2).
    fn moments(&mut self) -> (usize, usize) {
        let one_minus_beta1 = self.constant(1.0 - self.optimizer.beta1);
        let one_minus_beta2 = self.constant(1.0 - self.optimizer.beta2);
        let dm = self.sub(self.g, self.state[0]);
        let m = self.fma(dm, one_minus_beta1, self.state[0]);
        let g2 = self.mul(self.g, self.g);
        let dv = self.sub(g2, self.state[1]);
        let v = self.fma(dv, one_minus_beta2, self.state[1]);
        (m, v)
    }

    fn outputs(mut self, outputs: &[usize]) -> Elementwise {
        self.outputs = outputs.to_vec();
        Elementwise {
            name: format!("{:?}_update", self.optimizer.kind).to_lowercase(),
            inputs: self.inputs,
            exprs: self.exprs,
            outputs: self.outputs,
            stores: Vec::new(),
        }
    }
}
