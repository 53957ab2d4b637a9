//! Parsing: `.cnn` source text to the spanned AST, with the pest grammar in
//! `grammar/cnn.pest`.

pub mod ast;

use pest::iterators::Pair;
use pest::Parser as _;

use crate::diagnostics::{Diagnostic, FileId, Span};
use ast::*;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/cnn.pest"]
struct CnnParser;

/// Parses the text of file `file` into its AST, or returns the syntax error.
pub fn parse(source: &str, file: FileId) -> Result<File, Diagnostic> {
    // Tracking parse attempts lets the error name the literal tokens that
    // were expected (`)`, `->`), not only grammar rules.
    pest::set_error_detail(true);
    let mut pairs =
        CnnParser::parse(Rule::file, source).map_err(|e| syntax_error(&e, source, file))?;
    let builder = Builder { file };
    // The `file` rule always produces exactly one pair on success.
    let root = pairs.next().expect("file rule matched");
    let mut items = Vec::new();
    for pair in root.into_inner() {
        if pair.as_rule() != Rule::EOI {
            items.push(builder.item(pair));
        }
    }
    Ok(File { items })
}

/// Converts a pest error into a diagnostic that names what was expected.
fn syntax_error(error: &pest::error::Error<Rule>, source: &str, file: FileId) -> Diagnostic {
    let (start, end) = match error.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
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
    if let Some(hint) = syntax_hint(source, start) {
        diagnostic = diagnostic.with_note(hint);
    }
    diagnostic
}

/// What stands at `offset`, for "found ..." (and its length in bytes).
fn describe_found(source: &str, offset: usize) -> (String, usize) {
    let rest = &source[offset.min(source.len())..];
    match rest.chars().next() {
        None => ("the end of the file".to_string(), 0),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (format!("`{word}`"), word.len())
        }
        Some(c) => (format!("`{c}`"), c.len_utf8()),
    }
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
            if !text.trim().is_empty() && !is_range && text != "BUILTIN_RULE" && text != "E" {
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
        // A long list helps nobody; the first constructs are the likely ones.
        expected.retain(|e| !e.starts_with('`'));
        if expected.is_empty() {
            expected.push("an expression".to_string());
        }
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
        Rule::param => "a parameter",
        Rule::train_entry => "a `key: value` entry",
        Rule::module_path => "a module name",
        Rule::EOI => "the end of the file",
        _ => return None,
    })
}

/// A hint for common slips, judged from the text at the error.
fn syntax_hint(source: &str, offset: usize) -> Option<String> {
    let before = source[..offset.min(source.len())].trim_end();
    let rest = &source[offset.min(source.len())..];
    if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') && rest.starts_with(" (") {
        return Some(
            "help: a call's `(` must follow its name directly: write `conv(...)`, not `conv (...)`"
                .into(),
        );
    }
    if rest.starts_with('=') && before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
        return Some("help: arguments are given as `name: value`; `=` is for defaults of parameters and `let`".into());
    }
    None
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
}

impl Builder {
    /// The span of a pair without trailing whitespace and comments: pest
    /// skips them before trying an optional part that then does not match
    /// (`conv(64)  # comment` without `as`), and they would widen the caret.
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        let text = s.as_str();
        let end = if text.ends_with(char::is_whitespace) {
            s.start() + significant_len(text)
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
                let mut idents = Vec::new();
                let mut iter = None;
                let mut body = Vec::new();
                for part in pair.into_inner() {
                    match part.as_rule() {
                        Rule::ident => idents.push(self.ident(part)),
                        Rule::expr => iter = Some(self.expr(part)),
                        _ => body = self.body(part),
                    }
                }
                let var = idents.pop().expect("for variable");
                Stmt::For {
                    index: idents.pop(),
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
                    (Some(_op), Some(end)) => Expr {
                        kind: ExprKind::Range(Box::new(start), Box::new(self.expr(end))),
                        span,
                    },
                    _ => start,
                }
            }
            Rule::not_expr => {
                let mut parts = pair.into_inner();
                let first = parts.next().expect("not operand");
                if first.as_rule() == Rule::not_op {
                    let operand = self.expr(parts.next().expect("not operand"));
                    Expr {
                        kind: ExprKind::Unary(UnOp::Not, Box::new(operand)),
                        span,
                    }
                } else {
                    self.expr(first)
                }
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

    fn if_expr(&self, pair: Pair<Rule>) -> ExprKind {
        let mut parts = pair.into_inner();
        let cond = self.expr(parts.next().expect("if condition"));
        let then = self.body(parts.next().expect("if body"));
        let otherwise = parts.next().map(|p| match p.as_rule() {
            Rule::if_expr => {
                let span = self.span(&p);
                vec![Stmt::Expr(Expr {
                    kind: self.if_expr(p),
                    span,
                })]
            }
            _ => self.body(p),
        });
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

/// The length of `text` up to the end of its last token, ignoring trailing
/// whitespace and comments (strings cannot span lines, so a `#` outside a
/// string starts a comment).
fn significant_len(text: &str) -> usize {
    let mut last = 0;
    let mut in_string = false;
    let mut in_comment = false;
    for (i, c) in text.char_indices() {
        match c {
            '\n' => in_comment = false,
            _ if in_comment => {}
            '#' if !in_string => in_comment = true,
            '"' => in_string = !in_string,
            _ => {}
        }
        if !in_comment && !c.is_whitespace() {
            last = i + c.len_utf8();
        }
    }
    last
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
}
