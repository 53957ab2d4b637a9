//! One document as the front end sees it: loaded with its imports, every
//! model elaborated and shape-checked ([`Analysis::of`]); its errors as
//! the protocol's diagnostics, placed in the document even when they lie
//! in an imported file ([`Analysis::diagnostics`]); and what a hover shows
//! ([`Analysis::hover`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use lsp_types::{DiagnosticRelatedInformation, DiagnosticSeverity, Location, Uri};
use petgraph::Direction;

use super::names::Names;
use super::navigate::{file_stem, use_stem};
use super::text::LineIndex;
use crate::diagnostics::{floor_char, Diagnostic, FileId, SourceMap, Span};
use crate::elaborate::layers;
use crate::graph::Node;
use crate::syntax::ast::{File, Item};
use crate::syntax::{is_name_char, Overlay};
use crate::{emit, TypedGraph};

/// What the front end made of one document's text.
pub struct Analysis {
    /// Every file the document loaded, the document itself first.
    pub(super) sources: Arc<SourceMap>,
    /// The syntax trees of those files (indexed like `sources`), or only
    /// the document's when loading failed and it parses; none when it
    /// does not.
    pub(super) files: Vec<File>,
    /// The files the document imports directly.
    pub(super) imports: Vec<FileId>,
    /// The document's names and what their uses refer to.
    pub(super) names: Names,
    /// Every model that compiled.
    pub(super) models: Vec<TypedGraph>,
    /// Every error, wherever it lies.
    pub(super) errors: Vec<Diagnostic>,
    /// The canonical paths of the files on disk it imports, found once
    /// when first asked for ([`Analysis::imports_file`]).
    disk_files: OnceLock<Vec<PathBuf>>,
}

/// The file id of the document among the sources it loads.
pub(super) const ROOT: FileId = 0;

impl Analysis {
    /// Loads `text` (the document at `path`, when it has one: its
    /// imports resolve next to it) and compiles every model it defines.
    pub fn of(path: Option<&Path>, text: &str) -> Analysis {
        Analysis::over(path, text, Overlay::new())
    }

    /// Like [`Analysis::of`], importing the files `open` holds (by
    /// canonical path: the editor's other documents, saved or not) from
    /// their texts there.
    pub fn over(path: Option<&Path>, text: &str, open: Overlay) -> Analysis {
        let name = path
            .and_then(Path::file_name)
            .map_or("untitled.cnn".into(), |n| n.to_string_lossy().into_owned());
        let base = path.and_then(Path::parent);
        match crate::syntax::load_source_over(&name, text, base, open) {
            Ok(mut program) => {
                let (models, errors) = crate::check_models(&program);
                let imports = std::mem::take(&mut program.imports[program.root]);
                let files = std::mem::take(&mut program.files);
                Analysis {
                    sources: program.sources.clone(),
                    names: Names::of(&files, &imports),
                    files,
                    imports,
                    models,
                    errors,
                    disk_files: OnceLock::new(),
                }
            }
            Err(diagnostics) => {
                let (errors, sources) = diagnostics.into_parts();
                // The document may parse where an import does not.
                let files: Vec<File> = crate::syntax::parse(text, ROOT).into_iter().collect();
                Analysis {
                    sources,
                    names: Names::of(&files, &[]),
                    files,
                    imports: Vec::new(),
                    models: Vec::new(),
                    errors,
                    disk_files: OnceLock::new(),
                }
            }
        }
    }

    /// Whether the document imports the file at `path` (a canonical path),
    /// directly or not.
    pub fn imports_file(&self, path: &Path) -> bool {
        let files = self.disk_files.get_or_init(|| {
            (1..self.sources.len())
                .filter_map(|file| Path::new(self.sources.name(file)).canonicalize().ok())
                .collect()
        });
        files.iter().any(|p| p == path)
    }

    /// How many errors the document has, in it and in what it imports.
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// How many of the document's models compiled.
    pub fn model_count(&self) -> usize {
        self.models.len()
    }

    /// The document's syntax tree, when it parses.
    pub(super) fn tree(&self) -> Option<&File> {
        self.files.first()
    }

    /// Every error as a diagnostic of the document at `uri` (whose text
    /// is `text`): where it lies when that is the document, else at the
    /// call in the document that led to it, else at the `use` that
    /// imported its file; with the other places and the notes (`help: did
    /// you mean …`) as related information, and the notes in the message
    /// too (not every client shows related information).
    pub fn diagnostics(&self, uri: &Uri, text: &str) -> Vec<lsp_types::Diagnostic> {
        let index = LineIndex::new(text);
        self.errors
            .iter()
            .map(|error| {
                let span = self.place(error);
                let mut lines = vec![error.message.clone()];
                if !error.primary.message.is_empty() {
                    lines.push(error.primary.message.clone());
                }
                lines.extend(error.notes.iter().cloned());
                let range = index.range(text, span.start, span.end);
                let labels = std::iter::once(&error.primary).chain(&error.secondary);
                let mut related: Vec<DiagnosticRelatedInformation> = labels
                    .filter(|label| label.span != span)
                    .filter_map(|label| self.related(uri, text, &index, label))
                    .collect();
                // The notes again, where the error is shown, for clients
                // that list related information under a diagnostic.
                related.extend(error.notes.iter().map(|note| DiagnosticRelatedInformation {
                    location: Location::new(uri.clone(), range),
                    message: note.clone(),
                }));
                lsp_types::Diagnostic {
                    range,
                    severity: Some(DiagnosticSeverity::ERROR),
                    source: Some("cnnc".into()),
                    message: lines.join("\n"),
                    related_information: (!related.is_empty()).then_some(related),
                    ..lsp_types::Diagnostic::default()
                }
            })
            .collect()
    }

