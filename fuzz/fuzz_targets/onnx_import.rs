//! `cnnc import` on any bytes: the protobuf decoder, the constants, the
//! lowering of every node and the text written, which must compile (the
//! importer checks it and reports a failure as its own fault, which this
//! target counts as a crash).

#![no_main]

use cnnc::onnx::{self, ImportError, ImportOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = ImportOptions {
        model: "fuzzed",
        source: "fuzzed.onnx",
    };
    match onnx::import(data, options) {
        Ok(imported) => assert!(imported.text.starts_with("# Imported from")),
        Err(ImportError::Internal(text)) => panic!("the importer wrote a model that does not compile:\n{text}"),
        Err(error) => cnnc_fuzz::message(&error),
    }
});
