//! `cnnc lsp`: a language server (LSP 3.17, over standard input and
//! output) on the front end as it is: errors as the user types, and on
//! hover a call's shapes, parameters, FLOPs and activation memory, which
//! the front end knows before anything runs, and as inlay hints the shape
//! each line ends with; "did you mean" as quick fixes; symbols, go to
//! definition (into the standard library too), references, rename;
//! completion; formatting by `cnnc fmt`.
//!
//! [`serve_stdio`] runs the server. Documents are kept whole (full text
//! sync); a change marks its document, and [`DEBOUNCE`] after the last
//! change every marked document is analysed ([`Analysis::of`]) and its
//! diagnostics published. A request on a marked document analyses it
//! first, so that it never answers from text the user has since changed.
//! A panic in a request's handler is answered as that request's error
//! (`InternalError`), and one in an analysis as a diagnostic; the server
//! stays up.

mod analysis;
mod complete;
mod fixes;
mod hints;
mod names;
mod navigate;
pub mod text;

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeConfiguration, DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument,
    Notification as _, PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest,
    InlayHintRequest, PrepareRenameRequest, References, Rename, Request as _,
};
use lsp_types::{
    CodeActionKind, CodeActionOptions, CodeActionOrCommand, CodeActionParams,
    CodeActionProviderCapability, CompletionOptions, CompletionParams, CompletionResponse,
    DocumentFormattingParams, DocumentSymbolParams, DocumentSymbolResponse, GotoDefinitionParams,
    GotoDefinitionResponse, Hover, HoverContents, HoverParams, HoverProviderCapability, InlayHint,
    InlayHintKind, InlayHintLabel, InlayHintParams, Location, MarkupContent, MarkupKind, OneOf,
    PositionEncodingKind, PrepareRenameResponse, PublishDiagnosticsParams, ReferenceParams,
    RenameOptions, RenameParams, ServerCapabilities, TextDocumentPositionParams,
    TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit, WorkspaceEdit,
};

use crate::syntax::Overlay;
pub use analysis::Analysis;
/// The protocol's document address, as [`Analysis::diagnostics`] takes it.
pub use lsp_types::Uri;
use text::{path_of, LineIndex};

/// How long after the last change a document is analysed: long enough to
/// skip the states between a typist's keys, short enough that its errors
/// follow at once.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Set to a request's method (`textDocument/hover`), this makes its
/// handler panic: for the tests of what the server does then.
pub const PANIC_ON: &str = "CNNC_LSP_TEST_PANIC";

/// Why the server stopped other than by `shutdown` and `exit`.
pub type ServerError = Box<dyn std::error::Error + Send + Sync>;

/// Serves the client on standard input and output until it shuts the
/// server down; an error when the connection fails or the client exits
/// without `shutdown`.
pub fn serve_stdio() -> Result<(), ServerError> {
    let (connection, io_threads) = Connection::stdio();
    let result = serve(&connection);
    drop(connection);
    io_threads.join()?;
    result
}

/// One open document.
struct Document {
    text: String,
    version: i32,
    /// Its canonical path, when it is a file on disk.
    path: Option<PathBuf>,
    /// The analysis of `text`; `None` while a change waits for one.
    analysis: Option<Arc<Analysis>>,
}

/// The open documents, and those changed since their last analysis (kept
/// apart from `Document::analysis`, which also stays `None` after an
/// analysis that panicked, so that it is not tried again until a change).
struct State {
    documents: HashMap<Uri, Document>,
    stale: BTreeSet<String>,
    /// Whether inlay hints show output shapes: `shapeHints` in the
    /// client's initialization options or its `cnnc` settings.
    shape_hints: bool,
}

impl State {
    fn new() -> State {
        State {
            documents: HashMap::new(),
            stale: BTreeSet::new(),
            shape_hints: true,
        }
    }

