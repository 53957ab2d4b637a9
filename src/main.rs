//! The `cnnc` command line.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use cnnc::{Diagnostics, TypedGraph};

/// cnnc: describe, check and compile convolutional networks written in the .cnn language.
#[derive(Parser)]
#[command(name = "cnnc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a .cnn file: every model in it is elaborated and shape-checked. Silent on success.
    Check {
        /// The .cnn file.
        file: PathBuf,
    },
    /// Print a Keras-like table of a model's layers, shapes, parameters, FLOPs and memory.
    Summary {
        /// The .cnn file.
        file: PathBuf,
        /// The model to summarise, when the file defines several.
        #[arg(long)]
        model: Option<String>,
    },
    /// Print a model's dataflow graph (DOT renders with Graphviz: `cnnc graph m.cnn | dot -Tsvg > m.svg`).
    Graph {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Compile a model and print a stage of its compilation.
    Compile {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// What to print: `graph` is the shape-inferred dataflow graph (stable text, for snapshot tests).
        #[arg(long, value_enum, default_value_t = Emit::Graph)]
        emit: Emit,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// One line per node with its inputs and shape.
    Text,
    /// Graphviz DOT, with a cluster per block instance.
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The shape-inferred dataflow graph.
    Graph,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check { file } => cnnc::check_file(file).map(|_| String::new()),
        Command::Summary { file, model } => load(file, model).map(|m| cnnc::emit::summary(&m)),
        Command::Graph {
            file,
            model,
            format,
        } => load(file, model).map(|m| match format {
            GraphFormat::Text => cnnc::emit::graph_text(&m),
            GraphFormat::Dot => cnnc::emit::dot(&m),
        }),
        Command::Compile {
            file,
            model,
            emit: Emit::Graph,
        } => load(file, model).map(|m| cnnc::emit::graph_text(&m)),
    };
    match result {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`cnnc summary m.cnn | head`) is not an error worth reporting.
            let _ = stdout.write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            eprint!("{}", diagnostics.render(color));
            ExitCode::FAILURE
        }
    }
}

fn load(file: &Path, model: &Option<String>) -> Result<TypedGraph, Diagnostics> {
    cnnc::load_model(file, model.as_deref())
}
