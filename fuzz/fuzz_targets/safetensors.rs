//! The safetensors reader (`--weights`, and what `--resume` reads first) on
//! any bytes, then the model check of what it read against the tiny model
//! (`fuzz/tiny.cnn`): every problem listed and printed.

#![no_main]

use std::sync::OnceLock;

use cnnc::runtime::weights;
use cnnc::TypedGraph;
use libfuzzer_sys::fuzz_target;

fn model() -> &'static TypedGraph {
    static MODEL: OnceLock<TypedGraph> = OnceLock::new();
    MODEL.get_or_init(cnnc_fuzz::tiny_model)
}

fuzz_target!(|data: &[u8]| {
    match weights::load_bytes(data, cnnc_fuzz::input_path()) {
        Ok(store) => {
            for problem in weights::mismatches(model(), &store) {
                assert!(!problem.to_string().is_empty());
            }
            let _ = weights::class_names(&store, 10);
        }
        Err(error) => cnnc_fuzz::message(&error),
    }
});
