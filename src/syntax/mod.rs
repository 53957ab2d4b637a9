//! The front end's first stage: `.cnn` source text to the spanned AST.
//!
//! [`parse`] turns one file's text into its AST with the pest grammar in
//! `grammar/cnn.pest`; [`load_file`] and [`load_source`] (in `load.rs`) read
//! a file, parse it and load everything it imports into a [`Program`], the
//! input of elaboration.

pub mod ast;
pub mod format;
mod load;

pub use format::format;
pub use load::{load_file, load_source, load_source_over, Overlay, Program};

use pest::iterators::Pair;
use pest::Parser as _;

use crate::diagnostics::{Diagnostic, FileId, Span};
use ast::*;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/cnn.pest"]
struct CnnParser;

/// How deep brackets and `if` conditions may nest. The parser recurses
/// through a dozen grammar rules per level: without a bound, a few hundred
/// `(` exhaust any stack.
pub const MAX_NESTING: usize = 64;

/// How deep expressions and statements may nest (`not not ... x`, long
/// `else if` chains): elaboration recurses once per level.
pub const MAX_DEPTH: usize = 256;

/// The rule calls the parser may make per byte of a file, besides
/// [`CALLS_BASE`]: a bound on its time whatever the grammar does. PEG
/// parsing backtracks: where a construct fails, an alternative may parse
/// it again, and where that nests, the time doubles with each level
/// (`relu - if x { relu - if x { … @ } }`, found by fuzzing, took 8 s at
/// 14 levels). Bracketed constructs now recover instead of failing (see
/// `broken_*` in the grammar), so no failure leaves a bracket and nothing
/// is parsed twice across levels; the budget remains as a bound for what
/// the grammar may yet allow. The project's `.cnn` files need 7 to 40 per
/// byte, the densest statements (`a a a …`) and the deepest nesting
/// allowed under 200 (the tests
/// `every_project_file_parses_within_a_tenth_of_the_budget` and
/// `the_deepest_nesting_allowed_parses_within_half_the_budget`).
pub const CALLS_PER_BYTE: usize = 400;

/// The rule calls any file may make, however short.
pub const CALLS_BASE: usize = 100_000;

/// The stack of the thread that parses: a debug build uses about 100 KiB
/// per level of brackets, so a test thread's 2 MiB lasts about 20 levels.
const PARSE_STACK: usize = 64 << 20;

/// Parses the text of file `file` into its AST, or returns the syntax error.
pub fn parse(source: &str, file: FileId) -> Result<File, Diagnostic> {
    if let Some(error) = too_deep(source, file) {
        return Err(error);
    }
    on_parse_stack(|| parse_here(source, file))
}

/// Runs `work`, which walks a parse tree, on a thread with the stack the
/// parser needs ([`PARSE_STACK`]).
fn on_parse_stack<T: Send>(work: impl FnOnce() -> T + Send + Copy) -> T {
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("cnnc-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, work);
        match parser {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: work on this one's stack.
            Err(_) => work(),
        }
    })
}

/// An error at the first bracket or `if` nested deeper than
/// [`MAX_NESTING`], before the parser meets it.
///
/// Brackets and `if`s are what make the parser recurse: every other
/// repetition in the grammar (operators, `not`, `-`, `else if`, statements)
/// is a loop. An `if` nests until its body's `{` opens, which then counts in
/// its place: `if if if c { a } { b } { c }` nests three deep at `c`.
fn too_deep(source: &str, file: FileId) -> Option<Diagnostic> {
    // Per open bracket (and the file): the `if`s whose body has not begun.
    let mut pending = vec![0usize];
    let mut depth = 0usize;
    for (i, mark) in marks(source) {
        let top = pending.len() - 1;
        match mark {
            Mark::If => (pending[top], depth) = (pending[top] + 1, depth + 1),
            Mark::Open(c) => {
                if c == '{' && pending[top] > 0 {
                    (pending[top], depth) = (pending[top] - 1, depth - 1);
                }
                pending.push(0);
                depth += 1;
            }
            Mark::Close(_) if top > 0 => depth -= pending.pop().unwrap_or(0) + 1,
            Mark::Close(_) => {}
        }
        if depth > MAX_NESTING {
            let (message, what) = match mark {
                Mark::If => ("`if` expressions are nested too deeply", "if".to_string()),
                Mark::Open(c) | Mark::Close(c) => ("brackets are nested too deeply", c.to_string()),
            };
            let end = i + what.len();
            return Some(
                Diagnostic::error(
                    Span::new(file, i, end),
                    message,
                    format!("this `{what}` is nested {depth} deep"),
                )
                .with_note(format!(
                    "help: cnnc accepts at most {MAX_NESTING} levels of brackets and `if` conditions"
                )),
            );
        }
    }
    None
}

fn parse_here(source: &str, file: FileId) -> Result<File, Diagnostic> {
    let Ok(mut pairs) = parse_within_budget(Rule::file, source, Detail::Fast) else {
        return Err(first_error(Rule::file, 0, source, file));
    };
    // The `file` rule always produces exactly one pair on success.
    let root = pairs.next().expect("file rule matched");
    if let Some(construct) = first_recovered(root.clone().into_inner()) {
        let start = construct.as_span().start();
        return Err(first_error(construct.as_rule(), start, source, file));
    }
    let builder = Builder {
        file,
        token_ends: token_ends(source),
    };
    let mut items = Vec::new();
    for pair in root.into_inner() {
        if pair.as_rule() != Rule::EOI {
            items.push(builder.item(pair));
        }
    }
    let file_ast = File { items };
    match deepest(&file_ast) {
        Some(span) => Err(Diagnostic::error(
            span,
            "expressions are nested too deeply",
            format!("this is nested more than {MAX_DEPTH} levels deep"),
        )
        .with_note("help: split the expression with `let`")),
        None => Ok(file_ast),
    }
}

/// Whether a parse records what it attempted where it failed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Detail {
    /// No record: the parse that builds the AST. Recording every attempt
    /// made parsing 2.5 times slower (the project's `.cnn` files, in a
    /// debug build).
    Fast,
    /// The literal tokens expected where the parse failed (`)`, `->`),
    /// not only grammar rules: the parse that makes a syntax error.
    Expected,
}

/// Runs the parser's `rule` on `source` within the budget of
/// [`CALLS_PER_BYTE`] and [`CALLS_BASE`].
fn parse_within_budget(
    rule: Rule,
    source: &str,
    detail: Detail,
) -> Result<pest::iterators::Pairs<'_, Rule>, pest::error::Error<Rule>> {
    parse_with(rule, source, detail, CALLS_PER_BYTE, CALLS_BASE)
}

/// Runs the parser's `rule` on `source` with a budget of `per_byte` rule
/// calls per byte and `base` more. pest reads the budget and the detail
/// from process-wide settings when a parse starts, so that setting them
/// and starting are done under one lock.
fn parse_with(
    rule: Rule,
    source: &str,
    detail: Detail,
    per_byte: usize,
    base: usize,
) -> Result<pest::iterators::Pairs<'_, Rule>, pest::error::Error<Rule>> {
    static SETTINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let calls = source.len().saturating_mul(per_byte).saturating_add(base);
    let _held = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    pest::set_call_limit(std::num::NonZeroUsize::new(calls));
    pest::set_error_detail(detail == Detail::Expected);
    CnnParser::parse(rule, source)
}

/// The syntax error of `rule` parsed from byte `start` of `source`, a
/// parse known to fail, made again recording what it expected.
fn strict_error(rule: Rule, start: usize, source: &str, file: FileId) -> Diagnostic {
    match parse_within_budget(rule, &source[start..], Detail::Expected) {
        Err(error) => syntax_error(&error, start, source, file),
        // It failed within the file, so it fails alone too; should it
        // not, the error is still at its start.
        Ok(_) => {
            let (found, width) = describe_found(source, start);
            Diagnostic::error(
                Span::new(file, start, (start + width).min(source.len())),
                "syntax error",
                format!("unexpected {found}"),
            )
        }
    }
}

