//! The names of a document and what each use of a name refers to, as the
//! elaborator resolves them: a name bound in the body around it (a
//! block's parameter, a `let`, a `for` variable), else a block or model of
//! the document, else one of a file it imports directly. For document
//! symbols, go to definition, find references and rename.
//!
//! [`Names::of`] walks the syntax trees once; the elaborator is not run,
//! so that this works on a document whose models do not compile.

use crate::diagnostics::{FileId, Span};
use crate::syntax::ast::{Definition, Expr, ExprKind, File, Ident, Item, Stmt};

/// What a name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Block,
    Param,
    Let,
    /// A `for` loop's variable or index.
    Loop,
}

/// A name's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub kind: Kind,
    /// The name where it is defined.
    pub name_span: Span,
    /// The whole definition (a block with its body, a `let` with its value).
    pub range: Span,
    /// The symbol it is defined in (a block, for its parameters and lets).
    pub parent: Option<usize>,
}

/// Every definition of a document and its direct imports, and every use
/// of a name in the document that refers to one of them.
#[derive(Debug, Default)]
pub struct Names {
    pub symbols: Vec<Symbol>,
    /// Uses of names in the document: where, and the symbol each names.
    pub uses: Vec<(Span, usize)>,
    /// The names the document uses that name none of its symbols (layers,
    /// functions, values such as `same`, names it misspells).
    pub free: Vec<String>,
}

/// The document's file id.
const ROOT: FileId = 0;

impl Names {
    /// The names of `files[0]` (the document), whose direct imports are
    /// `imports` (indices into `files`).
    pub fn of(files: &[File], imports: &[FileId]) -> Names {
        let mut names = Names::default();
        let Some(root) = files.first() else {
            return names;
        };
        // Top-level definitions first: a block may call one defined below.
        let mut globals = names.definitions(root);
        let mut imported: Vec<FileId> = Vec::new();
        for &file in imports {
            let Some(tree) = files.get(file).filter(|_| !imported.contains(&file)) else {
                continue;
            };
            imported.push(file);
            let seen: Vec<String> = globals
                .iter()
                .map(|&s| names.symbols[s].name.clone())
                .collect();
            // The document's own definition shadows an imported one; of
            // two imports that define a name (an error where it is
            // called), the first is taken.
            for s in names.definitions(tree) {
                if !seen.contains(&names.symbols[s].name) {
                    globals.push(s);
                }
            }
        }
        let mut walk = Walk {
            names: &mut names,
            globals: &globals,
            frames: Vec::new(),
            owner: 0,
        };
        for item in &root.items {
            match item {
                Item::Block(def) | Item::Model(def) => walk.definition(def),
                Item::Train(train) => {
                    if let Some(model) = &train.model {
                        walk.reference(model);
                    }
                }
                Item::Use(_) => {}
            }
        }
        names
    }

    /// Adds the blocks and models of `tree`; their indices.
    fn definitions(&mut self, tree: &File) -> Vec<usize> {
        let mut added = Vec::new();
        for item in &tree.items {
            let (def, kind) = match item {
                Item::Block(def) => (def, Kind::Block),
                Item::Model(def) => (def, Kind::Model),
                _ => continue,
            };
            added.push(self.add(&def.name, kind, def.span, None));
        }
        added
    }

    fn add(&mut self, name: &Ident, kind: Kind, range: Span, parent: Option<usize>) -> usize {
        self.symbols.push(Symbol {
            name: name.name.clone(),
            kind,
            name_span: name.span,
            range,
            parent,
        });
        self.symbols.len() - 1
    }

    /// The symbol named at byte `offset` of the document: by a use of it,
    /// or where it is defined there.
    pub fn at(&self, offset: usize) -> Option<usize> {
        let holds = |s: &Span| s.file == ROOT && s.start <= offset && offset <= s.end;
        self.uses
            .iter()
            .find(|(span, _)| holds(span))
            .map(|&(_, symbol)| symbol)
            .or_else(|| self.symbols.iter().position(|s| holds(&s.name_span)))
    }

