//! Fuzzing the front end: whatever the text, compiling it returns `Ok` or
//! `Err` and rendering the errors works; it never panics, overflows the
//! stack or hangs.
//!
//! Three sources of text:
//! - token soup: random sequences of the language's tokens, bare or inside
//!   a model's body, mostly syntax errors;
//! - layer soup: random statements that parse, with extreme numbers (0, -1,
//!   2^32, 10^11, 1e308...), for elaboration and shape inference;
//! - mutants: the real files of `stdlib/` and `examples/` with a few random
//!   edits (a range deleted or duplicated, two tokens swapped, a number
//!   replaced by 0, -1, 99999999999 or 1e308).
//!
//! A panic found here becomes a case in `tests/bad/` once fixed. Case
//! counts keep the whole file at a few seconds in a debug build.
//!
//! Fuzzing the boundary where data enters, too: random batches of labels
//! (0, the classes, one less, 2^24 + 1, u32::MAX, anything) through
//! `Trainer::train_step` and through evaluation on a tiny compiled model
//! give `Ok` or the typed error that names the bad label, never a panic or
//! a crash; and any f32 at all in a labels buffer handed straight to the
//! executor stays inside the cross-entropy kernel's rows.

use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;

use cnnc::autodiff::LossSpec;
use cnnc::config::TrainConfig;
use cnnc::data::Dataset;
use cnnc::plan::Role;
use cnnc::runtime::binding::{self, Lent};
use cnnc::runtime::executor::Executor;
use cnnc::runtime::training::{Trainer, TrainingError};
use cnnc::runtime::weights;
use cnnc::train::fit::{self, FitError};
use cnnc::TypedGraph;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};

/// Compiles `text` as a file of `examples/` (so that relative imports
/// resolve) and renders its errors, if any.
fn compile(name: &str, text: &str, model: Option<&str>) {
    if let Err(diagnostics) = cnnc::compile_source(name, text, Some(Path::new("examples")), model) {
        let rendered = diagnostics.to_string();
        assert!(
            rendered.contains("error"),
            "errors rendered as {rendered:?}"
        );
    }
}

/// No persistence file: a failure prints its (shrunk) input, which goes
/// into `tests/bad/`.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

const TOKENS: &[&str] = &[
    "conv",
    "conv(",
    "dense(",
    "maxpool(",
    "concat(",
    "relu",
    "flatten",
    "batchnorm",
    "global_avg_pool",
    "se_block(",
    "residual_unit(",
    "x",
    "y",
    "filters",
    "_",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "->",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "..",
    "==",
    "<",
    ">=",
    ":",
    ",",
    ";",
    "=",
    ".",
    ".channels",
    ".shape",
    "in",
    "let",
    "for",
    "if",
    "else",
    "as",
    "where",
    "not",
    "and",
    "or",
    "true",
    "output",
    "model",
    "block",
    "train",
    "use",
    "use se",
    "0",
    "1",
    "2",
    "3",
    "64",
    "0.5",
    "1e308",
    "99999999999",
    "9223372036854775807",
    "99999999999999999999999",
    "\"s\"",
    "\"",
    "# comment\n",
    "padding: same",
    "stride:",
    "activation: relu",
    "\n",
];

const SEPARATORS: &[&str] = &[" ", "", "\n"];

/// A random sequence of tokens.
fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec((select(TOKENS), select(SEPARATORS)), 0..60).prop_map(|tokens| {
        tokens
            .into_iter()
            .flat_map(|(token, sep)| [token, sep])
            .collect()
    })
}

/// Numbers for sizes and counts: mostly plausible ones, so that models get
/// far enough for shape inference, and the awkward ones often.
fn number() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => select(&["1", "2", "3", "5", "7", "16", "28", "64", "in.channels", "in.channels // 2"][..]),
        1 => select(&[
            "0", "-1", "-64", "0.5", "1.5", "64 / 3", "65536", "2147483648", "4294967296",
            "99999999999", "9223372036854775807", "1e308",
        ][..]),
    ]
}

