//! The whole front end on generated programs: blocks, models, layer calls
//! with their real argument names, `for`, `if`, `let`, operators and
//! nesting, printed to source ([`cnnc_fuzz::program`]), so that most inputs
//! parse and the fuzzing reaches elaboration and shape inference.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|program: cnnc_fuzz::program::Program| {
    cnnc_fuzz::front_end(&program.to_string());
});
