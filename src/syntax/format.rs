//! `cnnc fmt`: one canonical layout for `.cnn` files ([`format`]).
//!
//! The layout is printed from the parse tree, so that only the space
//! between tokens changes, with the comments and line breaks of the
//! source in the gaps between the tree's nodes:
//!
//! - four spaces of indentation per body (`{ ... }`), one statement a
//!   line, `;` dropped; a body written on one line with one statement and
//!   no comment stays on one line (`if i == 0 { 64 } else { 1 }`);
//! - one space around binary operators, `->`, `=` and after `,` and `:`;
//!   none around `..` and `..=`, after a unary `-`, or inside brackets;
//! - a line break the source has inside a statement is kept (a long
//!   pipeline or argument list stays broken where the author broke it),
//!   its next line indented one level more; a bracket whose contents are
//!   broken closes on a line of its own, after a trailing comma, and one
//!   that is not has no trailing comma; a body's `{` stays on the line it
//!   opens and `else` follows the `}` before it;
//! - comments are kept, in order, each as written (trailing white space
//!   dropped): a comment on a line of its own is indented as the code
//!   around it; trailing comments that were aligned with each other
//!   (within two columns, no blank line between) stay aligned, at their
//!   rightmost column while the code ends two spaces before it, and every
//!   other trailing comment is two spaces after its code;
//! - blank lines are kept, at most one in a row, none at the start or end
//!   of a body or the file.
//!
//! The result is checked before it is returned: it parses to the same
//! syntax tree (but where each node lies) and has the same comments in
//! the same order. A file that would fail the check is not formatted, and
//! an error says so; formatting never changes a program or loses a
//! comment.

use pest::iterators::Pair;

use super::ast::File;
use super::{on_parse_stack, parse, parse_within_budget, Detail, Rule};
use crate::diagnostics::{floor_char, Diagnostic, FileId, Span};

/// Spaces per level of indentation.
const INDENT: usize = 4;

/// The `statement_levels` of a gap whose breaks start no continuation:
/// between the elements of a broken bracket, which have its level.
const NO_CONTINUATION: usize = usize::MAX;

/// `source` (file `file`) in the canonical layout, or the syntax error
/// that keeps it from parsing (the compiler's own, as `cnnc check` gives
/// it).
pub fn format(source: &str, file: FileId) -> Result<String, Diagnostic> {
    let tree = parse(source, file)?;
    let formatted = on_parse_stack(|| settle(source)).map_err(|message| internal(file, message))?;
    check((source, &tree), &formatted, file)?;
    Ok(formatted)
}

/// The error for a layout that could not be made or checked: the file is
/// left as it is.
fn internal(file: FileId, message: String) -> Diagnostic {
    Diagnostic::error(Span::new(file, 0, 0), "cannot format this file", message)
        .with_note("the file is left as it is; this is a bug in `cnnc fmt`, please report it")
}

/// Layouts a layout may take before it no longer changes: each pass can
/// only join groups of aligned trailing comments (two that were apart
/// may end up within [`ALIGNED_WITHIN`] columns), so a file settles in
/// fewer passes than it has groups.
const MAX_PASSES: usize = 16;

/// [`layout`] again on its own output until it no longer changes, so that
/// formatting a formatted file changes nothing.
fn settle(source: &str) -> Result<String, String> {
    let mut text = layout(source)?;
    for _ in 0..MAX_PASSES {
        let again = layout(&text)?;
        if again == text {
            return Ok(text);
        }
        text = again;
    }
    Err(format!("the layout did not settle in {MAX_PASSES} passes"))
}

/// Prints the parse tree of `source`, which parses.
fn layout(source: &str) -> Result<String, String> {
    let mut pairs = parse_within_budget(Rule::file, source, Detail::Fast)
        .map_err(|e| format!("the file parsed once but not again: {e}"))?;
    let root = pairs
        .next()
        .ok_or_else(|| "the parse made no tree".to_string())?;
    let mut printer = Printer::new(source);
    let items: Vec<Pair<Rule>> = root
        .clone()
        .into_inner()
        .filter(|p| p.as_rule() != Rule::EOI)
        .collect();
    let end = source.len();
    printer.statements(0, &items, end, Printer::item);
    Ok(printer.finish())
}

/// What lies between two tokens: a run of line breaks or a comment.
#[derive(Debug, Clone, PartialEq)]
enum Trivia {
    /// This many line breaks, with nothing but white space between them.
    Breaks(usize),
    /// A comment: its text (from `#`, trailing white space dropped) and
    /// the column of its `#` in characters.
    Comment(String, usize),
}