/// One statement of a model body.
fn statement() -> impl Strategy<Value = String> {
    let padding = select(
        &[
            "same",
            "valid",
            "smae",
            "1",
            "[1, 2]",
            "[[0, 1], [2, 0]]",
            "[1, 0, 2, 3]",
            "[1, -1]",
            "[1, 1, 1]",
            "[2147483648, 0]",
            "[1.5, 1]",
        ][..],
    );
    prop_oneof![
        (number(), number(), number(), padding.clone())
            .prop_map(|(f, k, s, p)| format!("conv({f}, {k}, stride: {s}, padding: {p})")),
        (number(), number())
            .prop_map(|(k, d)| format!("conv(8, {k}, dilation: {d}, padding: same)")),
        (number(), number()).prop_map(|(k, m)| format!("depthwise_conv({k}, multiplier: {m})")),
        (number(), number()).prop_map(|(f, k)| format!("separable_conv({f}, {k})")),
        (number(), number(), padding.clone())
            .prop_map(|(n, s, p)| format!("maxpool({n}, stride: {s}, padding: {p})")),
        number().prop_map(|n| format!("avgpool({n}, trainable: true, activation: tanh)")),
        (number(), number(), padding).prop_map(|(n, s, p)| format!(
            "avgpool({n}, stride: {s}, padding: {p}, ceil_mode: true)"
        )),
        (number(), number(), number(), number())
            .prop_map(|(t, b, l, r)| format!("zero_padding([{t}, {b}, {l}, {r}])")),
        (number(), number()).prop_map(|(h, w)| format!("cropping([{h}, {w}])")),
        number().prop_map(|n| format!("depth_maxpool({n})")),
        number().prop_map(|n| format!("dense({n}, activation: relu)")),
        number().prop_map(|n| format!("rbf({n})")),
        number().prop_map(|r| format!("dropout({r})")),
        Just("flatten".to_string()),
        Just("global_avg_pool".to_string()),
        Just("batchnorm".to_string()),
        Just("lrn".to_string()),
        Just("relu".to_string()),
        number().prop_map(|n| format!("in + in -> conv({n}, 1)")),
        number().prop_map(|n| format!("concat(in, in -> conv({n}, 1), axis: -1)")),
        number().prop_map(|n| format!("concat(in, in -> maxpool({n}))")),
        number().prop_map(|n| format!("in * (in -> global_avg_pool -> dense({n}))")),
        number().prop_map(|n| format!("for i in 0..{n} {{ relu }}")),
        number().prop_map(|n| format!("if in.channels > {n} {{ maxpool(2) }} else {{ relu }}")),
        number().prop_map(|n| format!("let s = in.shape[{n}]")),
        number().prop_map(|n| format!("output o{n} = global_avg_pool -> dense(10)")),
        number().prop_map(|n| format!(
            "conv(2, {n}, init: zeros where [_, {n}, _, 0] = 1, [0..{n}, _, _, 1] = 1)"
        )),
        number().prop_map(|n| format!("se_block({n})")),
        number().prop_map(|n| format!("residual_unit({n}, stride: 2)")),
        // The forms after the chapter: grouped and transposed convolutions,
        // resampling, slices, the newer activations and expressions.
        (number(), number()).prop_map(|(f, g)| format!("conv({f}, 3, padding: same, groups: {g})")),
        (number(), number(), number()).prop_map(|(f, s, o)| format!(
            "conv_transpose({f}, 3, stride: {s}, padding: same, output_padding: {o})"
        )),
        (number(), select(&["nearest", "bilinear", "cubic"][..]))
            .prop_map(|(n, m)| format!("upsample({n}, mode: {m})")),
        (number(), number()).prop_map(|(a, b)| format!("channels({a}, {b})")),
        number().prop_map(|n| format!("reshape([{n}, -1])")),
        Just("current + (current -> relu6)".to_string()),
        select(
            &[
                "swish",
                "gelu(approximate: true)",
                "hard_swish",
                "hard_sigmoid",
                "mish"
            ][..]
        )
        .prop_map(|a| a.to_string()),
        Just("batchnorm(center: false, scale: false)".to_string()),
        number().prop_map(|n| format!("conv(int(in.channels * {n}), 1)")),
        number().prop_map(|n| format!("conv(max(min({n}, 8), len([1, 2])), 1)")),
        number().prop_map(|n| format!("for (a, b) in [[{n}, 1]] {{ conv(a, b) }}")),
        number().prop_map(|n| format!("for i in 0..={n} {{ relu }}")),
        number().prop_map(|n| format!("concat([current, current -> conv({n}, 1)])")),
    ]
}

