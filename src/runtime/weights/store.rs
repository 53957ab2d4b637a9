//! The tensor store: named f32 tensors in insertion order, with free-form
//! string metadata. Weights, gradients and optimizer state all live in one.

use std::collections::{BTreeMap, HashMap};

/// A dense f32 tensor, its elements in row-major (C) order.
///
/// `data.len()` should equal the product of `shape` (1 for a scalar, shape
/// `[]`); [`save`](super::save) refuses a tensor whose data does not fit
/// its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The size of each axis, outermost first, in the seed's layouts (conv
    /// kernels `[kh, kw, in, out]`, dense kernels `[in, out]`).
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let elements = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; elements],
        }
    }
}

/// Named f32 tensors: a model's weights, and later also gradients and
/// optimizer state.
///
/// Iteration follows insertion order; replacing a tensor keeps its place.
/// Names are unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorStore {
    pub(super) tensors: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
    /// Free-form string pairs, saved as the safetensors header's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

impl TensorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tensor` under `name`, at the end; when `name` is already
    /// present, replaces its tensor in place and returns the old one.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => Some(std::mem::replace(&mut self.tensors[i].1, tensor)),
            None => {
                self.index.insert(name.clone(), self.tensors.len());
                self.tensors.push((name, tensor));
                None
            }
        }
    }

    /// The tensor named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.tensors[i].1)
    }

    /// The tensor named `name`, mutably, if any.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.index.get(name).map(|&i| &mut self.tensors[i].1)
    }

    /// Whether a tensor is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The names, in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.iter().map(|(name, _)| name.as_str())
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names and tensors, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> + '_ {
        self.tensors.iter().map(|(name, t)| (name.as_str(), t))
    }

    /// Names and mutable tensors, in insertion order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Tensor)> + '_ {
        self.tensors.iter_mut().map(|(name, t)| (name.as_str(), t))
    }
}

impl FromIterator<(String, Tensor)> for TensorStore {
    /// Inserts the pairs in order (a repeated name replaces the earlier tensor).
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(pairs: I) -> Self {
        let mut store = TensorStore::new();
        for (name, tensor) in pairs {
            store.insert(name, tensor);
        }
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keeps_insertion_order_and_replaces_in_place() {
        let mut store = TensorStore::new();
        assert!(store.insert("b", Tensor::zeros(vec![1])).is_none());
        store.insert("a", Tensor::zeros(vec![2]));
        let old = store.insert("b", Tensor::zeros(vec![3]));
        assert_eq!(old.map(|t| t.shape), Some(vec![1]));
        assert_eq!(store.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("b").map(|t| t.shape.clone()), Some(vec![3]));
        store.get_mut("a").expect("inserted above").data[1] = 4.0;
        assert_eq!(store.get("a").map(|t| t.data.clone()), Some(vec![0.0, 4.0]));
        assert!(store.get("c").is_none() && !store.contains("c"));
    }
}