/// The first place, in the order of the source, where a construct of
/// `pairs` recovered (a `broken_*` or `unclosed` node; see the grammar),
/// as the construct's pair. The walk keeps its own stack: the tree is as
/// deep as the file's nesting times the grammar's dozen levels of
/// precedence.
fn first_recovered<'i>(pairs: pest::iterators::Pairs<'i, Rule>) -> Option<Pair<'i, Rule>> {
    // Each pair with the construct it is part of; children in reverse,
    // so that the first is taken next.
    let mut stack: Vec<(Pair<'i, Rule>, Option<Pair<'i, Rule>>)> =
        pairs.rev().map(|p| (p, None)).collect();
    while let Some((pair, parent)) = stack.pop() {
        if is_recovery(pair.as_rule()) {
            // A recovery is never a parse's outermost pair.
            return parent;
        }
        let children: Vec<Pair<'i, Rule>> = pair.clone().into_inner().collect();
        stack.extend(children.into_iter().rev().map(|c| (c, Some(pair.clone()))));
    }
    None
}

fn is_recovery(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::broken_brace | Rule::broken_paren | Rule::broken_bracket | Rule::unclosed
    )
}

/// The first syntax error inside `construct` (a grammar rule), which
/// starts at byte `start` of `source` and failed or recovered there.
///
/// Its contents up to the point of failure (the rule's `*_start`) are
/// parsed again: a construct among them that recovered holds an earlier
/// error, and is searched in turn. Where none did, the construct parsed
/// alone and strictly (its `*_check`) fails at the error, with what was
/// expected there. Brackets nested inside recover, so that each of these
/// parses reads one level of the file and cannot backtrack far; they nest
/// at most [`MAX_NESTING`] deep.
fn first_error(construct: Rule, start: usize, source: &str, file: FileId) -> Diagnostic {
    let (mut construct, mut start) = (construct, start);
    for _ in 0..=2 * MAX_NESTING {
        let before = match construct {
            Rule::file => Some(Rule::file_start),
            Rule::body => Some(Rule::body_start),
            Rule::train_item => Some(Rule::train_start),
            Rule::params => Some(Rule::params_start),
            Rule::call => Some(Rule::call_start),
            Rule::list => Some(Rule::list_start),
            Rule::record => Some(Rule::record_start),
            Rule::paren => Some(Rule::paren_start),
            // What comes before their `unclosed` is in the tree already.
            _ => None,
        };
        let inner = before
            .and_then(|rule| parse_within_budget(rule, &source[start..], Detail::Fast).ok())
            .and_then(first_recovered);
        match inner {
            Some(pair) => (construct, start) = (pair.as_rule(), start + pair.as_span().start()),
            None => break,
        }
    }
    let check = match construct {
        Rule::file => Rule::file,
        Rule::block_item => Rule::block_check,
        Rule::model_item => Rule::model_check,
        Rule::train_item => Rule::train_check,
        Rule::params => Rule::params_check,
        Rule::body => Rule::body_check,
        Rule::for_stmt => Rule::for_check,
        Rule::slice_assign => Rule::slice_check,
        Rule::call => Rule::call_check,
        Rule::list => Rule::list_check,
        Rule::record => Rule::record_check,
        Rule::paren => Rule::paren_check,
        Rule::if_expr => Rule::if_check,
        Rule::else_if => Rule::else_if_check,
        other => unreachable!("grammar: {other:?} does not recover"),
    };
    strict_error(check, start, source, file)
}

/// The first expression nested deeper than [`MAX_DEPTH`], if any.
fn deepest(file: &File) -> Option<Span> {
    file.items.iter().find_map(|item| match item {
        Item::Use(_) => None,
        Item::Block(d) | Item::Model(d) => d
            .params
            .iter()
            .filter_map(|p| p.default.as_ref())
            .chain(&d.input)
            .find_map(|e| expr_too_deep(e, 0))
            .or_else(|| stmts_too_deep(&d.body, 0)),
        Item::Train(t) => t.entries.iter().find_map(|(_, e)| expr_too_deep(e, 0)),
    })
}

fn stmts_too_deep(body: &[Stmt], depth: usize) -> Option<Span> {
    body.iter().find_map(|stmt| match stmt {
        Stmt::Let(_, e) | Stmt::Output(_, e) | Stmt::Expr(e) => expr_too_deep(e, depth + 1),
        Stmt::For { iter, body, .. } => {
            expr_too_deep(iter, depth + 1).or_else(|| stmts_too_deep(body, depth + 1))
        }
    })
}

fn expr_too_deep(e: &Expr, depth: usize) -> Option<Span> {
    if depth > MAX_DEPTH {
        return Some(e.span);
    }
    let d = depth + 1;
    match &e.kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Input
        | ExprKind::Name(..) => None,
        ExprKind::List(items) => any_too_deep(items, d),
        ExprKind::Record(fields) => any_too_deep(fields.iter().map(|(_, e)| e), d),
        ExprKind::Call(call) => any_too_deep(call.args.iter().map(|a| &a.value), d),
        ExprKind::Pipe(head, stages) => any_too_deep(std::iter::once(&**head).chain(stages), d),
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) | ExprKind::Range(a, b, _) => {
            any_too_deep([&**a, &**b], d)
        }
        ExprKind::Unary(_, a) | ExprKind::Field(a, _) => expr_too_deep(a, d),
        ExprKind::If(cond, then, otherwise) => expr_too_deep(cond, d)
            .or_else(|| stmts_too_deep(then, d))
            .or_else(|| otherwise.as_ref().and_then(|o| stmts_too_deep(o, d))),
        ExprKind::Where(init, assigns) => expr_too_deep(init, d)
            .or_else(|| any_too_deep(assigns.iter().flat_map(|(a, b)| [a, b]), d)),
    }
}

fn any_too_deep<'a>(exprs: impl IntoIterator<Item = &'a Expr>, depth: usize) -> Option<Span> {
    exprs.into_iter().find_map(|e| expr_too_deep(e, depth))
}

/// Converts a pest error into a diagnostic that names what was expected.
/// The parse that failed began at byte `offset` of `source`.
fn syntax_error(
    error: &pest::error::Error<Rule>,
    offset: usize,
    source: &str,
    file: FileId,
) -> Diagnostic {
    let (mut start, mut end) = match error.location {
        pest::error::InputLocation::Pos(p) => (offset + p, offset + p),
        pest::error::InputLocation::Span((s, e)) => (offset + s, offset + e),
    };
    // The expected tokens are those of the furthest attempt; pest's own
    // position can lag behind it when an optional part failed (`block
    // b(x y)` is reported at `(`, with the tokens expected after `x`).
    // Not inside a word, though: a keyword's look-ahead (`for x inputs`)
    // gets there too.
    if let Some(attempts) = error.parse_attempts() {
        let at = offset + attempts.max_position;
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let inside_word = source
            .get(..at)
            .is_some_and(|b| word(b.chars().next_back()))
            && source.get(at..).is_some_and(|r| word(r.chars().next()));
        // Nor where nothing was expected: a look-ahead that matched (a
        // record's `(name:`) can move the furthest position too.
        let named = !attempts.expected_tokens().is_empty();
        if at > start && at <= source.len() && !inside_word && named {
            (start, end) = (at, at);
        }
    }
    let found = describe_found(source, start);
    let end = if end > start {
        end
    } else {
        (start + found.1).min(source.len())
    };
    let mut expected = expected_items(error);
    expected.sort();
    expected.dedup();
    let message = match expected.len() {
        0 => format!("unexpected {}", found.0),
        _ => format!(
            "expected {}, found {}",
            join_alternatives(&expected),
            found.0
        ),
    };
    let mut diagnostic = Diagnostic::error(Span::new(file, start, end), "syntax error", message);
    let open = open_brackets(source, start);
    if let Some(hint) = syntax_hint(source, start, open.last().map(|&(o, _)| o)) {
        diagnostic = diagnostic.with_note(hint);
    }
    let found_char = source[start.min(source.len())..].chars().next();
    let innermost = open.last().copied();
    if let Some(unclosed) = definition_after_unclosed_body(source, start, &open) {
        return unclosed.diagnostic(source, file);
    }
    if let Some((quote, line_end)) = unclosed_string(source, start) {
        // The parse failed inside a string that runs to the end of its line.
        diagnostic.primary.span = Span::new(file, quote, line_end);
        diagnostic.primary.message = "this string is not closed".into();
        return diagnostic.with_note("help: a string ends with `\"` on the same line");
    }
    match (found_char, innermost) {
        // A closing bracket with nothing of its kind to close.
        (Some(c @ (')' | ']' | '}')), _) if !open.iter().any(|&(o, _)| closer(o) == c) => {
            diagnostic =
                diagnostic.with_note(format!("help: this `{c}` has no matching `{}`", opener(c)));
        }
        // `conv (64, 3)`: the parenthesis became an expression of its own.
        (_, Some(('(', at))) if called_with_space(source, at) => {
            diagnostic = diagnostic.with_note(
                "help: a call's `(` must follow its name directly: write `conv(...)`, not `conv (...)`",
            );
        }
        // The statement seems to end on this line, but a bracket is still
        // open: it is the likely culprit, not the token on the next line.
        (_, Some((o, at)))
            if expected.contains(&format!("`{}`", closer(o)))
                && (found_char.is_none()
                    || source[..start]
                        .trim_end_matches([' ', '\t'])
                        .ends_with('\n')) =>
        {
            diagnostic = diagnostic.with_context(
                Span::new(file, at, at + 1),
                format!("this `{o}` is not closed"),
            );
        }
        _ => {}
    }
    diagnostic
}