    /// Marks stale every other open document that imports the one at
    /// `uri` (whose canonical path is `path`), which changed (or opened or
    /// closed: it is imported from the editor's text while open, from the
    /// disk after); whether there was one.
    fn touched(&mut self, uri: &Uri, path: Option<&Path>) -> bool {
        let Some(path) = path else {
            return false;
        };
        let mut any = false;
        for (other, doc) in &mut self.documents {
            if other != uri && doc.analysis.as_ref().is_some_and(|a| a.imports_file(path)) {
                doc.analysis = None;
                self.stale.insert(other.as_str().to_string());
                any = true;
            }
        }
        any
    }

    /// The open documents' texts by canonical path, which analyses import
    /// instead of the files on disk.
    fn overlay(&self) -> Overlay {
        self.documents
            .values()
            .filter_map(|doc| Some((doc.path.clone()?, doc.text.clone())))
            .collect()
    }

    /// Takes the settings the client gives (`{"shapeHints": false}`).
    fn configure(&mut self, settings: &serde_json::Value) {
        if let Some(on) = settings
            .get("shapeHints")
            .and_then(serde_json::Value::as_bool)
        {
            self.shape_hints = on;
        }
    }
}

fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        position_encoding: Some(PositionEncodingKind::UTF16),
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
            code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
            ..CodeActionOptions::default()
        })),
        inlay_hint_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Right(RenameOptions {
            prepare_provider: Some(true),
            work_done_progress_options: Default::default(),
        })),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["(".into(), ",".into(), ":".into(), " ".into()]),
            ..CompletionOptions::default()
        }),
        ..ServerCapabilities::default()
    }
}

/// The server's loop on `connection`.
fn serve(connection: &Connection) -> Result<(), ServerError> {
    let init = connection.initialize(serde_json::to_value(capabilities())?)?;
    let mut state = State::new();
    if let Some(options) = init.get("initializationOptions") {
        state.configure(options);
    }
    let mut deadline: Option<Instant> = None;
    loop {
        let timer = deadline.map_or_else(never, |d| {
            after(d.saturating_duration_since(Instant::now()))
        });
        select! {
            recv(connection.receiver) -> message => {
                let Ok(message) = message else {
                    return Err("the client closed the connection without `exit`".into());
                };
                match message {
                    Message::Request(request) => {
                        if connection.handle_shutdown(&request)? {
                            return Ok(());
                        }
                        let response = respond(connection, &mut state, request)?;
                        connection.sender.send(response.into())?;
                    }
                    Message::Notification(notification) => {
                        if notification.method == lsp_types::notification::Exit::METHOD {
                            return Err("the client exited without `shutdown`".into());
                        }
                        if apply(connection, &mut state, notification)? {
                            deadline = Some(Instant::now() + DEBOUNCE);
                        }
                    }
                    Message::Response(_) => {}
                }
            }
            recv(timer) -> _ => {
                deadline = None;
                publish_stale(connection, &mut state)?;
            }
        }
    }
}

