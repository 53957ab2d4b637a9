//! Training a compiled model: epochs, validation, schedules, early
//! stopping and the history ([`fit`]); checkpoints and how often they are
//! saved ([`checkpoint`]); the output folder's files and lock (`folder`).
//! The configuration training follows is [`crate::config::TrainConfig`].

pub mod checkpoint;
pub mod fit;
mod folder;