/// A definition (`model`, `block`, `train`, `use`) that starts a line
/// while a body is still open: the body lost its `}`, and the error the
/// parse met on the new definition's line is only a consequence.
struct UnclosedBody<'s> {
    /// The body's `{` (the outermost one still open).
    brace: usize,
    /// What the body belongs to, as its line starts (`block unit`), if it
    /// starts with a definition.
    owner: Option<(&'s str, &'s str)>,
    /// A `{` inside it whose `}` is indented less than the `{`'s own line
    /// (and where): that `}` is likely the body's, and this `{` the one
    /// that lost its own.
    misindented: Option<(usize, usize)>,
    /// The keyword that starts the next definition, and where.
    keyword: &'s str,
    at: usize,
}

const DEFINITION_KEYWORDS: [&str; 4] = ["model", "block", "train", "use"];

/// The [`UnclosedBody`] when the line of `offset` starts with a definition
/// keyword and a name (or, for `use`, a module) while a `{` is open.
fn definition_after_unclosed_body<'s>(
    source: &'s str,
    offset: usize,
    open: &[(char, usize)],
) -> Option<UnclosedBody<'s>> {
    let &(_, brace) = open.iter().find(|&&(o, _)| o == '{')?;
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    if line_start <= brace {
        // The error is on the body's own line: no definition follows it.
        return None;
    }
    let line = &source[line_start..];
    let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
    let (keyword, next) = definition_start(&line[indent..])?;
    // `model m` or `use resnet`, not a name `model` used on its own.
    next.chars()
        .next()
        .filter(|c| c.is_alphabetic() || *c == '_' || *c == '"')?;
    let brace_line = &source[source[..brace].rfind('\n').map_or(0, |i| i + 1)..brace];
    Some(UnclosedBody {
        brace,
        owner: definition_start(brace_line.trim_start()).and_then(|(kind, rest)| {
            let name_len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (name_len > 0).then(|| (kind, &rest[..name_len]))
        }),
        misindented: misindented_brace(source, brace + 1, line_start),
        keyword,
        at: line_start + indent,
    })
}

/// The first `{` between `from` and `to` closed by a `}` that starts its
/// line with less indentation than the `{`'s line has, with that `}`.
fn misindented_brace(source: &str, from: usize, to: usize) -> Option<(usize, usize)> {
    let line_indent = |at: usize| {
        let line = &source[source[..at].rfind('\n').map_or(0, |i| i + 1)..];
        let blank = line.len() - line.trim_start_matches([' ', '\t']).len();
        (
            blank,
            line.as_ptr() as usize - source.as_ptr() as usize + blank,
        )
    };
    let mut open = Vec::new();
    for (i, c) in brackets(&source[from..to]) {
        let at = from + i;
        match c {
            '{' => open.push(at),
            '}' => {
                let opened = open.pop()?;
                let (close_indent, first) = line_indent(at);
                if first == at && close_indent < line_indent(opened).0 {
                    return Some((opened, at));
                }
            }
            _ => {}
        }
    }
    None
}

/// The definition keyword `text` starts with, followed by blanks, and what
/// follows the blanks.
fn definition_start(text: &str) -> Option<(&str, &str)> {
    DEFINITION_KEYWORDS.into_iter().find_map(|keyword| {
        let rest = text.strip_prefix(keyword)?;
        let after = rest.trim_start_matches([' ', '\t']);
        (after.len() < rest.len()).then_some((keyword, after))
    })
}

impl UnclosedBody<'_> {
    fn diagnostic(&self, source: &str, file: FileId) -> Diagnostic {
        let title = match self.owner {
            Some((kind, name)) => format!("{kind} `{name}` is not closed"),
            None => "a `{` is not closed".to_string(),
        };
        let line = source[..self.at].matches('\n').count() + 1;
        let mut diagnostic = Diagnostic::error(
            Span::new(file, self.brace, self.brace + 1),
            title,
            "this `{` is never closed",
        );
        if let Some((opened, closed)) = self.misindented {
            let line = source[..closed].matches('\n').count() + 1;
            diagnostic = diagnostic.with_context(
                Span::new(file, opened, opened + 1),
                format!(
                    "perhaps this one's: the `}}` on line {line} that closes it is indented less than its line"
                ),
            );
        }
        diagnostic
            .with_context(
                Span::new(file, self.at, self.at + self.keyword.len()),
                format!("`{}` starts the next definition here", self.keyword),
            )
            .with_note(format!(
                "help: a `}}` is missing somewhere before line {line}"
            ))
    }
}

/// The opening quote and the line's end, when the line of `offset` has a
/// string that is not closed and that starts at or before `offset`.
fn unclosed_string(source: &str, offset: usize) -> Option<(usize, usize)> {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |n| n + 1);
    let line_end = source[offset..]
        .find('\n')
        .map_or(source.len(), |n| offset + n);
    let mut open = None;
    for (i, c) in source[line_start..line_end].char_indices() {
        match c {
            '"' if open.is_some() => open = None,
            '"' => open = Some(line_start + i),
            '#' if open.is_none() => break,
            _ => {}
        }
    }
    open.filter(|&quote| quote <= offset)
        .map(|quote| (quote, line_end))
}

/// What opens or closes a level of the parser's recursion.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mark {
    Open(char),
    Close(char),
    /// The keyword `if`.
    If,
}

/// The brackets and `if` keywords of `source` outside comments and
/// strings, with their offsets.
fn marks(source: &str) -> impl Iterator<Item = (usize, Mark)> + '_ {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let bytes = source.as_bytes();
    let mut in_string = false;
    let mut in_comment = false;
    source.char_indices().filter_map(move |(i, c)| {
        match c {
            '\n' => (in_string, in_comment) = (false, false),
            _ if in_comment => {}
            '"' => in_string = !in_string,
            _ if in_string => {}
            '#' => in_comment = true,
            '(' | '[' | '{' => return Some((i, Mark::Open(c))),
            ')' | ']' | '}' => return Some((i, Mark::Close(c))),
            'i' if bytes.get(i + 1) == Some(&b'f')
                && !bytes.get(i + 2).is_some_and(word)
                && !(i > 0 && word(&bytes[i - 1])) =>
            {
                return Some((i, Mark::If));
            }
            _ => {}
        }
        None
    })
}

/// The brackets of `source` outside comments and strings, with their offsets.
fn brackets(source: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    marks(source).filter_map(|(i, mark)| match mark {
        Mark::Open(c) | Mark::Close(c) => Some((i, c)),
        Mark::If => None,
    })
}

