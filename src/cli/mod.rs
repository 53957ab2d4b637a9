//! The `cnnc` command line: one file per command, each holding its clap
//! `Args` (whose doc comments are the command's `--help`) and one `run`
//! that turns the flags into the library's types, calls the library and
//! returns the text to print.
//!
//! The command line is the top layer: it belongs to the binary, not to the
//! `cnnc` library, so that the compiler itself enforces that no library
//! module imports it. Helpers more than one command needs (loading a
//! model, thread counts, data-set arguments, failures as diagnostics) are
//! written once, in [`shared`].
//!
//! Every function here stays under 80 lines; clippy checks it with the
//! threshold in `clippy.toml`.
#![warn(clippy::too_many_lines)]

mod bench;
mod check;
mod compile;
mod eval;
mod export;
mod fmt;
mod grad;
mod graph;
mod import;
mod init;
mod lsp;
mod maps;
mod overrides;
mod plot;
mod predict;
mod progress;
mod ranks;
mod run;
mod shapes;
mod shared;
mod show;
mod summary;

use clap::{Parser, Subcommand};

use cnnc::Diagnostics;

/// cnnc: describe, check and compile convolutional networks written in the .cnn language.
#[derive(Parser)]
#[command(name = "cnnc", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands, in the order `cnnc --help` lists them; each one's help
/// text is its `Args`' doc comment.
#[derive(Subcommand)]
pub enum Command {
    Check(check::Args),
    Summary(summary::Args),
    Graph(graph::Args),
    Compile(compile::Args),
    Run(run::Args),
    Eval(eval::Args),
    Predict(predict::Args),
    Grad(grad::Args),
    Init(init::Args),
    Export(export::Args),
    Import(import::Args),
    Fmt(fmt::Args),
    Lsp(lsp::Args),
    Show(show::Args),
    Shapes(shapes::Args),
    Maps(maps::Args),
    Plot(plot::Args),
    Bench(bench::Args),
}

impl Command {
    /// Runs the command: the text for standard output on success, else the
    /// diagnostics to render on standard error.
    pub fn run(&self) -> Result<String, Diagnostics> {
        match self {
            Command::Check(args) => check::run(args),
            Command::Summary(args) => summary::run(args),
            Command::Graph(args) => graph::run(args),
            Command::Compile(args) => compile::run(args),
            Command::Run(args) => run::run(args),
            Command::Eval(args) => eval::run(args),
            Command::Predict(args) => predict::run(args),
            Command::Grad(args) => grad::run(args),
            Command::Init(args) => init::run(args),
            Command::Export(args) => export::run(args),
            Command::Import(args) => import::run(args),
            Command::Fmt(args) => fmt::run(args),
            Command::Lsp(args) => lsp::run(args),
            Command::Show(args) => show::run(args),
            Command::Shapes(args) => shapes::run(args),
            Command::Maps(args) => maps::run(args),
            Command::Plot(args) => plot::run(args),
            Command::Bench(args) => bench::run(args),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap checks its definitions only when a command is parsed; this
    /// checks them all at once, so that a flag renamed in one place and not
    /// in another's `requires` or `conflicts_with` fails here.
    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
