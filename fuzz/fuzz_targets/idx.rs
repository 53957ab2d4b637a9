//! The IDX readers of Fashion-MNIST (images and labels, gzip-compressed or
//! plain: a gzip stream is recognised by its first bytes) on any bytes.

#![no_main]

use cnnc::data::fashion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = cnnc_fuzz::input_path();
    match fashion::read_idx_images_bytes(data, path) {
        Ok((pixels, count, rows, cols)) => {
            assert_eq!(Some(pixels.len()), count.checked_mul(rows * cols));
        }
        Err(error) => cnnc_fuzz::message(&error),
    }
    if let Err(error) = fashion::read_idx_labels_bytes(data, path) {
        cnnc_fuzz::message(&error);
    }
});