/// The brackets open at `offset` (innermost last), with their positions.
fn open_brackets(source: &str, offset: usize) -> Vec<(char, usize)> {
    let mut open = Vec::new();
    for (i, c) in brackets(&source[..offset.min(source.len())]) {
        match c {
            '(' | '[' | '{' => open.push((c, i)),
            _ => {
                if open.last().is_some_and(|&(o, _)| closer(o) == c) {
                    open.pop();
                }
            }
        }
    }
    open
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

fn opener(close: char) -> char {
    match close {
        ')' => '(',
        ']' => '[',
        _ => '{',
    }
}

/// Whether the `(` at `at` follows a name after a space, as in `conv (64)`
/// (keywords such as `if (a) { ... }` and `for (a, b) in` excepted).
fn called_with_space(source: &str, at: usize) -> bool {
    let before = &source[..at];
    let name_end = before.trim_end_matches([' ', '\t']);
    if name_end.len() == before.len() {
        return false;
    }
    let word: String = name_end
        .chars()
        .rev()
        .take_while(|&c| is_name_char(c))
        .collect();
    let word: String = word.chars().rev().collect();
    !word.is_empty()
        && !word.starts_with(|c: char| c.is_ascii_digit())
        && !matches!(
            word.as_str(),
            "if" | "in" | "and" | "or" | "not" | "where" | "for"
        )
}

/// What stands at `offset`, for "found ..." (and its length in bytes).
fn describe_found(source: &str, offset: usize) -> (String, usize) {
    let rest = &source[offset.min(source.len())..];
    match rest.chars().next() {
        None => ("the end of the file".to_string(), 0),
        Some('\n' | '\r') => ("the end of the line".to_string(), 0),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (format!("`{word}`"), word.len())
        }
        Some('\0') => ("a NUL byte (\\0)".to_string(), 1),
        Some(c) if invisible(c) => (
            format!("the invisible character U+{:04X}", u32::from(c)),
            c.len_utf8(),
        ),
        Some(c) => (format!("`{c}`"), c.len_utf8()),
    }
}

/// Whether `c` shows as nothing, or as a space that the grammar does not
/// take for one: control characters, spaces other than ` ` and tab, and
/// the zero-width and direction marks (a byte-order mark inside a file).
fn invisible(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// The tokens and constructs that could have continued the parse.
fn expected_items(error: &pest::error::Error<Rule>) -> Vec<String> {
    let mut expected = Vec::new();
    if let Some(attempts) = error.parse_attempts() {
        for token in attempts.expected_tokens() {
            // `ParsingToken` is not exported; its rendering tells literal
            // tokens from character ranges (`a..z`) and built-in rules.
            let text = token.to_string();
            let is_range = text.chars().count() == 4 && text.get(1..3) == Some("..");
            // Whitespace and comments may appear anywhere: not worth naming.
            if !text.trim().is_empty()
                && !is_range
                && !matches!(text.as_str(), "BUILTIN_RULE" | "E" | "#")
            {
                expected.push(format!("`{text}`"));
            }
        }
    }
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &error.variant {
        expected.extend(
            positives
                .iter()
                .filter_map(|r| rule_description(*r))
                .map(str::to_string),
        );
    }
    if expected.len() > 8 {
        // A long list helps nobody: operators and keywords that could continue
        // an expression are rarely what was meant; closing brackets and
        // separators usually are, and named constructs summarise the rest.
        expected.retain(|e| {
            !e.starts_with('`') || ["`)`", "`]`", "`}`", "`,`", "`:`"].contains(&e.as_str())
        });
        if expected.is_empty() {
            expected.push("an expression".to_string());
        }
    }
    // Tokens that only begin a construct already named.
    if expected.iter().any(|e| e.starts_with("a body")) {
        expected.retain(|e| e != "`{`");
    }
    if expected.iter().any(|e| e == "a name") {
        expected.retain(|e| e != "`_`");
    }
    expected
}

/// A reader's name for a grammar rule, or `None` for rules too small to mention.
fn rule_description(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::item | Rule::use_item | Rule::block_item | Rule::model_item | Rule::train_item => {
            "an item (`use`, `block`, `model` or `train`)"
        }
        Rule::ident | Rule::callee | Rule::name => "a name",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::list => "a list `[...]`",
        Rule::expr | Rule::pipe | Rule::or_expr | Rule::expr_stmt => "an expression",
        Rule::body => "a body `{ ... }`",
        Rule::let_stmt | Rule::output_stmt | Rule::for_stmt => "a statement",
        Rule::param => "a parameter",
        Rule::train_entry => "a `key: value` entry",
        Rule::module_path => "a module name",
        Rule::EOI => "the end of the file",
        _ => return None,
    })
}

/// A hint for common slips, judged from the text at the error and the
/// innermost open bracket there.
fn syntax_hint(source: &str, offset: usize, innermost: Option<char>) -> Option<String> {
    let before = source[..offset.min(source.len())].trim_end();
    let rest = &source[offset.min(source.len())..];
    let after_word = before.ends_with(|c: char| c.is_alphanumeric() || c == '_');
    if rest.starts_with('=') && !rest.starts_with("==") && after_word {
        return match innermost {
            Some('(') => Some("help: arguments are given as `name: value`; `=` is for defaults of parameters and `let`".into()),
            // `x = 3` as a whole statement.
            Some('{') if statement_is_a_name(before) => {
                Some("help: bind a value with `let name = value`".into())
            }
            _ => None,
        };
    }
    if innermost.is_none() {
        return glued_item(rest);
    }
    None
}

/// For an item whose keyword runs into its name (`modelm : [...]`), a
/// hint to put a space between them: a keyword followed by a letter is a
/// longer name.
fn glued_item(rest: &str) -> Option<String> {
    // Each item keyword, and what follows its name.
    let items: [(&str, &[char]); 3] = [
        ("block", &['(', '{']),
        ("model", &['(', ':']),
        ("train", &['{']),
    ];
    items.iter().find_map(|(keyword, next)| {
        let tail = rest.strip_prefix(keyword)?;
        let name_len = tail.find(|c: char| !is_name_char(c)).unwrap_or(tail.len());
        let name = &tail[..name_len];
        let follows = tail[name_len..].trim_start().starts_with(*next);
        (!name.is_empty() && follows).then(|| {
            format!("help: a keyword and a name need a space between them: `{keyword} {name}`")
        })
    })
}

/// Whether `c` may continue a name (the grammar's `ident_char`).
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether the statement that `before` ends with is a single name.
fn statement_is_a_name(before: &str) -> bool {
    let statement = before
        .rsplit(['{', '}', ';', '\n'])
        .next()
        .unwrap_or("")
        .trim();
    !statement.is_empty()
        && !matches!(statement, "let" | "output")
        && statement.chars().all(is_name_char)
}

