//! `cnnc fmt` on any text: whatever parses formats to text that parses to
//! the same syntax tree, with the same comments, and formatting it again changes
//! nothing; whatever does not parse gives its syntax error. Run with the
//! dictionary of the language's tokens, `fuzz/cnn.dict`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        cnnc_fuzz::format(text);
    }
});
