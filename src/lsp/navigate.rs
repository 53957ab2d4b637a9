//! Finding one's way in a document: its symbols (models, blocks and their
//! `let` bindings), the definition of a name or of a `use`d module
//! (standard library included: its modules are built into `cnnc`, so a
//! read-only copy is written to the user's cache for the editor to open),
//! the uses of a name, and renaming one across the document.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use lsp_types::{DocumentSymbol, SymbolKind, Uri};

use super::analysis::{Analysis, ROOT};
use super::names::Kind;
use super::text::{uri_of, LineIndex};
use crate::diagnostics::{FileId, Span};
use crate::elaborate::{layers, FUNCTIONS};
use crate::syntax::ast::{Item, Use, UseTarget};

/// Where a definition lies: a file (a URI) and bytes of its text.
pub struct Place {
    pub uri: Uri,
    pub range: lsp_types::Range,
}

impl Analysis {
    /// The document's models and blocks, each with its `let` bindings.
    pub fn symbols(&self, text: &str) -> Vec<DocumentSymbol> {
        let index = LineIndex::new(text);
        let range = |span: Span| index.range(text, span.start, span.end);
        let names = &self.names;
        let symbol = |i: usize, children: Option<Vec<DocumentSymbol>>| {
            let s = &names.symbols[i];
            let (kind, detail) = match s.kind {
                Kind::Model => (SymbolKind::CLASS, "model"),
                Kind::Block => (SymbolKind::FUNCTION, "block"),
                _ => (SymbolKind::VARIABLE, "let"),
            };
            #[allow(deprecated)] // `deprecated` is a field the type still has
            DocumentSymbol {
                name: s.name.clone(),
                detail: Some(detail.into()),
                kind,
                tags: None,
                deprecated: None,
                range: range(s.range),
                selection_range: range(s.name_span),
                children,
            }
        };
        (0..names.symbols.len())
            .filter(|&i| {
                let s = &names.symbols[i];
                s.parent.is_none() && s.name_span.file == ROOT
            })
            .map(|i| {
                let lets: Vec<DocumentSymbol> = (0..names.symbols.len())
                    .filter(|&j| {
                        names.symbols[j].parent == Some(i) && names.symbols[j].kind == Kind::Let
                    })
                    .map(|j| symbol(j, None))
                    .collect();
                symbol(i, Some(lets))
            })
            .collect()
    }

    /// The definition of what is named at byte `offset` of the document
    /// at `uri` (whose text is `text`): a block, model or binding, or the
    /// module of a `use`.
    pub fn definition(&self, uri: &Uri, text: &str, offset: usize) -> Option<Place> {
        let span = self.definition_span(offset)?;
        let file = span.file;
        if file == ROOT {
            let index = LineIndex::new(text);
            return Some(Place {
                uri: uri.clone(),
                range: index.range(text, span.start, span.end),
            });
        }
        let other = self.sources.text(file);
        Some(Place {
            uri: self.uri_of_file(file)?,
            range: LineIndex::new(other).range(other, span.start, span.end),
        })
    }

    /// Where what is named at byte `offset` of the document is defined:
    /// the name in its definition, or the start of a `use`d file.
    fn definition_span(&self, offset: usize) -> Option<Span> {
        match self.names.at(offset) {
            Some(symbol) => Some(self.names.symbols[symbol].name_span),
            None => self.module_at(offset).map(|file| Span::new(file, 0, 0)),
        }
    }

    /// The imported file whose `use` item holds byte `offset`.
    fn module_at(&self, offset: usize) -> Option<FileId> {
        let item = self.tree()?.items.iter().find_map(|item| match item {
            Item::Use(u) if u.span.start <= offset && offset <= u.span.end => Some(u),
            _ => None,
        })?;
        let stem = use_stem(item);
        self.imports
            .iter()
            .copied()
            .find(|&file| file_stem(self.sources.name(file)) == stem)
    }

    /// A URI the editor can open for loaded file `file`: the file itself,
    /// or for a module of the standard library, a copy of it in the
    /// user's cache.
    pub(super) fn uri_of_file(&self, file: FileId) -> Option<Uri> {
        let name = self.sources.name(file);
        let module = name.strip_prefix("<stdlib>/");
        let path = match module.and_then(|m| m.strip_suffix(".cnn")) {
            Some(module) => stdlib_copy(&cache_dir(), module, self.sources.text(file))?,
            None => std::path::absolute(name).ok().filter(|p| p.is_file())?,
        };
        uri_of(&path)
    }