fn join_alternatives(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

/// Builds AST nodes from pest pairs. The grammar guarantees each pair's
/// shape, so the accessors below only unwrap what the grammar makes certain.
struct Builder {
    file: FileId,
    /// For each byte offset of the source, the end of its last token
    /// before that offset ([`token_ends`]).
    token_ends: Vec<usize>,
}

impl Builder {
    /// The span of a pair without trailing whitespace and comments: pest
    /// skips them before trying an optional part that then does not match
    /// (`conv(64)  # comment` without `as`), and they would widen the caret.
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        let end = if s.as_str().ends_with(char::is_whitespace) {
            // A pair starts with a token, so its last token ends at or after its start.
            self.token_ends[s.end()].max(s.start())
        } else {
            s.end()
        };
        Span::new(self.file, s.start(), end)
    }

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn item(&self, pair: Pair<Rule>) -> Item {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::use_item => {
                // use_item = "use" ~ (string | module_path)
                let target = pair.into_inner().next().expect("use target");
                let target = match target.as_rule() {
                    Rule::string => UseTarget::Path(unquote(target.as_str())),
                    _ => UseTarget::Module(target.as_str().to_string()),
                };
                Item::Use(Use { target, span })
            }
            Rule::block_item => Item::Block(self.definition(pair, span)),
            Rule::model_item => Item::Model(self.definition(pair, span)),
            Rule::train_item => {
                let mut model = None;
                let mut entries = Vec::new();
                for part in pair.into_inner() {
                    match part.as_rule() {
                        Rule::ident => model = Some(self.ident(part)),
                        _ => {
                            let mut kv = part.into_inner();
                            let key = self.ident(kv.next().expect("entry key"));
                            let value = self.expr(kv.next().expect("entry value"));
                            entries.push((key, value));
                        }
                    }
                }
                Item::Train(Train {
                    model,
                    entries,
                    span,
                })
            }
            other => unreachable!("grammar: item cannot be {other:?}"),
        }
    }

    fn definition(&self, pair: Pair<Rule>, span: Span) -> Definition {
        let mut parts = pair.into_inner();
        let name = self.ident(parts.next().expect("definition name"));
        let mut params = Vec::new();
        let mut input = None;
        let mut body = Vec::new();
        for part in parts {
            match part.as_rule() {
                Rule::params => params = part.into_inner().map(|p| self.param(p)).collect(),
                Rule::list => input = Some(self.primary(part)),
                Rule::body => body = self.body(part),
                other => unreachable!("grammar: definition part cannot be {other:?}"),
            }
        }
        Definition {
            name,
            params,
            input,
            body,
            span,
        }
    }

    fn param(&self, pair: Pair<Rule>) -> Param {
        let mut parts = pair.into_inner();
        let name = self.ident(parts.next().expect("param name"));
        let default = parts.next().map(|p| self.expr(p));
        Param { name, default }
    }

    fn body(&self, pair: Pair<Rule>) -> Vec<Stmt> {
        pair.into_inner().map(|p| self.stmt(p)).collect()
    }

    fn stmt(&self, pair: Pair<Rule>) -> Stmt {
        match pair.as_rule() {
            Rule::let_stmt | Rule::output_stmt => {
                let rule = pair.as_rule();
                let mut parts = pair.into_inner();
                let name = self.ident(parts.next().expect("binding name"));
                let value = self.expr(parts.next().expect("binding value"));
                if rule == Rule::let_stmt {
                    Stmt::Let(name, value)
                } else {
                    Stmt::Output(name, value)
                }
            }
            Rule::for_stmt => {
                // for_head = "for" ~ (ident ~ ",")? ~ (ident | unpack) ~ "in" ~ expr
                let mut vars = Vec::new();
                let mut iter = None;
                let mut body = Vec::new();
                for part in pair.into_inner() {
                    match part.as_rule() {
                        Rule::ident => vars.push(ForVar::Name(self.ident(part))),
                        Rule::unpack => {
                            let span = self.span(&part);
                            let names = part.into_inner().map(|p| self.ident(p)).collect();
                            vars.push(ForVar::Unpack(names, span));
                        }
                        Rule::expr => iter = Some(self.expr(part)),
                        _ => body = self.body(part),
                    }
                }
                let var = vars.pop().expect("for variable");
                let index = match vars.pop() {
                    Some(ForVar::Name(index)) => Some(index),
                    // The grammar makes the index a plain name.
                    Some(ForVar::Unpack(..)) | None => None,
                };
                Stmt::For {
                    index,
                    var,
                    iter: iter.expect("for iterable"),
                    body,
                }
            }
            Rule::expr_stmt => Stmt::Expr(self.expr(pair.into_inner().next().expect("expression"))),
            other => unreachable!("grammar: statement cannot be {other:?}"),
        }
    }

    fn expr(&self, pair: Pair<Rule>) -> Expr {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::expr => {
                let mut parts = pair.into_inner();
                let value = self.expr(parts.next().expect("pipe"));
                match parts.next() {
                    None => value,
                    Some(clause) => {
                        let assigns = clause
                            .into_inner()
                            .map(|assign| {
                                let mut ab = assign.into_inner();
                                let index = self.primary(ab.next().expect("slice"));
                                let value = self.expr(ab.next().expect("slice value"));
                                (index, value)
                            })
                            .collect();
                        Expr {
                            kind: ExprKind::Where(Box::new(value), assigns),
                            span,
                        }
                    }
                }
            }
            Rule::pipe => {
                let mut parts = pair.into_inner();
                let head = self.expr(parts.next().expect("pipe head"));
                let stages: Vec<Expr> = parts
                    .filter(|p| p.as_rule() != Rule::arrow)
                    .map(|p| self.primary(p))
                    .collect();
                if stages.is_empty() {
                    head
                } else {
                    Expr {
                        kind: ExprKind::Pipe(Box::new(head), stages),
                        span,
                    }
                }
            }
            Rule::or_expr | Rule::and_expr | Rule::comparison | Rule::sum | Rule::product => {
                self.binary_chain(pair)
            }
            Rule::range => {
                let mut parts = pair.into_inner();
                let start = self.expr(parts.next().expect("range start"));
                match (parts.next(), parts.next()) {
                    (Some(op), Some(end)) => {
                        let included = if op.as_str() == "..=" {
                            RangeEnd::Included
                        } else {
                            RangeEnd::Excluded
                        };
                        let end = Box::new(self.expr(end));
                        Expr {
                            kind: ExprKind::Range(Box::new(start), end, included),
                            span,
                        }
                    }
                    _ => start,
                }
            }
            Rule::not_expr => {
                // not_expr = not_op* ~ comparison: the innermost `not` first.
                let mut parts: Vec<Pair<Rule>> = pair.into_inner().collect();
                let mut value = self.expr(parts.pop().expect("not operand"));
                for not in parts.into_iter().rev() {
                    value = Expr {
                        span: self.span(&not).to(value.span),
                        kind: ExprKind::Unary(UnOp::Not, Box::new(value)),
                    };
                }
                value
            }
            Rule::unary => {
                let parts: Vec<Pair<Rule>> = pair.into_inner().collect();
                let negations = parts.len() - 1;
                let mut iter = parts.into_iter();
                let mut negs = Vec::new();
                for _ in 0..negations {
                    negs.push(self.span(&iter.next().expect("neg op")));
                }
                let mut value = self.expr(iter.next().expect("unary operand"));
                for neg in negs.into_iter().rev() {
                    let span = neg.to(value.span);
                    value = Expr {
                        kind: ExprKind::Unary(UnOp::Neg, Box::new(value)),
                        span,
                    };
                }
                value
            }
            Rule::postfix => {
                let mut parts = pair.into_inner();
                let mut value = self.primary(parts.next().expect("postfix base"));
                for part in parts {
                    let span = value.span.to(self.span(&part));
                    let rule = part.as_rule();
                    let inner = part.into_inner().next().expect("postfix operand");
                    value = match rule {
                        Rule::field => Expr {
                            kind: ExprKind::Field(Box::new(value), self.ident(inner)),
                            span,
                        },
                        _ => Expr {
                            kind: ExprKind::Index(Box::new(value), Box::new(self.expr(inner))),
                            span,
                        },
                    };
                }
                value
            }
            _ => self.primary(pair),
        }
    }

    /// `a op b op c`, left-associative.
    fn binary_chain(&self, pair: Pair<Rule>) -> Expr {
        let mut parts = pair.into_inner();
        let mut lhs = self.expr(parts.next().expect("operand"));
        while let Some(op) = parts.next() {
            let rhs = self.expr(parts.next().expect("right operand"));
            let span = lhs.span.to(rhs.span);
            let op = match op.as_str().trim() {
                "or" => BinOp::Or,
                "and" => BinOp::And,
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "<" => BinOp::Lt,
                "<=" => BinOp::Le,
                ">" => BinOp::Gt,
                ">=" => BinOp::Ge,
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "//" => BinOp::FloorDiv,
                "%" => BinOp::Rem,
                other => unreachable!("grammar: operator cannot be {other:?}"),
            };
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        lhs
    }

    fn primary(&self, pair: Pair<Rule>) -> Expr {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::number => number(pair.as_str()),
            Rule::string => ExprKind::Str(unquote(pair.as_str())),
            Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
            Rule::list => ExprKind::List(pair.into_inner().map(|p| self.expr(p)).collect()),
            Rule::record => ExprKind::Record(
                pair.into_inner()
                    .map(|field| {
                        let mut kv = field.into_inner();
                        let key = self.ident(kv.next().expect("field name"));
                        (key, self.expr(kv.next().expect("field value")))
                    })
                    .collect(),
            ),
            Rule::paren => {
                return self.expr(pair.into_inner().next().expect("parenthesised expression"))
            }
            Rule::in_kw => ExprKind::Input,
            Rule::name => {
                let mut parts = pair.into_inner();
                let name = self.ident(parts.next().expect("name"));
                let alias = parts
                    .next()
                    .map(|a| self.ident(a.into_inner().next().expect("alias name")));
                ExprKind::Name(name, alias)
            }
            Rule::call => ExprKind::Call(self.call(pair)),
            Rule::if_expr => self.if_expr(pair),
            _ => return self.expr(pair),
        };
        Expr { kind, span }
    }

    fn call(&self, pair: Pair<Rule>) -> Call {
        let mut parts = pair.into_inner();
        let callee = self.ident(parts.next().expect("callee"));
        let mut args = Vec::new();
        let mut alias = None;
        for part in parts {
            match part.as_rule() {
                Rule::named_arg => {
                    let mut kv = part.into_inner();
                    let name = self.ident(kv.next().expect("argument name"));
                    args.push(Arg {
                        name: Some(name),
                        value: self.expr(kv.next().expect("argument value")),
                    });
                }
                Rule::alias => {
                    alias = Some(self.ident(part.into_inner().next().expect("alias name")))
                }
                _ => args.push(Arg {
                    name: None,
                    value: self.expr(part),
                }),
            }
        }
        Call {
            callee,
            args,
            alias,
        }
    }

    /// `if c { } else if d { } else { }`: each `else if` becomes an `if`
    /// alone in the `else` body of the one before, from its `if` to the end
    /// of the chain, built from the last one back without recursion.
    fn if_expr(&self, pair: Pair<Rule>) -> ExprKind {
        let end = self.span(&pair).end;
        // if_expr = if_kw ~ expr ~ body ~ else_if* ~ ("else" ~ body)?
        let mut parts = pair.into_inner().skip(1);
        let cond = self.expr(parts.next().expect("if condition"));
        let then = self.body(parts.next().expect("if body"));
        let mut branches = Vec::new();
        let mut otherwise = None;
        for part in parts {
            if part.as_rule() == Rule::else_if {
                // else_if = "else" ~ if_kw ~ expr ~ body
                let mut branch = part.into_inner();
                let start = self.span(&branch.next().expect("`if`")).start;
                let cond = self.expr(branch.next().expect("else if condition"));
                let body = self.body(branch.next().expect("else if body"));
                branches.push((start, cond, body));
            } else {
                otherwise = Some(self.body(part));
            }
        }
        for (start, cond, body) in branches.into_iter().rev() {
            let kind = ExprKind::If(Box::new(cond), body, otherwise.take());
            let span = Span::new(self.file, start, end);
            otherwise = Some(vec![Stmt::Expr(Expr { kind, span })]);
        }
        ExprKind::If(Box::new(cond), then, otherwise)
    }
}

