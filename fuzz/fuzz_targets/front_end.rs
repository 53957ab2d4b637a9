//! The whole front end on any text: loading, parsing, elaboration, shape
//! inference, and the rendering of every error (`cnnc check`). Run with the
//! dictionary of the language's tokens, `fuzz/cnn.dict`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `cnnc check` refuses a file that is not UTF-8 before parsing it.
    if let Ok(text) = std::str::from_utf8(data) {
        cnnc_fuzz::front_end(text);
    }
});
