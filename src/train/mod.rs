//! Training a compiled model: epochs, validation, schedules, early
//! stopping, checkpoints and the history ([`fit`]); the configuration it
//! follows is [`crate::config::TrainConfig`].

mod config;
pub mod fit;

pub use config::check;
