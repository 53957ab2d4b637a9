//! The `.npy` reader of `cnnc predict --input` and `cnnc grad` (float32
//! arrays) on any bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match cnnc::predict::read_npy_bytes(data, cnnc_fuzz::input_path()) {
        Ok((values, shape)) => assert_eq!(values.len(), shape.iter().product::<usize>()),
        Err(error) => cnnc_fuzz::message(&error),
    }
});