/// A model of random statements on a random input shape.
fn layer_soup() -> impl Strategy<Value = String> {
    (
        number(),
        number(),
        number(),
        prop::collection::vec(statement(), 0..12),
    )
        .prop_map(|(h, w, c, body)| {
            format!(
                "use se\nuse resnet\nmodel fuzz : [{h}, {w}, {c}] {{\n    {}\n}}\n",
                body.join("\n    ")
            )
        })
}

/// The files of `stdlib/` and `examples/`: name and text.
fn corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut files = Vec::new();
        for dir in ["stdlib", "examples"] {
            let mut paths: Vec<_> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|entry| entry.expect("directory entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
                .collect();
            paths.sort();
            for path in paths {
                let name = path
                    .file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).expect("readable file");
                files.push((name, text));
            }
        }
        assert!(!files.is_empty(), "no .cnn files to mutate");
        files
    })
}

/// An edit of a file's text; positions are chosen relative to its length.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(Index, usize),
    Duplicate(Index, usize),
    SwapTokens(Index, Index),
    ReplaceNumber(Index, &'static str),
    Insert(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..40usize).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<Index>(), 1..40usize).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapTokens(a, b)),
        (
            any::<Index>(),
            select(&["0", "-1", "99999999999", "1e308"][..])
        )
            .prop_map(|(at, n)| Mutation::ReplaceNumber(at, n)),
        (any::<Index>(), select(TOKENS)).prop_map(|(at, t)| Mutation::Insert(at, t)),
    ]
}

/// The largest char boundary of `text` at or below `i`.
fn boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Byte ranges of the tokens of `text`: runs of name and number characters,
/// and single other characters.
fn tokens(text: &str) -> Vec<(usize, usize)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut spans = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut end = start + c.len_utf8();
        if word(c) {
            while let Some(&(i, next)) = chars.peek() {
                if !word(next) {
                    break;
                }
                end = i + next.len_utf8();
                chars.next();
            }
        }
        spans.push((start, end));
    }
    spans
}

fn apply(text: &mut String, mutation: &Mutation) {
    match mutation {
        Mutation::Delete(at, len) => {
            let start = boundary(text, at.index(text.len() + 1));
            let end = boundary(text, start + len);
            text.replace_range(start..end, "");
        }
        Mutation::Duplicate(at, len) => {
            let start = boundary(text, at.index(text.len() + 1));
            let end = boundary(text, start + len);
            let copy = text[start..end].to_string();
            text.insert_str(end, &copy);
        }
        Mutation::SwapTokens(a, b) => {
            let spans = tokens(text);
            if spans.len() < 2 {
                return;
            }
            let (mut x, mut y) = (spans[a.index(spans.len())], spans[b.index(spans.len())]);
            if x.0 > y.0 {
                std::mem::swap(&mut x, &mut y);
            }
            if x == y {
                return;
            }
            let (first, second) = (text[x.0..x.1].to_string(), text[y.0..y.1].to_string());
            text.replace_range(y.0..y.1, &first);
            text.replace_range(x.0..x.1, &second);
        }
        Mutation::ReplaceNumber(at, number) => {
            let numbers: Vec<(usize, usize)> = tokens(text)
                .into_iter()
                .filter(|&(s, _)| text[s..].starts_with(|c: char| c.is_ascii_digit()))
                .collect();
            if !numbers.is_empty() {
                let (s, e) = numbers[at.index(numbers.len())];
                text.replace_range(s..e, number);
            }
        }
        Mutation::Insert(at, token) => {
            let at = boundary(text, at.index(text.len() + 1));
            text.insert_str(at, &format!(" {token} "));
        }
    }
}

/// The models a file defines (`model NAME`), to compile each of them.
fn model_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("model "))
        .filter_map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

