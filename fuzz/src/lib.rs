//! What the fuzz targets share: the front end run as `cnnc check` runs it,
//! the small model whose weights and checkpoints the loaders' targets read,
//! and the structure-aware program generator ([`program`]).
//!
//! Each target passes its input to one of cnnc's public readers and checks
//! that the reader returns (an `Ok` or a typed error whose message renders);
//! a panic, a stack overflow, an allocation failure, a run over the time
//! limit or a memory use over the RSS limit is what libFuzzer reports.

pub mod program;

use std::path::Path;

use cnnc::autodiff::LossSpec;
use cnnc::runtime::training::Trainer;
use cnnc::runtime::weights;
use cnnc::TypedGraph;

/// The model of the weights and checkpoint targets (and of the files
/// `fuzz/seed` trains to start their corpora).
pub const TINY_MODEL: &str = include_str!("../tiny.cnn");

/// Where every input claims to come from, in error messages.
pub fn input_path() -> &'static Path {
    Path::new("fuzz-input")
}

/// What the language server makes of `text`: its analysis, diagnostics,
/// quick fixes, shape hints and symbols, and at every 16th byte a hover,
/// a completion, a definition, references and a rename. A rename that is
/// accepted must not make the program worse: no more errors, no fewer
/// models compiled.
fn language_server(text: &str) {
    let analysis = cnnc::lsp::Analysis::of(None, text);
    let uri: cnnc::lsp::Uri = "file:///fuzz.cnn".parse().expect("a valid URI");
    let _ = analysis.diagnostics(&uri, text);
    let _ = analysis.quick_fixes(&uri, text, 0, text.len());
    for (at, _) in analysis.shape_hints() {
        assert!(
            text.is_char_boundary(at),
            "a hint inside a character, at {at}"
        );
    }
    let _ = analysis.symbols(text);
    let mut renamed = false;
    for offset in (0..=text.len()).step_by(16) {
        let _ = analysis.hover(offset);
        let _ = analysis.complete(text, offset, None);
        let _ = analysis.definition(&uri, text, offset);
        let _ = analysis.references(offset, true);
        if !renamed {
            if let Ok(spans) = analysis.rename(offset, "fuzz_renamed") {
                renamed = true;
                check_rename(&analysis, text, &spans);
            }
        }
    }
}

/// `text` with `spans` renamed analyses as `analysis` did.
fn check_rename(analysis: &cnnc::lsp::Analysis, text: &str, spans: &[cnnc::diagnostics::Span]) {
    // Spans count from after a byte-order mark, which the front end drops.
    if text.starts_with('\u{feff}') {
        return;
    }
    let mut spans = spans.to_vec();
    spans.sort();
    let mut renamed = text.to_string();
    for span in spans.iter().rev() {
        renamed.replace_range(span.start..span.end, "fuzz_renamed");
    }
    let after = cnnc::lsp::Analysis::of(None, &renamed);
    // Renaming may end an error (a model called `current`), never start one.
    assert!(
        after.error_count() <= analysis.error_count()
            && after.model_count() >= analysis.model_count(),
        "renaming made the program worse:\n{renamed}"
    );
}

/// Formats `text` as `cnnc fmt` does: a text that parses formats (the
/// formatter checks its own output: it parses to the same syntax tree,
/// with the same comments), and formatting that again changes nothing; a text that does
/// not parse gives its syntax error.
pub fn format(text: &str) {
    let mut sources = cnnc::diagnostics::SourceMap::default();
    let file = sources.add("fuzz.cnn", text);
    match cnnc::syntax::format(text, file) {
        Ok(formatted) => {
            let again = cnnc::syntax::format(&formatted, file)
                .unwrap_or_else(|e| panic!("formatted text does not format: {}", e.message));
            assert_eq!(again, formatted, "formatting twice differs");
        }
        Err(error) => assert!(
            cnnc::syntax::parse(text, file).is_err(),
            "a text that parses does not format: {} ({})",
            error.message,
            error.primary.message
        ),
    }
}

/// Runs the front end on `text` as `cnnc check` does on a file: loads it
/// (standard library imports only), compiles its first model, and renders
/// the errors, plain and in colour; then as `cnnc lsp` does: its
/// diagnostics as the protocol's, and a hover at every 16th byte.
pub fn front_end(text: &str) {
    language_server(text);
    let program = match cnnc::syntax::load_source("fuzz.cnn", text, None) {
        Ok(program) => program,
        Err(errors) => return render(&errors),
    };
    let models = cnnc::elaborate::models(&program);
    if let Err(errors) = cnnc::compile(program, models.first().map(String::as_str)) {
        render(&errors);
    }
}

/// Renders `errors` both ways; each says it is an error.
fn render(errors: &cnnc::Diagnostics) {
    assert!(!errors.errors.is_empty(), "an Err without errors");
    let plain = errors.render(false);
    assert!(plain.contains("error"), "rendered as {plain:?}");
    let _ = errors.render(true);
}

/// [`TINY_MODEL`], compiled.
pub fn tiny_model() -> TypedGraph {
    cnnc::compile_source("tiny.cnn", TINY_MODEL, None, None)
        .unwrap_or_else(|errors| panic!("fuzz/tiny.cnn does not compile:\n{errors}"))
}

/// A trainer of [`TINY_MODEL`] with its train section's optimizer, as
/// `cnnc run` makes one: what a checkpoint is checked against.
pub fn tiny_trainer(model: &TypedGraph) -> Trainer {
    let config = model.graph.train.clone().unwrap_or_default();
    let loss = LossSpec {
        smoothing: config.label_smoothing,
        weights: config.loss_weights.clone(),
    };
    let step = cnnc::compile_training(model, &loss, &config.optimizer, 2)
        .unwrap_or_else(|e| panic!("the tiny model's training step: {e}"));
    Trainer::new(step, weights::init(model, config.seed), 1)
        .unwrap_or_else(|e| panic!("the tiny model's trainer: {e}"))
}

/// Checks that an error's message is not empty, as the command line prints it.
pub fn message(error: &dyn std::error::Error) {
    assert!(!error.to_string().is_empty(), "an error without a message");
}
