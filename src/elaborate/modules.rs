//! Loading a file and everything it imports, with `use`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostics::{suggest, Diagnostic, FileId, SourceMap, Span};
use crate::stdlib;
use crate::syntax::{self, ast};

/// A set of parsed files: the one being compiled and its imports.
pub struct Program {
    /// The text of every file, for diagnostics.
    pub sources: SourceMap,
    /// Parsed files, indexed by [`FileId`]; `None` where parsing failed.
    pub files: Vec<Option<ast::File>>,
    /// The files each file imports directly.
    pub imports: Vec<Vec<FileId>>,
    /// The file being compiled.
    pub root: FileId,
}

/// Where a file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Origin {
    Disk(PathBuf),
    Stdlib(String),
    Memory(String),
}

/// Loads the file at `path` and its imports. Problems (unreadable or
/// missing files, syntax errors, import cycles) are returned alongside the
/// program, which holds every file that could be parsed.
pub fn load_path(path: &Path) -> (Program, Vec<Diagnostic>) {
    let mut loader = Loader::default();
    let root = match std::fs::read_to_string(path) {
        Ok(text) => loader.load(Origin::Disk(path.to_path_buf()), display(path), text),
        Err(e) => {
            let id = loader.sources.add(display(path), "");
            loader.files.push(None);
            loader.imports.push(Vec::new());
            loader.errors.push(
                Diagnostic::error(
                    Span::new(id, 0, 0),
                    format!("cannot read the file: {e}"),
                    "",
                )
                .with_note("help: check the path; `cnnc` takes a .cnn file"),
            );
            id
        }
    };
    loader.finish(root)
}

/// Loads source text given in memory (tests, fuzzing); `base` is the folder
/// its relative imports are resolved against.
pub fn load_source(name: &str, text: &str, base: Option<&Path>) -> (Program, Vec<Diagnostic>) {
    let mut loader = Loader::default();
    let origin = match base {
        Some(dir) => Origin::Disk(dir.join(name)),
        None => Origin::Memory(name.to_string()),
    };
    let root = loader.load(origin, name.to_string(), text.to_string());
    loader.finish(root)
}

impl Origin {
    /// The origin as a key for "already loaded" and cycle checks: one file
    /// reached by different paths (`a.cnn`, `lib/../a.cnn`) is one file, and
    /// without this a cycle through such paths would recurse without end.
    fn key(&self) -> Origin {
        match self {
            Origin::Disk(path) => {
                Origin::Disk(path.canonicalize().unwrap_or_else(|_| path.clone()))
            }
            other => other.clone(),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[derive(Default)]
struct Loader {
    sources: SourceMap,
    files: Vec<Option<ast::File>>,
    imports: Vec<Vec<FileId>>,
    loaded: HashMap<Origin, FileId>,
    /// Files whose imports are being loaded (by key), for cycle detection.
    stack: Vec<(Origin, FileId)>,
    errors: Vec<Diagnostic>,
}

impl Loader {
    fn finish(self, root: FileId) -> (Program, Vec<Diagnostic>) {
        let program = Program {
            sources: self.sources,
            files: self.files,
            imports: self.imports,
            root,
        };
        (program, self.errors)
    }

    fn load(&mut self, origin: Origin, name: String, text: String) -> FileId {
        let id = self.sources.add(name, Arc::<str>::from(text.as_str()));
        self.files.push(None);
        self.imports.push(Vec::new());
        self.loaded.insert(origin.key(), id);
        let parsed = match syntax::parse(&text, id) {
            Ok(file) => file,
            Err(e) => {
                self.errors.push(e);
                return id;
            }
        };
        self.stack.push((origin.key(), id));
        let mut imports = Vec::new();
        for item in &parsed.items {
            if let ast::Item::Use(u) = item {
                if let Some(target) = self.import(&origin, u) {
                    imports.push(target);
                }
            }
        }
        self.stack.pop();
        self.files[id] = Some(parsed);
        self.imports[id] = imports;
        id
    }

    fn import(&mut self, from: &Origin, u: &ast::Use) -> Option<FileId> {
        let origin = self.resolve(from, u)?;
        let key = origin.key();
        if let Some(pos) = self.stack.iter().position(|(o, _)| *o == key) {
            let chain: Vec<&str> = self.stack[pos..]
                .iter()
                .map(|(_, id)| self.sources.name(*id))
                .chain([self.sources.name(self.stack[pos].1)])
                .collect();
            self.errors.push(
                Diagnostic::error(
                    u.span,
                    "import cycle",
                    "this import leads back to a file that is still being loaded",
                )
                .with_note(format!("the cycle: {}", chain.join(" -> ")))
                .with_note("help: move the shared blocks into a file that both can import"),
            );
            return None;
        }
        if let Some(&id) = self.loaded.get(&key) {
            return Some(id);
        }
        let (name, text) = match &origin {
            Origin::Disk(path) => match std::fs::read_to_string(path) {
                Ok(text) => (display(path), text),
                Err(e) => {
                    self.errors.push(Diagnostic::error(
                        u.span,
                        format!("cannot read imported file `{}`: {e}", display(path)),
                        "imported here",
                    ));
                    return None;
                }
            },
            Origin::Stdlib(module) => (
                format!("<stdlib>/{module}.cnn"),
                stdlib::source(module).unwrap_or_default().to_string(),
            ),
            Origin::Memory(_) => unreachable!("resolve never yields an in-memory file"),
        };
        Some(self.load(origin, name, text))
    }

    /// Finds the file a `use` names: next to the importing file first, then
    /// (for module names) in the standard library.
    fn resolve(&mut self, from: &Origin, u: &ast::Use) -> Option<Origin> {
        let dir = match from {
            Origin::Disk(path) => path.parent().map(Path::to_path_buf),
            _ => None,
        };
        match &u.target {
            ast::UseTarget::Path(rel) => {
                let Some(dir) = dir else {
                    self.errors.push(Diagnostic::error(
                        u.span,
                        format!("cannot import `{rel}` from a file that is not on disk"),
                        "relative import",
                    ));
                    return None;
                };
                let path = dir.join(rel);
                if path.is_file() {
                    Some(Origin::Disk(path))
                } else {
                    self.errors.push(
                        Diagnostic::error(u.span, format!("cannot find `{rel}`"), "imported here")
                            .with_note(format!("looked for {}", display(&path))),
                    );
                    None
                }
            }
            ast::UseTarget::Module(module) => {
                let relative: PathBuf =
                    module.split('.').collect::<PathBuf>().with_extension("cnn");
                // A file never imports itself by module name: `use inception`
                // in examples/inception.cnn means the stdlib module.
                let is_self = |p: &PathBuf| matches!(from, Origin::Disk(f) if same_file(f, p));
                if let Some(path) = dir
                    .as_ref()
                    .map(|d| d.join(&relative))
                    .filter(|p| p.is_file() && !is_self(p))
                {
                    return Some(Origin::Disk(path));
                }
                if stdlib::source(module).is_some() {
                    return Some(Origin::Stdlib(module.clone()));
                }
                let mut looked = String::new();
                if let Some(d) = &dir {
                    looked = format!("{} and ", display(&d.join(&relative)));
                }
                let error = Diagnostic::error(
                    u.span,
                    format!("cannot find module `{module}`"),
                    "no such module",
                )
                .with_note(format!(
                    "looked for {looked}the standard library module `{module}`"
                ));
                let error = suggest(error, module, stdlib::MODULES.iter().map(|(name, _)| *name));
                self.errors.push(error.with_note(format!(
                    "the standard library has: {}",
                    stdlib::MODULES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )));
                None
            }
        }
    }
}
