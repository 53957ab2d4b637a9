//! Keeps the VS Code extension (`editors/vscode/`) true to the compiler: its
//! TextMate grammar highlights every keyword of `grammar/cnn.pest`, every
//! primitive layer, activation, initializer and interpolation that
//! `src/elaborate/layers.rs` knows (and no other), its regular expressions
//! are well formed, and its manifest points at files that exist and names
//! the settings the extension reads.
//!
//! The grammar's patterns are not run here (the crate has no Oniguruma):
//! they are read. A highlighted set of words is a group of plain
//! alternatives, `(conv|dense|...)`, and its scope is the name its rule or
//! an enclosing capture gives it.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use cnnc::elaborate::layers::{Kind, ACTIVATIONS, INITS, INTERPOLATIONS, LAYERS};
use cnnc::elaborate::FUNCTIONS;
use serde_json::Value;

const PEST: &str = include_str!("../grammar/cnn.pest");
const TM_GRAMMAR: &str = include_str!("../editors/vscode/syntaxes/cnn.tmLanguage.json");
const MANIFEST: &str = include_str!("../editors/vscode/package.json");

/// Scopes under which a keyword may be highlighted: control and
/// declaration keywords, word operators, and the booleans.
const KEYWORD_SCOPES: &[&str] = &["keyword.", "storage.", "constant.language.boolean."];

/// A regular expression of the grammar, with the scopes its rule gives.
#[derive(Debug)]
struct Pattern {
    /// The expression, as the grammar writes it (after JSON unescaping).
    regex: String,
    /// The rule's `name`: the scope of the whole match.
    name: Option<String>,
    /// The scope of each capture, by number (`0`: the whole match).
    captures: Vec<(usize, String)>,
}

/// A parenthesised group of a regular expression.
#[derive(Debug)]
struct Group {
    /// Its capture number; `None` for `(?:...)`, look-arounds and options.
    capture: Option<usize>,
    /// Its contents, between the parentheses, as byte offsets.
    contents: Range<usize>,
}

/// A group of plain alternatives, `(a|b|c)`, and the scopes it is given.
#[derive(Debug)]
struct Alternation {
    words: Vec<String>,
    scopes: Vec<String>,
    /// The index of its pattern in [`patterns`]'s list.
    pattern: usize,
}

fn tm_grammar() -> Value {
    serde_json::from_str(TM_GRAMMAR).expect("cnn.tmLanguage.json is JSON")
}

fn manifest() -> Value {
    serde_json::from_str(MANIFEST).expect("package.json is JSON")
}

/// The string literals of the pest rule `rule` (`keyword = @{ "use" | ... }`).
fn pest_literals(rule: &str) -> Vec<String> {
    let mut offset = 0;
    let mut start = None;
    for line in PEST.split_inclusive('\n') {
        let defines = line.strip_prefix(rule);
        if defines.is_some_and(|rest| rest.trim_start().starts_with('=')) {
            start = Some(offset);
            break;
        }
        offset += line.len();
    }
    let start = start.unwrap_or_else(|| panic!("grammar/cnn.pest has no rule `{rule}`"));
    let mut literals = Vec::new();
    let mut depth = 0;
    let mut chars = PEST[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => literals.push(pest_string(&mut chars)),
            '{' => depth += 1,
            '}' if depth == 1 => return literals,
            '}' => depth -= 1,
            // A rule's body opens on the line that names it.
            '\n' if depth == 0 => break,
            _ => {}
        }
    }
    panic!("the rule `{rule}` of grammar/cnn.pest has no braced body");
}

/// The rest of a pest string literal whose opening `"` was read, its
/// escapes (`\"`, `\n`) taken as the characters they stand for.
fn pest_string(chars: &mut impl Iterator<Item = char>) -> String {
    let mut literal = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => literal.push('\n'),
                Some('t') => literal.push('\t'),
                Some('r') => literal.push('\r'),
                Some(other) => literal.push(other),
                None => break,
            },
            other => literal.push(other),
        }
    }
    literal
}

/// Every `match`, `begin` and `end` expression of the grammar, in its
/// rules, nested rules and the rules of its captures.
fn patterns(grammar: &Value) -> Vec<Pattern> {
    let mut found = Vec::new();
    collect_patterns(grammar, &mut found);
    found
}

