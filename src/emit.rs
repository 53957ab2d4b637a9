//! Text renderings of a shape-checked graph: the stable dump that snapshot
//! tests compare (`--emit graph`), the Keras-like summary table, and DOT.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::graph::{Init, Slice};
use crate::shapes::TypedGraph;

/// A stable, readable dump of the graph: one line per node in order, with
/// its op, inputs and shape, then its weights; then the outputs and totals.
pub fn graph_text(model: &TypedGraph) -> String {
    let g = &model.graph;
    let mut out = String::new();
    let input = model
        .input_shape()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let _ = writeln!(out, "model {} (input {input}, per-example shapes)", g.name);
    for &id in &model.order {
        let node = &g.nodes[id];
        let info = model.info(id);
        let inputs: Vec<&str> = g
            .inputs_of(id)
            .iter()
            .map(|&i| g.nodes[i].name.as_str())
            .collect();
        let args = if inputs.is_empty() {
            String::new()
        } else {
            format!("({})", inputs.join(", "))
        };
        let _ = writeln!(out, "{} = {}{} -> {}", node.name, node.op, args, info.shape);
        for p in &node.params {
            let frozen = if p.trainable { "" } else { " frozen" };
            let _ = writeln!(
                out,
                "    {} {} {}{frozen}",
                p.name,
                crate::graph::Shape(p.shape.clone()),
                init_text(&p.init)
            );
        }
    }
    for (name, id) in &g.outputs {
        let _ = writeln!(
            out,
            "output {name} = {} -> {}",
            g.nodes[*id].name,
            model.info(*id).shape
        );
    }
    let counts = model.param_counts();
    let _ = writeln!(
        out,
        "params: total {}, trainable {}, non-trainable {}",
        thousands(counts.total),
        thousands(counts.trainable),
        thousands(counts.non_trainable)
    );
    let _ = writeln!(out, "flops per example: {}", thousands(model.flops()));
    out
}

fn init_text(init: &Init) -> String {
    match init {
        Init::GlorotUniform => "glorot_uniform".into(),
        Init::HeNormal => "he_normal".into(),
        Init::HeUniform => "he_uniform".into(),
        Init::LecunNormal => "lecun_normal".into(),
        Init::Zeros => "zeros".into(),
        Init::Ones => "ones".into(),
        Init::Set(base, entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(slices, v)| {
                    let idx: Vec<String> = slices.iter().map(Slice::to_string).collect();
                    format!("[{}] = {v}", idx.join(", "))
                })
                .collect();
            format!("{} where {}", init_text(base), entries.join(", "))
        }
    }
}

/// One row of the summary: a layer call and the nodes it expanded into.
struct Row {
    layer: String,
    kind: String,
    shape: String,
    params: u64,
    flops: u64,
    bytes: u64,
}

fn rows(model: &TypedGraph) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for &id in &model.order {
        let node = &model.graph.nodes[id];
        let info = model.info(id);
        match rows.last_mut() {
            Some(row) if row.layer == node.layer => {
                // A layer's output is its last node's; the nodes before it
                // (a conv before its activation) are fused away by the back end.
                row.shape = info.shape.to_string();
                row.params += info.params;
                row.flops = row.flops.saturating_add(info.flops);
                row.bytes = info.bytes;
            }
            _ => rows.push(Row {
                layer: node.layer.clone(),
                kind: node.layer_kind.clone(),
                shape: info.shape.to_string(),
                params: info.params,
                flops: info.flops,
                bytes: info.bytes,
            }),
        }
    }
    rows
}

/// A Keras-like summary: one row per layer call (path, type, output shape,
/// parameters, forward FLOPs, activation bytes), then the totals.
pub fn summary(model: &TypedGraph) -> String {
    let rows = rows(model);
    let headers = [
        "Layer (path)",
        "Type",
        "Output shape",
        "Params",
        "FLOPs",
        "Activations",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.layer.clone(),
                r.kind.clone(),
                r.shape.clone(),
                thousands(r.params),
                si(r.flops),
                bytes(r.bytes),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let total_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    let mut out = String::new();
    let input = model
        .input_shape()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Model: {}   input {input} (shapes are per example; the batch dimension is implicit)",
        model.graph.name
    );
    let rule = "─".repeat(total_width);
    let _ = writeln!(out, "{rule}");
    write_row(&mut out, &headers.map(String::from), &widths);
    let _ = writeln!(out, "{}", "═".repeat(total_width));
    for row in &cells {
        write_row(&mut out, row, &widths);
    }
    let _ = writeln!(out, "{rule}");
    let counts = model.param_counts();
    let _ = writeln!(
        out,
        "Total params: {} ({})",
        thousands(counts.total),
        bytes(counts.total * 4)
    );
    let _ = writeln!(
        out,
        "Trainable params: {} ({})",
        thousands(counts.trainable),
        bytes(counts.trainable * 4)
    );
    let _ = writeln!(
        out,
        "Non-trainable params: {} ({})",
        thousands(counts.non_trainable),
        bytes(counts.non_trainable * 4)
    );
    let _ = writeln!(
        out,
        "Forward FLOPs per example: {} (2 x multiply-adds of conv, dense and rbf layers)",
        si(model.flops())
    );
    let activations: u64 = rows.iter().map(|r| r.bytes).sum();
    let _ = writeln!(
        out,
        "Activations per example: {} (every layer output of one forward pass, f32)",
        bytes(activations)
    );
    for (name, shape) in model.outputs() {
        let _ = writeln!(out, "Output `{name}`: {}", crate::graph::Shape(shape));
    }
    out
}

