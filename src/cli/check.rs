//! `cnnc check`: elaborates and shape-checks every model of a file.

use std::path::PathBuf;

use cnnc::Diagnostics;

/// Check a .cnn file: every model in it is elaborated and shape-checked. Silent on success.
#[derive(clap::Args)]
pub struct Args {
    /// The .cnn file.
    file: PathBuf,
}

/// Nothing on success; every model's errors otherwise.
pub fn run(args: &Args) -> Result<String, Diagnostics> {
    cnnc::check_file(&args.file).map(|_| String::new())
}
