//! The train section's `freeze`: layer patterns that say which layers do
//! not train (fine-tuning a pretrained backbone).
//!
//! A pattern is matched against the path of every layer
//! (`stage2.residual_unit1.conv2`) and of every block instance above it
//! (`stage2.residual_unit1`, `stage2`); `*` stands for any run of
//! characters, dots included. A layer is frozen when a pattern matches its
//! path or the path of a block it is in, so `"stage1"` freezes the whole
//! block instance and `"*bn*"` every layer whose path contains `bn`. A
//! pattern that matches nothing is an error: a misspelt name would
//! otherwise train the layer it meant to freeze.

use std::collections::BTreeSet;

use crate::diagnostics::{suggest, Diagnostic, Span};
use crate::graph::{Graph, Op};

/// Freezes every layer of `graph` that one of `patterns` matches (each
/// written at the span beside it): the layer's weights stop being
/// trainable and the layer runs as in inference
/// ([`crate::graph::Node::trainable`]). Returns an error for each pattern
/// that matches no layer or block.
pub(super) fn apply(graph: &mut Graph, patterns: &[(String, Span)]) -> Vec<Diagnostic> {
    let paths = paths(graph);
    let mut errors = Vec::new();
    for (pattern, span) in patterns {
        if !paths.iter().any(|path| matches(pattern, path)) {
            errors.push(unmatched(pattern, *span, &paths));
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    for node in graph.nodes.node_weights_mut() {
        let frozen = ancestors(&node.layer)
            .any(|path| patterns.iter().any(|(pattern, _)| matches(pattern, path)));
        if frozen {
            node.trainable = false;
            node.params.iter_mut().for_each(|p| p.trainable = false);
        }
    }
    errors
}

/// Whether `path` matches `pattern`, where `*` stands for any run of
/// characters (none included) and every other character for itself.
fn matches(pattern: &str, path: &str) -> bool {
    let mut pieces = pattern.split('*');
    // `split` yields at least one piece: the text before the first `*`.
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = path.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the whole path must be the pattern.
        return rest.is_empty();
    };
    // Each middle piece is best matched at its first place, leaving the
    // most room to the pieces after it.
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Every layer path of `graph` and every block path above one, sorted.
fn paths(graph: &Graph) -> BTreeSet<&str> {
    graph
        .nodes
        .node_weights()
        .filter(|node| !node.layer.is_empty() && !matches!(node.op, Op::Input { .. }))
        .flat_map(|node| ancestors(&node.layer))
        .collect()
}

/// `a.b.c`, then `a.b`, then `a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rsplit_once('.').map(|(head, _)| head))
}

/// The error for `pattern`, which matches none of `paths`.
fn unmatched(pattern: &str, span: Span, paths: &BTreeSet<&str>) -> Diagnostic {
    let error = Diagnostic::error(
        span,
        format!("`freeze` pattern \"{pattern}\" matches no layer or block of the model"),
        "matches nothing",
    );
    let top: Vec<&str> = paths.iter().copied().filter(|p| !p.contains('.')).collect();
    let shown = top.iter().take(12).copied().collect::<Vec<_>>().join(", ");
    let more = if top.len() > 12 { ", ..." } else { "" };
    let error = error.with_note(format!(
        "the model's top-level layers and blocks: {shown}{more}; `cnnc summary` lists them all, and `*` stands for any run of characters"
    ));
    suggest(error, pattern, paths.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_stands_for_any_run_of_characters() {
        assert!(matches("conv1", "conv1"));
        assert!(!matches("conv1", "conv10"));
        assert!(!matches("conv1", "stage1.conv1"));
        assert!(matches("stage1.*", "stage1.residual_unit1.conv2"));
        assert!(!matches("stage1.*", "stage1"));
        assert!(matches("*.conv2", "stage1.residual_unit1.conv2"));
        assert!(matches("*bn*", "stage1.skip_bn"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "a.x.b.y.c"));
        assert!(!matches("a*b*c", "a.x.c"));
        assert!(matches("a*a", "aa"));
        assert!(!matches("a*a", "a"));
        assert!(matches("**", ""));
    }

    #[test]
    fn a_path_has_its_blocks_above_it() {
        let all: Vec<&str> = ancestors("stage2.unit1.conv2").collect();
        assert_eq!(all, ["stage2.unit1.conv2", "stage2.unit1", "stage2"]);
    }
}
