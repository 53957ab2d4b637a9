//! Loading, the front end's first stage: reads a file, parses it with the
//! pest grammar ([`super::parse`]) and loads everything it imports with
//! `use`, from the standard library built into the binary
//! ([`crate::stdlib`]) or from files next to the importing one.
//!
//! Every problem of every file is collected (unreadable or missing files,
//! syntax errors, unknown modules, import cycles) and returned together, so
//! that a [`Program`] that loaded holds only files that parsed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::diagnostics::{suggest, Diagnostic, Diagnostics, FileId, SourceMap, Span};
use crate::stdlib;
use crate::syntax::{self, ast};

/// A set of parsed files: the one being compiled and its imports.
pub struct Program {
    /// The text of every file, for diagnostics (shared with the graph
    /// elaborated from it, whose spans point into it).
    pub sources: Arc<SourceMap>,
    /// Every file's AST, indexed by [`FileId`].
    pub files: Vec<ast::File>,
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

/// Loads the file at `path` and its imports; the errors are every problem
/// found in any of them, with the sources they point into.
pub fn load_file(path: &Path) -> Result<Program, Diagnostics> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Err(unreadable(path, &e)),
    };
    let mut loader = Loader::default();
    let root = loader.load(Origin::Disk(path.to_path_buf()), display(path), text);
    loader.finish(root)
}

/// Like [`load_file`], for source text given in memory (tests, fuzzing):
/// `name` names it in messages, and relative imports resolve against the
/// folder `base`; without one, only standard library modules can be imported.
pub fn load_source(name: &str, text: &str, base: Option<&Path>) -> Result<Program, Diagnostics> {
    load_source_over(name, text, base, Overlay::new())
}

/// Texts to import instead of files on disk (an editor's unsaved
/// buffers), by the files' canonical paths.
pub type Overlay = HashMap<PathBuf, String>;

/// Like [`load_source`], importing a file whose canonical path `overlay`
/// holds from that text instead of from the disk.
pub fn load_source_over(
    name: &str,
    text: &str,
    base: Option<&Path>,
    overlay: Overlay,
) -> Result<Program, Diagnostics> {
    let mut loader = Loader {
        overlay,
        ..Loader::default()
    };
    let origin = match base {
        Some(dir) => Origin::Disk(dir.join(name)),
        None => Origin::Memory(name.to_string()),
    };
    let root = loader.load(origin, name.to_string(), text.to_string());
    loader.finish(root)
}

/// The error for a root file that cannot be read, pointing at the start of
/// an empty file of that name.
fn unreadable(path: &Path, error: &std::io::Error) -> Diagnostics {
    let mut sources = SourceMap::default();
    let id = sources.add(display(path), "");
    let diagnostic = Diagnostic::error(
        Span::new(id, 0, 0),
        format!("cannot read the file: {error}"),
        "",
    )
    .with_note("help: check the path; `cnnc` takes a .cnn file");
    Diagnostics::new(vec![diagnostic], Arc::new(sources))
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

    /// The folder that relative imports of this file resolve against: its
    /// own, for a file on disk; none for stdlib and in-memory files.
    fn folder(&self) -> Option<PathBuf> {
        match self {
            Origin::Disk(path) => path.parent().map(Path::to_path_buf),
            _ => None,
        }
    }
}

/// Standard library module `module` (whose text is `text`) parsed as file
/// `id`. Its text never changes, so each module is parsed once per process
/// and file id (which its spans carry), not once per program importing it:
/// parsing `xception` took longer than compiling most models that use it.
fn parse_stdlib(module: &str, text: &str, id: FileId) -> Result<ast::File, Diagnostic> {
    type Parsed = HashMap<(String, FileId), ast::File>;
    static PARSED: OnceLock<Mutex<Parsed>> = OnceLock::new();
    let parsed = PARSED.get_or_init(Mutex::default);
    let key = (module.to_string(), id);
    // A panic elsewhere while the lock was held leaves the map whole.
    if let Some(file) = parsed.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(file.clone());
    }
    let file = syntax::parse(text, id)?;
    parsed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, file.clone());
    Ok(file)
}