/// The trivia of `source[from..to]`, a gap between tokens: white space,
/// comments and the punctuation and keywords the tree has no node for.
fn trivia(source: &str, from: usize, to: usize) -> Vec<Trivia> {
    let mut found = Vec::new();
    let gap = &source[from..to];
    let mut chars = gap.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\n' => match found.last_mut() {
                Some(Trivia::Breaks(n)) => *n += 1,
                _ => found.push(Trivia::Breaks(1)),
            },
            '#' => {
                let end = gap[i..].find('\n').map_or(gap.len(), |n| i + n);
                let at = from + i;
                let line_start = source[..at].rfind('\n').map_or(0, |n| n + 1);
                let column = source[line_start..at].chars().count();
                found.push(Trivia::Comment(gap[i..end].trim_end().to_string(), column));
                while chars.peek().is_some_and(|&(j, _)| j < end) {
                    chars.next();
                }
            }
            // Breaks separated only by white space are one run.
            ' ' | '\t' | '\r' => {}
            _ => {
                if let Some(Trivia::Breaks(_)) = found.last() {
                    found.push(Trivia::Breaks(0));
                }
            }
        }
    }
    found.retain(|t| *t != Trivia::Breaks(0));
    found
}

/// The first `close` in `source[from..to]` outside comments: a bracket
/// the tree has no node for.
fn find_outside_comments(source: &str, from: usize, to: usize, close: char) -> Option<usize> {
    let mut in_comment = false;
    for (i, c) in source[from..to].char_indices() {
        match c {
            '#' => in_comment = true,
            '\n' => in_comment = false,
            _ if c == close && !in_comment => return Some(from + i),
            _ => {}
        }
    }
    None
}

/// Whether a gap holds a line break or a comment.
fn broken(source: &str, from: usize, to: usize) -> bool {
    source[from..to].contains(['\n', '#'])
}

/// One line of the output.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    Blank,
    Text {
        /// Levels of indentation.
        indent: usize,
        /// Code, or a comment on a line of its own.
        code: String,
        /// A comment after the code and the column it had in the source.
        trailing: Option<(String, usize)>,
    },
}

/// The output as it is printed: finished lines, the line being written,
/// and the indentation of the lines to come.
struct Printer<'s> {
    source: &'s str,
    lines: Vec<Line>,
    /// The line being written and its indentation.
    code: String,
    indent: usize,
    /// The indentation of each open body, bracket or continuation.
    levels: Vec<usize>,
    /// The indentation of the next line begun, where a closing bracket
    /// sets it.
    next_indent: Option<usize>,
}

/// How a gap inside a statement treats its line breaks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaks {
    /// A break is kept, and the next token goes on a line of its own.
    Keep,
    /// Breaks are dropped (before a body's `{` or an `else`); a comment
    /// still ends its line.
    Drop,
}