    /// Where the document names `symbol`: its definition, when it is in
    /// the document, then its uses, in order.
    pub fn occurrences(&self, symbol: usize) -> Vec<Span> {
        let own = self.symbols[symbol].name_span;
        let mut spans: Vec<Span> = self
            .uses
            .iter()
            .filter(|&&(_, s)| s == symbol)
            .map(|&(span, _)| span)
            .collect();
        spans.sort();
        if own.file == ROOT {
            spans.insert(0, own);
        }
        spans
    }

    /// Whether `name` could name something at byte `offset` of the
    /// document: a symbol there, or a name used without one (for checking
    /// that a rename does not capture a use).
    pub fn visible(&self, name: &str, offset: usize) -> bool {
        self.free.iter().any(|f| f == name)
            || self.symbols.iter().any(|s| {
                s.name == name
                    && match s.parent {
                        None => true,
                        Some(parent) => {
                            let def = self.symbols[parent].range;
                            def.file == ROOT && def.start <= offset && offset <= def.end
                        }
                    }
            })
    }
}

/// The state of the walk over the document's definitions.
struct Walk<'n> {
    names: &'n mut Names,
    /// The blocks and models the document sees.
    globals: &'n [usize],
    /// The names bound around the walk's position, innermost last.
    frames: Vec<Vec<usize>>,
    /// The definition the walk is in.
    owner: usize,
}