/// A file's text as the parser and the diagnostics see it: without a
/// UTF-8 byte-order mark at its start (which editors on Windows write, and
/// rustc skips too), and with each carriage return that ends a line alone
/// (old Mac line endings) made a newline, byte for byte, so that comments
/// end and lines are numbered there.
fn normalize(text: String) -> String {
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    if !text.contains('\r') {
        return text;
    }
    let bytes = text.as_bytes();
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    let normalized: Vec<u8> = (0..bytes.len())
        .map(|i| if lone(i) { b'\n' } else { bytes[i] })
        .collect();
    // Only ASCII bytes were replaced by ASCII bytes.
    String::from_utf8(normalized).expect("still UTF-8")
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

/// The state of one load: every file seen so far and every error.
#[derive(Default)]
struct Loader {
    sources: SourceMap,
    /// Parsed files by [`FileId`]; `None` while a file's imports are being
    /// loaded, and for good where it failed to parse.
    files: Vec<Option<ast::File>>,
    imports: Vec<Vec<FileId>>,
    loaded: HashMap<Origin, FileId>,
    /// Files whose imports are being loaded (by key), for cycle detection.
    stack: Vec<(Origin, FileId)>,
    errors: Vec<Diagnostic>,
    /// Texts read instead of the disk's.
    overlay: Overlay,
}

impl Loader {
    fn finish(self, root: FileId) -> Result<Program, Diagnostics> {
        if !self.errors.is_empty() {
            return Err(Diagnostics::new(self.errors, Arc::new(self.sources)));
        }
        // A file that failed to parse left an error, so without errors
        // every file has its AST.
        let files = self.files.into_iter().collect::<Option<Vec<_>>>();
        Ok(Program {
            sources: Arc::new(self.sources),
            files: files.expect("every file without an error was parsed"),
            imports: self.imports,
            root,
        })
    }

    /// Parses one file and loads its imports, depth first.
    fn load(&mut self, origin: Origin, name: String, text: String) -> FileId {
        let text = normalize(text);
        let id = self.sources.add(name, Arc::<str>::from(text.as_str()));
        self.files.push(None);
        self.imports.push(Vec::new());
        self.loaded.insert(origin.key(), id);
        let parsed = match &origin {
            Origin::Stdlib(module) => parse_stdlib(module, &text, id),
            _ => syntax::parse(&text, id),
        };
        let parsed = match parsed {
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

    /// Loads the file that `u` in the file at `from` names, unless it was
    /// loaded already or is still being loaded (a cycle).
    fn import(&mut self, from: &Origin, u: &ast::Use) -> Option<FileId> {
        let origin = self.resolve(from, u)?;
        let key = origin.key();
        if let Some(pos) = self.stack.iter().position(|(o, _)| *o == key) {
            self.errors.push(self.cycle_error(pos, u));
            return None;
        }
        if let Some(&id) = self.loaded.get(&key) {
            return Some(id);
        }
        let open = match &key {
            Origin::Disk(canonical) => self.overlay.get(canonical),
            _ => None,
        };
        let (name, text) = match (&origin, open) {
            (Origin::Disk(path), Some(text)) => (display(path), text.clone()),
            (Origin::Disk(path), None) => match std::fs::read_to_string(path) {
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
            (Origin::Stdlib(module), _) => (
                format!("<stdlib>/{module}.cnn"),
                stdlib::source(module).unwrap_or_default().to_string(),
            ),
            (Origin::Memory(_), _) => unreachable!("resolve never yields an in-memory file"),
        };
        // Imports nest as deep as the chain of files that import each other:
        // grow the stack on the heap when it runs low rather than overflow it.
        Some(stacker::maybe_grow(64 << 10, 1 << 20, || {
            self.load(origin, name, text)
        }))
    }

    /// The error for import `u`, which leads back to the file at `stack[pos]`.
    fn cycle_error(&self, pos: usize, u: &ast::Use) -> Diagnostic {
        let chain: Vec<&str> = self.stack[pos..]
            .iter()
            .map(|(_, id)| self.sources.name(*id))
            .chain([self.sources.name(self.stack[pos].1)])
            .collect();
        Diagnostic::error(
            u.span,
            "import cycle",
            "this import leads back to a file that is still being loaded",
        )
        .with_note(format!("the cycle: {}", chain.join(" -> ")))
        .with_note("help: move the shared blocks into a file that both can import")
    }

    /// Finds the file a `use` names: next to the importing file first, then
    /// (for module names) in the standard library.
    fn resolve(&mut self, from: &Origin, u: &ast::Use) -> Option<Origin> {
        let found = match &u.target {
            ast::UseTarget::Path(rel) => resolve_path(from, rel, u.span),
            ast::UseTarget::Module(module) => resolve_module(from, module, u.span),
        };
        match found {
            Ok(origin) => Some(origin),
            Err(error) => {
                self.errors.push(error);
                None
            }
        }
    }
}

/// Resolves `use "rel"` at `span`: a file relative to the importing one's folder.
fn resolve_path(from: &Origin, rel: &str, span: Span) -> Result<Origin, Diagnostic> {
    let Some(dir) = from.folder() else {
        return Err(Diagnostic::error(
            span,
            format!("cannot import `{rel}` from a file that is not on disk"),
            "relative import",
        ));
    };
    let path = dir.join(rel);
    if path.is_file() {
        return Ok(Origin::Disk(path));
    }
    Err(
        Diagnostic::error(span, format!("cannot find `{rel}`"), "imported here")
            .with_note(format!("looked for {}", display(&path))),
    )
}

/// Resolves `use a.b` at `span`: the file `a/b.cnn` next to the importing
/// one, else the standard library module `a.b`.
fn resolve_module(from: &Origin, module: &str, span: Span) -> Result<Origin, Diagnostic> {
    let relative: PathBuf = module.split('.').collect::<PathBuf>().with_extension("cnn");
    let dir = from.folder();
    // A file never imports itself by module name: `use inception` in
    // examples/inception.cnn means the stdlib module.
    let is_self = |p: &PathBuf| matches!(from, Origin::Disk(f) if same_file(f, p));
    if let Some(path) = dir
        .as_ref()
        .map(|d| d.join(&relative))
        .filter(|p| p.is_file() && !is_self(p))
    {
        return Ok(Origin::Disk(path));
    }
    if stdlib::source(module).is_some() {
        return Ok(Origin::Stdlib(module.to_string()));
    }
    let looked = match &dir {
        Some(d) => format!("{} and ", display(&d.join(&relative))),
        None => String::new(),
    };
    Err(missing_module(span, module, &looked))
}

/// The error for a module found neither on disk nor in the standard
/// library; `looked` lists the file looked for on disk, if any.
fn missing_module(span: Span, module: &str, looked: &str) -> Diagnostic {
    let error = Diagnostic::error(
        span,
        format!("cannot find module `{module}`"),
        "no such module",
    )
    .with_note(format!(
        "looked for {looked}the standard library module `{module}`"
    ));
    let names = || stdlib::MODULES.iter().map(|(name, _)| *name);
    let error = suggest(error, module, names());
    error.with_note(format!(
        "the standard library has: {}",
        names().collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn normalizing_drops_a_byte_order_mark_and_ends_lines_at_lone_carriage_returns() {
        let text = "\u{feff}# a\rmodel m : [1, 1, 1] {\r\n  relu\r}\r".to_string();
        assert_eq!(normalize(text), "# a\nmodel m : [1, 1, 1] {\r\n  relu\n}\n");
        // A mark anywhere else is left for the parser to report.
        assert_eq!(normalize("a\u{feff}".into()), "a\u{feff}");
    }

    /// Writes `files` (name, text) into a fresh folder and returns it.
    fn folder(files: &[(&str, &str)]) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cnnc-load-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a fresh folder in the temporary directory");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("a fixture file");
        }
        dir
    }

    /// The errors of loading, each as its message and the text it points at.
    fn errors(result: Result<Program, Diagnostics>) -> Vec<(String, String)> {
        let Err(diagnostics) = result else {
            panic!("the fixture loaded without errors");
        };
        let at = |d: &Diagnostic| diagnostics.sources().snippet(d.primary.span).to_string();
        diagnostics
            .errors
            .iter()
            .map(|d| (d.message.clone(), at(d)))
            .collect()
    }

    fn notes(result: Result<Program, Diagnostics>) -> Vec<String> {
        match result {
            Err(diagnostics) => diagnostics.errors[0].notes.clone(),
            Ok(_) => panic!("the fixture loaded without errors"),
        }
    }

    #[test]
    fn an_open_text_is_imported_instead_of_the_file_on_disk() {
        let dir = folder(&[("lib.cnn", "block unit { relu }\n")]);
        let text = "use lib\nmodel m : [8, 8, 1] { unit }\n";
        let canonical = dir.join("lib.cnn").canonicalize().expect("the file");
        let edited = Overlay::from([(canonical, "block unit { rleu }\n".to_string())]);
        let program = load_source_over("main.cnn", text, Some(&dir), edited).expect("loads");
        assert_eq!(program.sources.text(1), "block unit { rleu }\n");
        let on_disk = load_source("main.cnn", text, Some(&dir)).expect("loads");
        assert_eq!(on_disk.sources.text(1), "block unit { relu }\n");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_stdlib_module_is_parsed_once_however_often_it_is_imported() {
        let text = "use resnet\nuse resnet\nmodel m : [8, 8, 1] { relu }\n";
        let program = load_source("main.cnn", text, None).expect("loads");
        assert_eq!(program.files.len(), 2);
        assert_eq!(program.root, 0);
        assert_eq!(program.imports[0], vec![1, 1]);
        assert_eq!(program.sources.name(1), "<stdlib>/resnet.cnn");
    }

    #[test]
    fn an_unknown_module_is_reported_at_its_use_with_the_closest_name() {
        let result = || load_source("main.cnn", "use resnt\n", None);
        assert_eq!(
            errors(result()),
            [(
                "cannot find module `resnt`".to_string(),
                "use resnt".to_string()
            )]
        );
        let notes = notes(result());
        assert_eq!(notes[0], "looked for the standard library module `resnt`");
        assert_eq!(notes[1], "help: did you mean `resnet`?");
        assert!(notes[2].starts_with("the standard library has: alexnet, densenet, efficientnet,"));
    }

    #[test]
    fn a_file_in_memory_cannot_import_by_path() {
        assert_eq!(
            errors(load_source("main.cnn", "use \"blocks.cnn\"\n", None)),
            [(
                "cannot import `blocks.cnn` from a file that is not on disk".to_string(),
                "use \"blocks.cnn\"".to_string()
            )]
        );
    }

    #[test]
    fn syntax_errors_of_every_imported_file_are_collected() {
        let dir = folder(&[
            ("a.cnn", "block a { relu(\n}\n"),
            ("b.cnn", "block b { ) }\n"),
        ]);
        let text = "use \"a.cnn\"\nuse \"b.cnn\"\nmodel m : [8, 8, 1] { a }\n";
        let result = load_source("main.cnn", text, Some(&dir));
        std::fs::remove_dir_all(&dir).expect("the fixture folder");
        let Err(diagnostics) = result else {
            panic!("the fixture loaded without errors");
        };
        let files: Vec<&str> = diagnostics
            .errors
            .iter()
            .map(|e| diagnostics.sources().name(e.primary.span.file))
            .collect();
        assert_eq!(
            files,
            [display(&dir.join("a.cnn")), display(&dir.join("b.cnn"))]
        );
    }

    #[test]
    fn a_module_file_next_to_the_importer_comes_before_the_stdlib() {
        let dir = folder(&[("resnet.cnn", "block residual_unit { relu }\n")]);
        let program = load_source("main.cnn", "use resnet\n", Some(&dir)).expect("loads");
        std::fs::remove_dir_all(&dir).expect("the fixture folder");
        assert_eq!(program.sources.name(1), display(&dir.join("resnet.cnn")));
    }

    #[test]
    fn a_file_importing_its_own_module_name_gets_the_stdlib_module() {
        let dir = folder(&[("resnet.cnn", "use resnet\nmodel m : [8, 8, 1] { relu }\n")]);
        let program = load_file(&dir.join("resnet.cnn")).expect("loads");
        std::fs::remove_dir_all(&dir).expect("the fixture folder");
        assert_eq!(program.sources.name(1), "<stdlib>/resnet.cnn");
    }

    #[test]
    fn an_import_cycle_names_every_file_on_it() {
        let dir = folder(&[("a.cnn", "use b\n"), ("b.cnn", "use a\n")]);
        let result = load_file(&dir.join("a.cnn"));
        std::fs::remove_dir_all(&dir).expect("the fixture folder");
        let a = display(&dir.join("a.cnn"));
        let b = display(&dir.join("b.cnn"));
        assert_eq!(notes(result)[0], format!("the cycle: {a} -> {b} -> {a}"));
    }

    #[test]
    fn an_unreadable_root_file_is_one_error_at_its_start() {
        let dir = folder(&[]);
        let result = load_file(&dir.join("missing.cnn"));
        std::fs::remove_dir_all(&dir).expect("the fixture folder");
        let errors = errors(result);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].0.starts_with("cannot read the file: "),
            "{errors:?}"
        );
        assert_eq!(errors[0].1, "");
    }
}
