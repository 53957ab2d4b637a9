//! Error reporting: source spans, diagnostics, and their rendering.
//!
//! Every stage collects [`Diagnostic`]s instead of stopping at the first
//! problem; they are rendered once, at the edge (the CLI or a test), by
//! codespan-reporting: `file:line:column`, the source line, a caret under
//! the span, secondary labels such as "while expanding block `se_block`
//! called here", and notes with hints.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel};
use codespan_reporting::files::{self, Files, SimpleFiles};
use codespan_reporting::term::{self, termcolor};

/// Identifies a source file in a [`SourceMap`].
pub type FileId = usize;

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
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

    /// How many files it holds (their ids are `0..len`).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it holds no file.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
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
            let excerpts = Excerpts::of(error, &self.sources);
            // Writing into an in-memory buffer only fails if a span is out of
            // range, which `emit` reports as an error; fall back to a plain line.
            if term::emit_to_write_style(
                &mut buffer,
                &config,
                &excerpts,
                &to_codespan(error, &excerpts),
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

    /// The errors and the sources they point into.
    pub fn into_parts(self) -> (Vec<Diagnostic>, Arc<SourceMap>) {
        (self.errors, self.sources)
    }
}

fn buffer_line(buffer: &mut termcolor::Buffer, line: &str) {
    use std::io::Write;
    // An in-memory buffer cannot fail to accept bytes.
    let _ = writeln!(buffer, "{line}");
}

fn to_codespan(error: &Diagnostic, excerpts: &Excerpts) -> CsDiagnostic<FileId> {
    let span = error.primary.span;
    // An error about a whole file (it cannot be read, it has no model) has an
    // empty, unlabelled span at its start: name the file instead of quoting it.
    if span.start == 0 && span.end == 0 && error.primary.message.is_empty() {
        return CsDiagnostic::error()
            .with_message(format!(
                "{}: {}",
                excerpts.sources.name(span.file),
                error.message
            ))
            .with_notes(error.notes.clone());
    }
    let mut labels = vec![
        CsLabel::primary(span.file, excerpts.range(span)).with_message(&error.primary.message)
    ];
    for label in &error.secondary {
        labels.push(
            CsLabel::secondary(label.span.file, excerpts.range(label.span))
                .with_message(&label.message),
        );
    }
    CsDiagnostic::error()
        .with_message(&error.message)
        .with_labels(labels)
        .with_notes(
            error
                .notes
                .iter()
                .cloned()
                .chain(excerpts.notes())
                .collect(),
        )
}

/// A line longer than this (in bytes) is shown only around the labels on
/// it: a generated file can be one line of megabytes, and quoting it whole
/// under each of its errors would take time and output of the order of the
/// line's length times the number of errors.
const LONG_LINE: usize = 1000;

/// How much of a long line is shown before the first label on it and
/// after the last, and the most of a label on it that is underlined (in
/// bytes, rounded out to whole characters).
const CONTEXT: usize = 60;

/// The source files as one diagnostic shows them: each long line it labels
/// cut to the part around its labels ([`LONG_LINE`]), every other line
/// whole. Line and column numbers stay those of the whole file.
struct Excerpts<'a> {
    sources: &'a SourceMap,
    /// The part shown of each long line, by file and line index.
    windows: HashMap<(FileId, usize), Range<usize>>,
}