/// Applies a document notification; whether a document changed.
fn apply(
    connection: &Connection,
    state: &mut State,
    notification: Notification,
) -> Result<bool, ServerError> {
    match notification.method.as_str() {
        DidOpenTextDocument::METHOD => {
            let params: lsp_types::DidOpenTextDocumentParams =
                serde_json::from_value(notification.params)?;
            let doc = params.text_document;
            let path = path_of(&doc.uri).and_then(|p| p.canonicalize().ok());
            state.stale.insert(doc.uri.as_str().to_string());
            state.touched(&doc.uri, path.as_deref());
            state.documents.insert(
                doc.uri,
                Document {
                    text: doc.text,
                    version: doc.version,
                    path,
                    analysis: None,
                },
            );
            Ok(true)
        }
        DidChangeTextDocument::METHOD => {
            let params: lsp_types::DidChangeTextDocumentParams =
                serde_json::from_value(notification.params)?;
            let uri = params.text_document.uri;
            // Full sync: the last change holds the whole text.
            let (Some(doc), Some(change)) = (
                state.documents.get_mut(&uri),
                params.content_changes.into_iter().last(),
            ) else {
                return Ok(false);
            };
            doc.text = change.text;
            doc.version = params.text_document.version;
            doc.analysis = None;
            let path = doc.path.clone();
            state.stale.insert(uri.as_str().to_string());
            state.touched(&uri, path.as_deref());
            Ok(true)
        }
        DidChangeConfiguration::METHOD => {
            let params: lsp_types::DidChangeConfigurationParams =
                serde_json::from_value(notification.params)?;
            if let Some(settings) = params.settings.get("cnnc") {
                state.configure(settings);
            }
            Ok(false)
        }
        DidCloseTextDocument::METHOD => {
            let params: lsp_types::DidCloseTextDocumentParams =
                serde_json::from_value(notification.params)?;
            let uri = params.text_document.uri;
            let closed = state.documents.remove(&uri);
            state.stale.remove(uri.as_str());
            // Those that import it read it from the disk again.
            let touched = state.touched(&uri, closed.and_then(|d| d.path).as_deref());
            publish(connection, uri, Vec::new(), None)?;
            Ok(touched)
        }
        _ => Ok(false),
    }
}

/// Analyses every stale document and publishes its diagnostics.
fn publish_stale(connection: &Connection, state: &mut State) -> Result<(), ServerError> {
    let stale = std::mem::take(&mut state.stale);
    if stale.is_empty() {
        return Ok(());
    }
    let overlay = state.overlay();
    for (uri, doc) in state.documents.iter_mut() {
        if !stale.contains(uri.as_str()) {
            continue;
        }
        let diagnostics = analyse(uri, doc, overlay.clone());
        publish(connection, uri.clone(), diagnostics, Some(doc.version))?;
    }
    Ok(())
}

/// Analyses `doc` (at `uri`, importing the open documents `open` from
/// their texts) and returns its diagnostics; a panic in the front end
/// becomes one, at the start, and leaves it unanalysed.
fn analyse(uri: &Uri, doc: &mut Document, open: Overlay) -> Vec<lsp_types::Diagnostic> {
    let path = path_of(uri);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let analysis = Arc::new(Analysis::over(path.as_deref(), &doc.text, open));
        let diagnostics = analysis.diagnostics(uri, &doc.text);
        (analysis, diagnostics)
    }));
    match result {
        Ok((analysis, diagnostics)) => {
            doc.analysis = Some(analysis);
            diagnostics
        }
        Err(panic) => vec![lsp_types::Diagnostic {
            message: format!(
                "cnnc failed while checking this file (a bug, please report it): {}",
                panic_message(&panic)
            ),
            severity: Some(lsp_types::DiagnosticSeverity::ERROR),
            source: Some("cnnc".into()),
            ..lsp_types::Diagnostic::default()
        }],
    }
}

fn publish(
    connection: &Connection,
    uri: Uri,
    diagnostics: Vec<lsp_types::Diagnostic>,
    version: Option<i32>,
) -> Result<(), ServerError> {
    let params = PublishDiagnosticsParams {
        uri,
        diagnostics,
        version,
    };
    connection
        .sender
        .send(Message::Notification(Notification::new(
            PublishDiagnostics::METHOD.to_string(),
            params,
        )))?;
    Ok(())
}

/// The response to `request`; a panic in its handler is its error.
fn respond(
    connection: &Connection,
    state: &mut State,
    request: Request,
) -> Result<Response, ServerError> {
    // A request reads the text the user has now: publish what changed.
    publish_stale(connection, state)?;
    let id = request.id.clone();
    let answer = catch_unwind(AssertUnwindSafe(|| handle(state, request)));
    Ok(match answer {
        Ok(Ok(value)) => Response::new_ok(id, value),
        Ok(Err((code, message))) => Response::new_err(id, code as i32, message),
        Err(panic) => Response::new_err(
            id,
            ErrorCode::InternalError as i32,
            format!(
                "cnnc failed on this request (a bug, please report it): {}",
                panic_message(&panic)
            ),
        ),
    })
}

