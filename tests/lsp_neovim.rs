//! A real editor against `cnnc lsp`: Neovim, headless, with its built-in
//! LSP client configured by `tests/editor/neovim.lua`, opens
//! `examples/resnet34.cnn` with a misspelt layer and checks that the
//! diagnostic and a hover arrive, that the quick fix applied by Neovim
//! clears the error, and that a stdlib block's definition is found.
//!
//! Without `nvim` on the path the test says so and passes, unless
//! `CNNC_REQUIRE_NVIM` is set (as `.ci/run` sets it, after installing
//! Debian's `neovim`): then a missing editor fails it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that makes a missing Neovim a failure.
const REQUIRE_NVIM: &str = "CNNC_REQUIRE_NVIM";

#[test]
fn neovim_shows_the_seeded_error_and_a_hover() {
    let has_nvim = Command::new("nvim")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_nvim {
        let required = std::env::var(REQUIRE_NVIM).is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "{REQUIRE_NVIM} is set and `nvim` is not on the path"
        );
        eprintln!("skipped: no `nvim` on the path (set {REQUIRE_NVIM} to require it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("cnnc-neovim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("resnet34.cnn");
    let example = std::fs::read_to_string("examples/resnet34.cnn").expect("the example");
    // Line 9 (from 1) is the first `batchnorm`.
    assert_eq!(example.lines().nth(8), Some("    batchnorm"));
    std::fs::write(
        &file,
        example.replacen("    batchnorm\n", "    batchnrom\n", 1),
    )
    .expect("write");
    let script = std::fs::canonicalize("tests/editor/neovim.lua").expect("the script");
    let mut child = Command::new("nvim")
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "-c"])
        .arg(format!("luafile {}", script.display()))
        .env("SERVER", env!("CARGO_BIN_EXE_cnnc"))
        .env("FILE", &file)
        .env("ERROR_LINE", "8")
        .env("ERROR_TEXT", "batchnrom")
        // On `conv` of the first line of the model's body: the model does
        // not compile, and the hover gives the layer's documentation.
        .env("HOVER_LINE", "8")
        .env("HOVER_COLUMN", "5")
        .env("HOVER_TEXT", "Conv2D")
        .env("FIX_TEXT", "    batchnorm")
        // `residual_unit` in the loop: the stdlib's block, opened from the
        // copy written to the cache (the scratch folder, below).
        .env("DEFINITION_LINE", "17")
        .env("DEFINITION_COLUMN", "10")
        .env("DEFINITION_FILE", "/resnet.cnn")
        // Neovim's log and state go to the scratch folder.
        .env("HOME", &dir)
        .env("XDG_CACHE_HOME", &dir)
        .env("XDG_STATE_HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nvim starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("Neovim did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(0), "Neovim said: {stderr}");
}
