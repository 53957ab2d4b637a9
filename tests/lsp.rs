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
    // The notes are related information too, at the error.
    let related = d["relatedInformation"]
        .as_array()
        .expect("related information");
    let notes: Vec<&Value> = related.iter().map(|r| &r["message"]).collect();
    assert!(
        notes.contains(&&json!("help: did you mean `activation`?")),
        "{d}"
    );
    assert!(
        related.iter().all(|r| r["location"]["range"] == d["range"]),
        "{d}"
    );

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
    let unknown = client.request("textDocument/codeLens", json!({}));
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

/// `text` with the protocol's text edits `edits` made.
fn apply(text: &str, edits: &Value) -> String {
    let offset = |position: &Value| {
        let line = position["line"].as_u64().expect("a line") as usize;
        let start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
        // The tests' texts are ASCII: a UTF-16 column is a byte.
        start + position["character"].as_u64().expect("a column") as usize
    };
    let mut edits: Vec<&Value> = edits.as_array().expect("edits").iter().collect();
    edits.sort_by_key(|e| std::cmp::Reverse(offset(&e["range"]["start"])));
    let mut text = text.to_string();
    for edit in edits {
        let range = offset(&edit["range"]["start"])..offset(&edit["range"]["end"]);
        text.replace_range(range, edit["newText"].as_str().expect("new text"));
    }
    text
}

#[test]
fn a_did_you_mean_is_a_quick_fix() {
    let mut client = Client::start(&[]);
    client.open(URI, MISSPELT);
    let published = client.diagnostics(URI);
    let diagnostic = published["diagnostics"][0].clone();
    let actions = client.request(
        "textDocument/codeAction",
        json!({
            "textDocument": { "uri": URI },
            "range": diagnostic["range"],
            "context": { "diagnostics": [diagnostic] },
        }),
    );
    let action = &actions["result"][0];
    assert_eq!(action["kind"], json!("quickfix"), "{actions}");
    assert_eq!(
        action["title"],
        json!("Replace `activaton` with `activation`")
    );
    assert_eq!(action["diagnostics"][0]["range"], diagnostic["range"]);
    assert_eq!(apply(MISSPELT, &action["edit"]["changes"][URI]), FIXED);
    // Elsewhere in the file there is nothing to fix.
    let none = client.request(
        "textDocument/codeAction",
        json!({
            "textDocument": { "uri": URI },
            "range": { "start": { "line": 2, "character": 0 }, "end": { "line": 2, "character": 4 } },
            "context": { "diagnostics": [] },
        }),
    );
    assert_eq!(none["result"], json!([]), "{none}");
    assert!(client.shut_down().success());
}

/// The inlay hints of the whole of `URI` as (line, column, label).
fn hints(client: &mut Client) -> Vec<(u64, u64, String)> {
    let response = client.request(
        "textDocument/inlayHint",
        json!({
            "textDocument": { "uri": URI },
            "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 99, "character": 0 } },
        }),
    );
    let hints = response["result"].as_array().expect("hints").iter();
    hints
        .map(|h| {
            let label = h["label"].as_str().expect("a label").to_string();
            let at = &h["position"];
            (
                at["line"].as_u64().unwrap(),
                at["character"].as_u64().unwrap(),
                label,
            )
        })
        .collect()
}

#[test]
fn inlay_hints_show_each_line_s_shape_unless_switched_off() {
    let mut client = Client::start_with(&[], json!({ "shapeHints": false }));
    client.open(URI, FIXED);
    client.diagnostics(URI);
    assert_eq!(hints(&mut client), []);
    client.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "cnnc": { "shapeHints": true } } }),
    );
    // conv(8, 3) on 28x28x1 gives 26x26x8, flattened 5408.
    assert_eq!(
        hints(&mut client),
        [
            (1, 32, "# 26x26x8".to_string()),
            (2, 11, "# 5408".to_string())
        ]
    );
    assert!(client.shut_down().success());
}

/// A document that uses a stdlib block and one of its own.
const NAVIGATED: &str = "use resnet\n\nblock unit(f) {\n    let g = 2 * f\n    conv(g, 3, padding: same)\n}\n\nmodel m : [8, 8, 4] {\n    unit(4)\n    residual_unit(8)\n    unit(8)\n}\n";