impl Walk<'_> {
    fn definition(&mut self, def: &Definition) {
        let Some(owner) = self
            .names
            .symbols
            .iter()
            .position(|s| s.name_span == def.name.span)
        else {
            return;
        };
        self.owner = owner;
        for param in &def.params {
            if let Some(default) = &param.default {
                self.expr(default);
            }
        }
        if let Some(input) = &def.input {
            self.expr(input);
        }
        let params = def
            .params
            .iter()
            .map(|p| {
                let range = p
                    .default
                    .as_ref()
                    .map_or(p.name.span, |d| p.name.span.to(d.span));
                self.names.add(&p.name, Kind::Param, range, Some(owner))
            })
            .collect();
        self.frames.push(params);
        self.body(&def.body);
        self.frames.pop();
    }

    /// A body, in a frame of its own.
    fn body(&mut self, body: &[Stmt]) {
        let owner = self.owner;
        self.frames.push(Vec::new());
        for stmt in body {
            match stmt {
                Stmt::Let(name, value) => {
                    self.expr(value);
                    let symbol =
                        self.names
                            .add(name, Kind::Let, name.span.to(value.span), Some(owner));
                    self.bind(symbol);
                }
                Stmt::Output(_, value) | Stmt::Expr(value) => self.expr(value),
                Stmt::For {
                    index,
                    var,
                    iter,
                    body,
                } => {
                    self.expr(iter);
                    let bound = index
                        .iter()
                        .chain(var.names())
                        .map(|n| self.names.add(n, Kind::Loop, n.span, Some(owner)))
                        .collect();
                    self.frames.push(bound);
                    self.body(body);
                    self.frames.pop();
                }
            }
        }
        self.frames.pop();
    }

    fn bind(&mut self, symbol: usize) {
        if let Some(frame) = self.frames.last_mut() {
            frame.push(symbol);
        }
    }

    fn expr(&mut self, expr: &Expr) {
        match &expr.kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Bool(_)
            | ExprKind::Input => {}
            ExprKind::Name(name, _) => self.reference(name),
            ExprKind::Call(call) => {
                self.reference(&call.callee);
                for arg in &call.args {
                    self.expr(&arg.value);
                }
            }
            ExprKind::List(items) => items.iter().for_each(|e| self.expr(e)),
            ExprKind::Record(fields) => fields.iter().for_each(|(_, e)| self.expr(e)),
            ExprKind::Pipe(head, stages) => {
                self.expr(head);
                stages.iter().for_each(|e| self.expr(e));
            }
            ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) | ExprKind::Range(a, b, _) => {
                self.expr(a);
                self.expr(b);
            }
            ExprKind::Unary(_, a) | ExprKind::Field(a, _) => self.expr(a),
            ExprKind::If(condition, then, otherwise) => {
                self.expr(condition);
                self.body(then);
                if let Some(otherwise) = otherwise {
                    self.body(otherwise);
                }
            }
            ExprKind::Where(init, assigns) => {
                self.expr(init);
                for (index, value) in assigns {
                    self.expr(index);
                    self.expr(value);
                }
            }
        }
    }

    /// A use of `name`: the innermost binding of it, else a definition.
    fn reference(&mut self, name: &Ident) {
        let symbols = &self.names.symbols;
        let bound = self
            .frames
            .iter()
            .rev()
            .find_map(|frame| frame.iter().rev().find(|&&s| symbols[s].name == name.name));
        let target = bound
            .or_else(|| self.globals.iter().find(|&&s| symbols[s].name == name.name))
            .copied();
        match target {
            Some(target) => self.names.uses.push((name.span, target)),
            None => self.names.free.push(name.name.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Names {
        let tree = crate::syntax::parse(text, ROOT).expect("parses");
        Names::of(&[tree], &[])
    }

    /// The text of each place `symbol` (named at `at`) is named.
    fn occurrences<'t>(text: &'t str, names: &Names, at: &str) -> Vec<&'t str> {
        let offset = text.find(at).expect("in the text");
        let symbol = names.at(offset).expect("a symbol there");
        names
            .occurrences(symbol)
            .iter()
            .map(|s| &text[s.start..s.end])
            .collect()
    }

    #[test]
    fn a_use_refers_to_the_innermost_binding_before_it() {
        let text = "block b(f) {\n    let f = f * 2\n    conv(f, 3)\n    for f in [1, 2] {\n        conv(f, 1)\n    }\n}\nmodel m : [8, 8, 1] {\n    b(4)\n    b(8)\n}\n";
        let names = names(text);
        // The parameter `f` is used once, in the `let`'s value.
        let param = names
            .symbols
            .iter()
            .position(|s| s.kind == Kind::Param)
            .expect("the parameter");
        let uses: Vec<usize> = names.occurrences(param).iter().map(|s| s.start).collect();
        assert_eq!(
            uses,
            [text.find("(f)").unwrap() + 1, text.find("f * 2").unwrap()]
        );
        // The `let` is used by the first conv, the loop's by the second.
        let conv = text.find("conv(f, 3)").unwrap() + 5;
        let let_symbol = names.at(conv).expect("the let");
        assert_eq!(names.symbols[let_symbol].kind, Kind::Let);
        let inner = text.find("conv(f, 1)").unwrap() + 5;
        assert_eq!(names.symbols[names.at(inner).unwrap()].kind, Kind::Loop);
        assert_eq!(occurrences(text, &names, "b(4)"), ["b", "b", "b"]);
    }

    #[test]
    fn a_name_bound_in_a_branch_is_not_seen_after_it() {
        let text = "model m : [8, 8, 1] {\n    let x = 1\n    let y = if x > 0 { let x = 2\n x } else { 0 }\n    dense(x)\n}\n";
        let names = names(text);
        let outer = text.find("x = 1").unwrap();
        let spans = names.occurrences(names.at(outer).unwrap());
        let starts: Vec<usize> = spans.iter().map(|s| s.start).collect();
        assert_eq!(
            starts,
            [outer, text.find("x > 0").unwrap(), text.find("x)").unwrap()]
        );
    }

    #[test]
    fn layers_and_unknown_names_refer_to_nothing() {
        let text = "model m : [8, 8, 1] {\n    conv(4, 3, padding: same)\n    relu\n}\n";
        let names = names(text);
        assert!(names.uses.is_empty(), "{:?}", names.uses);
        assert_eq!(names.symbols.len(), 1);
    }
}