fn collect_patterns(value: &Value, found: &mut Vec<Pattern>) {
    match value {
        Value::Object(rule) => {
            let name = rule.get("name").and_then(Value::as_str).map(str::to_string);
            // `begin` and `end` take `captures` where they have no captures
            // of their own, as TextMate does.
            let keys = [
                ("match", "captures"),
                ("begin", "beginCaptures"),
                ("end", "endCaptures"),
            ];
            for (key, own_captures) in keys {
                let Some(regex) = rule.get(key).and_then(Value::as_str) else {
                    continue;
                };
                let captures = rule.get(own_captures).or_else(|| rule.get("captures"));
                found.push(Pattern {
                    regex: regex.to_string(),
                    name: name.clone(),
                    captures: capture_scopes(captures),
                });
            }
            rule.values().for_each(|v| collect_patterns(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, found)),
        _ => {}
    }
}

fn capture_scopes(captures: Option<&Value>) -> Vec<(usize, String)> {
    let Some(Value::Object(captures)) = captures else {
        return Vec::new();
    };
    let mut scopes = Vec::new();
    for (number, capture) in captures {
        let number: usize = number
            .parse()
            .unwrap_or_else(|_| panic!("capture `{number}` is not a number"));
        if let Some(name) = capture.get("name").and_then(Value::as_str) {
            scopes.push((number, name.to_string()));
        }
    }
    scopes
}

/// The groups of `regex`, or why its parentheses or brackets do not balance.
/// Reads Oniguruma's syntax as far as the grammar uses it: escapes,
/// character classes (nested ones too), `(?:`, look-arounds, `(?<name>`.
fn groups(regex: &str) -> Result<Vec<Group>, String> {
    let bytes = regex.as_bytes();
    let mut groups = Vec::new();
    let mut open: Vec<(usize, Option<usize>)> = Vec::new();
    let mut class_depth = 0;
    let mut captures = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 == bytes.len() => return Err("it ends in a lone `\\`".into()),
            b'\\' => i += 1,
            b'[' => {
                class_depth += 1;
                // A `]` right after `[` or `[^` is a literal.
                if bytes.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if class_depth > 0 => class_depth -= 1,
            _ if class_depth > 0 => {}
            b'(' => {
                let rest = &bytes[i + 1..];
                let named =
                    rest.starts_with(b"?<") && rest.get(2).is_some_and(u8::is_ascii_alphabetic);
                let capture = if rest.first() != Some(&b'?') || named {
                    captures += 1;
                    Some(captures)
                } else {
                    None
                };
                open.push((i + 1, capture));
            }
            b')' => {
                let (start, capture) =
                    open.pop().ok_or(format!("the `)` at {i} closes nothing"))?;
                groups.push(Group {
                    capture,
                    contents: start..i,
                });
            }
            _ => {}
        }
        i += 1;
    }
    if class_depth > 0 {
        return Err("a `[` is not closed".into());
    }
    if let Some((start, _)) = open.last() {
        return Err(format!("the `(` at {} is not closed", start - 1));
    }
    Ok(groups)
}

/// The plain alternatives of `contents` (`a|b|c`), if that is all it is.
fn words(contents: &str) -> Option<Vec<String>> {
    let is_word = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let alternatives: Vec<&str> = contents.split('|').collect();
    alternatives
        .iter()
        .all(|w| is_word(w))
        .then(|| alternatives.iter().map(ToString::to_string).collect())
}

/// Every group of plain alternatives in the grammar, with its scopes: the
/// rule's name, the whole match's capture, and the captures of the groups
/// around it and of itself.
fn alternations(patterns: &[Pattern]) -> Vec<Alternation> {
    let mut found = Vec::new();
    for (index, pattern) in patterns.iter().enumerate() {
        let groups = groups(&pattern.regex).unwrap_or_else(|e| panic!("{}: {e}", pattern.regex));
        for group in &groups {
            let Some(words) = words(&pattern.regex[group.contents.clone()]) else {
                continue;
            };
            let encloses = |outer: &Group| {
                outer.contents.start <= group.contents.start
                    && group.contents.end <= outer.contents.end
            };
            let captured: BTreeSet<usize> = groups
                .iter()
                .filter(|outer| encloses(outer))
                .filter_map(|outer| outer.capture)
                .chain([0])
                .collect();
            let scopes = pattern
                .captures
                .iter()
                .filter(|(number, _)| captured.contains(number))
                .map(|(_, scope)| scope.clone())
                .chain(pattern.name.clone())
                .collect();
            found.push(Alternation {
                words,
                scopes,
                pattern: index,
            });
        }
    }
    found
}

/// The words of every alternation with a scope that `scoped` accepts.
fn words_scoped(alternations: &[Alternation], scoped: impl Fn(&str) -> bool) -> BTreeSet<String> {
    alternations
        .iter()
        .filter(|a| a.scopes.iter().any(|s| scoped(s)))
        .flat_map(|a| a.words.iter().cloned())
        .collect()
}

fn grammar_alternations() -> Vec<Alternation> {
    alternations(&patterns(&tm_grammar()))
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(ToString::to_string).collect()
}