    /// Where the document names what is named at byte `offset`: its
    /// definition (with `declaration`, when it is in the document) and
    /// its uses.
    pub fn references(&self, offset: usize, declaration: bool) -> Vec<Span> {
        let Some(symbol) = self.names.at(offset) else {
            return Vec::new();
        };
        let own = self.names.symbols[symbol].name_span;
        self.names
            .occurrences(symbol)
            .into_iter()
            .filter(|&span| declaration || span != own)
            .collect()
    }

    /// The name at byte `offset` that can be renamed: a block, model,
    /// `let` or loop variable defined in the document.
    pub fn renamable(&self, offset: usize) -> Result<Span, String> {
        let (_, places) = self.rename_target(offset)?;
        places
            .into_iter()
            .find(|s| s.start <= offset && offset <= s.end)
            .ok_or_else(|| "there is nothing to rename here".into())
    }

    /// The symbol named at `offset`, when it can be renamed, and the places
    /// the document names it.
    fn rename_target(&self, offset: usize) -> Result<(usize, Vec<Span>), String> {
        let symbol = self
            .names
            .at(offset)
            .ok_or("there is no block, model or `let` binding here to rename")?;
        let s = &self.names.symbols[symbol];
        if s.name_span.file != ROOT {
            return Err(format!(
                "`{}` is defined in `{}`; rename it there",
                s.name,
                self.sources.name(s.name_span.file)
            ));
        }
        if s.kind == Kind::Param {
            return Err(format!(
                "`{}` is a parameter, which calls name as an argument: renaming one is not supported",
                s.name
            ));
        }
        Ok((symbol, self.names.occurrences(symbol)))
    }

    /// Every place to write `new` to rename what is named at `offset`; an
    /// error when it cannot be renamed, or `new` is not a name or would
    /// change what a use refers to.
    pub fn rename(&self, offset: usize, new: &str) -> Result<Vec<Span>, String> {
        let (symbol, places) = self.rename_target(offset)?;
        let old = &self.names.symbols[symbol].name;
        if !is_name(new) {
            return Err(format!("`{new}` is not a name: a name is a letter or `_`, then letters, digits or `_`, and no keyword"));
        }
        if layers::signature(new).is_some() || FUNCTIONS.contains(&new) {
            return Err(format!("`{new}` is a built-in layer or function"));
        }
        if new != old && places.iter().any(|s| self.names.visible(new, s.start)) {
            return Err(format!(
                "`{new}` is already a name here; renaming `{old}` to it would change what a use refers to"
            ));
        }
        Ok(places)
    }
}

/// Whether `word` is a name in the language (not a keyword): checked with
/// the grammar itself.
fn is_name(word: &str) -> bool {
    let source = format!("model {word} : [1] {{}}\n");
    let Ok(tree) = crate::syntax::parse(&source, ROOT) else {
        return false;
    };
    matches!(tree.items.as_slice(), [Item::Model(def)] if def.name.name == word)
}

/// The name a `use` gives its module: `resnet` for `use resnet` or `use
/// "lib/resnet.cnn"`.
pub(super) fn use_stem(item: &Use) -> String {
    match &item.target {
        UseTarget::Module(m) => m.rsplit('.').next().unwrap_or(m).to_string(),
        UseTarget::Path(p) => file_stem(p),
    }
}

/// A file name's stem: `resnet` for `<stdlib>/resnet.cnn`.
pub(super) fn file_stem(name: &str) -> String {
    Path::new(name)
        .file_stem()
        .map_or(String::new(), |s| s.to_string_lossy().into_owned())
}

/// The user's cache folder: `$XDG_CACHE_HOME`, `~/.cache`, or the
/// temporary folder.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
}

