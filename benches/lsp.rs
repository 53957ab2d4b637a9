//! The language server's latency on ResNet-34 (`examples/resnet34.cnn`):
//! the analysis of the whole file, the time from a change to its
//! diagnostics through the real server (the debounce included), and a
//! hover, the inlay hints of the whole file and a completion. Run with
//! `cargo bench --bench lsp`; the targets are 50 ms for
//! diagnostics and 20 ms for a hover.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "../tests/support/lsp_client.rs"]
mod lsp_client;

use lsp_client::Client;

const FILE: &str = "examples/resnet34.cnn";

fn analysis(c: &mut Criterion) {
    let text = std::fs::read_to_string(FILE).expect("the example");
    c.bench_function("lsp/analysis/resnet34_fashion", |b| {
        b.iter(|| cnnc::lsp::Analysis::of(Some(Path::new(FILE)), &text))
    });
}

fn server(c: &mut Criterion) {
    let text = std::fs::read_to_string(FILE).expect("the example");
    // Two texts that both compile, so that every change is analysed anew.
    let texts = [text.clone(), format!("{text}# edited\n")];
    let path = std::fs::canonicalize(FILE).expect("the example's path");
    let uri = format!("file://{}", path.display());
    let mut client = Client::start(&[]);
    client.open(&uri, &text);
    client.diagnostics(&uri);
    let mut version = 1;
    c.bench_function("lsp/change_to_diagnostics/resnet34_fashion", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                version += 1;
                let start = Instant::now();
                client.change(&uri, version, &texts[version as usize % 2]);
                let published = client.diagnostics(&uri);
                total += start.elapsed();
                assert_eq!(published["version"], version, "{published}");
            }
            total
        })
    });
    // The first convolution (line 8, in `conv(64, 7, ...)`).
    c.bench_function("lsp/hover/resnet34_fashion", |b| {
        b.iter(|| {
            let hover = client.hover(&uri, 7, 6);
            assert!(hover["result"]["contents"].is_object(), "{hover}");
        })
    });
    // The shapes of every line, and completion at an argument of the
    // first convolution (after `conv(`).
    let everything = lsp_client::json!({
        "textDocument": { "uri": uri },
        "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 99, "character": 0 } },
    });
    c.bench_function("lsp/inlay_hints/resnet34_fashion", |b| {
        b.iter(|| {
            let hints = client.request("textDocument/inlayHint", everything.clone());
            assert!(
                hints["result"].as_array().is_some_and(|h| !h.is_empty()),
                "{hints}"
            );
        })
    });
    c.bench_function("lsp/completion/resnet34_fashion", |b| {
        b.iter(|| {
            let items = client.at(
                "textDocument/completion",
                &uri,
                7,
                9,
                lsp_client::Value::Null,
            );
            assert!(
                items["result"].as_array().is_some_and(|i| !i.is_empty()),
                "{items}"
            );
        })
    });
    assert!(client.shut_down().success());
}

criterion_group!(benches, analysis, server);
criterion_main!(benches);