    /// Where in the document `error` is shown.
    fn place(&self, error: &Diagnostic) -> Span {
        if error.primary.span.file == ROOT {
            return error.primary.span;
        }
        if let Some(call) = error.secondary.iter().find(|l| l.span.file == ROOT) {
            return call.span;
        }
        self.use_of(error.primary.span.file)
            .unwrap_or(Span::new(ROOT, 0, 0))
    }

    /// The `use` item of the document that imports `file`, or its first
    /// `use` (a file imported through another).
    fn use_of(&self, file: FileId) -> Option<Span> {
        let stem = file_stem(self.sources.name(file));
        let uses: Vec<(Span, String)> = self
            .tree()?
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Use(u) => Some((u.span, use_stem(u))),
                _ => None,
            })
            .collect();
        uses.iter()
            .find(|(_, target)| *target == stem)
            .or(uses.first())
            .map(|(span, _)| *span)
    }

    /// A label as related information: in the document, or in a file it
    /// loaded (a module of the standard library in a copy of it).
    fn related(
        &self,
        uri: &Uri,
        text: &str,
        index: &LineIndex,
        label: &crate::diagnostics::Label,
    ) -> Option<DiagnosticRelatedInformation> {
        let span = label.span;
        let location = if span.file == ROOT {
            Location::new(uri.clone(), index.range(text, span.start, span.end))
        } else {
            let other = self.sources.text(span.file);
            let other_index = LineIndex::new(other);
            Location::new(
                self.uri_of_file(span.file)?,
                other_index.range(other, span.start, span.end),
            )
        };
        let message = if label.message.is_empty() {
            "here".to_string()
        } else {
            label.message.clone()
        };
        Some(DiagnosticRelatedInformation { location, message })
    }

    /// What a hover at byte `offset` of the document shows (Markdown): for
    /// a layer or block call, its output shape, parameters, FLOPs and
    /// activation memory, and the shape a block receives, for each
    /// distinct instance; for a model's name, the model's totals.
    /// Over the name of a primitive layer, its signature and Keras
    /// equivalent follow, even where the model does not compile.
    pub fn hover(&self, offset: usize) -> Option<(String, Span)> {
        let layer = self.describe_layer(offset);
        if let Some(call) = self.innermost_call(offset) {
            let mut text = self.describe_call(call);
            if let Some((docs, _)) = layer {
                text.push_str(&format!("\n---\n{docs}"));
            }
            return Some((text, call));
        }
        layer.or_else(|| self.describe_model(offset))
    }

    /// The signature and Keras equivalent of the primitive layer whose
    /// name is at `offset`.
    fn describe_layer(&self, offset: usize) -> Option<(String, Span)> {
        let text = self.sources.text(ROOT);
        let offset = floor_char(text, offset);
        let start = text[..offset]
            .char_indices()
            .rev()
            .find(|&(_, c)| !is_name_char(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = text[offset..]
            .find(|c: char| !is_name_char(c))
            .map_or(text.len(), |n| offset + n);
        let name = &text[start..end];
        let signature = layers::signature(name)?;
        let keras = layers::KERAS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, k)| k);
        let docs = format!(
            "```cnn\n{}\n```\nA primitive layer; in Keras: `{keras}`.",
            layers::render_signature(name, signature)
        );
        Some((docs, Span::new(ROOT, start, end)))
    }

    /// The smallest layer or block call of the document around `offset`.
    fn innermost_call(&self, offset: usize) -> Option<Span> {
        let mut best: Option<Span> = None;
        for model in &self.models {
            for node in model.graph.nodes.node_weights() {
                for &span in std::iter::once(&node.span).chain(&node.trace) {
                    let holds = span.file == ROOT && span.start <= offset && offset < span.end;
                    if holds && best.is_none_or(|b| span.end - span.start < b.end - b.start) {
                        best = Some(span);
                    }
                }
            }
        }
        best
    }

    /// The instances of the call at `call`, each as a line of figures.
    fn describe_call(&self, call: Span) -> String {
        let snippet = self.sources.snippet(call);
        let first_line = snippet.lines().next().unwrap_or_default();
        let mut text = format!("```cnn\n{first_line}\n```\n");
        // Distinct descriptions, with how many instances share each.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut order = Vec::new();
        for model in &self.models {
            for line in instances(model, call) {
                let count = seen.entry(line.clone()).or_insert(0);
                if *count == 0 {
                    order.push(line);
                }
                *count += 1;
            }
        }
        for line in order {
            let count = seen[&line];
            let times = if count > 1 {
                format!(" (×{count})")
            } else {
                String::new()
            };
            text.push_str(&format!("\n{line}{times}\n"));
        }
        text
    }

    /// The totals of the model whose name is at `offset`.
    fn describe_model(&self, offset: usize) -> Option<(String, Span)> {
        let name = self.tree()?.items.iter().find_map(|item| match item {
            Item::Model(d) if d.name.span.start <= offset && offset < d.name.span.end => {
                Some(&d.name)
            }
            _ => None,
        })?;
        let model = self.models.iter().find(|m| m.graph.name == name.name)?;
        let counts = model.param_counts();
        let outputs: Vec<String> = model
            .outputs()
            .into_iter()
            .map(|(name, shape)| format!("`{name}` {shape:?}"))
            .collect();
        let input = model
            .input_shape()
            .map_or("no input".into(), |s| format!("input {s}"));
        let text = format!(
            "**model {}**: {input}, output {}\n\nparams {} ({} trainable, {} non-trainable) · {} FLOPs per example",
            name.name,
            outputs.join(", "),
            emit::thousands(counts.total),
            emit::thousands(counts.trainable),
            emit::thousands(counts.non_trainable),
            emit::si(model.flops()),
        );
        Some((text, name.span))
    }
}

