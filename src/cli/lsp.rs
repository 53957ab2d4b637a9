//! `cnnc lsp`: the language server, on standard input and output.

use cnnc::Diagnostics;

/// Run the language server (LSP) on standard input and output, for an editor: errors as you type, and shapes, parameters and FLOPs on hover.
#[derive(clap::Args)]
pub struct Args {}

/// Serves until the editor shuts the server down; prints nothing (standard output is the protocol's).
pub fn run(_args: &Args) -> Result<String, Diagnostics> {
    cnnc::lsp::serve_stdio()
        .map(|()| String::new())
        .map_err(|e| Diagnostics::message("cnnc lsp", e.to_string()))
}