/// A request's result, or its error code and message.
type Answer = Result<serde_json::Value, (ErrorCode, String)>;

fn handle(state: &mut State, request: Request) -> Answer {
    if std::env::var(PANIC_ON).is_ok_and(|m| m == request.method) {
        panic!("{PANIC_ON} is set to {}", request.method);
    }
    let method = request.method.clone();
    match method.as_str() {
        HoverRequest::METHOD => hover(state, params(request)?),
        Formatting::METHOD => format(state, params(request)?),
        CodeActionRequest::METHOD => code_actions(state, params(request)?),
        InlayHintRequest::METHOD => inlay_hints(state, params(request)?),
        DocumentSymbolRequest::METHOD => {
            let params: DocumentSymbolParams = params(request)?;
            let at = analysed(state, &params.text_document.uri)?;
            to_json(DocumentSymbolResponse::Nested(
                at.analysis.symbols(&at.doc.text),
            ))
        }
        GotoDefinition::METHOD => {
            let params: GotoDefinitionParams = params(request)?;
            let at = position(state, &params.text_document_position_params)?;
            let place = at.analysis.definition(at.uri, &at.doc.text, at.offset);
            to_json(place.map(|p| GotoDefinitionResponse::Scalar(Location::new(p.uri, p.range))))
        }
        References::METHOD => {
            let params: ReferenceParams = params(request)?;
            let at = position(state, &params.text_document_position)?;
            let spans = at
                .analysis
                .references(at.offset, params.context.include_declaration);
            to_json(at.locations(&spans))
        }
        PrepareRenameRequest::METHOD => {
            let params: TextDocumentPositionParams = params(request)?;
            let at = position(state, &params)?;
            let span = at.analysis.renamable(at.offset).map_err(refused)?;
            to_json(PrepareRenameResponse::Range(at.range(span)))
        }
        Rename::METHOD => rename(state, params(request)?),
        Completion::METHOD => {
            let params: CompletionParams = params(request)?;
            let at = position(state, &params.text_document_position)?;
            let path = path_of(at.uri);
            let items = at
                .analysis
                .complete(&at.doc.text, at.offset, path.as_deref());
            to_json(CompletionResponse::Array(items))
        }
        _ => Err((
            ErrorCode::MethodNotFound,
            format!("cnnc does not answer `{method}`"),
        )),
    }
}

/// A request's parameters.
fn params<P: serde::de::DeserializeOwned>(request: Request) -> Result<P, (ErrorCode, String)> {
    serde_json::from_value(request.params).map_err(|e| (ErrorCode::InvalidParams, e.to_string()))
}

fn to_json(value: impl serde::Serialize) -> Answer {
    serde_json::to_value(value).map_err(|e| (ErrorCode::InternalError, e.to_string()))
}

/// A request the document cannot answer as asked (a rename that would
/// change the program).
fn refused(message: String) -> (ErrorCode, String) {
    (ErrorCode::RequestFailed, message)
}

/// An analysed document, and a byte offset in it.
struct At<'s> {
    uri: &'s Uri,
    doc: &'s Document,
    analysis: Arc<Analysis>,
    index: LineIndex,
    offset: usize,
}

impl At<'_> {
    fn range(&self, span: crate::diagnostics::Span) -> lsp_types::Range {
        self.index.range(&self.doc.text, span.start, span.end)
    }

    /// Spans of the document as locations.
    fn locations(&self, spans: &[crate::diagnostics::Span]) -> Vec<Location> {
        spans
            .iter()
            .map(|&span| Location::new(self.uri.clone(), self.range(span)))
            .collect()
    }
}

/// The document at `uri` with its analysis (at its start).
fn analysed<'s>(state: &'s State, uri: &'s Uri) -> Result<At<'s>, (ErrorCode, String)> {
    let doc = document(state, uri)?;
    let analysis = doc.analysis.clone().ok_or_else(|| unanalysed(uri))?;
    Ok(At {
        uri,
        index: LineIndex::new(&doc.text),
        doc,
        analysis,
        offset: 0,
    })
}