/// A read-only copy of stdlib module `module` (whose text is `text`)
/// under `cache`, written when missing or different: one folder per
/// version of the library's text, so that an editor never shows another
/// build's module.
fn stdlib_copy(cache: &Path, module: &str, text: &str) -> Option<PathBuf> {
    // The library's hash, and the copies this process has checked or
    // written: each is read or written once, not at every request.
    static VERSION: OnceLock<String> = OnceLock::new();
    static CHECKED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let version = VERSION.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        crate::stdlib::MODULES.hash(&mut hasher);
        format!("stdlib-{:016x}", hasher.finish())
    });
    let folder = cache.join("cnnc").join(version);
    let path = folder.join(format!("{module}.cnn"));
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if checked.contains(&path) && path.is_file() {
        return Some(path);
    }
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        checked.insert(path.clone());
        return Some(path);
    }
    std::fs::create_dir_all(&folder).ok()?;
    // Written whole under another name, then moved: a reader never sees
    // half a file.
    let partial = folder.join(format!(".{module}.cnn.{}", std::process::id()));
    std::fs::write(&partial, text).ok()?;
    let mut permissions = std::fs::metadata(&partial).ok()?.permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&partial, permissions).ok()?;
    std::fs::rename(&partial, &path).ok()?;
    checked.insert(path.clone());
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "use resnet\nblock unit(f) {\n    let g = f * 2\n    conv(g, 3, padding: same)\n    relu\n}\nmodel m : [8, 8, 1] {\n    unit(4)\n    residual_unit(8)\n    unit(8)\n}\n";

    fn at(text: &str, what: &str) -> usize {
        text.find(what).expect("in the text")
    }

    #[test]
    fn the_symbols_are_the_definitions_with_their_lets() {
        let analysis = Analysis::of(None, TEXT);
        let symbols = analysis.symbols(TEXT);
        let names: Vec<(&str, Vec<&str>)> = symbols
            .iter()
            .map(|s| {
                let children = s.children.iter().flatten().map(|c| c.name.as_str());
                (s.name.as_str(), children.collect())
            })
            .collect();
        assert_eq!(names, [("unit", vec!["g"]), ("m", vec![])]);
    }

    #[test]
    fn references_include_the_definition_when_asked() {
        let analysis = Analysis::of(None, TEXT);
        let last = at(TEXT, "    unit(8)") + 4;
        let uses = analysis.references(last, false);
        let starts: Vec<usize> = uses.iter().map(|s| s.start).collect();
        assert_eq!(starts, [at(TEXT, "unit(4)"), last]);
        assert_eq!(analysis.references(last, true).len(), 3);
    }

    #[test]
    fn a_stdlib_block_and_its_module_are_defined_in_the_module() {
        let analysis = Analysis::of(None, TEXT);
        let block = analysis
            .definition_span(at(TEXT, "residual_unit") + 2)
            .expect("a definition");
        assert_ne!(block.file, ROOT);
        assert_eq!(analysis.sources.name(block.file), "<stdlib>/resnet.cnn");
        assert_eq!(analysis.sources.snippet(block), "residual_unit");
        let module = analysis.definition_span(5).expect("the module");
        assert_eq!(module, Span::new(block.file, 0, 0));
    }

    #[test]
    fn a_stdlib_module_is_copied_once_read_only() {
        let cache = std::env::temp_dir().join(format!("cnnc-nav-{}", std::process::id()));
        let text = crate::stdlib::source("se").expect("se");
        let path = stdlib_copy(&cache, "se", text).expect("a copy");
        assert_eq!(std::fs::read_to_string(&path).expect("the copy"), text);
        assert!(std::fs::metadata(&path)
            .expect("meta")
            .permissions()
            .readonly());
        // Read-only, it is found again, not written over.
        assert_eq!(stdlib_copy(&cache, "se", text), Some(path));
        std::fs::remove_dir_all(&cache).ok();
    }

    #[test]
    fn a_rename_refuses_names_that_would_change_the_program() {
        let analysis = Analysis::of(None, TEXT);
        let g = at(TEXT, "g, 3");
        assert_eq!(analysis.rename(g, "width").expect("renamed").len(), 2);
        // `same` is used as a value where `g` is seen: a `let` of that name
        // would take its place.
        for bad in ["f", "conv", "len", "model", "2x", "unit", "same"] {
            assert!(analysis.rename(g, bad).is_err(), "{bad}");
        }
        assert!(analysis.rename(at(TEXT, "(f)") + 1, "h").is_err());
        assert!(analysis.rename(at(TEXT, "residual_unit"), "ru").is_err());
        let unit = analysis
            .rename(at(TEXT, "unit(4)"), "stage")
            .expect("renamed");
        assert_eq!(unit.len(), 3);
    }
}