impl<'a> Excerpts<'a> {
    /// The excerpts for the labels of `error`.
    fn of(error: &Diagnostic, sources: &'a SourceMap) -> Excerpts<'a> {
        let mut excerpts = Excerpts {
            sources,
            windows: HashMap::new(),
        };
        let spans = std::iter::once(&error.primary)
            .chain(&error.secondary)
            .map(|label| label.span);
        for span in spans {
            let range = excerpts.range(span);
            for point in [range.start, range.end] {
                excerpts.show(span.file, point);
            }
        }
        excerpts
    }

    /// Widens the part shown of the line of `point` to it, if the line is long.
    fn show(&mut self, file: FileId, point: usize) {
        let Some((line, whole)) = self.line_of(file, point) else {
            return;
        };
        // A point past the end of its file is left to the renderer to refuse.
        if whole.len() <= LONG_LINE || point > whole.end {
            return;
        }
        let text = self.sources.text(file);
        let start = floor_char(text, point.saturating_sub(CONTEXT).max(whole.start));
        let end = ceil_char(text, (point + CONTEXT).min(whole.end));
        let window = self.windows.entry((file, line)).or_insert(start..end);
        *window = window.start.min(start)..window.end.max(end);
    }

    /// The index and byte range of the line of `offset` in `file`.
    fn line_of(&self, file: FileId, offset: usize) -> Option<(usize, Range<usize>)> {
        let line = self.sources.files.line_index(file, offset).ok()?;
        Some((line, self.sources.files.line_range(file, line).ok()?))
    }

    /// The range of `span` as labelled: a label that starts on a long line
    /// and ends on it is underlined over at most [`CONTEXT`] bytes.
    fn range(&self, span: Span) -> Range<usize> {
        let long = self
            .line_of(span.file, span.start)
            .filter(|(_, whole)| whole.len() > LONG_LINE && span.end <= whole.end);
        match long {
            Some(_) if span.end > span.start + CONTEXT => {
                let text = self.sources.text(span.file);
                span.start..ceil_char(text, span.start + CONTEXT)
            }
            _ => span.start..span.end,
        }
    }

    /// A note for each long line shown in part.
    fn notes(&self) -> Vec<String> {
        let mut lines: Vec<(FileId, usize)> = self.windows.keys().copied().collect();
        lines.sort_unstable();
        lines
            .into_iter()
            .map(|(file, line)| {
                format!(
                    "note: line {} of {} is long: only the part around the error is shown",
                    line + 1,
                    self.sources.name(file)
                )
            })
            .collect()
    }
}

impl<'a> Files<'a> for Excerpts<'a> {
    type FileId = FileId;
    type Name = String;
    type Source = &'a str;

    fn name(&'a self, id: FileId) -> Result<String, files::Error> {
        self.sources.files.name(id)
    }

    fn source(&'a self, id: FileId) -> Result<&'a str, files::Error> {
        self.sources.files.source(id)
    }

    fn line_index(&'a self, id: FileId, byte_index: usize) -> Result<usize, files::Error> {
        self.sources.files.line_index(id, byte_index)
    }

    fn line_range(&'a self, id: FileId, line_index: usize) -> Result<Range<usize>, files::Error> {
        match self.windows.get(&(id, line_index)) {
            Some(window) => Ok(window.clone()),
            None => self.sources.files.line_range(id, line_index),
        }
    }

    /// Counted from the start of the whole line, not of the part shown.
    fn column_number(
        &'a self,
        id: FileId,
        line_index: usize,
        byte_index: usize,
    ) -> Result<usize, files::Error> {
        let whole = self.sources.files.line_range(id, line_index)?;
        Ok(files::column_index(self.source(id)?, whole, byte_index) + 1)
    }
}

/// The largest character boundary of `text` at or below `i`.
pub fn floor_char(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest character boundary of `text` at or above `i`.
fn ceil_char(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
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
        Some(best) => diagnostic.with_note(did_you_mean_note(best)),
        None => diagnostic,
    }
}

/// The note that offers `best` in place of a misspelt word.
pub fn did_you_mean_note(best: &str) -> String {
    format!("help: did you mean `{best}`?")
}

/// The word a note made by [`did_you_mean_note`] offers (for a quick fix,
/// which then looks for the misspelt word under the error's span).
pub fn offered(note: &str) -> Option<&str> {
    note.strip_prefix("help: did you mean `")?
        .strip_suffix("`?")
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
    fn a_long_line_is_shown_around_its_labels_at_its_true_columns() {
        let mut map = SourceMap::default();
        let text = format!("{}bad{}\nnext\n", "x ".repeat(3000), " é".repeat(3000));
        let id = map.add("long.cnn", text.as_str());
        let error = Diagnostic::error(Span::new(id, 6000, 6003), "wrong", "here")
            .with_context(Span::new(id, 5950, 5951), "and there")
            .with_context(Span::new(id, 6004, text.len() - 6), "to the end");
        let rendered = Diagnostics::new(vec![error], Arc::new(map)).render(false);
        assert!(rendered.contains("long.cnn:1:6001\n"), "{rendered}");
        for label in ["bad", "^^^", "here", "and there", "to the end"] {
            assert!(rendered.contains(label), "no {label:?} in {rendered}");
        }
        assert!(
            rendered.contains("note: line 1 of long.cnn is long"),
            "{rendered}"
        );
        let widest = rendered.lines().map(|l| l.chars().count()).max();
        assert!(widest < Some(250), "{rendered}");
    }

    #[test]
    fn did_you_mean_finds_typos_only() {
        let names = ["conv", "dense", "batchnorm", "maxpool"];
        assert_eq!(did_you_mean("batchnrom", names), Some("batchnorm"));
        assert_eq!(did_you_mean("dens", names), Some("dense"));
        assert_eq!(did_you_mean("transformer", names), None);
    }
}