impl<'s> Printer<'s> {
    fn new(source: &'s str) -> Printer<'s> {
        Printer {
            source,
            lines: Vec::new(),
            code: String::new(),
            indent: 0,
            levels: vec![0],
            next_indent: None,
        }
    }

    /// Where `node`'s last token ends: a node's span also covers the
    /// white space and comments its grammar rule skipped looking for an
    /// optional part that is not there (`name` for an `as` alias).
    fn end(&self, node: &Pair<'s, Rule>) -> usize {
        let span = node.as_span();
        let text = &self.source[span.start()..span.end()];
        let mut last = 0;
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '#' => {
                    for (_, d) in chars.by_ref() {
                        if d == '\n' {
                            break;
                        }
                    }
                }
                '"' => {
                    last = i + 1;
                    for (j, d) in chars.by_ref() {
                        last = j + d.len_utf8();
                        if d == '"' || d == '\n' {
                            break;
                        }
                    }
                }
                c if c.is_whitespace() => {}
                c => last = i + c.len_utf8(),
            }
        }
        span.start() + last
    }

    /// The indentation of lines begun now.
    fn level(&self) -> usize {
        self.levels.last().copied().unwrap_or(0)
    }

    /// Appends `text` to the line, leading spaces dropped at a line's start.
    fn word(&mut self, text: &str) {
        if self.code.is_empty() {
            let text = text.trim_start();
            if text.is_empty() {
                return;
            }
            self.indent = self.next_indent.take().unwrap_or_else(|| self.level());
            self.code.push_str(text);
        } else {
            self.code.push_str(text);
        }
    }

    /// Ends the line being written, if it has anything.
    fn end_line(&mut self) {
        if self.code.is_empty() {
            return;
        }
        let code = std::mem::take(&mut self.code).trim_end().to_string();
        self.lines.push(Line::Text {
            indent: self.indent,
            code,
            trailing: None,
        });
    }

    /// A blank line, unless one was just written or nothing was.
    fn blank(&mut self) {
        self.end_line();
        if matches!(self.lines.last(), Some(Line::Text { .. })) {
            self.lines.push(Line::Blank);
        }
    }

    /// A comment: after the code on its line when `trailing` and there is
    /// some, else on a line of its own; either way the line ends.
    fn comment(&mut self, text: String, column: usize, trailing: bool) {
        if trailing && !self.code.is_empty() {
            let code = std::mem::take(&mut self.code).trim_end().to_string();
            self.lines.push(Line::Text {
                indent: self.indent,
                code,
                trailing: Some((text, column)),
            });
        } else {
            self.end_line();
            self.lines.push(Line::Text {
                indent: self.next_indent.take().unwrap_or_else(|| self.level()),
                code: text,
                trailing: None,
            });
        }
    }

    /// A gap inside a statement: its comments, and a line break where it
    /// has one (kept, or forced by a comment). Returns whether the line
    /// broke; the next line is then a continuation, one level in, unless
    /// a bracket or a body already set its level.
    fn gap(&mut self, from: usize, to: usize, breaks: Breaks, statement_levels: usize) -> bool {
        let mut broke = false;
        let mut since_token = 0;
        for t in trivia(self.source, from, to) {
            match t {
                Trivia::Breaks(n) => {
                    since_token += n;
                    broke |= breaks == Breaks::Keep;
                }
                Trivia::Comment(text, column) => {
                    self.comment(text, column, since_token == 0);
                    broke = true;
                }
            }
        }
        if broke {
            self.end_line();
            if self.levels.len() == statement_levels {
                self.levels.push(self.indent + 1);
            }
        }
        broke
    }

    /// Statements (or items, or entries) `nodes`, one a line, between
    /// `from` (just inside the opening brace) and `to` (the closing
    /// brace): their comments kept and blank lines up to one, none first
    /// or last.
    fn statements(
        &mut self,
        from: usize,
        nodes: &[Pair<'s, Rule>],
        to: usize,
        print: fn(&mut Printer<'s>, Pair<'s, Rule>),
    ) {
        let mut at = from;
        let mut any = false;
        let mut ends = nodes
            .iter()
            .map(|n| n.as_span().start())
            .collect::<Vec<_>>();
        ends.push(to);
        for (k, &until) in ends.iter().enumerate() {
            let mut since_token = 0;
            let mut pending_blank = false;
            for t in trivia(self.source, at, until) {
                match t {
                    Trivia::Breaks(n) => {
                        since_token += n;
                        pending_blank |= n >= 2;
                    }
                    Trivia::Comment(text, column) => {
                        let trailing = since_token == 0 && !self.code.is_empty();
                        if pending_blank && any && !trailing {
                            self.blank();
                        }
                        pending_blank = false;
                        self.comment(text, column, trailing);
                        any = true;
                    }
                }
            }
            self.end_line();
            let Some(node) = nodes.get(k) else { break };
            if pending_blank && any {
                self.blank();
            }
            let statement_levels = self.levels.len();
            at = self.end(node);
            print(self, node.clone());
            self.levels.truncate(statement_levels);
            any = true;
        }
        self.end_line();
    }

    /// A top-level item.
    fn item(&mut self, node: Pair<'s, Rule>) {
        let levels = self.levels.len();
        let children: Vec<Pair<Rule>> = node.clone().into_inner().collect();
        let start = node.as_span().start();
        match node.as_rule() {
            // The grammar's `use_item` has one child, the module or path.
            Rule::use_item => {
                self.word("use ");
                self.after_gap(start, &children[0], levels);
                self.atom(&children[0]);
            }
            Rule::block_item | Rule::model_item => {
                let keyword = if node.as_rule() == Rule::block_item {
                    "block "
                } else {
                    "model "
                };
                self.word(keyword);
                let mut at = start;
                for child in children {
                    match child.as_rule() {
                        Rule::ident => {
                            self.after_gap(at, &child, levels);
                            self.atom(&child);
                        }
                        Rule::params => {
                            self.after_gap(at, &child, levels);
                            self.bracketed(&child, true, levels);
                        }
                        Rule::list => {
                            self.after_gap(at, &child, levels);
                            self.word(" : ");
                            self.expression(child.clone(), levels);
                        }
                        _ => {
                            self.gap(at, child.as_span().start(), Breaks::Drop, levels);
                            self.word(" ");
                            self.body(child.clone());
                        }
                    }
                    at = self.end(&child);
                }
            }
            _ => self.train(node, levels),
        }
    }

    /// The gap before `child`, from `at`.
    fn after_gap(&mut self, at: usize, child: &Pair<'s, Rule>, levels: usize) {
        self.gap(at, child.as_span().start(), Breaks::Keep, levels);
    }

    /// A token as written.
    fn atom(&mut self, node: &Pair<'s, Rule>) {
        self.word(node.as_str());
    }

    /// `train [model] { key: value ... }`.
    fn train(&mut self, node: Pair<'s, Rule>, levels: usize) {
        let span = node.as_span();
        let mut children: Vec<Pair<Rule>> = node.into_inner().collect();
        self.word("train");
        let mut at = span.start();
        if children.first().is_some_and(|c| c.as_rule() == Rule::ident) {
            let model = children.remove(0);
            self.after_gap(at, &model, levels);
            self.word(" ");
            self.atom(&model);
            at = self.end(&model);
        }
        let open = find_outside_comments(self.source, at, span.end(), '{').unwrap_or(at);
        self.gap(at, open, Breaks::Drop, levels);
        self.word(" ");
        self.braces(open, &children, span.end() - 1, Printer::entry);
    }

    /// `key: value` in a train section.
    fn entry(&mut self, node: Pair<'s, Rule>) {
        self.named(node, self.levels.len());
    }

    /// `{` statements `}` from `open` to `close` (the braces' offsets): on
    /// one line when it was written on one with at most one statement and
    /// no comment, else a statement a line, one level in.
    fn braces(
        &mut self,
        open: usize,
        nodes: &[Pair<'s, Rule>],
        close: usize,
        print: fn(&mut Printer<'s>, Pair<'s, Rule>),
    ) {
        if nodes.len() <= 1 && !broken(self.source, open, close) {
            self.word("{");
            if let Some(node) = nodes.first() {
                self.word(" ");
                let levels = self.levels.len();
                print(self, node.clone());
                self.levels.truncate(levels);
                self.word(" ");
            }
            self.word("}");
            return;
        }
        self.word("{");
        let outer = self.indent;
        self.levels.push(outer + 1);
        self.statements(open + 1, nodes, close, print);
        self.levels.pop();
        self.next_indent = Some(outer);
        self.word("}");
    }

    /// A body: `{` statements `}`.
    fn body(&mut self, node: Pair<'s, Rule>) {
        let span = node.as_span();
        let statements: Vec<Pair<Rule>> = node.into_inner().collect();
        self.braces(
            span.start(),
            &statements,
            span.end() - 1,
            Printer::statement,
        );
    }

    /// A statement of a body.
    fn statement(&mut self, node: Pair<'s, Rule>) {
        let levels = self.levels.len();
        let start = node.as_span().start();
        let children: Vec<Pair<Rule>> = node.clone().into_inner().collect();
        match node.as_rule() {
            // `let_stmt` and `output_stmt` have a name and an expression.
            Rule::let_stmt | Rule::output_stmt => {
                let keyword = if node.as_rule() == Rule::let_stmt {
                    "let "
                } else {
                    "output "
                };
                self.word(keyword);
                self.after_gap(start, &children[0], levels);
                self.atom(&children[0]);
                self.gap(
                    self.end(&children[0]),
                    children[1].as_span().start(),
                    Breaks::Keep,
                    levels,
                );
                self.word(" = ");
                self.expression(children[1].clone(), levels);
            }
            Rule::for_stmt => self.for_statement(start, children, levels),
            _ => self.sequence(start, children, levels),
        }
    }

    /// `for [i,] x in list { ... }`.
    fn for_statement(&mut self, start: usize, children: Vec<Pair<'s, Rule>>, levels: usize) {
        self.word("for ");
        let mut at = start;
        let count = children.len();
        for (k, child) in children.into_iter().enumerate() {
            let breaks = if child.as_rule() == Rule::body {
                Breaks::Drop
            } else {
                Breaks::Keep
            };
            self.gap(at, child.as_span().start(), breaks, levels);
            let index_form = count == 4;
            match (child.as_rule(), k) {
                (Rule::body, _) => {
                    self.word(" ");
                    self.body(child.clone());
                }
                (Rule::ident, 0) if index_form => {
                    self.atom(&child);
                    self.word(", ");
                }
                (Rule::ident, _) => {
                    self.atom(&child);
                    self.word(" in ");
                }
                (Rule::unpack, _) => {
                    self.bracketed(&child, true, levels);
                    self.word(" in ");
                }
                _ => self.expression(child.clone(), levels),
            }
            at = self.end(&child);
        }
    }

    /// The children of a node, in order, the gaps between them kept.
    fn sequence(&mut self, start: usize, children: Vec<Pair<'s, Rule>>, levels: usize) {
        let mut at = start;
        for child in children {
            self.after_gap(at, &child, levels);
            at = self.end(&child);
            self.expression(child, levels);
        }
    }

    /// `name: value`: a named argument, a record's field, a train entry.
    fn named(&mut self, node: Pair<'s, Rule>, levels: usize) {
        let mut children = node.into_inner();
        let (Some(name), Some(value)) = (children.next(), children.next()) else {
            return;
        };
        self.atom(&name);
        self.gap(
            self.end(&name),
            value.as_span().start(),
            Breaks::Keep,
            levels,
        );
        self.word(": ");
        self.expression(value, levels);
    }

    /// An expression node, of any level of the grammar.
    fn expression(&mut self, node: Pair<'s, Rule>, levels: usize) {
        let rule = node.as_rule();
        let span = node.as_span();
        match rule {
            Rule::number
            | Rule::string
            | Rule::boolean
            | Rule::ident
            | Rule::in_kw
            | Rule::module_path => self.atom(&node),
            Rule::list | Rule::record | Rule::paren | Rule::index | Rule::unpack => {
                self.bracketed(&node, rule != Rule::paren && rule != Rule::index, levels);
            }
            Rule::call => self.call(node, levels),
            Rule::where_clause => {
                self.word("where ");
                self.separated(node, levels);
            }
            Rule::slice_assign | Rule::param => self.separated(node, levels),
            Rule::named_arg | Rule::field_init => self.named(node, levels),
            Rule::if_expr => self.if_expression(node, levels),
            Rule::field => {
                self.word(".");
                let children: Vec<Pair<Rule>> = node.into_inner().collect();
                self.sequence(span.start() + 1, children, levels);
            }
            Rule::alias => {
                self.word(" as ");
                let children: Vec<Pair<Rule>> = node.into_inner().collect();
                self.sequence(span.start(), children, levels);
            }
            _ => self.operators(node, levels),
        }
    }

    /// A node whose children are operands and operators, or a single
    /// child: printed in order with the operators' spacing.
    fn operators(&mut self, node: Pair<'s, Rule>, levels: usize) {
        let span = node.as_span();
        let mut at = span.start();
        for child in node.into_inner() {
            let rule = child.as_rule();
            self.gap(at, child.as_span().start(), Breaks::Keep, levels);
            at = self.end(&child);
            match rule {
                Rule::arrow
                | Rule::or_op
                | Rule::and_op
                | Rule::cmp_op
                | Rule::add_op
                | Rule::mul_op => {
                    self.word(" ");
                    self.atom(&child);
                    self.word(" ");
                }
                Rule::not_op => {
                    self.atom(&child);
                    self.word(" ");
                }
                Rule::range_op | Rule::neg_op => self.atom(&child),
                Rule::where_clause => {
                    self.word(" ");
                    self.expression(child, levels);
                }
                _ => self.expression(child, levels),
            }
        }
    }

    /// `where a = x, b = y` and `[..] = x`: the children with `, ` (or
    /// ` = `) between them.
    fn separated(&mut self, node: Pair<'s, Rule>, levels: usize) {
        let separator = if node.as_rule() == Rule::where_clause {
            ", "
        } else {
            " = "
        };
        let span = node.as_span();
        let mut at = span.start();
        for (k, child) in node.into_inner().enumerate() {
            self.gap(at, child.as_span().start(), Breaks::Keep, levels);
            if k > 0 {
                self.word(separator);
            }
            at = self.end(&child);
            self.expression(child, levels);
        }
    }

    /// `name(args) [as alias]`.
    fn call(&mut self, node: Pair<'s, Rule>, levels: usize) {
        let mut children: Vec<Pair<Rule>> = node.clone().into_inner().collect();
        let alias = match children.last() {
            Some(last) if last.as_rule() == Rule::alias => children.pop(),
            _ => None,
        };
        let callee = children.remove(0);
        self.atom(&callee);
        let end = alias
            .as_ref()
            .map_or(node.as_span().end(), |a| a.as_span().start());
        let last = children
            .last()
            .map_or(callee.as_span().end(), |c| self.end(c));
        let close = self.closing(last, end, ')');
        self.brackets(
            ("(", ")"),
            callee.as_span().end() + 1,
            &children,
            close,
            true,
            levels,
        );
        if let Some(alias) = alias {
            self.gap(close + 1, alias.as_span().start(), Breaks::Keep, levels);
            self.expression(alias, levels);
        }
    }

    /// The offset of the closing `close` between `from` (after the last
    /// element) and `to`.
    fn closing(&self, from: usize, to: usize, close: char) -> usize {
        find_outside_comments(self.source, from, to, close).unwrap_or(to.saturating_sub(1))
    }

    /// A bracketed node whose children are its elements: a list, a
    /// record, a parenthesis, an index, an unpacking, parameters.
    fn bracketed(&mut self, node: &Pair<'s, Rule>, trailing_comma: bool, levels: usize) {
        let span = node.as_span();
        let pair = match node.as_rule() {
            Rule::list | Rule::index => ("[", "]"),
            _ => ("(", ")"),
        };
        let elements: Vec<Pair<Rule>> = node.clone().into_inner().collect();
        let close = span.end() - 1;
        self.brackets(
            pair,
            span.start() + 1,
            &elements,
            close,
            trailing_comma,
            levels,
        );
    }

    /// `open` elements `close`, the elements from offset `inside` (just
    /// after the opening bracket) to `close` (the closing bracket's
    /// offset): on one line, `, ` between them, where no gap between them
    /// breaks; else broken where the source breaks, one level in, the
    /// closing bracket on a line of its own after a trailing comma where
    /// the source breaks before it.
    fn brackets(
        &mut self,
        (open, close_text): (&str, &str),
        inside: usize,
        elements: &[Pair<'s, Rule>],
        close: usize,
        trailing_comma: bool,
        levels: usize,
    ) {
        self.word(open);
        let mut gaps = Vec::with_capacity(elements.len() + 1);
        let mut at = inside;
        for element in elements {
            gaps.push((at, element.as_span().start()));
            at = self.end(element);
        }
        gaps.push((at, close));
        if !gaps.iter().any(|&(from, to)| broken(self.source, from, to)) {
            for (k, element) in elements.iter().enumerate() {
                if k > 0 {
                    self.word(", ");
                }
                self.expression(element.clone(), levels);
            }
            self.word(close_text);
            return;
        }
        let outer = self.indent;
        let inner_levels = self.levels.len() + 1;
        self.levels.push(outer + 1);
        let mut at = inside;
        for (k, element) in elements.iter().enumerate() {
            if k > 0 {
                self.word(",");
            }
            let broke = self.gap(at, element.as_span().start(), Breaks::Keep, NO_CONTINUATION);
            if k > 0 && !broke {
                self.word(" ");
            }
            at = self.end(element);
            self.expression(element.clone(), inner_levels);
            self.levels.truncate(inner_levels);
        }
        let closes_alone = self.source[at..close].contains('\n');
        if closes_alone && trailing_comma && !elements.is_empty() {
            self.word(",");
        }
        self.gap(at, close, Breaks::Keep, NO_CONTINUATION);
        self.levels.truncate(inner_levels - 1);
        if closes_alone {
            self.end_line();
            self.next_indent = Some(outer);
        }
        self.word(close_text);
    }

    /// `if c { .. } else if d { .. } else { .. }`.
    fn if_expression(&mut self, node: Pair<'s, Rule>, levels: usize) {
        let mut at = node.as_span().start();
        let mut bodies = 0;
        for child in node.into_inner() {
            let rule = child.as_rule();
            let breaks = if matches!(rule, Rule::body | Rule::else_if) {
                Breaks::Drop
            } else {
                Breaks::Keep
            };
            self.gap(at, child.as_span().start(), breaks, levels);
            at = self.end(&child);
            match rule {
                Rule::if_kw => self.word("if "),
                Rule::body => {
                    // A body after another is the `else` branch.
                    if bodies > 0 {
                        self.word(" else");
                    }
                    bodies += 1;
                    self.word(" ");
                    self.body(child);
                }
                Rule::else_if => {
                    bodies += 1;
                    self.word(" else ");
                    self.if_expression(child, levels);
                }
                _ => self.expression(child, levels),
            }
        }
    }

    /// The lines, trailing comments aligned, as text ending in one line
    /// break.
    fn finish(mut self) -> String {
        self.end_line();
        while matches!(self.lines.last(), Some(Line::Blank)) {
            self.lines.pop();
        }
        let columns = trailing_columns(&self.lines);
        let mut text = String::new();
        for (line, column) in self.lines.iter().zip(columns) {
            if let Line::Text {
                indent,
                code,
                trailing,
            } = line
            {
                let mut row = format!("{:width$}{code}", "", width = indent * INDENT);
                if let (Some((comment, _)), Some(column)) = (trailing, column) {
                    let width = row.chars().count();
                    row.push_str(&" ".repeat(column.saturating_sub(width).max(1)));
                    row.push_str(comment);
                }
                text.push_str(&row);
            }
            text.push('\n');
        }
        text
    }
}

/// How far apart (in columns) trailing comments may be in the source and
/// still count as aligned: hand alignment is often one column off.
const ALIGNED_WITHIN: usize = 2;

/// The column of each line's trailing comment. Trailing comments with no
/// blank line between them whose source columns lie within
/// [`ALIGNED_WITHIN`] of each other are a group; a group of several goes
/// at its rightmost column while every line's code ends two spaces before
/// it, else two spaces past the longest; a comment alone goes two spaces
/// past its code.
fn trailing_columns(lines: &[Line]) -> Vec<Option<usize>> {
    let width = |line: &Line| match line {
        Line::Text { indent, code, .. } => indent * INDENT + code.chars().count(),
        Line::Blank => 0,
    };
    let mut columns = vec![None; lines.len()];
    // The group's lines and the range of their source columns.
    let mut group: Vec<usize> = Vec::new();
    let mut range = (usize::MAX, 0);
    let mut close = |group: &mut Vec<usize>, (_, rightmost): (usize, usize)| {
        let widest = group.iter().map(|&i| width(&lines[i])).max().unwrap_or(0);
        let at = if group.len() > 1 && widest + 2 <= rightmost {
            rightmost
        } else {
            widest + 2
        };
        for &i in group.iter() {
            columns[i] = Some(at);
        }
        group.clear();
    };
    for (i, line) in lines.iter().enumerate() {
        match line {
            Line::Blank => {
                close(&mut group, range);
                range = (usize::MAX, 0);
            }
            Line::Text {
                trailing: Some((_, column)),
                ..
            } => {
                let joined = (range.0.min(*column), range.1.max(*column));
                if joined.1 - joined.0 > ALIGNED_WITHIN {
                    close(&mut group, range);
                    range = (*column, *column);
                } else {
                    range = joined;
                }
                group.push(i);
            }
            Line::Text { .. } => {}
        }
    }
    close(&mut group, range);
    columns
}

/// Checks that `formatted` is `source` (whose syntax tree is `before`) in
/// another layout: it parses to the same syntax tree (but where each node
/// lies) and has the same comments, in order.
fn check((source, before): (&str, &File), formatted: &str, file: FileId) -> Result<(), Diagnostic> {
    let after = parse(formatted, file).map_err(|error| {
        internal(
            file,
            format!("the formatted text does not parse: {}", error.message),
        )
    })?;
    if comments(source) != comments(formatted) {
        return Err(internal(file, "a comment would change".into()));
    }
    let (before, after) = (without_spans(before), without_spans(&after));
    if before != after {
        let at = before
            .char_indices()
            .zip(after.chars())
            .find(|((_, a), b)| a != b)
            .map_or(before.len().min(after.len()), |((i, _), _)| i);
        let context = &before[floor_char(&before, at.saturating_sub(40))..floor_char(&before, at)];
        return Err(internal(
            file,
            format!("the program would change after `{context}`"),
        ));
    }
    Ok(())
}

/// A syntax tree written out without its spans, so that two layouts of
/// one program compare equal.
fn without_spans(file: &File) -> String {
    let text = format!("{file:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("Span {") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('}').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// The comments of `text`, in order, trailing white space dropped (a
/// string holds no line break, and a comment runs to the end of its line).
fn comments(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            let mut in_string = false;
            for (i, c) in line.char_indices() {
                match c {
                    '"' => in_string = !in_string,
                    '#' if !in_string => return Some(line[i..].trim_end()),
                    _ => {}
                }
            }
            None
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::SourceMap;

    fn fmt(source: &str) -> String {
        let mut sources = SourceMap::default();
        let file = sources.add("t.cnn", source);
        match format(source, file) {
            Ok(text) => text,
            Err(e) => panic!("{}: {}", e.message, e.primary.message),
        }
    }

    /// Formats `source`, checks that formatting again changes nothing,
    /// and returns the text.
    fn canonical(source: &str) -> String {
        let once = fmt(source);
        assert_eq!(fmt(&once), once, "formatting twice differs");
        once
    }

    #[test]
    fn spaces_are_canonical_around_operators_commas_and_colons() {
        let source = "model m:[28,28,1]{conv( 32,3 ,padding:same)->relu\nlet x=-2*(3+4)//2\nfor i in 0..x{dense(i)}}\n";
        assert_eq!(
            canonical(source),
            "model m : [28, 28, 1] {\n    conv(32, 3, padding: same) -> relu\n    let x = -2 * (3 + 4) // 2\n    for i in 0..x { dense(i) }\n}\n"
        );
    }

    #[test]
    fn one_statement_a_line_without_semicolons() {
        let source = "block b(a, b = 2) { relu; relu relu\n}\ntrain { epochs: 2; batch: 8 }\n";
        assert_eq!(
            canonical(source),
            "block b(a, b = 2) {\n    relu\n    relu\n    relu\n}\ntrain {\n    epochs: 2\n    batch: 8\n}\n"
        );
    }

    #[test]
    fn blank_lines_are_kept_up_to_one_and_none_at_the_ends_of_a_body() {
        let source =
            "\n\nuse resnet\n\n\n\nmodel m : [8, 8, 1] {\n\n    relu\n\n\n    relu\n\n}\n\n\n";
        assert_eq!(
            canonical(source),
            "use resnet\n\nmodel m : [8, 8, 1] {\n    relu\n\n    relu\n}\n"
        );
    }

    #[test]
    fn every_comment_is_kept_where_it_was() {
        let source = "# head\nmodel m : [8, 8, 1] { # after the brace\n    conv(8, # first\n        3) # after\n    # alone\n    relu -> # in a pipe\n    relu\n    # last\n} # end\n# tail\n";
        let text = canonical(source);
        assert_eq!(comments(&text), comments(source));
        assert_eq!(
            text,
            "# head\nmodel m : [8, 8, 1] {  # after the brace\n    conv(8,  # first\n        3)   # after\n    # alone\n    relu ->  # in a pipe\n        relu\n    # last\n}  # end\n# tail\n"
        );
    }

    #[test]
    fn aligned_trailing_comments_stay_aligned_and_lone_ones_follow_their_code() {
        let source = "model m : [8, 8, 1] {\n    conv(8, 3)      # 8x8x8\n    maxpool(2)       # 4x4x8\n    relu   # alone\n\n    flatten # after a blank line\n}\n";
        assert_eq!(
            canonical(source),
            "model m : [8, 8, 1] {\n    conv(8, 3)       # 8x8x8\n    maxpool(2)       # 4x4x8\n    relu  # alone\n\n    flatten  # after a blank line\n}\n"
        );
    }

    #[test]
    fn aligned_comments_move_right_when_the_code_no_longer_fits() {
        let source = "model m : [8, 8, 1] {\n    conv(8,3,padding:same) # a\n    relu                  # b\n}\n";
        assert_eq!(
            canonical(source),
            "model m : [8, 8, 1] {\n    conv(8, 3, padding: same)  # a\n    relu                       # b\n}\n"
        );
    }

    #[test]
    fn comments_that_come_within_two_columns_settle_aligned() {
        // Lone comments two spaces after their code land within two
        // columns of each other: formatting again would align them, so
        // the first formatting already does.
        let source = "model m : [8, 8, 1] {\n    maxpool(2) -> # 3x3\n    flatten # 9\n}\n";
        assert_eq!(
            canonical(source),
            "model m : [8, 8, 1] {\n    maxpool(2) ->  # 3x3\n        flatten    # 9\n}\n"
        );
    }

    #[test]
    fn a_broken_bracket_keeps_its_breaks_and_closes_alone_after_a_comma() {
        let source = "model m : [8, 8, 1] {\n    let l = [1, 2,\n             3, 4\n    ]\n    conv(8,\n      3)\n    dense(4, activation: relu,)\n}\n";
        assert_eq!(
            canonical(source),
            "model m : [8, 8, 1] {\n    let l = [1, 2,\n        3, 4,\n    ]\n    conv(8,\n        3)\n    dense(4, activation: relu)\n}\n"
        );
    }

    #[test]
    fn a_broken_pipeline_continues_one_level_in() {
        let source = "model m : [8, 8, 1] {\nlet a = relu\n-> relu\n      -> relu\n}\n";
        assert_eq!(
            canonical(source),
            "model m : [8, 8, 1] {\n    let a = relu\n        -> relu\n        -> relu\n}\n"
        );
    }

    #[test]
    fn if_else_chains_and_bodies_on_one_line_stay_so() {
        let source = "block b(x) {\n    let y = if x == 1 { 2 }\n    else if not x > 2 and x < 9 or x != 0 { 3 } else { 4 }\n    if x { relu } else {\n        relu\n        relu }\n}\n";
        assert_eq!(
            canonical(source),
            "block b(x) {\n    let y = if x == 1 { 2 } else if not x > 2 and x < 9 or x != 0 { 3 } else { 4 }\n    if x { relu } else {\n        relu\n        relu\n    }\n}\n"
        );
    }

    #[test]
    fn the_rest_of_the_syntax_prints_as_written() {
        let source = "use \"other.cnn\"\nuse blocks.se\nblock b(x) {\n    for i , (a,b) in x { output o = a.shape [0] }\n    conv(1, 3, init: zeros where [_, 3, _, 0] = 1, [3, _, _, 1] = 1) as c\n    relu as r\n    let t = (lr: 0.1, flag: true)\n    let s = \"text # not a comment\"\n    let r = 1..=3\n}\ntrain b { optimizer: sgd(lr: 1e-3) }\n";
        assert_eq!(
            canonical(source),
            "use \"other.cnn\"\nuse blocks.se\nblock b(x) {\n    for i, (a, b) in x { output o = a.shape[0] }\n    conv(1, 3, init: zeros where [_, 3, _, 0] = 1, [3, _, _, 1] = 1) as c\n    relu as r\n    let t = (lr: 0.1, flag: true)\n    let s = \"text # not a comment\"\n    let r = 1..=3\n}\ntrain b { optimizer: sgd(lr: 1e-3) }\n"
        );
    }

    #[test]
    fn windows_line_ends_become_unix_ones() {
        let source = "model m : [8, 8, 1] {\r\n    relu  # a comment\r\n}\r\n";
        assert_eq!(
            canonical(source),
            "model m : [8, 8, 1] {\n    relu  # a comment\n}\n"
        );
    }

    #[test]
    fn a_file_that_does_not_parse_gives_the_syntax_error() {
        let mut sources = SourceMap::default();
        let source = "model m : [8, 8, 1] {\n    conv(8, 3\n}\n";
        let file = sources.add("t.cnn", source);
        let error = format(source, file).expect_err("a syntax error");
        assert_eq!(error.primary.span.file, file);
        assert!(error.primary.span.start > 0, "{error:?}");
    }

    #[test]
    fn an_empty_file_stays_empty_and_a_comment_stays() {
        assert_eq!(canonical(""), "");
        assert_eq!(canonical("  \n\n"), "");
        assert_eq!(canonical("# only   \n"), "# only\n");
    }

    #[test]
    fn the_check_refuses_a_lost_comment_or_another_program() {
        let mut sources = SourceMap::default();
        let file = sources.add("t.cnn", "");
        let source = "model m : [8, 8, 1] { relu # c\n}\n";
        let tree = parse(source, file).expect("parses");
        let source = (source, &tree);
        let lost = check(source, "model m : [8, 8, 1] { relu }\n", file).expect_err("lost");
        assert!(lost.primary.message.contains("comment"), "{lost:?}");
        let changed =
            check(source, "model m : [8, 8, 1] { gelu # c\n}\n", file).expect_err("changed");
        assert!(
            changed.primary.message.contains("would change after"),
            "{changed:?}"
        );
        let broken =
            check(source, "model m : [8, 8, 1] { relu( # c\n}\n", file).expect_err("broken");
        assert!(
            broken.primary.message.contains("does not parse"),
            "{broken:?}"
        );
        check(source, "model m : [8, 8, 1] {\n    relu  # c\n}\n", file).expect("the same program");
    }
}
