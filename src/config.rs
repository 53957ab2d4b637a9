//! The train section's configuration: what a model file's `train { … }`
//! says (optimizer, loss, metrics, batch, epochs, seed, validation,
//! schedule, early stopping, augmentation), with Keras's defaults for what
//! it leaves out. Plain data at the bottom of the layers: the front end
//! fills it (`elaborate`), and the data, the optimizer, the lowering and the
//! training loop read it.

/// The loss a train section names. Which cross-entropy scores an output
/// follows from its shape: the softmax cross-entropy for two or more scores
/// per label, the binary cross-entropy for one (a sigmoid's), whose softmax
/// cross-entropy would always be 0. Naming the binary loss also asks that
/// every output give one score per label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `sparse_categorical_crossentropy`: a class index per example, or per
    /// pixel for per-pixel scores.
    SparseCategorical,
    /// `binary_crossentropy`: labels 0 and 1, each output one score (per
    /// example or per pixel).
    Binary,
}

/// The arithmetic of a program's contractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Convolutions and dense layers multiply bf16 operands and sum in
    /// f32; everything else, and every value kept, stays f32
    /// (`crate::passes::precision`).
    Bf16,
}

impl Precision {
    /// Its name on the command line and in the train section.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// What the CPU must run for this precision, in words for errors.
    pub fn requirement(self) -> &'static str {
        match self {
            Precision::F32 => "nothing more",
            Precision::Bf16 => "AMX-BF16 (Intel from Sapphire Rapids on) or AVX512-BF16 (AMD from Zen 4 on, Intel Cooper Lake); /proc/cpuinfo lists them as amx_bf16 and avx512_bf16",
        }
    }

    /// The precision named `name`, if any.
    pub fn from_name(name: &str) -> Option<Precision> {
        [Precision::F32, Precision::Bf16]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// Everything the `train` section says, with defaults for what it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The optimizer and its hyperparameters.
    pub optimizer: Optimizer,
    /// The loss the train section names.
    pub loss: Loss,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// The weight of each output's loss (outputs not named weigh 1).
    pub loss_weights: Vec<(String, f64)>,
    /// Metrics reported while training.
    pub metrics: Vec<Metric>,
    /// Images per step.
    pub batch: u64,
    /// Passes over the training set.
    pub epochs: u64,
    /// The seed of initialisation, shuffling, dropout and augmentation.
    pub seed: u64,
    /// Training images held out for validation; `None` leaves it to the
    /// data set (Fashion-MNIST: 12,000 of 60,000; an image folder: a fifth).
    pub validation: Option<u64>,
    /// The learning-rate schedule; constant when `None`.
    pub schedule: Option<Schedule>,
    /// Early stopping on the validation loss.
    pub early_stopping: Option<EarlyStopping>,
    /// Data augmentation.
    pub augment: Option<Augment>,
    /// The patterns of the layers and blocks that do not train (`freeze:
    /// ["stage1", "conv1"]`); elaboration has already frozen the layers
    /// they match ([`crate::graph::Node::trainable`]).
    pub freeze: Vec<String>,
    /// The arithmetic of the convolutions and dense layers.
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            optimizer: Optimizer {
                kind: OptimizerKind::Nadam,
                lr: 0.001,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-7,
                momentum: 0.0,
                rho: 0.9,
                weight_decay: 0.0,
            },
            loss: Loss::SparseCategorical,
            label_smoothing: 0.0,
            loss_weights: Vec::new(),
            metrics: vec![Metric::Accuracy],
            batch: 32,
            epochs: 10,
            seed: 42,
            validation: None,
            schedule: None,
            early_stopping: None,
            augment: None,
            freeze: Vec::new(),
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// The k of each `top_k` metric, in the order the section lists them.
    pub fn top_ks(&self) -> Vec<u64> {
        self.metrics
            .iter()
            .filter_map(|m| match m {
                Metric::TopK(k) => Some(*k),
                Metric::Accuracy => None,
            })
            .collect()
    }
}

/// The optimizers of the seed and of Keras.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with momentum.
    Momentum,
    /// SGD with Nesterov momentum.
    Nesterov,
    /// Adam.
    Adam,
    /// Adam with Nesterov momentum (the seed's choice).
    Nadam,
    /// RMSprop.
    RmsProp,
}

/// An optimizer with its hyperparameters (those it does not use are ignored).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Optimizer {
    /// Which one.
    pub kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// Added to denominators.
    pub epsilon: f64,
    /// Momentum (SGD variants, RMSprop).
    pub momentum: f64,
    /// RMSprop's decay.
    pub rho: f64,
    /// Decoupled weight decay, as Keras 3 applies it to every optimizer:
    /// before each update, every trainable weight is multiplied by
    /// `1 - lr * weight_decay` (0 turns it off).
    pub weight_decay: f64,
}

/// A metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Top-1 accuracy.
    Accuracy,
    /// Whether the label is among the `k` highest scores.
    TopK(u64),
}

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `lr * decay_rate ^ (step / decay_steps)`.
    Exponential {
        /// Factor per `decay_steps`.
        decay_rate: f64,
        /// Steps per factor.
        decay_steps: u64,
    },
    /// `values[i]` while `step < boundaries[i]`.
    Piecewise {
        /// Step boundaries, increasing.
        boundaries: Vec<u64>,
        /// One more value than boundaries.
        values: Vec<f64>,
    },
    /// Leslie Smith's one-cycle policy peaking at `max_lr`.
    OneCycle {
        /// The peak learning rate.
        max_lr: f64,
    },
}

/// Early stopping on the validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: u64,
    /// Whether to restore the best weights at the end.
    pub restore_best: bool,
}

/// Random data augmentation, as AlexNet used it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Largest shift in pixels.
    pub shift: u64,
    /// Random horizontal flips.
    pub flip: bool,
    /// Largest rotation in degrees.
    pub rotation: f64,
    /// Largest brightness change (fraction of the range).
    pub brightness: f64,
    /// Largest contrast change (fraction).
    pub contrast: f64,
    /// The probability of random erasing: a rectangle of 2% to 40% of the
    /// image filled with noise.
    pub erase: f64,
}
