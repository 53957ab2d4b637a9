//! Completion. What is offered depends on where the cursor is, which a
//! look back over the text decides ([`context`]), so that it works while
//! the line being typed does not parse: after `use`, module names; at an
//! argument of a call, the layer's or block's argument names with their
//! defaults; after `name:` in a call, the values that argument takes
//! (`padding: same|valid`, activations, initializers); at a key of a
//! `train` section, its keys; elsewhere, layers, blocks, the names bound
//! there and the built-in functions.

use std::path::Path;

use lsp_types::{CompletionItem, CompletionItemKind, Documentation, InsertTextFormat};

use super::analysis::{Analysis, ROOT};
use super::names::Kind as NameKind;
use crate::elaborate::layers::{self, Kind, LAYERS};
use crate::elaborate::{FUNCTIONS, TRAIN_KEYS};
use crate::syntax::ast::{Definition, Item};
use crate::syntax::is_name_char;

/// Where the cursor is, as far as completion cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Context<'t> {
    /// After `use`.
    Module,
    /// At an argument of a call of `callee`, after `positional`
    /// arguments given by position and those named `named`.
    Argument {
        callee: &'t str,
        positional: usize,
        named: Vec<&'t str>,
    },
    /// After `arg:` in a call of `callee`.
    Value { callee: &'t str, arg: &'t str },
    /// At a key of a `train` section.
    TrainKey,
    /// In a comment or a string: nothing.
    Nothing,
    /// Anywhere else.
    Statement,
}

/// The context of byte `offset` of `text` (where the word being typed
/// there starts is `offset` less its length).
pub fn context(text: &str, offset: usize) -> Context<'_> {
    let offset = crate::diagnostics::floor_char(text, offset);
    let before = text[..offset].trim_end_matches(is_name_char);
    let line = before.rsplit('\n').next().unwrap_or_default();
    if line.contains('#') || line.matches('"').count() % 2 == 1 {
        return Context::Nothing;
    }
    if line.trim() == "use" {
        return Context::Module;
    }
    let Some((opener, at)) = unclosed(before) else {
        return Context::Statement;
    };
    let segment = before[at + 1..]
        .rsplit([',', '\n'])
        .next()
        .unwrap_or_default()
        .trim();
    let head = before[..at].trim_end();
    let callee = &head[head.trim_end_matches(is_name_char).len()..];
    match opener {
        '(' if !callee.is_empty() => {
            if let Some(arg) = segment.strip_suffix(':') {
                return Context::Value {
                    callee,
                    arg: arg.trim(),
                };
            }
            if segment.is_empty() || segment.ends_with(',') {
                let (positional, named) = written_arguments(&before[at + 1..]);
                return Context::Argument {
                    callee,
                    positional,
                    named,
                };
            }
            Context::Statement
        }
        '{' if is_train_header(head) && segment.is_empty() => Context::TrainKey,
        _ => Context::Statement,
    }
}

/// The innermost bracket `before` leaves open, and where it is (brackets
/// in comments and strings do not count).
fn unclosed(before: &str) -> Option<(char, usize)> {
    let mut open: Vec<(char, usize)> = Vec::new();
    for (line_start, line) in line_starts(before) {
        let mut in_string = false;
        for (i, c) in line.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '#' if !in_string => break,
                '(' | '[' | '{' if !in_string => open.push((c, line_start + i)),
                ')' | ']' | '}' if !in_string => {
                    open.pop();
                }
                _ => {}
            }
        }
    }
    open.pop()
}

fn line_starts(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n').scan(0, |start, line| {
        let at = *start;
        *start += line.len() + 1;
        Some((at, line))
    })
}

/// Whether the text before a `{` opens a `train` section (`train` or
/// `train model_name`).
fn is_train_header(head: &str) -> bool {
    let words: Vec<&str> = head.split_whitespace().rev().take(2).collect();
    matches!(words.as_slice(), ["train", ..] | [_, "train"])
}