/// Asserts that the grammar's `what` are exactly `expected`, naming the
/// words missing from the grammar and those it has but the compiler lacks.
fn assert_same_words(what: &str, grammar: &BTreeSet<String>, expected: &BTreeSet<String>) {
    let missing: Vec<_> = expected.difference(grammar).collect();
    let extra: Vec<_> = grammar.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the grammar's {what} differ from the compiler's: missing {missing:?}, not in the compiler {extra:?}"
    );
}

#[test]
fn the_pest_keyword_rule_is_read() {
    let keywords = pest_literals("keyword");
    // Enough of them that a change in the rule's layout, not the list,
    // cannot leave the other tests checking nothing.
    assert!(
        keywords.len() >= 10,
        "read {keywords:?} from grammar/cnn.pest's keyword rule"
    );
    for expected in ["use", "block", "model", "train", "in", "true"] {
        assert!(
            keywords.iter().any(|k| k == expected),
            "{expected} not in {keywords:?}"
        );
    }
    assert_eq!(pest_literals("COMMENT"), ["#", "\n"]);
}

#[test]
fn every_keyword_is_highlighted_as_a_keyword() {
    let keywords: BTreeSet<String> = pest_literals("keyword").into_iter().collect();
    let highlighted = words_scoped(&grammar_alternations(), |scope| {
        KEYWORD_SCOPES
            .iter()
            .any(|prefix| scope.starts_with(prefix))
    });
    let missing: Vec<_> = keywords.difference(&highlighted).collect();
    assert!(
        missing.is_empty(),
        "keywords of grammar/cnn.pest the grammar does not highlight: {missing:?}"
    );
    // A word highlighted as a keyword or declaration that the language does
    // not reserve would mislead (`keyword.` and `storage.` only: booleans
    // are keywords too).
    let not_keywords: Vec<_> = words_scoped(&grammar_alternations(), |scope| {
        scope.starts_with("keyword.") || scope.starts_with("storage.")
    })
    .into_iter()
    .filter(|w| !keywords.contains(w))
    .collect();
    assert!(
        not_keywords.is_empty(),
        "highlighted as keywords but not reserved: {not_keywords:?}"
    );
}

#[test]
fn the_layer_names_are_the_primitive_layers() {
    let highlighted = words_scoped(&grammar_alternations(), |scope| {
        scope == "support.function.cnn"
    });
    let layers = LAYERS.iter().map(|(name, _)| name.to_string()).collect();
    assert_same_words("layers (support.function.cnn)", &highlighted, &layers);
}

#[test]
fn the_function_names_are_the_built_in_functions() {
    let highlighted = words_scoped(&grammar_alternations(), |scope| {
        scope == "support.function.builtin.cnn"
    });
    assert_same_words(
        "functions (support.function.builtin.cnn)",
        &highlighted,
        &names(&FUNCTIONS),
    );
}

#[test]
fn the_symbol_values_are_the_compilers() {
    let alternations = grammar_alternations();
    let families = [
        ("constant.language.activation.", ACTIVATIONS),
        ("constant.language.init.", INITS),
        ("constant.language.interpolation.", INTERPOLATIONS),
    ];
    for (scope, symbols) in families {
        let highlighted = words_scoped(&alternations, |s| s.starts_with(scope));
        assert_same_words(scope, &highlighted, &names(symbols));
    }
}

/// The arguments that take activations, initializers and interpolations
/// are named beside their values (`activation: relu`), so that their values
/// are highlighted where they are symbols and not layers.
#[test]
fn symbol_arguments_are_named_beside_their_values() {
    let alternations = grammar_alternations();
    let kinds = [
        (Kind::Activation, "constant.language.activation."),
        (Kind::Init, "constant.language.init."),
        (Kind::Interpolation, "constant.language.interpolation."),
    ];
    for (kind, scope) in kinds {
        let beside: BTreeSet<usize> = alternations
            .iter()
            .filter(|a| a.scopes.iter().any(|s| s.starts_with(scope)))
            .map(|a| a.pattern)
            .collect();
        let argument_names: BTreeSet<String> = alternations
            .iter()
            .filter(|a| beside.contains(&a.pattern))
            .filter(|a| a.scopes.iter().any(|s| s == "variable.parameter.cnn"))
            .flat_map(|a| a.words.iter().cloned())
            .collect();
        for (layer, signature) in LAYERS {
            for arg in signature.iter().filter(|arg| arg.kind == kind) {
                assert!(
                    argument_names.contains(arg.name),
                    "{layer}'s `{}:` takes {scope}* values, but no pattern names it beside them \
                     (it names {argument_names:?})",
                    arg.name
                );
            }
        }
    }
}