/// One line per instance of the call at `call` in `model`: a layer called
/// in a block the model uses twice has two.
fn instances(model: &TypedGraph, call: Span) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<petgraph::graph::NodeIndex>> = BTreeMap::new();
    for &id in &model.order {
        let node = &model.graph.nodes[id];
        let Some(depth) = calls_of(node).position(|s| s == call) else {
            continue;
        };
        groups
            .entry(instance_name(node, depth))
            .or_default()
            .push(id);
    }
    let mut lines: Vec<(usize, String)> = groups
        .into_values()
        .map(|ids| (ids[0].index(), instance_line(model, &ids)))
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, line)| line).collect()
}

/// The calls that made `node`: the block calls that led to it, outermost
/// first, then its own layer call.
pub(super) fn calls_of(node: &Node) -> impl Iterator<Item = Span> + '_ {
    node.trace.iter().copied().chain(std::iter::once(node.span))
}

/// The instance of the call at `depth` of [`calls_of`]`(node)` that
/// `node` belongs to, named by its path: its layer's whole path for its
/// own call, the path's first `depth + 1` segments for a block call (the
/// calls of a loop share their chain of spans, not their names).
pub(super) fn instance_name(node: &Node, depth: usize) -> String {
    if depth >= node.trace.len() {
        return node.layer.clone();
    }
    let segments: Vec<&str> = node.layer.split('.').collect();
    segments[..(depth + 1).min(segments.len())].join(".")
}

/// The figures of one instance: the nodes `ids`, in topological order.
fn instance_line(model: &TypedGraph, ids: &[petgraph::graph::NodeIndex]) -> String {
    let (mut params, mut trainable, mut flops, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut layers: BTreeMap<&str, u64> = BTreeMap::new();
    for &id in ids {
        let info = model.info(id);
        params += info.params;
        trainable += info.trainable;
        flops = flops.saturating_add(info.flops);
        // A layer's activations are its last node's output.
        layers.insert(model.graph.nodes[id].layer.as_str(), info.bytes);
    }
    for b in layers.values() {
        bytes = bytes.saturating_add(*b);
    }
    let last = ids.last().map(|&id| model.info(id).shape.to_string());
    let received = ids.first().and_then(|&first| {
        model
            .graph
            .nodes
            .neighbors_directed(first, Direction::Incoming)
            .find(|n| !ids.contains(n))
            .map(|n| model.info(n).shape.to_string())
    });
    let from = received.map_or(String::new(), |s| format!(" from {s}"));
    format!(
        "**{}**{from} · params {} ({} trainable) · {} FLOPs · activations {} per example",
        last.unwrap_or_default(),
        emit::thousands(params),
        emit::thousands(trainable),
        emit::si(flops),
        emit::bytes(bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hover_anywhere_answers_even_inside_a_character() {
        // The cargo-fuzz target `front_end` found a panic here: an offset
        // inside the zero-width space after the call.
        let text = "model m : [28, 28, 1] {\n    conv(32, 3)\u{200b}\n    flatten\n}\n";
        let analysis = Analysis::of(None, text);
        for offset in 0..=text.len() + 1 {
            let _ = analysis.hover(offset);
        }
        let inside = text.find('\u{200b}').expect("the space") + 1;
        assert!(analysis
            .hover(inside)
            .is_none_or(|(_, span)| span.end <= text.len()));
        let conv = text.find("conv").expect("conv") + 1;
        let (docs, _) = analysis.hover(conv).expect("the layer's documentation");
        assert!(docs.contains("Conv2D"), "{docs}");
    }
}