/// A loop makes a chain of nearly `MAX_NODES` nodes; compiling it must not
/// recurse once per node. The layer soup found this (a stack overflow in
/// the debug build's graph verification, on a chain of 65,536 nodes before
/// elaboration bounded them); the test's thread has half the 2 MiB stack
/// of a test thread, so that the shorter chain still overflows it if
/// anything recurses once per node.
#[test]
fn a_long_chain_compiles_on_a_small_stack() {
    let text = "model chain : [4, 4, 1] {\n    for i in 0..19000 { relu }\n}\n";
    let compiled = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            cnnc::compile_source("chain.cnn", text, None, None).map(|g| g.graph.nodes.node_count())
        })
        .expect("a thread")
        .join()
        .expect("no panic");
    assert_eq!(compiled.map_err(|d| d.to_string()), Ok(19_001));
}

/// Compiles `text` on a thread with the default 2 MiB stack of a test
/// thread, where recursion once per level of the input would overflow (and
/// abort the whole test binary); the errors come back rendered.
fn compile_on_a_small_stack(text: String) -> Result<usize, String> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            cnnc::compile_source("deep.cnn", &text, None, None)
                .map(|g| g.graph.nodes.node_count())
                .map_err(|d| d.to_string())
        })
        .expect("a thread")
        .join()
        .expect("no panic")
}

/// `count` blocks, each calling the next, the last one a `relu`; the model
/// calls the first.
fn block_chain(count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        text += &format!("block b{i} {{ b{} }}\n", i + 1);
    }
    text + &format!("block b{count} {{ relu }}\nmodel m : [4, 4, 1] {{ b0 }}\n")
}

/// A generated file can chain thousands of blocks: elaboration recursed
/// once per block call on the caller's stack and aborted on a chain 3,000
/// deep (issue 12); it now grows its stack on the heap instead.
#[test]
fn a_chain_of_3000_blocks_compiles_on_a_small_stack() {
    assert_eq!(compile_on_a_small_stack(block_chain(3000)), Ok(2));
}

/// Past `MAX_CALL_DEPTH` nested calls, elaboration stops with an error at
/// the call, naming the first and the last blocks of the chain.
#[test]
fn block_calls_nested_deeper_than_the_limit_are_an_error() {
    let depth = cnnc::elaborate::MAX_CALL_DEPTH;
    let error = compile_on_a_small_stack(block_chain(depth + 10)).expect_err("too deep");
    assert!(
        error.contains(&format!("error: block calls nested deeper than {depth}")),
        "{error}"
    );
    let calls = format!(
        "the calls: b0 -> b1 -> b2 -> ... -> b{} -> b{} -> b{} -> b{depth}",
        depth - 3,
        depth - 2,
        depth - 1
    );
    assert!(error.contains(&calls), "{error}");
}

/// `n` nested `not`s around `true`, bound to a name in a model.
fn nots(n: usize) -> String {
    format!(
        "model m : [4, 4, 1] {{\n    let x = {}true\n    relu\n}}\n",
        "not ".repeat(n)
    )
}

/// 64,000 nested `not`s overflowed the parser's stack (issue 12); the
/// parser now reads a run of `not`s as a loop, and the depth check rejects
/// the expression at its 257th level.
#[test]
fn sixty_four_thousand_nots_are_an_error_on_a_small_stack() {
    let error = compile_on_a_small_stack(nots(64_000)).expect_err("too deep");
    assert!(
        error.contains("error: expressions are nested too deeply"),
        "{error}"
    );
    // The 257th `not` (four bytes each) starts at column 13 + 256 * 4.
    assert!(error.contains("deep.cnn:2:1037"), "{error}");
}

/// A long line of additions is one expression nested once per `+`: the
/// parser built and then dropped it by recursion, which overflowed on a
/// long enough line (issue 12).
#[test]
fn a_long_line_of_additions_is_an_error_on_a_small_stack() {
    let text = format!(
        "model m : [4, 4, 1] {{ let x = {}1\n relu }}\n",
        "1 + ".repeat(50_000)
    );
    let error = compile_on_a_small_stack(text).expect_err("too deep");
    assert!(
        error.contains("error: expressions are nested too deeply"),
        "{error}"
    );
    assert!(error.contains("deep.cnn:1:31"), "{error}");
}