#[test]
fn every_regex_balances_and_every_include_exists() {
    let grammar = tm_grammar();
    let patterns = patterns(&grammar);
    assert!(
        patterns.len() > 20,
        "found only {} patterns",
        patterns.len()
    );
    let broken: Vec<String> = patterns
        .iter()
        .filter_map(|p| groups(&p.regex).err().map(|e| format!("{}: {e}", p.regex)))
        .collect();
    assert!(broken.is_empty(), "malformed patterns: {broken:#?}");
    let repository = grammar["repository"]
        .as_object()
        .expect("the grammar has a repository");
    let mut includes = Vec::new();
    collect_includes(&grammar, &mut includes);
    for include in includes {
        let known = match include.strip_prefix('#') {
            Some(rule) => repository.contains_key(rule),
            None => include == "$self" || include == "$base",
        };
        assert!(
            known,
            "`include: {include}` names no rule of the repository"
        );
    }
}

#[test]
fn the_regex_reader_finds_unbalanced_patterns() {
    assert!(groups(r"\b(conv|dense)\b").is_ok());
    assert!(groups(r"[()\]]+(a)").is_ok());
    assert!(groups(r"\b(conv|dense\b").is_err());
    assert!(groups(r"conv)").is_err());
    assert!(groups(r"[a-z").is_err());
    let found = groups(r"(?:(a)|(?<=x)(b|c))").expect("balanced");
    let captures: Vec<_> = found.iter().filter_map(|g| g.capture).collect();
    assert_eq!(captures, [1, 2]);
}

fn collect_includes(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(rule) => {
            if let Some(include) = rule.get("include").and_then(Value::as_str) {
                found.push(include.to_string());
            }
            rule.values().for_each(|v| collect_includes(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_includes(v, found)),
        _ => {}
    }
}

#[test]
fn the_manifest_points_at_the_grammar_and_the_configuration() {
    let extension = Path::new(env!("CARGO_MANIFEST_DIR")).join("editors/vscode");
    let manifest = manifest();
    let contributes = &manifest["contributes"];
    let exists = |key: &str, value: &Value| {
        let path = value
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a path: {value}"));
        assert!(
            extension.join(path).is_file(),
            "{key}: {path} is not a file of editors/vscode"
        );
    };

    let language = contributes["languages"]
        .as_array()
        .and_then(|languages| languages.iter().find(|l| l["id"] == "cnn"))
        .expect("contributes.languages has the language `cnn`");
    assert!(
        language["extensions"]
            .as_array()
            .is_some_and(|e| e.contains(&".cnn".into())),
        "the language `cnn` is not for `.cnn` files: {language}"
    );
    exists(
        "contributes.languages.configuration",
        &language["configuration"],
    );
    let configuration_path = extension.join(language["configuration"].as_str().unwrap_or_default());
    let configuration: Value = serde_json::from_str(
        &std::fs::read_to_string(configuration_path).expect("the language configuration reads"),
    )
    .expect("the language configuration is JSON");
    assert_eq!(
        configuration["comments"]["lineComment"],
        pest_literals("COMMENT")[0]
    );

    let grammar = contributes["grammars"]
        .as_array()
        .and_then(|grammars| grammars.iter().find(|g| g["language"] == "cnn"))
        .expect("contributes.grammars has a grammar for `cnn`");
    exists("contributes.grammars.path", &grammar["path"]);
    let grammar_path = extension.join(grammar["path"].as_str().unwrap_or_default());
    let grammar_file = std::fs::read_to_string(grammar_path).expect("the grammar reads");
    assert_eq!(
        grammar_file, TM_GRAMMAR,
        "package.json's grammar is not the one this test reads"
    );
    assert_eq!(grammar["scopeName"], tm_grammar()["scopeName"]);

    exists("main", &manifest["main"]);
    assert!(manifest["activationEvents"]
        .as_array()
        .is_some_and(|events| events.contains(&"onLanguage:cnn".into())));
}

#[test]
fn the_manifest_declares_the_settings_the_extension_reads() {
    let manifest = manifest();
    // `contributes.configuration` is one object or a list of them.
    let configuration = &manifest["contributes"]["configuration"];
    let sections = match configuration {
        Value::Array(sections) => sections.clone(),
        section => vec![section.clone()],
    };
    let setting = |name: &str| {
        sections
            .iter()
            .find_map(|section| section["properties"].get(name).cloned())
            .unwrap_or_else(|| panic!("contributes.configuration does not declare `{name}`"))
    };
    let path = setting("cnnc.path");
    assert_eq!(
        (&path["type"], &path["default"]),
        (&"string".into(), &"cnnc".into())
    );
    let shape_hints = setting("cnnc.shapeHints");
    assert_eq!(
        (&shape_hints["type"], &shape_hints["default"]),
        (&"boolean".into(), &true.into())
    );
}