/// The arguments a call's text `args` gives before the one being typed:
/// how many by position, and the names of the others (commas inside
/// brackets, `[3, 3]`, do not separate arguments).
fn written_arguments(args: &str) -> (usize, Vec<&str>) {
    let mut depth = 0usize;
    let mut start = 0;
    let mut written = Vec::new();
    for (i, c) in args.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                written.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let mut positional = 0;
    let mut named = Vec::new();
    for argument in written.into_iter().filter(|a| !a.is_empty()) {
        match argument.split_once(':').map(|(name, _)| name.trim()) {
            Some(name) if !name.is_empty() && name.chars().all(is_name_char) => named.push(name),
            _ => positional += 1,
        }
    }
    (positional, named)
}

impl Analysis {
    /// The completions at byte `offset` of the document (whose text is
    /// `text`, at `path` when it has one).
    pub fn complete(&self, text: &str, offset: usize, path: Option<&Path>) -> Vec<CompletionItem> {
        match context(text, offset) {
            Context::Nothing => Vec::new(),
            Context::Module => modules(path),
            Context::TrainKey => TRAIN_KEYS.iter().map(|k| argument_item(k, "")).collect(),
            Context::Argument {
                callee,
                positional,
                named,
            } => {
                let mut items: Vec<CompletionItem> = self
                    .parameters(callee)
                    .into_iter()
                    .skip(positional)
                    .filter(|(name, _)| !named.contains(&name.as_str()))
                    .map(|(name, default)| argument_item(&name, &default))
                    .collect();
                items.extend(self.statement_items(offset));
                items
            }
            Context::Value { callee, arg } => {
                let kind = layers::signature(callee)
                    .and_then(|s| s.iter().find(|a| a.name == arg))
                    .map(|a| a.kind);
                match kind.map(values) {
                    Some(values) if !values.is_empty() => values
                        .iter()
                        .map(|v| item(v, CompletionItemKind::ENUM_MEMBER, None))
                        .collect(),
                    _ => self.statement_items(offset),
                }
            }
            Context::Statement => self.statement_items(offset),
        }
    }

    /// The parameters of layer or block `callee`, with their defaults as
    /// written (empty when required).
    fn parameters(&self, callee: &str) -> Vec<(String, String)> {
        if let Some(signature) = layers::signature(callee) {
            return signature
                .iter()
                .map(|a| {
                    (
                        a.name.to_string(),
                        layers::default_text(a.default).unwrap_or_default(),
                    )
                })
                .collect();
        }
        self.block(callee).map_or_else(Vec::new, |def| {
            def.params
                .iter()
                .map(|p| {
                    let default = p
                        .default
                        .as_ref()
                        .map_or(String::new(), |d| self.sources.snippet(d.span).to_string());
                    (p.name.name.clone(), default)
                })
                .collect()
        })
    }

    /// The definition of the block `name` that the document sees.
    fn block(&self, name: &str) -> Option<&Definition> {
        let symbol = self
            .names
            .symbols
            .iter()
            .find(|s| s.parent.is_none() && s.kind == NameKind::Block && s.name == name)?;
        self.files
            .get(symbol.name_span.file)?
            .items
            .iter()
            .find_map(|item| match item {
                Item::Block(def) if def.name.span == symbol.name_span => Some(def),
                _ => None,
            })
    }

