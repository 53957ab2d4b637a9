//! The checkpoint loader (`cnnc run --resume`) on any bytes, against a
//! trainer of the tiny model (`fuzz/tiny.cnn`) with its train section's
//! optimizer: the safetensors reader, then the weights, the optimizer
//! state, the best weights, the counters and the history in the metadata.

#![no_main]

use cnnc::runtime::training::Trainer;
use cnnc::train::fit;
use cnnc::TypedGraph;
use libfuzzer_sys::fuzz_target;

thread_local! {
    // A trainer owns its thread team, so each fuzzing thread makes its own.
    static TINY: (TypedGraph, Trainer) = {
        let model = cnnc_fuzz::tiny_model();
        let trainer = cnnc_fuzz::tiny_trainer(&model);
        (model, trainer)
    };
}

fuzz_target!(|data: &[u8]| {
    TINY.with(|(model, trainer)| {
        if let Err(error) = fit::check_checkpoint(data, cnnc_fuzz::input_path(), model, trainer) {
            cnnc_fuzz::message(&error);
        }
    });
});
