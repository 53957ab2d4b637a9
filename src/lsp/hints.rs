//! Inlay hints: the output shape at the end of each line of a model or
//! block body that ends a layer or block call, as the examples write it by
//! hand (`# 14x14x128`). A call made more than once with different shapes
//! (a block's body, a loop) shows each distinct shape.

use std::collections::BTreeMap;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::analysis::{calls_of, instance_name, Analysis, ROOT};
use crate::diagnostics::Span;
use crate::graph::Shape;

/// At most this many distinct shapes are shown for one call.
const MOST_SHAPES: usize = 4;

impl Analysis {
    /// The shape hints of the document: where each goes (the byte where
    /// the call ends) and its label; in order.
    pub fn shape_hints(&self) -> Vec<(usize, String)> {
        let text = self.sources.text(ROOT);
        let calls = self.call_outputs();
        // Per line, the call that ends last on it (the outermost of those
        // that end together).
        let mut lines: BTreeMap<usize, Span> = BTreeMap::new();
        for &span in calls.keys() {
            let line = text[..span.end.min(text.len())].matches('\n').count();
            let later = |b: &Span| (span.end, b.start) > (b.end, span.start);
            if lines.get(&line).is_none_or(later) {
                lines.insert(line, span);
            }
        }
        let mut hints: Vec<(usize, String)> = lines
            .into_values()
            .filter_map(|span| {
                let label = format!("# {}", shapes_label(&calls[&span]));
                let line_end = text[span.end..]
                    .find('\n')
                    .map_or(text.len(), |n| span.end + n);
                // A line whose comment already says it needs no hint.
                let rest = &text[span.end..line_end];
                let said = rest
                    .find('#')
                    .is_some_and(|c| rest[c..].contains(&label[2..]));
                (!said).then_some((span.end, label))
            })
            .collect();
        hints.sort();
        hints
    }

    /// For every call in the document, the output shape of each of its
    /// instances, in the order the model computes them.
    fn call_outputs(&self) -> BTreeMap<Span, Vec<Shape>> {
        let mut calls: BTreeMap<Span, Vec<Shape>> = BTreeMap::new();
        for model in &self.models {
            // Per call and instance (named by its path), its last node.
            let mut last: BTreeMap<(Span, String), NodeIndex> = BTreeMap::new();
            for &id in &model.order {
                let graph = &model.graph.nodes;
                if graph
                    .neighbors_directed(id, Direction::Incoming)
                    .next()
                    .is_none()
                {
                    continue; // the model's input, a constant
                }
                let node = &graph[id];
                for (depth, span) in calls_of(node).enumerate() {
                    if span.file != ROOT {
                        continue;
                    }
                    let instance = instance_name(node, depth);
                    last.insert((span, instance), id);
                }
            }
            let mut ends: Vec<(NodeIndex, Span)> =
                last.into_iter().map(|((span, _), id)| (id, span)).collect();
            ends.sort();
            for (id, span) in ends {
                calls
                    .entry(span)
                    .or_default()
                    .push(model.info(id).shape.clone());
            }
        }
        calls
    }
}

/// `14x14x128`, or the distinct shapes of several instances with how
/// many share each: `28x28x64 ×3 | 14x14x128 ×4`.
fn shapes_label(shapes: &[Shape]) -> String {
    let mut distinct: Vec<(&Shape, usize)> = Vec::new();
    for shape in shapes {
        match distinct.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, count)) => *count += 1,
            None => distinct.push((shape, 1)),
        }
    }
    let plain = |s: &Shape| s.0.iter().map(u64::to_string).collect::<Vec<_>>().join("x");
    if let [(shape, _)] = distinct.as_slice() {
        return plain(shape);
    }
    let mut parts: Vec<String> = distinct
        .iter()
        .take(MOST_SHAPES)
        .map(|(s, n)| {
            if *n > 1 {
                format!("{} ×{n}", plain(s))
            } else {
                plain(s)
            }
        })
        .collect();
    if distinct.len() > MOST_SHAPES {
        parts.push("…".into());
    }
    parts.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hints of `text`, each with the line it ends.
    fn hints(text: &str) -> Vec<(String, String)> {
        let analysis = Analysis::of(None, text);
        analysis
            .shape_hints()
            .into_iter()
            .map(|(at, label)| {
                let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
                (text[start..at].trim().to_string(), label)
            })
            .collect()
    }

    #[test]
    fn each_line_of_a_body_shows_the_shape_it_ends_with() {
        let text = "block unit(f) {\n    conv(f, 3, padding: same)\n    relu\n}\nmodel m : [8, 8, 1] {\n    conv(4, 3) -> relu\n    unit(8) as u1\n    unit(8)\n    maxpool(2)    # 3x3x8\n    flatten\n}\n";
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            hints(text),
            [
                pair("conv(f, 3, padding: same)", "# 6x6x8"),
                pair("relu", "# 6x6x8"),
                pair("conv(4, 3) -> relu", "# 6x6x4"),
                pair("unit(8) as u1", "# 6x6x8"),
                pair("unit(8)", "# 6x6x8"),
                pair("flatten", "# 72"),
            ]
        );
    }

    #[test]
    fn a_call_made_with_several_shapes_shows_each() {
        let text = "model m : [8, 8, 1] {\n    for f in [2, 2, 4] {\n        conv(f, 3, padding: same)\n    }\n}\n";
        assert_eq!(
            hints(text),
            [(
                "conv(f, 3, padding: same)".to_string(),
                "# 8x8x2 ×2 | 8x8x4".to_string()
            )]
        );
    }
}