fn write_row(out: &mut String, cells: &[String; 6], widths: &[usize; 6]) {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        // Numbers are right-aligned, text left-aligned.
        if i >= 3 {
            let _ = write!(line, "{cell:>w$}");
        } else {
            let _ = write!(line, "{cell:<w$}");
        }
    }
    let _ = writeln!(out, "{}", line.trim_end());
}

/// The graph in Graphviz DOT, with one nested cluster per block instance.
pub fn dot(model: &TypedGraph) -> String {
    dot_to_depth(model, None)
}

/// Like [`dot`], with every block instance nested deeper than `depth`
/// blocks drawn as one box (its name and output shape) instead of a cluster:
/// with `Some(0)` a ResNet-34 is a chain of its 16 residual units, with
/// `None` every node is drawn.
pub fn dot_to_depth(model: &TypedGraph, depth: Option<usize>) -> String {
    #[derive(Default)]
    struct Cluster {
        nodes: Vec<String>,
        children: BTreeMap<String, Cluster>,
    }
    let g = &model.graph;
    let boxes = dot_boxes(model, depth);
    let mut root = Cluster::default();
    for b in &boxes.list {
        let line = format!("{} [label=\"{}\"{}];", b.id, escape(&b.label), b.style);
        let mut cluster = &mut root;
        for segment in &b.clusters {
            cluster = cluster.children.entry(segment.clone()).or_default();
        }
        cluster.nodes.push(line);
    }
    fn write_cluster(out: &mut String, cluster: &Cluster, path: &str, depth: usize) {
        let indent = "  ".repeat(depth);
        for line in &cluster.nodes {
            let _ = writeln!(out, "{indent}{line}");
        }
        for (name, child) in &cluster.children {
            let full = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let _ = writeln!(out, "{indent}subgraph \"cluster_{}\" {{", escape(&full));
            let _ = writeln!(
                out,
                "{indent}  label=\"{}\"; style=rounded; color=gray50;",
                escape(name)
            );
            write_cluster(out, child, &full, depth + 1);
            let _ = writeln!(out, "{indent}}}");
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    let _ = writeln!(
        out,
        "  rankdir=TB; node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];"
    );
    write_cluster(&mut out, &root, "", 1);
    let mut drawn = std::collections::HashSet::new();
    for &id in &model.order {
        let to = boxes.of[&id];
        for input in g.inputs_of(id) {
            let from = boxes.of[&input];
            // Edges inside a collapsed block vanish; edges into or out of
            // one are drawn once.
            let collapsed = boxes.list[from].block || boxes.list[to].block;
            if from != to && (!collapsed || drawn.insert((from, to))) {
                let _ = writeln!(out, "  {} -> {};", boxes.list[from].id, boxes.list[to].id);
            }
        }
    }
    let _ = writeln!(out, "}}");
    out
}

/// A box of the diagram: a node, or a collapsed block instance.
struct DotBox {
    id: String,
    label: String,
    /// Extra DOT attributes.
    style: &'static str,
    /// The clusters (block instances) it is drawn in, outermost first.
    clusters: Vec<String>,
    block: bool,
}

/// The boxes of the diagram, and which box each node is drawn as.
struct DotBoxes {
    list: Vec<DotBox>,
    of: std::collections::HashMap<petgraph::stable_graph::NodeIndex, usize>,
}

fn dot_boxes(model: &TypedGraph, depth: Option<usize>) -> DotBoxes {
    let g = &model.graph;
    let mut boxes = DotBoxes {
        list: Vec::new(),
        of: std::collections::HashMap::new(),
    };
    let mut blocks: BTreeMap<String, usize> = BTreeMap::new();
    for &id in &model.order {
        let node = &g.nodes[id];
        let segments: Vec<&str> = node.layer.split('.').collect();
        let clusters: Vec<String> = segments[..segments.len().saturating_sub(1)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let shape = &model.info(id).shape;
        let index = match depth {
            Some(d) if clusters.len() > d => {
                let path = segments[..=d].join(".");
                let at = *blocks.entry(path).or_insert_with(|| {
                    boxes.list.push(DotBox {
                        id: format!("b{}", boxes.list.len()),
                        label: String::new(),
                        style: ", shape=box3d, style=filled, fillcolor=gray95",
                        clusters: clusters[..d].to_vec(),
                        block: true,
                    });
                    boxes.list.len() - 1
                });
                // A block's output is its last node's, in topological order.
                boxes.list[at].label = format!("{}\\n{shape}", segments[d]);
                at
            }
            _ => {
                boxes.list.push(DotBox {
                    id: format!("n{}", id.index()),
                    label: format!(
                        "{}\\n{}\\n{shape}",
                        node.name.rsplit('.').next().unwrap_or(""),
                        node.op.name(),
                    ),
                    style: "",
                    clusters,
                    block: false,
                });
                boxes.list.len() - 1
            }
        };
        boxes.of.insert(id, index);
    }
    boxes
}

fn escape(s: &str) -> String {
    s.replace('"', "\\\"")
}

/// `1413834` as `1,413,834`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `178_900_000` as `178.9 M`.
pub fn si(n: u64) -> String {
    let x = n as f64;
    match n {
        0 => "0".into(),
        1..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1} K", x / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} M", x / 1e6),
        _ => format!("{:.2} G", x / 1e9),
    }
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    let x = n as f64;
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", x / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", x / 1_048_576.0),
        _ => format!("{:.2} GiB", x / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(thousands(1_413_834), "1,413,834");
        assert_eq!(thousands(834), "834");
        assert_eq!(si(178_900_000), "178.9 M");
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