#[test]
fn symbols_definitions_references_and_renames_follow_the_names() {
    let cache = std::env::temp_dir().join(format!("cnnc-lsp-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let cache_text = cache.to_str().expect("a UTF-8 path");
    let mut client = Client::start(&[("XDG_CACHE_HOME", cache_text)]);
    client.open(URI, NAVIGATED);
    client.diagnostics(URI);

    let symbols = client.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": URI } }),
    );
    let names: Vec<(&str, usize)> = symbols["result"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["children"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(names, [("unit", 1), ("m", 0)], "{symbols}");

    // A stdlib block: its definition in a read-only copy of the module.
    let definition = client.at("textDocument/definition", URI, 9, 8, Value::Null);
    let target = definition["result"]["uri"]
        .as_str()
        .expect("a location")
        .to_string();
    let path = target.strip_prefix("file://").expect("a file URI");
    assert!(path.starts_with(cache_text), "{target}");
    assert!(path.ends_with("/resnet.cnn"), "{target}");
    let module = std::fs::read_to_string(path).expect("the module's copy");
    let line = definition["result"]["range"]["start"]["line"]
        .as_u64()
        .unwrap() as usize;
    assert!(module
        .lines()
        .nth(line)
        .unwrap()
        .starts_with("block residual_unit("));

    // The document's own block, from its second call.
    let definition = client.at("textDocument/definition", URI, 10, 5, Value::Null);
    assert_eq!(definition["result"]["uri"], json!(URI));
    assert_eq!(
        definition["result"]["range"]["start"],
        json!({ "line": 2, "character": 6 })
    );
    let references = client.at(
        "textDocument/references",
        URI,
        2,
        7,
        json!({ "context": { "includeDeclaration": false } }),
    );
    let lines: Vec<u64> = references["result"]
        .as_array()
        .expect("references")
        .iter()
        .map(|r| r["range"]["start"]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [8, 10], "{references}");

    // Renaming the `let` renames its use; a name that is taken is refused.
    let prepared = client.at("textDocument/prepareRename", URI, 4, 9, Value::Null);
    assert_eq!(
        prepared["result"]["start"],
        json!({ "line": 4, "character": 9 }),
        "{prepared}"
    );
    let renamed = client.at(
        "textDocument/rename",
        URI,
        4,
        9,
        json!({ "newName": "width" }),
    );
    let text = apply(NAVIGATED, &renamed["result"]["changes"][URI]);
    assert!(
        text.contains("let width = 2 * f\n    conv(width, 3"),
        "{text}"
    );
    let refused = client.at("textDocument/rename", URI, 4, 9, json!({ "newName": "f" }));
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already a name")),
        "{refused}"
    );
    assert!(client.shut_down().success());
    std::fs::remove_dir_all(&cache).ok();
}

/// The labels offered where `|` is in `text`.
fn completions(client: &mut Client, version: i32, text: &str) -> Vec<Value> {
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find('|').map(|c| (i as u32, c as u32)))
        .expect("a cursor");
    client.change(URI, version, &text.replace('|', ""));
    client.diagnostics(URI);
    let response = client.at("textDocument/completion", URI, line, column, Value::Null);
    response["result"].as_array().expect("completions").clone()
}

#[test]
fn completion_offers_arguments_with_defaults_then_their_values() {
    let mut client = Client::start(&[]);
    client.open(URI, FIXED);
    client.diagnostics(URI);
    let arguments = completions(
        &mut client,
        2,
        "model m : [28, 28, 1] {\n    conv(8, 3, |)\n}\n",
    );
    let padding = arguments
        .iter()
        .find(|c| c["label"] == json!("padding:"))
        .unwrap_or_else(|| panic!("no padding: {arguments:?}"));
    assert_eq!(padding["detail"], json!("= valid"));
    assert_eq!(padding["insertText"], json!("padding: "));
    let values = completions(
        &mut client,
        3,
        "model m : [28, 28, 1] {\n    conv(8, 3, padding: |)\n}\n",
    );
    let labels: Vec<&str> = values.iter().filter_map(|c| c["label"].as_str()).collect();
    assert_eq!(labels, ["same", "valid"]);
    let modules = completions(&mut client, 4, "use |\n");
    assert!(
        modules.iter().any(|c| c["label"] == json!("resnet")),
        "{modules:?}"
    );
    assert!(client.shut_down().success());
}

#[test]
fn an_import_is_read_from_its_open_editor_until_it_closes() {
    let dir = std::env::temp_dir().join(format!("cnnc-lsp-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let lib = "block unit {\n    conv(4, 3)\n}\n";
    std::fs::write(dir.join("lib.cnn"), lib).expect("lib.cnn");
    let main = "use lib\n\nmodel m : [8, 8, 1] {\n    unit\n}\n";
    std::fs::write(dir.join("main.cnn"), main).expect("main.cnn");
    let uri = |name: &str| format!("file://{}", dir.join(name).display());
    let (lib_uri, main_uri) = (uri("lib.cnn"), uri("main.cnn"));
    let mut client = Client::start(&[]);
    client.open(&main_uri, main);
    assert_eq!(client.diagnostics(&main_uri)["diagnostics"], json!([]));
    client.open(&lib_uri, lib);
    assert_eq!(client.diagnostics(&lib_uri)["diagnostics"], json!([]));
    // Opening the library checks the model again, from the editor's text.
    assert_eq!(client.diagnostics(&main_uri)["diagnostics"], json!([]));

    // An unsaved edit of the library shows in the model that uses it, at
    // the call that reached it.
    client.change(
        &lib_uri,
        2,
        "block unit {\n    conv(4, 3, paddng: same)\n}\n",
    );
    let published = client.diagnostics(&main_uri);
    let errors = published["diagnostics"].as_array().expect("a list");
    assert_eq!(errors.len(), 1, "{published}");
    assert_eq!(
        errors[0]["range"]["start"],
        json!({ "line": 3, "character": 4 })
    );
    assert!(
        errors[0]["message"].as_str().unwrap().contains("paddng"),
        "{published}"
    );

    // Closed unsaved, the library is read from the disk again.
    client.notify(
        "textDocument/didClose",
        json!({ "textDocument": { "uri": lib_uri } }),
    );
    assert_eq!(client.diagnostics(&main_uri)["diagnostics"], json!([]));
    assert!(client.shut_down().success());
    std::fs::remove_dir_all(&dir).ok();
}