    /// Layers, the blocks the document sees, the names bound at `offset`
    /// and the built-in functions.
    fn statement_items(&self, offset: usize) -> Vec<CompletionItem> {
        let mut items: Vec<CompletionItem> = LAYERS
            .iter()
            .map(|(name, signature)| {
                let docs = layers::render_signature(name, signature);
                item(name, CompletionItemKind::FUNCTION, Some(docs))
            })
            .collect();
        for s in &self.names.symbols {
            let in_scope = match s.parent {
                None => s.kind == NameKind::Block,
                Some(parent) => {
                    let def = self.names.symbols[parent].range;
                    def.file == ROOT
                        && def.start <= offset
                        && offset <= def.end
                        && s.name_span.end <= offset
                }
            };
            if !in_scope || items.iter().any(|i| i.label == s.name) {
                continue;
            }
            let (kind, detail) = match s.kind {
                NameKind::Block => {
                    let params = self.parameters(&s.name);
                    let params: Vec<String> = params
                        .iter()
                        .map(|(n, d)| {
                            if d.is_empty() {
                                n.clone()
                            } else {
                                format!("{n} = {d}")
                            }
                        })
                        .collect();
                    let from = self.sources.name(s.name_span.file);
                    let detail = format!("block {}({}) in {from}", s.name, params.join(", "));
                    (CompletionItemKind::CLASS, detail)
                }
                _ => (CompletionItemKind::VARIABLE, String::new()),
            };
            items.push(item(&s.name, kind, (!detail.is_empty()).then_some(detail)));
        }
        items.extend(
            FUNCTIONS
                .iter()
                .map(|f| item(f, CompletionItemKind::FUNCTION, None)),
        );
        items
    }
}

/// The values an argument of `kind` takes, when they are names.
fn values(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Padding | Kind::SameOrValid => &["same", "valid"],
        Kind::Activation => layers::ACTIVATIONS,
        Kind::Init => layers::INITS,
        Kind::Interpolation => layers::INTERPOLATIONS,
        Kind::Bool => &["true", "false"],
        Kind::OutputPadding => &["none"],
        _ => &[],
    }
}

fn item(label: &str, kind: CompletionItemKind, detail: Option<String>) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail,
        ..CompletionItem::default()
    }
}

/// `name: ` for an argument or a train key, with its default.
fn argument_item(name: &str, default: &str) -> CompletionItem {
    let detail = if default.is_empty() {
        "required".to_string()
    } else {
        format!("= {default}")
    };
    CompletionItem {
        label: format!("{name}:"),
        kind: Some(CompletionItemKind::FIELD),
        detail: Some(detail),
        insert_text: Some(format!("{name}: ")),
        insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
        filter_text: Some(name.to_string()),
        // Before layers and names, which an argument position also takes.
        sort_text: Some(format!("0{name}")),
        ..CompletionItem::default()
    }
}

