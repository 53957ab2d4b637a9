//! `cnnc run`'s flags that override the model's train section: `--epochs`,
//! `--batch`, `--lr`, `--optimizer`, `--seed` and `--precision` (which
//! `cnnc bench` and `cnnc summary` take too).
//!
//! The merging lives with the command line rather than next to
//! [`TrainConfig`]: the train section is the whole configuration, and
//! these overrides are the command line's vocabulary (its flag names, its
//! list of optimizers and the momentum a switch of optimizer brings, which
//! `--optimizer`'s help promises).

use clap::ValueEnum;
use cnnc::config::{Optimizer, OptimizerKind, Precision, TrainConfig};

/// The precisions `--precision` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    // Plain comments, not doc comments: clap would print them and turn
    // every flag's help into the long layout.
    // Everything in f32 (the default).
    F32,
    // Convolutions and dense layers multiply in bfloat16 and sum in f32.
    Bf16,
}

impl PrecisionArg {
    /// The library's precision.
    pub fn precision(self) -> Precision {
        match self {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// The optimizers `--optimizer` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with momentum (0.9 unless the train section sets it).
    Momentum,
    /// SGD with Nesterov momentum (0.9 unless the train section sets it).
    Nesterov,
    /// Adam.
    Adam,
    /// Adam with Nesterov momentum.
    Nadam,
    /// RMSprop.
    Rmsprop,
}

/// The train section's values the command line replaces; each `None`
/// keeps the section's.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainOverrides {
    /// `--epochs`.
    pub epochs: Option<u64>,
    /// `--batch`.
    pub batch: Option<u64>,
    /// `--lr`: the learning rate, whichever optimizer runs.
    pub lr: Option<f64>,
    /// `--optimizer`: another optimizer, keeping the learning rate and the
    /// hyperparameters the section set.
    pub optimizer: Option<OptimizerArg>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--precision`.
    pub precision: Option<PrecisionArg>,
}

impl TrainOverrides {
    /// `config` with every value given here in place of the section's.
    pub fn apply(&self, mut config: TrainConfig) -> TrainConfig {
        config.epochs = self.epochs.unwrap_or(config.epochs);
        config.batch = self.batch.unwrap_or(config.batch);
        config.optimizer.lr = self.lr.unwrap_or(config.optimizer.lr);
        config.seed = self.seed.unwrap_or(config.seed);
        if let Some(precision) = self.precision {
            config.precision = precision.precision();
        }
        if let Some(kind) = self.optimizer {
            set_optimizer(&mut config.optimizer, kind);
        }
        config
    }
}

/// Switches `optimizer` to `kind`, keeping its learning rate and the
/// hyperparameters the section set; SGD with momentum gets a momentum of
/// 0.9 when the section set none, since with 0 it would be plain SGD.
fn set_optimizer(optimizer: &mut Optimizer, kind: OptimizerArg) {
    optimizer.kind = match kind {
        OptimizerArg::Sgd => OptimizerKind::Sgd,
        OptimizerArg::Momentum => OptimizerKind::Momentum,
        OptimizerArg::Nesterov => OptimizerKind::Nesterov,
        OptimizerArg::Adam => OptimizerKind::Adam,
        OptimizerArg::Nadam => OptimizerKind::Nadam,
        OptimizerArg::Rmsprop => OptimizerKind::RmsProp,
    };
    let needs_momentum = matches!(kind, OptimizerArg::Momentum | OptimizerArg::Nesterov);
    if needs_momentum && optimizer.momentum == 0.0 {
        optimizer.momentum = 0.9;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The train section `train` (its entries, one a line) of a small model
    /// file, as the library reads it.
    fn section(train: &str) -> TrainConfig {
        let source = format!(
            "model m : [4, 4, 1] {{\n    flatten\n    dense(2, activation: softmax)\n}}\n\
             train {{\n{train}}}\n"
        );
        let model =
            cnnc::compile_source("m.cnn", &source, None, None).unwrap_or_else(|d| panic!("{d}"));
        model.graph.train.expect("the file has a train section")
    }

    #[test]
    fn no_flag_keeps_the_section() {
        let config = section("optimizer: sgd(lr: 0.5)\nepochs: 3\n");
        assert_eq!(TrainOverrides::default().apply(config.clone()), config);
    }

    #[test]
    fn each_flag_replaces_its_value_only() {
        let config = section("optimizer: adam(lr: 0.5)\nepochs: 3\nbatch: 8\n");
        let overrides = TrainOverrides {
            epochs: Some(7),
            batch: Some(16),
            lr: Some(0.25),
            optimizer: None,
            seed: Some(9),
            precision: Some(PrecisionArg::Bf16),
        };
        let merged = overrides.apply(config.clone());
        assert_eq!((merged.epochs, merged.batch, merged.seed), (7, 16, 9));
        assert_eq!(merged.optimizer.lr, 0.25);
        assert_eq!(merged.optimizer.kind, OptimizerKind::Adam);
        assert_eq!(merged.precision, Precision::Bf16);
        assert_eq!(merged.validation, config.validation);
    }

    #[test]
    fn another_optimizer_keeps_the_learning_rate() {
        let config = section("optimizer: adam(lr: 0.5)\n");
        let overrides = TrainOverrides {
            optimizer: Some(OptimizerArg::Rmsprop),
            ..TrainOverrides::default()
        };
        let merged = overrides.apply(config);
        assert_eq!(merged.optimizer.kind, OptimizerKind::RmsProp);
        assert_eq!(merged.optimizer.lr, 0.5);
        assert_eq!(merged.optimizer.momentum, 0.0);
    }

    #[test]
    fn momentum_defaults_to_nine_tenths_unless_the_section_sets_it() {
        let switch_to = |train: &str, kind| {
            let overrides = TrainOverrides {
                optimizer: Some(kind),
                ..TrainOverrides::default()
            };
            overrides.apply(section(train)).optimizer
        };
        let plain = switch_to("optimizer: sgd(lr: 0.1)\n", OptimizerArg::Nesterov);
        assert_eq!(plain.kind, OptimizerKind::Nesterov);
        assert_eq!(plain.momentum, 0.9);
        let set = switch_to(
            "optimizer: momentum(lr: 0.1, momentum: 0.5)\n",
            OptimizerArg::Nesterov,
        );
        assert_eq!(set.momentum, 0.5);
    }
}
