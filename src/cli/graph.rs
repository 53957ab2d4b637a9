//! `cnnc graph`: a model's dataflow graph as text or DOT, or drawn by
//! Graphviz as a diagram.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use cnnc::viz::{diagram, Format};
use cnnc::{Diagnostics, TypedGraph};

use super::shared::{failure, load};

/// Print a model's dataflow graph, or draw it as a diagram (SVG and PNG need Graphviz's `dot`).
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
    /// The model, when the file defines several.
    #[arg(long)]
    model: Option<String>,
    /// Output format (default: after the output file's extension, else text).
    #[arg(long, value_enum)]
    format: Option<GraphFormat>,
    /// Write to this file instead of standard output (needed for svg and png).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Draw blocks nested deeper than this as single boxes (0: the model's own layers and
    /// blocks only) in dot, svg and png.
    #[arg(long)]
    depth: Option<usize>,
}

/// What `--format` names.
#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// One line per node with its inputs and shape.
    Text,
    /// Graphviz DOT, with a cluster per block instance.
    Dot,
    /// An SVG diagram, drawn by Graphviz.
    Svg,
    /// A PNG diagram, drawn by Graphviz.
    Png,
}

/// The graph as text or DOT (to standard output or `--output`), or as a
/// diagram drawn by Graphviz into `--output`.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    let model = load(&args.file, args.model.as_deref())?;
    write(&model, args).map_err(|e| failure(&args.file, e))
}

/// The graph in `--format`, else the format `--output`'s extension implies.
fn write(model: &TypedGraph, args: &Args) -> Result<String, String> {
    let output = args.output.as_deref();
    let text = match args.format.unwrap_or_else(|| format_of(output)) {
        GraphFormat::Text => cnnc::emit::graph_text(model),
        GraphFormat::Dot => cnnc::emit::dot_to_depth(model, args.depth),
        GraphFormat::Svg => return draw(model, Format::Svg, args),
        GraphFormat::Png => return draw(model, Format::Png, args),
    };
    match output {
        None => Ok(text),
        Some(path) => std::fs::write(path, text)
            .map(|()| format!("wrote {}\n", path.display()))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display())),
    }
}

/// The format `--output`'s extension implies: text when there is none.
fn format_of(output: Option<&Path>) -> GraphFormat {
    let extension = output
        .and_then(|o| o.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("svg") => GraphFormat::Svg,
        Some("png") => GraphFormat::Png,
        Some("dot" | "gv") => GraphFormat::Dot,
        _ => GraphFormat::Text,
    }
}

/// Draws the graph to `args.depth` as a `picture` into `--output`, which
/// a picture needs.
fn draw(model: &TypedGraph, picture: Format, args: &Args) -> Result<String, String> {
    let output = args.output.as_deref().ok_or_else(|| {
        format!(
            "`--format {0}` draws a picture: name the file with `-o FILE.{0}`",
            picture.extension()
        )
    })?;
    diagram::render(
        &cnnc::emit::dot_to_depth(model, args.depth),
        picture,
        output,
    )
    .map_err(|e| e.to_string())?;
    Ok(format!("wrote {}\n", output.display()))
}
