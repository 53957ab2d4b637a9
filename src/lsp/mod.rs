//! `cnnc lsp`: a language server (LSP 3.17, over standard input and
//! output) on the front end as it is: errors as the user types, and on
//! hover a call's shapes, parameters, FLOPs and activation memory, which
//! the front end knows before anything runs; formatting by `cnnc fmt`.
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
pub mod text;

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{Formatting, HoverRequest, Request as _};
use lsp_types::{
    DocumentFormattingParams, Hover, HoverContents, HoverParams, HoverProviderCapability,
    MarkupContent, MarkupKind, OneOf, PositionEncodingKind, PublishDiagnosticsParams,
    ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit,
};

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
    /// The analysis of `text`; `None` while a change waits for one.
    analysis: Option<Arc<Analysis>>,
}

/// The open documents, and those changed since their last analysis (kept
/// apart from `Document::analysis`, which also stays `None` after an
/// analysis that panicked, so that it is not tried again until a change).
#[derive(Default)]
struct State {
    documents: HashMap<Uri, Document>,
    stale: BTreeSet<String>,
}

fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        position_encoding: Some(PositionEncodingKind::UTF16),
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        ..ServerCapabilities::default()
    }
}

/// The server's loop on `connection`.
fn serve(connection: &Connection) -> Result<(), ServerError> {
    connection.initialize(serde_json::to_value(capabilities())?)?;
    let mut state = State::default();
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
            state.stale.insert(doc.uri.as_str().to_string());
            state.documents.insert(
                doc.uri,
                Document {
                    text: doc.text,
                    version: doc.version,
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
            state.stale.insert(uri.as_str().to_string());
            Ok(true)
        }
        DidCloseTextDocument::METHOD => {
            let params: lsp_types::DidCloseTextDocumentParams =
                serde_json::from_value(notification.params)?;
            let uri = params.text_document.uri;
            state.documents.remove(&uri);
            state.stale.remove(uri.as_str());
            publish(connection, uri, Vec::new(), None)?;
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Analyses every stale document and publishes its diagnostics.
fn publish_stale(connection: &Connection, state: &mut State) -> Result<(), ServerError> {
    let stale = std::mem::take(&mut state.stale);
    for (uri, doc) in state.documents.iter_mut() {
        if !stale.contains(uri.as_str()) {
            continue;
        }
        let diagnostics = analyse(uri, doc);
        publish(connection, uri.clone(), diagnostics, Some(doc.version))?;
    }
    Ok(())
}

/// Analyses `doc` (at `uri`) and returns its diagnostics; a panic in the
/// front end becomes one, at the start, and leaves it unanalysed.
fn analyse(uri: &Uri, doc: &mut Document) -> Vec<lsp_types::Diagnostic> {
    let path = path_of(uri);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let analysis = Arc::new(Analysis::of(path.as_deref(), &doc.text));
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
    let invalid = |e: serde_json::Error| (ErrorCode::InvalidParams, e.to_string());
    match request.method.as_str() {
        HoverRequest::METHOD => {
            let params: HoverParams = serde_json::from_value(request.params).map_err(invalid)?;
            let position = params.text_document_position_params;
            let uri = position.text_document.uri;
            let doc = document(state, &uri)?;
            let analysis = doc.analysis.clone().ok_or_else(|| unanalysed(&uri))?;
            let index = LineIndex::new(&doc.text);
            let offset = index.offset(&doc.text, position.position);
            let hover = analysis.hover(offset).map(|(markdown, span)| Hover {
                contents: HoverContents::Markup(MarkupContent {
                    kind: MarkupKind::Markdown,
                    value: markdown,
                }),
                range: Some(index.range(&doc.text, span.start, span.end)),
            });
            Ok(serde_json::to_value(hover).unwrap_or_default())
        }
        Formatting::METHOD => {
            let params: DocumentFormattingParams =
                serde_json::from_value(request.params).map_err(invalid)?;
            let doc = document(state, &params.text_document.uri)?;
            let mut sources = crate::diagnostics::SourceMap::default();
            let file = sources.add("document", doc.text.as_str());
            let formatted = crate::syntax::format(&doc.text, file).map_err(|e| {
                (
                    ErrorCode::RequestFailed,
                    format!("cannot format: {}", e.message),
                )
            })?;
            let edits = if formatted == doc.text {
                Vec::new()
            } else {
                let index = LineIndex::new(&doc.text);
                vec![TextEdit::new(
                    index.range(&doc.text, 0, doc.text.len()),
                    formatted,
                )]
            };
            Ok(serde_json::to_value(edits).unwrap_or_default())
        }
        _ => Err((
            ErrorCode::MethodNotFound,
            format!("cnnc does not answer `{}`", request.method),
        )),
    }
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
