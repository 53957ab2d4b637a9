//! Error reporting: source spans, diagnostics, and their rendering.
//!
//! Every stage collects [`Diagnostic`]s instead of stopping at the first
//! problem; they are rendered once, at the edge (the CLI or a test), by
//! codespan-reporting: `file:line:column`, the source line, a caret under
//! the span, secondary labels such as "while expanding block `se_block`
//! called here", and notes with hints.

use std::fmt;
use std::sync::Arc;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};

/// Identifies a source file in a [`SourceMap`].
pub type FileId = usize;

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The file the range lies in.
    pub file: FileId,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span covering `start..end` in `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span { file, start, end }
    }

    /// The smallest span covering both `self` and `other` (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span::new(
            self.file,
            self.start.min(other.start),
            self.end.max(other.end),
        )
    }
}

/// All the source files of one compilation, for rendering diagnostics.
#[derive(Default)]
pub struct SourceMap {
    files: SimpleFiles<String, Arc<str>>,
    names: Vec<String>,
}

impl SourceMap {
    /// Adds a file and returns its id; `name` is shown in diagnostics.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<Arc<str>>) -> FileId {
        let name = name.into();
        self.names.push(name.clone());
        self.files.add(name, text.into())
    }

    /// The text of a file.
    pub fn text(&self, file: FileId) -> &str {
        // Ids are only handed out by `add`, so the lookup cannot fail.
        self.files
            .get(file)
            .map(|f| f.source().as_ref())
            .unwrap_or("")
    }

    /// The display name of a file.
    pub fn name(&self, file: FileId) -> &str {
        self.names
            .get(file)
            .map(String::as_str)
            .unwrap_or("<unknown>")
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> (usize, usize) {
        let text = self.text(file);
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The source text under a span.
    pub fn snippet(&self, span: Span) -> &str {
        let text = self.text(span.file);
        text.get(span.start.min(text.len())..span.end.min(text.len()))
            .unwrap_or("")
    }
}

/// A labelled span.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What is there (may be empty).
    pub message: String,
}

/// One error, with its place, context and hints.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// A one-line statement of the problem.
    pub message: String,
    /// The fault itself.
    pub primary: Label,
    /// Context, such as the block calls that led here.
    pub secondary: Vec<Label>,
    /// Hints and explanations, each rendered as `= note`.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error at `span` with `message`, the label under the span saying `label`.
    pub fn error(span: Span, message: impl Into<String>, label: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            primary: Label {
                span,
                message: label.into(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a secondary label.
    pub fn with_context(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Adds a note (a hint or an explanation).
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

/// The errors of one compilation together with the sources they point into.
#[derive(Clone)]
pub struct Diagnostics {
    /// The errors, in the order they were found.
    pub errors: Vec<Diagnostic>,
    sources: Arc<SourceMap>,
}

impl Diagnostics {
    /// Bundles errors with the sources they refer to.
    pub fn new(errors: Vec<Diagnostic>, sources: Arc<SourceMap>) -> Diagnostics {
        Diagnostics { errors, sources }
    }

    /// A single error about `subject` (a file or a model) with no source
    /// location: a failure after the front end (code generation, a run).
    pub fn message(subject: &str, message: impl Into<String>) -> Diagnostics {
        let mut sources = SourceMap::default();
        let file = sources.add(subject, "");
        Diagnostics::new(
            vec![Diagnostic::error(Span::new(file, 0, 0), message, "")],
            Arc::new(sources),
        )
    }

    /// Renders every error; with `color`, using ANSI colours.
    pub fn render(&self, color: bool) -> String {
        let mut buffer = if color {
            termcolor::Buffer::ansi()
        } else {
            termcolor::Buffer::no_color()
        };
        let config = term::Config::default();
        for error in &self.errors {
            // Writing into an in-memory buffer only fails if a span is out of
            // range, which `emit` reports as an error; fall back to a plain line.
            if term::emit_to_write_style(
                &mut buffer,
                &config,
                &self.sources.files,
                &to_codespan(error, &self.sources),
            )
            .is_err()
            {
                let (line, col) = self
                    .sources
                    .line_col(error.primary.span.file, error.primary.span.start);
                let name = self.sources.name(error.primary.span.file);
                buffer_line(
                    &mut buffer,
                    &format!("error: {} ({name}:{line}:{col})", error.message),
                );
            }
        }
        let count = self.errors.len();
        if count > 1 {
            buffer_line(&mut buffer, &format!("error: {count} errors found"));
        }
        String::from_utf8_lossy(buffer.as_slice()).into_owned()
    }

    /// The sources the errors point into.
    pub fn sources(&self) -> &SourceMap {
        &self.sources
    }
}

fn buffer_line(buffer: &mut termcolor::Buffer, line: &str) {
    use std::io::Write;
    // An in-memory buffer cannot fail to accept bytes.
    let _ = writeln!(buffer, "{line}");
}

fn to_codespan(error: &Diagnostic, sources: &SourceMap) -> CsDiagnostic<FileId> {
    let span = error.primary.span;
    // An error about a whole file (it cannot be read, it has no model) has an
    // empty, unlabelled span at its start: name the file instead of quoting it.
    if span.start == 0 && span.end == 0 && error.primary.message.is_empty() {
        return CsDiagnostic::error()
            .with_message(format!("{}: {}", sources.name(span.file), error.message))
            .with_notes(error.notes.clone());
    }
    let mut labels = vec![
        CsLabel::primary(span.file, span.start..span.end).with_message(&error.primary.message)
    ];
    for label in &error.secondary {
        labels.push(
            CsLabel::secondary(label.span.file, label.span.start..label.span.end)
                .with_message(&label.message),
        );
    }
    CsDiagnostic::error()
        .with_message(&error.message)
        .with_labels(labels)
        .with_notes(error.notes.clone())
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl fmt::Debug for SourceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|&(distance, c)| distance <= (word.len().max(c.len()) / 3).max(1) && distance > 0)
        .min_by_key(|&(distance, c)| (distance, c))
        .map(|(_, c)| c)
}

/// Appends "did you mean `x`?" to a diagnostic when a close candidate exists.
pub fn suggest<'a>(
    diagnostic: Diagnostic,
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Diagnostic {
    match did_you_mean(word, candidates) {
        Some(best) => diagnostic.with_note(format!("help: did you mean `{best}`?")),
        None => diagnostic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let mut map = SourceMap::default();
        let id = map.add("a.cnn", "ab\ncd\n");
        assert_eq!(map.line_col(id, 0), (1, 1));
        assert_eq!(map.line_col(id, 4), (2, 2));
    }

    #[test]
    fn did_you_mean_finds_typos_only() {
        let names = ["conv", "dense", "batchnorm", "maxpool"];
        assert_eq!(did_you_mean("batchnrom", names), Some("batchnorm"));
        assert_eq!(did_you_mean("dens", names), Some("dense"));
        assert_eq!(did_you_mean("transformer", names), None);
    }
}
