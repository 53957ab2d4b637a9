//! Lending the caller's buffers to a compiled program: the input batch,
//! labels, upstream gradients, weights, optimizer state, per-step scalars
//! and result buffers become the program's external slots, in the layout's
//! order.

use std::collections::HashMap;

use crate::executable::Compiled;
use crate::plan::Role;

use super::weights::TensorStore;

/// The caller's buffers for one run of a program, by role.
#[derive(Default)]
pub struct Lent<'a> {
    /// The input batch.
    pub input: Option<&'a mut [f32]>,
    /// The labels (training).
    pub labels: Option<&'a mut [f32]>,
    /// The weights, by full name.
    pub weights: Option<&'a mut TensorStore>,
    /// The optimizer's state, by name (training).
    pub states: Option<&'a mut TensorStore>,
    /// Per-step scalars, by name (`coefficients`, `step`).
    pub scalars: Vec<(&'static str, &'a mut [f32])>,
    /// One buffer per output, loss, input gradient and weight gradient, in
    /// the order of `compiled.externals`.
    pub results: Vec<&'a mut [f32]>,
}

/// The external slots of `compiled`, in order, filled from `lent`; the
/// error names a weight or state tensor that `lent` lacks.
pub fn bind<'a>(compiled: &Compiled, lent: Lent<'a>) -> Result<Vec<&'a mut [f32]>, String> {
    bind_with_upstream(compiled, lent, Vec::new())
}

/// Like [`bind`], for a gradient program: `upstream` lends the gradient of
/// each output, by output name.
pub fn bind_with_upstream<'a>(
    compiled: &Compiled,
    lent: Lent<'a>,
    upstream: Vec<(String, &'a mut [f32])>,
) -> Result<Vec<&'a mut [f32]>, String> {
    let by_name = |store: Option<&'a mut TensorStore>| -> HashMap<String, &'a mut [f32]> {
        store
            .into_iter()
            .flat_map(|s| s.iter_mut())
            .map(|(n, t)| (n.to_string(), t.data.as_mut_slice()))
            .collect()
    };
    let (mut weights, mut states) = (by_name(lent.weights), by_name(lent.states));
    let (mut input, mut labels) = (lent.input, lent.labels);
    let mut scalars: HashMap<&str, &'a mut [f32]> = lent.scalars.into_iter().collect();
    let mut upstream: HashMap<String, &'a mut [f32]> = upstream.into_iter().collect();
    let mut results = lent.results.into_iter();
    let externals = &compiled.layout.externals;
    let mut external = Vec::with_capacity(externals.len());
    for &b in externals {
        let slot: &'a mut [f32] = match &compiled.plan.buffers[b].role {
            Role::Input => input.take().unwrap_or_default(),
            Role::Labels => labels.take().unwrap_or_default(),
            Role::Output(_) | Role::Loss(_) | Role::InputGradient | Role::Gradient(_) => {
                results.next().unwrap_or_default()
            }
            Role::Scalars(name) => scalars.remove(name.as_str()).unwrap_or_default(),
            Role::Upstream(name) => upstream.remove(name).unwrap_or_default(),
            Role::Weight(name) => weights.remove(name).ok_or_else(|| name.clone())?,
            Role::State(name) => states.remove(name).ok_or_else(|| name.clone())?,
            Role::Temporary => Default::default(),
        };
        external.push(slot);
    }
    Ok(external)
}
