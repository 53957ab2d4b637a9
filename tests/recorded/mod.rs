//! Arrays that a TensorFlow script under `tests/tf/` recorded for one case
//! (`tests/tf/{script}/{case}.npz`), read back for the tests that compare
//! cnnc with them.

use std::fs::File;

use cnnc::runtime::weights::{self, Tensor, TensorStore};
use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadableElement};

/// One case's recorded arrays.
pub struct Recorded {
    npz: NpzReader<File>,
    names: Vec<String>,
}

impl Recorded {
    /// Opens `tests/tf/{script}/{case}.npz`.
    pub fn open(script: &str, case: &str) -> Recorded {
        let path = format!("tests/tf/{script}/{case}.npz");
        let mut npz = NpzReader::new(File::open(&path).expect(&path)).expect(&path);
        let names = npz.names().expect("names");
        Recorded { npz, names }
    }

    /// The array `name`, of element type `T`.
    pub fn array_of<T: ReadableElement>(&mut self, name: &str) -> ArrayD<T> {
        self.npz
            .by_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The f32 array `name`.
    pub fn array(&mut self, name: &str) -> ArrayD<f32> {
        self.array_of(name)
    }

    /// The model's weights as the script set them (the arrays named
    /// `w.{weight}`), checked to be every weight of `model`, in its shapes.
    pub fn weights(&mut self, model: &cnnc::TypedGraph, case: &str) -> TensorStore {
        let mut store = TensorStore::new();
        for name in self.with_prefix("w.") {
            let array = self.array(&format!("w.{name}"));
            let tensor = Tensor {
                shape: array.shape().to_vec(),
                data: flat(&array),
            };
            store.insert(name, tensor);
        }
        let specs = weights::specs(model);
        assert_eq!(store.len(), specs.len(), "{case}: weights");
        for spec in &specs {
            let tensor = store
                .get(&spec.name)
                .unwrap_or_else(|| panic!("{case}: {} not recorded", spec.name));
            assert_eq!(tensor.shape, spec.shape, "{}", spec.name);
        }
        store
    }

    /// The entries whose names start with `prefix`, without it.
    pub fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.names
            .iter()
            .filter_map(|n| n.trim_end_matches(".npy").strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    }
}

/// The array's values in order.
pub fn flat(array: &ArrayD<f32>) -> Vec<f32> {
    array.iter().copied().collect()
}
