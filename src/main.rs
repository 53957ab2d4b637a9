//! The `cnnc` command line: parses the arguments, runs the command (each
//! in its own file under `cli/`), prints what it produced and sets the
//! exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command.run() {
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
