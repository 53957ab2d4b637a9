//! The architecture as a diagram: the DOT text of
//! [`emit::dot`](crate::emit::dot) laid out and drawn by Graphviz's `dot`,
//! as SVG or PNG.
//!
//! Graphviz is the one program outside cnnc that a picture needs. It is
//! looked for as `dot` on the `PATH`, or where the environment variable
//! [`DOT_VARIABLE`] points; when it is missing the error says how to install
//! it, and that `--format dot` works without it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Format, VizError};

/// The environment variable that names the Graphviz program to run instead
/// of `dot` on the `PATH`.
pub const DOT_VARIABLE: &str = "CNNC_DOT";

/// Lays out `dot` (DOT text) with Graphviz and writes the drawing to `path`
/// as `format` (SVG or PNG), which its extension must name.
pub fn render(dot: &str, format: Format, path: &Path) -> Result<(), VizError> {
    Format::of(path, &[format])?;
    run_graphviz(&graphviz_program(), dot, format, path)
}

/// The Graphviz program to run: `$CNNC_DOT` when set, else `dot`.
pub fn graphviz_program() -> String {
    std::env::var(DOT_VARIABLE).unwrap_or_else(|_| "dot".to_string())
}

/// Runs `program` (Graphviz's `dot`) on `dot`, writing `format` to `path`.
/// Fails with [`VizError::GraphvizMissing`] when `program` cannot be found,
/// and [`VizError::Graphviz`] when it fails.
pub fn run_graphviz(program: &str, dot: &str, format: Format, path: &Path) -> Result<(), VizError> {
    let failed = |message: String| VizError::Graphviz {
        program: program.to_string(),
        message,
    };
    let mut child = Command::new(program)
        .arg(format!("-T{}", format.extension()))
        .arg("-o")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VizError::GraphvizMissing {
                program: program.to_string(),
            },
            _ => failed(format!("cannot start it: {e}")),
        })?;
    // Feeding stdin before reading stderr cannot deadlock: `dot` reads all
    // of its input before it writes anything.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| failed(format!("cannot send it the graph: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(failed(if said.is_empty() {
            format!("it ended with {}", output.status)
        } else {
            said
        }))
    }
}