/// The modules a `use` can name: those of the standard library, and the
/// `.cnn` files next to the document.
fn modules(path: Option<&Path>) -> Vec<CompletionItem> {
    let mut items: Vec<CompletionItem> = crate::stdlib::MODULES
        .iter()
        .map(|(name, text)| {
            let first = text.lines().next().unwrap_or_default();
            let mut item = item(
                name,
                CompletionItemKind::MODULE,
                Some("standard library".into()),
            );
            item.documentation = Some(Documentation::String(
                first.trim_start_matches('#').trim().to_string(),
            ));
            item
        })
        .collect();
    let folder = path.and_then(Path::parent);
    let entries = folder.and_then(|f| std::fs::read_dir(f).ok());
    for entry in entries.into_iter().flatten().flatten() {
        let file = entry.path();
        let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let own = path.is_some_and(|p| p.file_name() == file.file_name());
        if own || file.extension().is_none_or(|e| e != "cnn") || !stem.chars().all(is_name_char) {
            continue;
        }
        // A file beside the document comes before a stdlib module of its name.
        items.retain(|i| i.label != stem);
        items.push(item(
            stem,
            CompletionItemKind::FILE,
            Some(file.display().to_string()),
        ));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context where `|` is in `text`.
    fn at(text: &str) -> String {
        let offset = text.find('|').expect("a cursor");
        let text = text.replace('|', "");
        format!("{:?}", context(&text, offset))
    }

    #[test]
    fn the_context_is_read_from_the_text_before_the_cursor() {
        assert_eq!(at("use |"), "Module");
        assert_eq!(at("use res|"), "Module");
        assert_eq!(at("model m : [8, 8, 1] {\n    con|"), "Statement");
        assert_eq!(
            at("model m : [8, 8, 1] {\n    conv(32, 3, pad|"),
            "Argument { callee: \"conv\", positional: 2, named: [] }"
        );
        assert_eq!(
            at("    conv(32, 3, padding: same,\n        activation: relu, |)"),
            "Argument { callee: \"conv\", positional: 2, named: [\"padding\", \"activation\"] }"
        );
        assert_eq!(
            at("    conv(32, 3, padding: |"),
            "Value { callee: \"conv\", arg: \"padding\" }"
        );
        assert_eq!(
            at("    conv(32, 3, activation:re|"),
            "Value { callee: \"conv\", arg: \"activation\" }"
        );
        assert_eq!(at("    conv(32, [3, |"), "Statement");
        assert_eq!(at("    conv(32, 3) # a (comment |"), "Nothing");
        assert_eq!(at("train {\n    batch: 32\n    ep|"), "TrainKey");
        assert_eq!(at("train m {\n    |"), "TrainKey");
        assert_eq!(at("train {\n    optimizer: |"), "Statement");
        assert_eq!(
            at("    conv(32, 3) # (\n    dense(|"),
            "Argument { callee: \"dense\", positional: 0, named: [] }"
        );
        assert_eq!(
            at("    conv(32, [3, 3], stride: [2, 2], |"),
            "Argument { callee: \"conv\", positional: 2, named: [\"stride\"] }"
        );
    }

    fn labels(text: &str) -> Vec<String> {
        let offset = text.find('|').expect("a cursor");
        let text = text.replace('|', "");
        let analysis = Analysis::of(None, &text);
        let items = analysis.complete(&text, offset, None);
        items.into_iter().map(|i| i.label).collect()
    }

    #[test]
    fn an_argument_offers_the_names_not_given_yet_with_their_defaults() {
        let text = "block unit(f, g = 2) {\n    relu\n}\nmodel m : [8, 8, 1] {\n    let width = 4\n    conv(4, 3, padding: same, |)\n    unit(|)\n}\n";
        let conv = labels(&text.replacen("unit(|)", "unit()", 1));
        assert!(conv.contains(&"strides:".to_string()) || conv.contains(&"stride:".to_string()));
        assert!(!conv.contains(&"padding:".to_string()), "{conv:?}");
        assert!(
            conv.contains(&"width".to_string()),
            "a name in scope: {conv:?}"
        );
        let unit = labels(&text.replacen("same, |)", "same)", 1));
        assert_eq!(unit[..2], ["f:", "g:"]);
        // Given by position, `f` is not offered again.
        let after_f = labels(&text.replacen("same, |)", "same)", 1).replacen(
            "unit(|)",
            "unit(4, |)",
            1,
        ));
        assert_eq!(after_f[..2], ["g:", "conv"]);
    }

    #[test]
    fn a_value_is_offered_by_what_the_argument_takes() {
        let text = "model m : [8, 8, 1] {\n    conv(4, 3, activation: |)\n}\n";
        let values = labels(text);
        assert!(values.contains(&"relu".to_string()), "{values:?}");
        assert!(!values.contains(&"conv".to_string()), "{values:?}");
    }

    #[test]
    fn a_statement_offers_layers_blocks_and_bound_names() {
        let text = "use resnet\nblock unit(f) {\n    let g = f\n    |\n}\nmodel m : [8, 8, 1] {\n    relu\n}\n";
        let offered = labels(text);
        for name in [
            "conv",
            "batchnorm",
            "unit",
            "residual_unit",
            "f",
            "g",
            "len",
        ] {
            assert!(offered.contains(&name.to_string()), "{name}: {offered:?}");
        }
        assert!(!offered.contains(&"m".to_string()), "a model is not called");
    }

    #[test]
    fn a_use_offers_the_standard_library() {
        let offered = labels("use |");
        assert!(offered.contains(&"resnet".to_string()), "{offered:?}");
    }
}
