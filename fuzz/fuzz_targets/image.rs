//! The image reader of `cnnc run --train DIR` and `cnnc predict IMAGE`
//! (PNG and JPEG, told apart by their bytes) on any bytes: converted to a
//! grey 28x28 input with `--resize`, and to a colour 8x8 one without.
//!
//! It runs under a memory cap of 32 MiB on one thread, so that images over
//! 16 MiB decoded are refused as `decode_limit` refuses them: decoding and
//! resizing takes time in proportion to the pixels, and a 15 KB JPEG of
//! 65,408 x 427 pixels (84 MB decoded) took over a second under the
//! fuzzer's instrumentation where a plain release build takes 0.4 s.

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

fuzz_target!(
    init: {
        // Read by cnnc at every call, and by rayon when its pool starts.
        std::env::set_var("CNNC_MAX_MEMORY", "32M");
        std::env::set_var("RAYON_NUM_THREADS", "1");
    },
    |data: &[u8]| {
        for conversion in CONVERSIONS {
            match folder::read_image_bytes(data, cnnc_fuzz::input_path(), conversion) {
                Ok(values) => {
                    assert_eq!(values.len(), conversion.shape.iter().product::<usize>())
                }
                Err(error) => cnnc_fuzz::message(&error),
            }
        }
    }
);
