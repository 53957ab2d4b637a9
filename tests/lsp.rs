//! `cnnc lsp` as an editor drives it: the real binary, JSON-RPC over its
//! standard input and output.

#[path = "support/lsp_client.rs"]
mod lsp_client;

use lsp_client::{json, Client, Value};

const URI: &str = "file:///nonexistent/cnnc-lsp-test/m.cnn";

/// A model whose second line misspells an argument.
const MISSPELT: &str = "model m : [28, 28, 1] {\n    conv(8, 3, activaton: relu)\n    flatten\n}\n";
const FIXED: &str = "model m : [28, 28, 1] {\n    conv(8, 3, activation: relu)\n    flatten\n}\n";

#[test]
fn an_error_arrives_on_open_at_its_range_and_goes_when_fixed() {
    let mut client = Client::start(&[]);
    client.open(URI, MISSPELT);
    let published = client.diagnostics(URI);
    assert_eq!(published["version"], json!(1), "{published}");
    let diagnostics = published["diagnostics"].as_array().expect("a list");
    assert_eq!(diagnostics.len(), 1, "{published}");
    let d = &diagnostics[0];
    assert_eq!(
        d["range"],
        json!({ "start": { "line": 1, "character": 15 }, "end": { "line": 1, "character": 24 } }),
        "{d}"
    );
    let message = d["message"].as_str().expect("a message");
    assert!(message.contains("did you mean `activation`?"), "{message}");
    assert_eq!(d["severity"], json!(1));

    client.change(URI, 2, FIXED);
    let published = client.diagnostics(URI);
    assert_eq!(published["version"], json!(2), "{published}");
    assert_eq!(published["diagnostics"], json!([]), "{published}");
    assert!(client.shut_down().success());
}

