//! Training a compiled model: epochs, validation, schedules, early
//! stopping, checkpoints and the history ([`fit`]); the configuration it
//! follows is [`crate::config::TrainConfig`].

pub mod fit;