fn number(text: &str) -> ExprKind {
    if text.contains(['.', 'e', 'E']) {
        // The grammar only admits decimal digits, a fraction and an exponent.
        ExprKind::Float(text.parse().unwrap_or(f64::INFINITY))
    } else {
        match text.parse::<i64>() {
            Ok(i) => ExprKind::Int(i),
            // Too large for i64: keep it as a float, so that arithmetic on it
            // is reported as overflow where an integer is needed.
            Err(_) => ExprKind::Float(text.parse().unwrap_or(f64::INFINITY)),
        }
    }
}

/// For each byte offset of `text` (and its end), the end of the last token
/// before it: of the last character outside whitespace and comments
/// (strings cannot span lines, so a `#` outside a string starts a comment).
/// One pass over the file, so that trimming a pair's span costs nothing
/// however long the pair: scanning each pair's text instead took time
/// quadratic in the nesting of `not not ... x`.
fn token_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::with_capacity(text.len() + 1);
    let mut last = 0;
    let mut in_string = false;
    let mut in_comment = false;
    for (i, c) in text.char_indices() {
        ends.resize(i + 1, last);
        match c {
            '\n' => (in_string, in_comment) = (false, false),
            _ if in_comment => {}
            '#' if !in_string => in_comment = true,
            '"' => in_string = !in_string,
            _ => {}
        }
        if !in_comment && !c.is_whitespace() {
            last = i + c.len_utf8();
        }
    }
    ends.resize(text.len() + 1, last);
    ends
}