#[test]
fn hovering_a_layer_shows_its_output_shape_and_parameters() {
    let mut client = Client::start(&[]);
    client.open(URI, FIXED);
    client.diagnostics(URI);
    let hover = client.hover(URI, 1, 6);
    let text = hover["result"]["contents"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no hover: {hover}"));
    // conv(8, 3) on 28x28x1: 26x26x8, 3 * 3 * 8 + 8 = 80 weights,
    // 26 * 26 * 8 f32 = 21.1 KiB of output.
    assert!(text.contains("**[26, 26, 8]** from [28, 28, 1]"), "{text}");
    assert!(text.contains("params 80 (80 trainable)"), "{text}");
    assert!(text.contains("activations 21.1 KiB"), "{text}");
    assert_eq!(
        hover["result"]["range"],
        json!({ "start": { "line": 1, "character": 4 }, "end": { "line": 1, "character": 32 } }),
        "{hover}"
    );
    // Between statements there is nothing to show.
    let nothing = client.hover(URI, 3, 1);
    assert_eq!(nothing["result"], Value::Null, "{nothing}");
    assert!(client.shut_down().success());
}

#[test]
fn hovering_a_block_call_shows_what_it_receives_for_each_call() {
    let text = "block twice(f) {\n    conv(f, 3, padding: same)\n    conv(f, 3, padding: same)\n}\nmodel m : [8, 8, 2] {\n    twice(4)\n    twice(6)\n}\n";
    let mut client = Client::start(&[]);
    client.open(URI, text);
    client.diagnostics(URI);
    let call = client.hover_text(URI, 5, 5);
    // Two convolutions 3x3 from 2 to 4 channels, then 4 to 4: 76 + 148.
    assert!(call.contains("**[8, 8, 4]** from [8, 8, 2]"), "{call}");
    assert!(call.contains("params 224"), "{call}");
    // The block's first conv, called once per call of the block.
    let inner = client.hover_text(URI, 1, 5);
    assert!(inner.contains("**[8, 8, 4]** from [8, 8, 2]"), "{inner}");
    assert!(inner.contains("**[8, 8, 6]** from [8, 8, 4]"), "{inner}");
    // The model's name gives its totals.
    let model = client.hover_text(URI, 4, 6);
    assert!(model.contains("**model m**: input [8, 8, 2]"), "{model}");
    assert!(client.shut_down().success());
}

#[test]
fn an_error_in_an_imported_file_is_shown_on_its_use_line() {
    let dir = std::env::temp_dir().join(format!("cnnc-lsp-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("parts.cnn"), "block part() {\n    conv(8, 3\n}\n").expect("write");
    let main = dir.join("main.cnn");
    let text = "# uses a broken file\nuse parts\nmodel m : [8, 8, 1] { part() }\n";
    std::fs::write(&main, text).expect("write");
    let uri = format!("file://{}", main.display());
    let mut client = Client::start(&[]);
    client.open(&uri, text);
    let published = client.diagnostics(&uri);
    let diagnostics = published["diagnostics"].as_array().expect("a list");
    assert_eq!(diagnostics.len(), 1, "{published}");
    assert_eq!(
        diagnostics[0]["range"]["start"]["line"],
        json!(1),
        "{published}"
    );
    let related = &diagnostics[0]["relatedInformation"][0]["location"];
    assert!(
        related["uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/parts.cnn")),
        "{published}"
    );
    assert!(client.shut_down().success());
}

#[test]
fn formatting_answers_with_the_canonical_text_or_refuses_what_does_not_parse() {
    let mut client = Client::start(&[]);
    let messy = "model m:[8,8,1]{conv(4,3)   # a\nrelu;flatten}\n";
    client.open(URI, messy);
    client.diagnostics(URI);
    let format = |client: &mut Client| {
        client.request(
            "textDocument/formatting",
            json!({ "textDocument": { "uri": URI }, "options": { "tabSize": 4, "insertSpaces": true } }),
        )
    };
    let edits = format(&mut client);
    assert_eq!(
        edits["result"][0]["newText"],
        json!("model m : [8, 8, 1] {\n    conv(4, 3)  # a\n    relu\n    flatten\n}\n"),
        "{edits}"
    );
    client.change(URI, 2, "model m : [8, 8, 1] {\n    conv(4, 3\n}\n");
    let refused = format(&mut client);
    assert_eq!(refused["error"]["code"], json!(-32803), "{refused}");
    assert!(client.shut_down().success());
}

#[test]
fn a_panicking_request_is_answered_as_an_error_and_the_server_lives_on() {
    let mut client = Client::start(&[("CNNC_LSP_TEST_PANIC", "textDocument/hover")]);
    client.open(URI, FIXED);
    client.diagnostics(URI);
    let hover = client.hover(URI, 1, 6);
    assert_eq!(hover["error"]["code"], json!(-32603), "{hover}");
    // Still serving: a change is analysed and a request answered.
    client.change(URI, 2, MISSPELT);
    let published = client.diagnostics(URI);
    assert_eq!(published["diagnostics"].as_array().map(Vec::len), Some(1));
    let unknown = client.request("textDocument/definition", json!({}));
    assert_eq!(unknown["error"]["code"], json!(-32601), "{unknown}");
    assert!(client.shut_down().success());
}

#[test]
fn exit_without_shutdown_is_a_failure() {
    let mut client = Client::start(&[]);
    client.notify("exit", Value::Null);
    assert!(!client.wait().success());
}

#[test]
fn hovering_a_layer_in_a_loop_counts_its_instances() {
    let text = "model m : [8, 8, 4] {\n    for i in 0..3 {\n        conv(4, 3, padding: same)\n    }\n    conv(2, 1)\n}\n";
    let mut client = Client::start(&[]);
    client.open(URI, text);
    client.diagnostics(URI);
    let hover = client.hover_text(URI, 2, 10);
    // 3 * 3 * 4 * 4 + 4 = 148 weights each time round.
    assert!(
        hover.contains("**[8, 8, 4]** from [8, 8, 4] · params 148 (148 trainable)"),
        "{hover}"
    );
    assert!(hover.contains("(×3)"), "{hover}");
    assert!(client.shut_down().success());
}