/// The document and offset of a position.
fn position<'s>(
    state: &'s State,
    params: &'s TextDocumentPositionParams,
) -> Result<At<'s>, (ErrorCode, String)> {
    let mut at = analysed(state, &params.text_document.uri)?;
    at.offset = at.index.offset(&at.doc.text, params.position);
    Ok(at)
}

fn hover(state: &State, params: HoverParams) -> Answer {
    let at = position(state, &params.text_document_position_params)?;
    let hover = at.analysis.hover(at.offset).map(|(markdown, span)| Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value: markdown,
        }),
        range: Some(at.range(span)),
    });
    to_json(hover)
}

fn format(state: &State, params: DocumentFormattingParams) -> Answer {
    let doc = document(state, &params.text_document.uri)?;
    let mut sources = crate::diagnostics::SourceMap::default();
    let file = sources.add("document", doc.text.as_str());
    let formatted = crate::syntax::format(&doc.text, file)
        .map_err(|e| refused(format!("cannot format: {}", e.message)))?;
    let edits = if formatted == doc.text {
        Vec::new()
    } else {
        let index = LineIndex::new(&doc.text);
        vec![TextEdit::new(
            index.range(&doc.text, 0, doc.text.len()),
            formatted,
        )]
    };
    to_json(edits)
}

fn code_actions(state: &State, params: CodeActionParams) -> Answer {
    let at = analysed(state, &params.text_document.uri)?;
    let start = at.index.offset(&at.doc.text, params.range.start);
    let end = at.index.offset(&at.doc.text, params.range.end);
    let actions: Vec<CodeActionOrCommand> = at
        .analysis
        .quick_fixes(at.uri, &at.doc.text, start, end)
        .into_iter()
        .map(CodeActionOrCommand::CodeAction)
        .collect();
    to_json(actions)
}

fn inlay_hints(state: &State, params: InlayHintParams) -> Answer {
    let at = analysed(state, &params.text_document.uri)?;
    if !state.shape_hints {
        return to_json(Vec::<InlayHint>::new());
    }
    let start = at.index.offset(&at.doc.text, params.range.start);
    let end = at.index.offset(&at.doc.text, params.range.end);
    let hints: Vec<InlayHint> = at
        .analysis
        .shape_hints()
        .into_iter()
        .filter(|&(offset, _)| start <= offset && offset <= end)
        .map(|(offset, label)| InlayHint {
            position: at.index.position(&at.doc.text, offset),
            label: InlayHintLabel::String(label),
            kind: Some(InlayHintKind::TYPE),
            text_edits: None,
            tooltip: None,
            padding_left: Some(true),
            padding_right: None,
            data: None,
        })
        .collect();
    to_json(hints)
}

fn rename(state: &State, params: RenameParams) -> Answer {
    let at = position(state, &params.text_document_position)?;
    let spans = at
        .analysis
        .rename(at.offset, &params.new_name)
        .map_err(refused)?;
    let edits = spans
        .iter()
        .map(|&span| TextEdit::new(at.range(span), params.new_name.clone()))
        .collect();
    to_json(WorkspaceEdit {
        changes: Some(HashMap::from([(at.uri.clone(), edits)])),
        ..WorkspaceEdit::default()
    })
}

/// The open document at `uri`.
fn document<'s>(state: &'s State, uri: &Uri) -> Result<&'s Document, (ErrorCode, String)> {
    state.documents.get(uri).ok_or_else(|| {
        (
            ErrorCode::InvalidParams,
            format!("`{}` is not open", uri.as_str()),
        )
    })
}

fn unanalysed(uri: &Uri) -> (ErrorCode, String) {
    (
        ErrorCode::InternalError,
        format!("`{}` has not been analysed", uri.as_str()),
    )
}

/// The text a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
