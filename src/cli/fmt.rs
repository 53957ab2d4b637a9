//! `cnnc fmt`: formats `.cnn` files in place, checks that they are
//! formatted (`--check`), or formats standard input to standard output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cnnc::diagnostics::{Diagnostic, SourceMap, Span};
use cnnc::runtime::weights::write_atomically;
use cnnc::Diagnostics;

/// Format .cnn files in one canonical layout: in place, or standard input to standard output when no file is given. Comments are kept; a file that does not parse is left as it is.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn files; a folder stands for the .cnn files under it.
    files: Vec<PathBuf>,
    /// Change nothing; fail, naming the first line that would change in
    /// each file, unless every file is formatted.
    #[arg(long)]
    check: bool,
}

/// Formats (or checks) the files, or standard input; prints the formatted
/// text of standard input, nothing for files.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    if args.files.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Diagnostics::message("<stdin>", format!("cannot read: {e}")))?;
        return format_stdin(&text, args.check);
    }
    let mut errors = Vec::new();
    let mut sources = SourceMap::default();
    for path in cnn_files(&args.files)? {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Diagnostics::message(&name, format!("cannot read: {e}")))?;
        let file = sources.add(name.clone(), text.as_str());
        match cnnc::syntax::format(&text, file) {
            Err(error) => errors.push(error),
            Ok(formatted) if formatted == text => {}
            Ok(formatted) if args.check => errors.push(unformatted(&text, &formatted, file)),
            Ok(formatted) => write_atomically(&path, formatted.as_bytes())
                .map_err(|e| Diagnostics::message(&name, format!("cannot write: {e}")))?,
        }
    }
    if errors.is_empty() {
        Ok(String::new())
    } else {
        Err(Diagnostics::new(errors, Arc::new(sources)))
    }
}

/// Standard input's text formatted; with `check`, nothing when it is
/// formatted and an error when it is not.
fn format_stdin(text: &str, check: bool) -> Result<String, Diagnostics> {
    let mut sources = SourceMap::default();
    let file = sources.add("<stdin>", text);
    let error = match cnnc::syntax::format(text, file) {
        Ok(formatted) if !check => return Ok(formatted),
        Ok(formatted) if formatted == text => return Ok(String::new()),
        Ok(formatted) => unformatted(text, &formatted, file),
        Err(error) => error,
    };
    Err(Diagnostics::new(vec![error], Arc::new(sources)))
}

/// The error for a file that `cnnc fmt` would change, at the first line
/// it would change.
fn unformatted(text: &str, formatted: &str, file: cnnc::diagnostics::FileId) -> Diagnostic {
    let mut start = 0;
    let mut lines = text.split_inclusive('\n');
    let mut new_lines = formatted.split_inclusive('\n');
    loop {
        match (lines.next(), new_lines.next()) {
            (Some(old), Some(new)) if old == new => start += old.len(),
            (Some(old), _) => {
                let end = start + old.trim_end_matches(['\n', '\r']).len();
                return Diagnostic::error(
                    Span::new(file, start, end),
                    "this file is not formatted",
                    "`cnnc fmt` would change this line",
                )
                .with_note("help: run `cnnc fmt` on the file to format it");
            }
            (None, _) => {
                return Diagnostic::error(
                    Span::new(file, start, start),
                    "this file is not formatted",
                    "`cnnc fmt` would change the end of the file",
                )
                .with_note("help: run `cnnc fmt` on the file to format it");
            }
        }
    }
}

/// The files `paths` name: a file as it is, a folder as the `.cnn` files
/// under it, in order.
fn cnn_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostics> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            collect(path, &mut files).map_err(|e| {
                Diagnostics::message(&path.display().to_string(), format!("cannot read: {e}"))
            })?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// The `.cnn` files under folder `dir`, sorted, into `files`.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if entry.extension().is_some_and(|e| e == "cnn") {
            files.push(entry);
        }
    }
    Ok(())
}
