//! The history parser (`MODEL.history.csv`, also kept in a checkpoint's
//! metadata and read by `cnnc plot`) on any text.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match cnnc::train::fit::parse_history(text) {
            Ok(epochs) => assert!(epochs.len() <= text.lines().count()),
            Err(message) => assert!(!message.is_empty()),
        }
    }
});