fn unquote(text: &str) -> String {
    text.trim_start_matches('"')
        .trim_end_matches('"')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> File {
        parse(src, 0).unwrap_or_else(|d| panic!("{d:?}"))
    }

    #[test]
    fn parses_a_block_with_pipeline_and_defaults() {
        let file = parse_ok("block b(f, s = 1) { let m = conv(f, 3, stride: s) -> relu\n m + in }");
        let Item::Block(def) = &file.items[0] else {
            panic!("not a block")
        };
        assert_eq!(def.params.len(), 2);
        assert!(def.params[1].default.is_some());
        assert_eq!(def.body.len(), 2);
        let Stmt::Let(_, value) = &def.body[0] else {
            panic!("not a let")
        };
        assert!(matches!(value.kind, ExprKind::Pipe(_, ref stages) if stages.len() == 1));
    }

    #[test]
    fn call_paren_must_touch_the_name() {
        // `foo\n(bar)` is two statements, not a call.
        let file = parse_ok("model m : [1, 1, 1] { foo\n(bar) }");
        let Item::Model(def) = &file.items[0] else {
            panic!("not a model")
        };
        assert_eq!(def.body.len(), 2);
    }

    #[test]
    fn precedence_of_arithmetic() {
        let file = parse_ok("block b { let x = 1 + 2 * 3 - 4 }");
        let Item::Block(def) = &file.items[0] else {
            panic!()
        };
        let Stmt::Let(_, e) = &def.body[0] else {
            panic!()
        };
        // ((1 + (2 * 3)) - 4)
        let ExprKind::Binary(BinOp::Sub, lhs, _) = &e.kind else {
            panic!("{e:?}")
        };
        assert!(matches!(lhs.kind, ExprKind::Binary(BinOp::Add, _, _)));
    }

    /// The deepest nesting the check before parsing lets through (64
    /// levels, the model's `{` one of them), and the densest statements,
    /// parse within half the budget.
    #[test]
    fn the_deepest_nesting_allowed_parses_within_half_the_budget() {
        let depth = MAX_NESTING - 1;
        let ifs = format!(
            "model m : [1, 1, 1] {{ let k = {}true{} }}",
            "if ".repeat(depth),
            " { 3 }".repeat(depth)
        );
        let parens = format!(
            "model m : [1, 1, 1] {{ let k = {}1{} }}",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        let names = format!("model m : [1, 1, 1] {{ {} }}", "a ".repeat(2000));
        let lets = format!("model m : [1, 1, 1] {{ {} }}", "let a=-b;".repeat(500));
        for source in [ifs, parens, names, lets] {
            assert!(too_deep(&source, 0).is_none(), "{source}");
            let parsed = parse_with(Rule::file, &source, Detail::Fast, CALLS_PER_BYTE / 2, 0);
            assert!(parsed.is_ok(), "{source}");
        }
    }

    #[test]
    fn every_project_file_parses_within_a_tenth_of_the_budget() {
        let mut files = Vec::new();
        for dir in ["stdlib", "examples", "tests/bad"] {
            for entry in std::fs::read_dir(dir).expect("folder") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "cnn") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 80, "{} files", files.len());
        for path in files {
            let Ok(source) = std::fs::read_to_string(&path) else {
                continue; // not UTF-8, refused before parsing
            };
            if too_deep(&source, 0).is_some() {
                continue; // refused before parsing
            }
            let outcome = |per_byte, base| {
                parse_with(Rule::file, &source, Detail::Fast, per_byte, base)
                    .map(drop)
                    .map_err(|e| e.location)
            };
            assert_eq!(
                outcome(CALLS_PER_BYTE / 10, CALLS_BASE / 10),
                outcome(CALLS_PER_BYTE, CALLS_BASE),
                "{}",
                path.display()
            );
        }
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/front_end.rs`): each `if` below
    /// was parsed as the operand of a subtraction and, when that failed,
    /// again as a new statement, so that the time doubled with each level
    /// (2^30 parses here). Now the body that fails recovers, nothing is
    /// parsed twice, and the error is found within a tenth of the budget.
    #[test]
    fn backtracking_over_nested_ifs_ends_at_the_error() {
        let levels = 30;
        let nested = format!(
            "model m : [28, 28, 1] {{\n relu {} @ {}\n}}\n",
            "- if x > 3 { relu ".repeat(levels),
            "}".repeat(levels)
        );
        // Brackets left open at the end of the file: each recovers there
        // once, rather than skipping everything inside it again.
        let unclosed = format!(
            "model m : [28, 28, 1] {{\n{}",
            "relu - if x > 3 { conv(64, [3, 3], (a: 1".repeat(levels / 2)
        );
        let mut sources = vec![
            ("nested ifs".to_string(), nested.clone()),
            ("unclosed".to_string(), unclosed),
        ];
        for name in [
            "front_end-timeout-minus-and-ifs-1.cnn",
            "front_end-timeout-minus-and-ifs-2.cnn",
        ] {
            let path = format!("tests/fuzzed/{name}");
            let source = std::fs::read_to_string(&path).expect("the fuzzed file");
            sources.push((path, source));
        }
        for (name, source) in &sources {
            let tolerant = parse_with(
                Rule::file,
                source,
                Detail::Fast,
                CALLS_PER_BYTE / 10,
                CALLS_BASE / 10,
            );
            let root = tolerant.expect(name).next().expect("file");
            assert!(first_recovered(root.into_inner()).is_some(), "{name}");
            let error = parse(source, 0).expect_err(name);
            assert_eq!(error.message, "syntax error", "{name}");
        }
        let error = parse(&nested, 0).expect_err("a syntax error");
        assert_eq!(&nested[error.primary.span.start..][..1], "@");
        assert!(error.primary.message.starts_with("expected "), "{error:?}");
    }

    /// Each bracketed construct recovers where its contents fail, and the
    /// error is the one its contents give alone: at the token that went
    /// wrong, with what was expected there.
    #[test]
    fn every_bracket_recovers_and_reports_where_its_contents_fail() {
        let cases = [
            ("block b { relu @ }", "@", "body"),
            ("block b(x y) { relu }", "y", "params"),
            ("block b { conv(64 3) }", "3", "call"),
            ("block b { let k = [1 2] }", "2", "list"),
            ("block b { let k = (a: 1 b: 2) }", "b", "record"),
            ("block b { let k = (1 2) }", "2", "paren"),
            ("block b { let k = x[1 2] }", "2", "index"),
            ("train { epochs: 3 @ }", "@", "train"),
        ];
        for (source, at, what) in cases {
            let root = parse_within_budget(Rule::file, source, Detail::Fast)
                .unwrap_or_else(|e| panic!("{what}: the file parses with recovery: {e}"))
                .next()
                .expect("file");
            assert!(first_recovered(root.into_inner()).is_some(), "{what}");
            error_at(source, at, what);
        }
    }

    #[test]
    fn a_keyword_that_runs_into_a_name_is_the_name() {
        let error = error_at("modelm : [8, 8, 1] { relu }\n", "modelm", "glued model");
        assert_eq!(
            error.notes,
            ["help: a keyword and a name need a space between them: `model m`"]
        );
        // `letter = 3` is not `let ter = 3`, nor `output_size = 3` an output.
        for statement in ["letter = 3", "output_size = 3"] {
            let source = format!("model m : [8, 8, 1] {{\n    {statement}\n}}\n");
            let error = error_at(&source, "= 3", statement);
            assert_eq!(error.notes, ["help: bind a value with `let name = value`"]);
        }
        let file = parse(
            "model m : [8, 8, 1] {\n    let letter = 3\n    format\n}\n",
            0,
        )
        .expect("parses");
        let Item::Model(model) = &file.items[0] else {
            panic!("a model")
        };
        assert!(
            matches!(&model.body[1], Stmt::Expr(e) if matches!(&e.kind, ExprKind::Name(n, None) if n.name == "format"))
        );
    }

    /// The syntax error of `source`, checked to begin with the text `at`.
    fn error_at(source: &str, at: &str, what: &str) -> Diagnostic {
        let error = parse(source, 0).expect_err(what);
        assert_eq!(error.message, "syntax error", "{what}");
        let start = error.primary.span.start;
        assert_eq!(&source[start..start + at.len()], at, "{what}: {error:?}");
        error
    }

    /// Recovery ends at the construct's own closing bracket, over nested
    /// brackets: the rest of the file parses as before. An unclosed `(`
    /// takes what follows to the end of the file, and the error is still
    /// where its arguments went wrong.
    #[test]
    fn recovery_ends_at_the_matching_bracket() {
        let source = "block a { conv(64, { ] ) # ) }\n } ) } block b { relu }";
        let root = parse_within_budget(Rule::file, source, Detail::Fast)
            .expect("recovers")
            .next()
            .expect("file");
        let call = first_recovered(root.clone().into_inner()).expect("recovered");
        let broken = call.into_inner().nth(1).expect("recovery");
        assert_eq!(broken.as_rule(), Rule::broken_paren);
        assert_eq!(broken.as_str(), "64, { ] ) # ) }\n } )");
        let items: Vec<Rule> = root.into_inner().map(|p| p.as_rule()).collect();
        assert_eq!(items, [Rule::block_item, Rule::block_item, Rule::EOI]);
        let unclosed = "block a { conv(64,\n }\nblock b { relu }";
        let error = parse(unclosed, 0).expect_err("a syntax error");
        assert_eq!(&unclosed[error.primary.span.start..][..1], "}");
    }

    /// Where a file has several errors, the first is reported, as before
    /// recovery: an error inside a construct that recovered comes before
    /// the error of the construct around it, or of the file.
    #[test]
    fn the_first_of_several_errors_is_reported() {
        let cases = [
            (
                "block b {\n relu @\n}\nblock c {\n relu\n}\n}",
                "@\n",
                "a body, then a stray `}`",
            ),
            (
                "block b { let x = (a: 1 b: 2)\n relu @ }",
                "b:",
                "a record, then its body",
            ),
            (
                "block b { conv(64 3)\n relu\n dense(10) as\n}",
                "3)",
                "a call, then an alias",
            ),
            ("block b(x y) { relu } ]", "y)", "parameters, then the file"),
            (
                "block b { let k = [[[x @] @] @] }",
                "@] @] @]",
                "nested lists",
            ),
        ];
        for (source, at, what) in cases {
            error_at(source, at, what);
        }
    }

    /// A bracket left open where a construct still needs more (a body
    /// after a model's input shape or a `for`'s list) is reported where it
    /// went wrong, not at the end of the file its recovery reached.
    #[test]
    fn an_unclosed_bracket_before_a_body_is_reported_where_it_went_wrong() {
        let cases = [
            ("model m : [28, 28, 1 {\n relu\n}\n", "{", "the input shape"),
            (
                "block b(x, y {\n relu\n}\nblock c { relu }\n",
                "{",
                "parameters",
            ),
            (
                "model m(n = 3 : [28, 28, 1] {\n relu\n}\n",
                ":",
                "parameters before `:`",
            ),
            (
                "model m : [1, 1, 1] {\n for x in [1, 2 {\n relu\n }\n}\n",
                "{\n relu",
                "a `for` list",
            ),
            (
                "model m : [1, 1, 1] {\n if x > f(1 {\n relu\n }\n}\n",
                "{\n relu",
                "an `if` condition",
            ),
        ];
        for (source, at, what) in cases {
            let error = error_at(source, at, what);
            assert!(
                !error.primary.message.contains("end of the file"),
                "{what}: {error:?}"
            );
        }
    }

    /// A statement may begin with a list, after one that ends with a value
    /// that could be indexed: the `[` is not taken for an index.
    #[test]
    fn a_statement_may_begin_with_a_list() {
        let source = "model m : [28, 28, 1] {\n let a = in\n let b = conv(8, 3, padding: same)\n [a, b][1] -> relu\n flatten\n}";
        let file = parse_ok(source);
        let Item::Model(def) = &file.items[0] else {
            panic!("a model")
        };
        assert_eq!(def.body.len(), 4);
    }

    #[test]
    fn syntax_error_names_expected_tokens() {
        let err = parse("model m : [1, 1, 1] { conv(64, ) ) }", 0).unwrap_err();
        assert_eq!(err.message, "syntax error");
        assert!(
            err.primary.message.contains("expected"),
            "{}",
            err.primary.message
        );
        assert_eq!(err.primary.span.start, 33);
    }

    #[test]
    fn spans_exclude_trailing_comments() {
        let src = "block b { conv(64)   # first\n relu }";
        let file = parse_ok(src);
        let Item::Block(def) = &file.items[0] else {
            panic!()
        };
        let Stmt::Expr(e) = &def.body[0] else {
            panic!()
        };
        assert_eq!(&src[e.span.start..e.span.end], "conv(64)");
    }

    #[test]
    fn word_operators_need_a_boundary_but_not_a_space_after() {
        parse_ok("block b { let x = a == 0 and i > 0 or not c }");
        parse_ok("block b { let x = in -> relu }");
    }

    #[test]
    fn a_name_starting_with_as_is_not_an_alias() {
        // Not `relu as semble`.
        let file = parse_ok("block b { relu\n assemble }");
        let Item::Block(def) = &file.items[0] else {
            panic!()
        };
        assert_eq!(def.body.len(), 2);
        parse_ok("block b { relu as   # a comment\n r1 }");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = |n: usize| format!("block b {{ let x = {}1{} }}", "(".repeat(n), ")".repeat(n));
        parse_ok(&deep(MAX_NESTING - 1));
        let err = parse(&deep(100_000), 0).unwrap_err();
        assert_eq!(err.message, "brackets are nested too deeply");
        let err = parse(&format!("block b {{ let x = {}1 }}", "-".repeat(1000)), 0).unwrap_err();
        assert_eq!(err.message, "expressions are nested too deeply");
    }

    /// The expression bound by the first `let` of the first item's body.
    fn bound(file: &File) -> &Expr {
        let (Item::Block(def) | Item::Model(def)) = &file.items[0] else {
            panic!("not a definition")
        };
        let Stmt::Let(_, e) = &def.body[0] else {
            panic!("not a let")
        };
        e
    }

    #[test]
    fn a_run_of_nots_nests_from_the_first() {
        let src = "block b { let x = not not  c }";
        let file = parse_ok(src);
        let outer = bound(&file);
        let ExprKind::Unary(UnOp::Not, inner) = &outer.kind else {
            panic!("{outer:?}")
        };
        assert_eq!(&src[outer.span.start..outer.span.end], "not not  c");
        assert_eq!(&src[inner.span.start..inner.span.end], "not  c");
        assert!(
            matches!(&inner.kind, ExprKind::Unary(UnOp::Not, c) if matches!(c.kind, ExprKind::Name(..)))
        );
    }

    #[test]
    fn an_else_if_is_an_if_alone_in_the_else_branch() {
        let src =
            "block b { let x = if a { 1 } else if c { 2 } else if d { 3 } else { 4 }  # end\n}";
        let file = parse_ok(src);
        let ExprKind::If(_, _, Some(otherwise)) = &bound(&file).kind else {
            panic!("not an if with an else")
        };
        let [Stmt::Expr(second)] = otherwise.as_slice() else {
            panic!("{otherwise:?}")
        };
        let text = &src[second.span.start..second.span.end];
        assert_eq!(text, "if c { 2 } else if d { 3 } else { 4 }");
        let ExprKind::If(cond, then, Some(otherwise)) = &second.kind else {
            panic!("{second:?}")
        };
        assert!(matches!(&cond.kind, ExprKind::Name(n, None) if n.name == "c"));
        assert!(matches!(then.as_slice(), [Stmt::Expr(e)] if e.kind == ExprKind::Int(2)));
        let [Stmt::Expr(third)] = otherwise.as_slice() else {
            panic!("{otherwise:?}")
        };
        assert_eq!(
            &src[third.span.start..third.span.end],
            "if d { 3 } else { 4 }"
        );
        let ExprKind::If(_, _, Some(last)) = &third.kind else {
            panic!("{third:?}")
        };
        assert!(matches!(last.as_slice(), [Stmt::Expr(e)] if e.kind == ExprKind::Int(4)));
    }

    #[test]
    fn an_if_nests_until_its_body_opens() {
        let ifs = |n: usize| {
            format!(
                "block b {{ let x = {}c{} }}",
                "if ".repeat(n),
                " { 1 }".repeat(n)
            )
        };
        // The block's `{` is one level.
        parse_ok(&ifs(MAX_NESTING - 1));
        let err = parse(&ifs(MAX_NESTING), 0).unwrap_err();
        assert_eq!(err.message, "`if` expressions are nested too deeply");
        assert_eq!(err.primary.span.start, 18 + 3 * (MAX_NESTING - 1));
        // Each `else if` begins after the body before it has closed.
        let chain = format!(
            "block b {{ let x = if c {{ 1 }}{} }}",
            " else if c { 1 }".repeat(MAX_NESTING + 10)
        );
        parse_ok(&chain);
    }

    #[test]
    fn where_clause_takes_all_assignments() {
        let file = parse_ok(
            "block b { conv(2, 7, init: zeros where [_, 3, _, 0] = 1, [3, _, _, 1] = 1) }",
        );
        let Item::Block(def) = &file.items[0] else {
            panic!()
        };
        let Stmt::Expr(e) = &def.body[0] else {
            panic!()
        };
        let ExprKind::Call(call) = &e.kind else {
            panic!()
        };
        assert_eq!(call.args.len(), 3);
        assert!(matches!(&call.args[2].value.kind, ExprKind::Where(_, a) if a.len() == 2));
    }

    #[test]
    fn a_range_may_include_its_end() {
        let end = |src: &str| match &bound(&parse_ok(src)).kind {
            ExprKind::Range(_, _, end) => *end,
            other => panic!("not a range: {other:?}"),
        };
        assert_eq!(end("block b { let r = 0..n }"), RangeEnd::Excluded);
        assert_eq!(end("block b { let r = 0..=n - 1 }"), RangeEnd::Included);
        // `..=` binds looser than arithmetic, as `..` does.
        let file = parse_ok("block b { let r = 1 + 1..=2 * 3 }");
        let ExprKind::Range(start, end, _) = &bound(&file).kind else {
            panic!("not a range")
        };
        assert!(matches!(start.kind, ExprKind::Binary(BinOp::Add, ..)));
        assert!(matches!(end.kind, ExprKind::Binary(BinOp::Mul, ..)));
    }

    /// The index and the variable of the first statement, a `for`.
    fn loop_vars(src: &str) -> (Option<String>, Vec<String>, bool) {
        let file = parse_ok(src);
        let Item::Block(def) = &file.items[0] else {
            panic!("not a block")
        };
        let Stmt::For { index, var, .. } = &def.body[0] else {
            panic!("not a for")
        };
        let names = var.names().iter().map(|n| n.name.clone()).collect();
        let unpacks = matches!(var, ForVar::Unpack(..));
        (index.as_ref().map(|i| i.name.clone()), names, unpacks)
    }

    #[test]
    fn a_for_loop_binds_a_name_an_index_or_an_unpacking() {
        let strings = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            loop_vars("block b { for x in xs { } }"),
            (None, strings(&["x"]), false)
        );
        assert_eq!(
            loop_vars("block b { for i, x in xs { } }"),
            (Some("i".into()), strings(&["x"]), false)
        );
        assert_eq!(
            loop_vars("block b { for (k, f) in pairs { } }"),
            (None, strings(&["k", "f"]), true)
        );
        assert_eq!(
            loop_vars("block b { for i, (k, f, s,) in triples { } }"),
            (Some("i".into()), strings(&["k", "f", "s"]), true)
        );
        let src = "block b { for i, (k, f) in pairs { } }";
        let file = parse_ok(src);
        let Item::Block(def) = &file.items[0] else {
            panic!("not a block")
        };
        let Stmt::For {
            var: ForVar::Unpack(_, span),
            ..
        } = &def.body[0]
        else {
            panic!("not an unpacking")
        };
        assert_eq!(&src[span.start..span.end], "(k, f)");
    }

    #[test]
    fn an_unpacking_needs_two_names_and_the_index_comes_first() {
        // `(x)` would be `x` in Python: rather an error than a surprise.
        let one = parse("block b { for (x) in xs { } }", 0).unwrap_err();
        assert_eq!(one.message, "syntax error");
        assert!(one.notes.is_empty(), "{:?}", one.notes);
        assert_eq!(one.primary.span.start, 16);
        let unpacked_index = parse("block b { for (a, b), x in xs { } }", 0).unwrap_err();
        assert_eq!(unpacked_index.message, "syntax error");
    }
}
