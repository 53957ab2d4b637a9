//! The image reader of `cnnc run --train DIR` and `cnnc predict IMAGE`
//! (PNG and JPEG, told apart by their bytes) on any bytes: converted to a
//! grey 28x28 input with `--resize`, and to a colour 8x8 one without.

#![no_main]

use cnnc::data::folder::{self, Conversion};
use libfuzzer_sys::fuzz_target;

const CONVERSIONS: [Conversion; 2] = [
    Conversion {
        shape: [28, 28, 1],
        convert: true,
    },
    Conversion {
        shape: [8, 8, 3],
        convert: false,
    },
];

fuzz_target!(|data: &[u8]| {
    for conversion in CONVERSIONS {
        match folder::read_image_bytes(data, cnnc_fuzz::input_path(), conversion) {
            Ok(values) => assert_eq!(values.len(), conversion.shape.iter().product::<usize>()),
            Err(error) => cnnc_fuzz::message(&error),
        }
    }
});