/// `if` conditions nest without brackets (`if if c { a } { b }`): the
/// parser recursed once per `if`, so their nesting is bounded before
/// parsing, as brackets are.
#[test]
fn a_hundred_thousand_nested_ifs_are_an_error_on_a_small_stack() {
    let n = 100_000;
    let text = format!(
        "model m : [4, 4, 1] {{ let k = {}true{}\n relu }}\n",
        "if ".repeat(n),
        " { 1 }".repeat(n)
    );
    let error = compile_on_a_small_stack(text).expect_err("too deep");
    assert!(
        error.contains("error: `if` expressions are nested too deeply"),
        "{error}"
    );
}

/// An `else if` chain is a loop for the parser; elaboration recurses once
/// per branch, so the depth check rejects a chain longer than it allows.
#[test]
fn a_long_else_if_chain_is_an_error_on_a_small_stack() {
    let text = format!(
        "model m : [4, 4, 1] {{\n    let k = if false {{ 1 }}{} else {{ 2 }}\n    relu\n}}\n",
        " else if false { 1 }".repeat(5_000)
    );
    let error = compile_on_a_small_stack(text).expect_err("too deep");
    assert!(
        error.contains("error: expressions are nested too deeply"),
        "{error}"
    );
}

/// An `else if` chain within the depth limit means what it says.
#[test]
fn an_else_if_chain_takes_its_first_true_branch() {
    let branches: String = (1..100)
        .map(|i| format!(" else if in.channels == {i} {{ {i} }}"))
        .collect();
    let text = format!(
        "model m : [4, 4, 42] {{\n    let k = if false {{ 0 }}{branches} else {{ 1000 }}\n    conv(k, 1)\n}}\n"
    );
    let model = cnnc::compile_source("chain.cnn", &text, None, None).map_err(|d| d.to_string());
    let shape = model.map(|m| m.outputs()[0].1.clone());
    assert_eq!(shape, Ok(vec![4, 4, 42]));
}

/// Many errors on one long line: each quoted the whole line, so the output
/// (and the time) grew as the line's length times the number of errors. A
/// long line is now shown only around each error.
#[test]
fn errors_on_a_long_line_quote_only_its_part_around_them() {
    let names: Vec<String> = (0..2_000).map(|i| format!("q{i}")).collect();
    let text = format!("model m : [4, 4, 1] {{ {} }}\n", names.join(" "));
    let column = text.find("q1999").expect("the last name") + 1;
    let error = compile_on_a_small_stack(text).expect_err("unknown layers");
    assert!(
        error.contains("error: unknown layer or block `q1999`"),
        "{error}"
    );
    let place = format!("deep.cnn:1:{column}\n");
    assert!(
        error.contains(&place),
        "no {place:?}: the column in the whole line"
    );
    let longest = error.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(longest < 200, "a line of {longest} characters");
}

