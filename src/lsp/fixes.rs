//! Quick fixes: an error whose note offers a word ("help: did you mean
//! `relu`?") can be fixed by putting that word in place of the misspelt
//! one, which lies under the error's span in the document.

use std::collections::HashMap;

use lsp_types::{CodeAction, CodeActionKind, TextEdit, Uri, WorkspaceEdit};

use super::analysis::{Analysis, ROOT};
use super::text::LineIndex;
use crate::diagnostics::{offered, Diagnostic, Span};
use crate::syntax::is_name_char;

/// One fix: the bytes to replace in the document and what to put there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// The error it fixes (an index into the analysis's errors).
    pub error: usize,
    pub span: Span,
    pub replacement: String,
}

impl Analysis {
    /// Every "did you mean" of an error in the document's own text.
    pub fn fixes(&self) -> Vec<Fix> {
        self.errors
            .iter()
            .enumerate()
            .filter(|(_, error)| error.primary.span.file == ROOT)
            .filter_map(|(i, error)| {
                let word = error.notes.iter().find_map(|note| offered(note))?;
                let span = self.misspelt(error, word)?;
                Some(Fix {
                    error: i,
                    span,
                    replacement: word.to_string(),
                })
            })
            .collect()
    }

    /// The word under `error`'s span closest to `word`, which it offers
    /// instead: the span may be the word itself (`batchnrom`), or hold
    /// more (`use resnt`, `"rleu"`).
    fn misspelt(&self, error: &Diagnostic, word: &str) -> Option<Span> {
        let span = error.primary.span;
        let snippet = self.sources.snippet(span);
        let mut best: Option<(usize, Span)> = None;
        let mut start = None;
        for (i, c) in snippet.char_indices().chain([(snippet.len(), ' ')]) {
            match (is_name_char(c), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    start = None;
                    let candidate = &snippet[s..i];
                    let distance = strsim::damerau_levenshtein(candidate, word);
                    if distance > 0 && best.is_none_or(|(d, _)| distance < d) {
                        let at = span.start + s;
                        best = Some((distance, Span::new(ROOT, at, at + candidate.len())));
                    }
                }
                _ => {}
            }
        }
        best.map(|(_, span)| span)
    }

    /// The quick fixes for the errors shown within bytes `start..=end` of
    /// the document at `uri` (whose text is `text`).
    pub fn quick_fixes(&self, uri: &Uri, text: &str, start: usize, end: usize) -> Vec<CodeAction> {
        let fixes = self.fixes();
        if fixes.is_empty() {
            return Vec::new();
        }
        let diagnostics = self.diagnostics(uri, text);
        let index = LineIndex::new(text);
        fixes
            .into_iter()
            .filter(|fix| fix.span.start <= end && start <= fix.span.end)
            .map(|fix| {
                let edit = TextEdit::new(
                    index.range(text, fix.span.start, fix.span.end),
                    fix.replacement.clone(),
                );
                CodeAction {
                    title: format!(
                        "Replace `{}` with `{}`",
                        self.sources.snippet(fix.span),
                        fix.replacement
                    ),
                    kind: Some(CodeActionKind::QUICKFIX),
                    diagnostics: diagnostics.get(fix.error).cloned().map(|d| vec![d]),
                    edit: Some(WorkspaceEdit {
                        changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                        ..WorkspaceEdit::default()
                    }),
                    is_preferred: Some(true),
                    ..CodeAction::default()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each fix of `text` as (the word replaced, its replacement).
    fn fixes(text: &str) -> Vec<(String, String)> {
        let analysis = Analysis::of(None, text);
        analysis
            .fixes()
            .into_iter()
            .map(|f| (text[f.span.start..f.span.end].to_string(), f.replacement))
            .collect()
    }

    #[test]
    fn a_misspelt_layer_argument_or_value_is_fixed_where_it_is_written() {
        let text = "model m : [8, 8, 1] {\n    conv(4, 3, paddng: same, activation: rleu)\n    batchnrom\n    maxpool(2, padding: sme)\n}\n";
        let mut found = fixes(text);
        found.sort();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            found,
            [
                pair("batchnrom", "batchnorm"),
                pair("paddng", "padding"),
                pair("rleu", "relu"),
                pair("sme", "same"),
            ]
        );
    }

    #[test]
    fn a_misspelt_module_is_fixed_inside_its_use() {
        let found = fixes("use resnt\nmodel m : [8, 8, 1] {\n    relu\n}\n");
        assert_eq!(found, [("resnt".to_string(), "resnet".to_string())]);
    }

    #[test]
    fn an_error_without_an_offer_has_no_fix() {
        assert!(fixes("model m : [8, 8, 1] {\n    transformer\n}\n").is_empty());
    }
}