/// Every file of the corpus compiles as it is: the mutants start from
/// valid programs, so that their errors are the mutations' doing.
#[test]
fn the_corpus_compiles() {
    for (name, text) in corpus() {
        for model in model_names(text) {
            let result = cnnc::compile_source(name, text, Some(Path::new("examples")), Some(model));
            assert!(
                result.is_ok(),
                "{name} ({model}):\n{}",
                result.err().map(|d| d.to_string()).unwrap_or_default()
            );
        }
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn token_soup_never_panics(
        tokens in soup(),
        wrap in 0..3usize,
    ) {
        let text = match wrap {
            0 => tokens,
            1 => format!("model m : [28, 28, 3] {{\n{tokens}\n}}\n"),
            _ => format!(
                "block b(x, y = 2) {{\n{tokens}\n}}\nmodel m : [8, 8, 3] {{ b(1) }}\ntrain {{ {tokens} }}\n"
            ),
        };
        compile("soup.cnn", &text, None);
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn layer_soup_never_panics(text in layer_soup()) {
        compile("layers.cnn", &text, None);
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutants_never_panic(
        file in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
        model in any::<Index>(),
    ) {
        let (name, original) = &corpus()[file.index(corpus().len())];
        let mut text = original.clone();
        for m in &mutations {
            apply(&mut text, m);
        }
        // One of the original file's models, or none (the file's only model).
        let names = model_names(original);
        let chosen = names.get(model.index(names.len() + 1)).copied();
        compile(name, &text, chosen);
    }
}

/// Labels as a careless caller might give them for `classes` classes:
/// mostly in range, else at the edges, past them (2^24 + 1 is the first
/// whole number an f32 cannot hold), or anything.
fn label(classes: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 0..classes,
        2 => select(vec![
            classes - 1,
            classes,
            classes + 1,
            1 << 24,
            (1 << 24) + 1,
            4_000_000_000,
            u32::MAX,
        ]),
        1 => any::<u32>(),
    ]
}

/// `count` labels mostly, sometimes another number of them.
fn labels(classes: u32, count: usize) -> impl Strategy<Value = Vec<u32>> {
    prop_oneof![
        4 => prop::collection::vec(label(classes), count),
        1 => prop::collection::vec(label(classes), 0..count + 3),
    ]
}

fn tiny_model(source: &str) -> TypedGraph {
    cnnc::compile_source("tiny.cnn", source, None, None).unwrap_or_else(|d| panic!("{d}"))
}

fn smoothed_loss() -> LossSpec {
    LossSpec {
        smoothing: 0.1,
        weights: Vec::new(),
    }
}

/// Runs `test` on `cases` values of `strategy`; `test` returns the kind of
/// outcome it checked, and every one of `kinds` must turn up, so that the
/// fuzzing cannot pass by testing only one path. The draws are seeded: with
/// fresh ones, a kind that turns up in a few percent of the cases is missed
/// in some runs, and the test would fail by chance.
fn fuzz<S: Strategy>(
    cases: u32,
    strategy: S,
    kinds: &[&str],
    test: impl Fn(S::Value) -> Result<&'static str, TestCaseError>,
) {
    let seen = RefCell::new(std::collections::BTreeSet::new());
    let config = config(cases);
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let outcome = TestRunner::new_with_rng(config, rng).run(&strategy, |value| {
        seen.borrow_mut().insert(test(value)?);
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    for kind in kinds {
        assert!(
            seen.borrow().contains(kind),
            "no case gave {kind}: {seen:?}"
        );
    }
}

/// Two outputs, of 3 and 2 scores: a label must be below both.
const TWO_OUTPUTS: &str = "
    model f : [2, 2, 1] {
        flatten
        output main = dense(3, activation: softmax)
        output aux = dense(2, activation: softmax)
    }";

#[test]
fn training_steps_take_any_labels_without_panicking() {
    let model = tiny_model(TWO_OUTPUTS);
    let optimizer = TrainConfig::default().optimizer;
    let step = cnnc::compile_training(&model, &smoothed_loss(), &optimizer, 4).expect("compiles");
    let trainer = Trainer::new(step, weights::init(&model, 1), 1).expect("trainer");
    let trainer = RefCell::new(trainer);
    let kinds = ["ok", "label", "batch size", "not finite"];
    fuzz(
        200,
        (labels(2, 4), any::<bool>()),
        &kinds,
        |(labels, nan)| {
            let mut images: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
            if nan {
                images[3] = f32::NAN;
            }
            let result = trainer.borrow_mut().train_step(&images, &labels, 0.01);
            let first_bad = labels.iter().position(|&l| l >= 2);
            match (result, labels.len(), first_bad) {
                (Err(TrainingError::BatchSize { .. }), n, _) if n != 4 => Ok("batch size"),
                (
                    Err(TrainingError::LabelOutOfRange {
                        label,
                        position,
                        scores,
                        ..
                    }),
                    4,
                    Some(p),
                ) => {
                    prop_assert_eq!((position, label), (p, labels[p]));
                    prop_assert!(u64::from(label) >= scores as u64 && (scores == 2 || scores == 3));
                    Ok("label")
                }
                (Err(TrainingError::NonFiniteLoss { .. }), 4, None) if nan => Ok("not finite"),
                (Ok(_), 4, None) if !nan => Ok("ok"),
                (other, _, _) => Err(TestCaseError::fail(format!(
                    "labels {labels:?}, NaN {nan}: {:?}",
                    other.map(|r| r.losses)
                ))),
            }
        },
    );
}

#[test]
fn evaluation_takes_any_data_set_without_panicking() {
    let model = tiny_model("model e : [2, 2, 1] { flatten\n dense(3, activation: softmax) }");
    let store = weights::init(&model, 1);
    let sets = (
        labels(3, 4),
        prop_oneof![2 => Just(3usize), 1 => Just(4usize), 1 => 0..5usize],
        select(vec![-1isize, 0, 0, 0, 1]),
    );
    let kinds = ["ok", "label", "images", "classes"];
    fuzz(100, sets, &kinds, |(labels, classes, extra)| {
        let values = (labels.len() * 4).saturating_add_signed(extra);
        let data = Dataset {
            images: vec![0.5; values],
            labels: labels.clone(),
            shape: [2, 2, 1],
            label_shape: Vec::new(),
            class_names: (0..classes).map(|c| c.to_string()).collect(),
        };
        let result = fit::evaluate_in_detail(&model, &store, &data, (&[1, 2], 1));
        let first_bad = labels.iter().position(|&l| l as usize >= classes);
        let whole = values == labels.len() * 4;
        match (result, first_bad) {
            (Err(FitError::Images { .. }), _) if !whole => Ok("images"),
            (Err(FitError::Label { index, label, .. }), Some(p)) if whole => {
                prop_assert_eq!((index, label), (p, labels[p]));
                Ok("label")
            }
            (Err(FitError::Classes { scores: 3, .. }), None) if whole && classes > 3 => {
                Ok("classes")
            }
            (Ok(evaluation), None) if whole && classes <= 3 => {
                prop_assert_eq!(evaluation.confusion.len(), 3);
                let counted: u64 = evaluation.confusion.iter().flatten().sum();
                prop_assert_eq!(counted, labels.len() as u64);
                Ok("ok")
            }
            (other, _) => Err(TestCaseError::fail(format!(
                "{labels:?} in {classes} classes, {values} values: {:?}",
                other.map(|e| e.accuracy)
            ))),
        }
    });
}

/// Any f32 as a label, for the executor's labels buffer.
fn raw_label() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => (0..3u8).prop_map(f32::from),
        2 => select(vec![
            -1.0,
            3.0,
            2.5,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            16_777_217.0,
            4e9,
            -4e9,
            f32::MAX,
            // Subnormal: read as 0 by the kernels.
            f32::MIN_POSITIVE / 8.0,
            -1e-40,
        ]),
        1 => any::<f32>(),
    ]
}

#[test]
fn the_executor_keeps_any_labels_buffer_inside_the_kernels() {
    // The executor is public and runs whatever buffers it is lent; the
    // cross-entropy kernel must stay inside its rows and flag each row whose
    // label is not a class (its loss is NaN).
    let model = tiny_model("model r : [1, 1, 3] { global_avg_pool }");
    let optimizer = TrainConfig::default().optimizer;
    let step = cnnc::compile_training(&model, &smoothed_loss(), &optimizer, 4).expect("compiles");
    let compiled = step.compiled;
    let executor = RefCell::new(Executor::new(1).expect("executor"));
    let buffers = prop::collection::vec(raw_label(), 4);
    fuzz(200, buffers, &["all classes", "some not"], |mut labels| {
        let mut input: Vec<f32> = (0..12).map(|i| (i % 5) as f32 - 2.0).collect();
        // One result buffer per output and loss, in the externals' order.
        let mut results: Vec<(bool, Vec<f32>)> = compiled
            .layout
            .externals
            .iter()
            .map(|&b| &compiled.plan.buffers[b])
            .filter(|b| matches!(b.role, Role::Output(_) | Role::Loss(_)))
            .map(|b| (matches!(b.role, Role::Loss(_)), vec![0.0; b.len]))
            .collect();
        let lent = Lent {
            input: Some(&mut input),
            labels: Some(&mut labels),
            results: results.iter_mut().map(|(_, v)| v.as_mut_slice()).collect(),
            ..Lent::default()
        };
        let mut external = binding::bind(&compiled, lent).expect("no weights to miss");
        executor
            .borrow_mut()
            .run(&compiled.program, &mut external)
            .expect("runs");
        drop(external);
        let losses = &results.iter().find(|(loss, _)| *loss).expect("a loss").1;
        let mut all = true;
        for (row, (&label, &loss)) in labels.iter().zip(losses).enumerate() {
            // Kernels read a subnormal as zero (they run with DAZ, as
            // TensorFlow's do: docs/backend.md), so such a label is class 0.
            let read = if label.is_subnormal() { 0.0 } else { label };
            let class = read.fract() == 0.0 && (0.0..3.0).contains(&read);
            prop_assert_eq!(
                loss.is_finite(),
                class,
                "row {}: label {}, loss {}",
                row,
                label,
                loss
            );
            all &= class;
        }
        Ok(if all { "all classes" } else { "some not" })
    });
}

/// What a layout edit puts between two tokens: nothing, other white
/// space, blank lines, comments, a `;`.
const LAYOUTS: &[&str] = &[
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\t",
    " # a comment\n",
    "\n    # a comment on its own line\n",
    " ;",
    "\r\n",
];

/// Replaces the space between token `at` and the next with `layout`.
fn relayout(text: &mut String, at: Index, layout: &str) {
    let spans = tokens(text);
    if spans.len() < 2 {
        return;
    }
    let i = at.index(spans.len() - 1);
    text.replace_range(spans[i].1..spans[i + 1].0, layout);
}

/// The graph of each model of `text` (`models`, or the file's only
/// model), as `cnnc compile --emit graph` prints it; `None` for a model
/// that does not compile.
fn graphs(name: &str, text: &str, models: &[&str]) -> Vec<Option<String>> {
    let models: Vec<Option<&str>> = if models.is_empty() {
        vec![None]
    } else {
        models.iter().copied().map(Some).collect()
    };
    models
        .into_iter()
        .map(|model| {
            cnnc::compile_source(name, text, Some(Path::new("examples")), model)
                .ok()
                .map(|graph| cnnc::emit::graph_text(&graph))
        })
        .collect()
}

/// Formats `text` (a file of the corpus named `name`, with models
/// `models`, maybe edited): a text that parses formats, formatting the
/// result changes nothing, and every model compiles to the same graph (or
/// fails) before and after. Returns whether `text` parsed.
fn formats_alike(name: &str, text: &str, models: &[&str]) -> bool {
    let mut sources = cnnc::diagnostics::SourceMap::default();
    let file = sources.add(name, text);
    let formatted = match cnnc::syntax::format(text, file) {
        Ok(formatted) => formatted,
        Err(error) => {
            assert!(
                cnnc::syntax::parse(text, file).is_err(),
                "{name} parses but does not format: {} ({})\n{text}",
                error.message,
                error.primary.message
            );
            return false;
        }
    };
    let again = cnnc::syntax::format(&formatted, file).expect("formatted text formats");
    assert_eq!(again, formatted, "{name}: formatting twice differs\n{text}");
    assert_eq!(
        graphs(name, text, models),
        graphs(name, &formatted, models),
        "{name}: formatting changed a graph\n{text}"
    );
    true
}

/// Every file of `stdlib/` and `examples/` is formatted (`cnnc fmt
/// --check` passes on them), and formatting keeps its graphs.
#[test]
fn the_corpus_is_formatted() {
    for (name, text) in corpus() {
        let mut sources = cnnc::diagnostics::SourceMap::default();
        let file = sources.add(name.as_str(), text.as_str());
        let formatted = cnnc::syntax::format(text, file)
            .unwrap_or_else(|e| panic!("{name}: {} ({})", e.message, e.primary.message));
        assert!(
            formatted == *text,
            "{name} is not formatted: run `cnnc fmt stdlib examples`"
        );
        assert!(formats_alike(name, text, &model_names(text)));
    }
}

proptest! {
    // About a third of the cases parse (an empty layout can join two
    // tokens, a `;` can land inside an expression).
    #![proptest_config(config(240))]

    /// The corpus with its layout changed (and sometimes its tokens):
    /// whatever parses formats, to the same graphs, and formatting is
    /// idempotent.
    #[test]
    fn formatting_keeps_graphs_and_is_idempotent(
        file in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 0..2),
        layouts in prop::collection::vec((any::<Index>(), select(LAYOUTS)), 1..8),
    ) {
        let (name, original) = &corpus()[file.index(corpus().len())];
        let mut text = original.clone();
        for m in &mutations {
            apply(&mut text, m);
        }
        for (at, layout) in &layouts {
            relayout(&mut text, *at, layout);
        }
        formats_alike(name, &text, &model_names(original));
    }
}
