//! The layering of `src/` as `docs/architecture.md` lists it: a module may
//! use only modules listed below it. Every `crate::NAME` path in the
//! library's code (and `cnnc::NAME` in the command line's) is checked
//! against the list, so a new upward import fails here, and so does a
//! module missing from the list. Unit tests inside a module (`#[cfg(test)]
//! mod tests`) may use anything: they build their fixtures with the whole
//! pipeline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The name that stands for the crate root (`src/lib.rs`) in the list.
const ROOT: &str = "(pipeline)";

/// The layers from `docs/architecture.md`'s "Layers" block, top first: the
/// first word of each line.
fn layers() -> Vec<String> {
    let doc = std::fs::read_to_string("docs/architecture.md").expect("docs/architecture.md");
    let section = doc
        .split("## Layers")
        .nth(1)
        .expect("a \"## Layers\" section");
    let block = section
        .split("```text")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```text block in the Layers section");
    block
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The layer a file of `src/` belongs to: its top-level module, the crate
/// root for `lib.rs`, and `cli` for the binary.
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .expect("a path inside src");
    match first {
        "lib.rs" => ROOT.to_string(),
        "main.rs" => "cli".to_string(),
        name => name.trim_end_matches(".rs").to_string(),
    }
}

/// The code of a file without its line comments and its unit-test module
/// (`#[cfg(test)]`, any further attributes, then `mod`).
fn code(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut kept = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]" && next_item(&lines[i + 1..]).starts_with("mod ") {
            break;
        }
        if !trimmed.starts_with("//") {
            kept.push(*line);
        }
    }
    kept.join("\n")
}

/// The first line of `lines` that starts an item, past attributes (which
/// may span several lines) and comments.
fn next_item<'a>(lines: &[&'a str]) -> &'a str {
    let items = [
        "mod ", "pub", "fn ", "impl", "struct ", "enum ", "use ", "const ", "static ",
    ];
    lines
        .iter()
        .map(|l| l.trim_start())
        .find(|l| items.iter().any(|item| l.starts_with(item)))
        .unwrap_or("")
}

/// The names a file's code reaches through `prefix` (`crate::` or
/// `cnnc::`): `prefix NAME` and each name of `prefix {A, B::c}`.
fn reached(code: &str, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            names.extend(inner.split(',').map(|p| word(p.trim())));
        } else {
            names.push(word(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// The crate root's re-exports (`pub use module::{A, B}`): which module
/// each root name really comes from.
fn reexports(lib: &str, modules: &[String]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use "))
    {
        let module = line.split("::").next().unwrap_or("").to_string();
        if !modules.contains(&module) {
            continue;
        }
        let names = line[module.len()..]
            .trim_start_matches("::")
            .trim_end_matches(';');
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names
            .split(',')
            .map(|n| n.trim().rsplit("::").next().unwrap_or(""))
        {
            map.insert(name.to_string(), module.clone());
        }
    }
    map
}

/// The layer a reached name belongs to: a module of the list, a root
/// re-export's module, or the crate root itself.
fn layer_of(name: &str, modules: &[String], reexported: &HashMap<String, String>) -> String {
    if modules.iter().any(|m| m == name) {
        name.to_string()
    } else {
        reexported
            .get(name)
            .cloned()
            .unwrap_or_else(|| ROOT.to_string())
    }
}

/// Every import of `module` (whose code is `code`) that does not point
/// down the list, as a message.
fn violations(
    file: &str,
    module: &str,
    code: &str,
    layers: &[String],
    reexported: &HashMap<String, String>,
) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| l == m);
    let Some(own) = rank(module) else {
        return vec![format!(
            "{file}: module `{module}` is not in docs/architecture.md's Layers"
        )];
    };
    let mut reached_names = reached(code, "crate::");
    if module == "cli" {
        reached_names.extend(reached(code, "cnnc::"));
    }
    if module == ROOT {
        // The root names its modules without a prefix.
        for name in layers {
            if code.contains(&format!("{name}::")) && !code.contains(&format!("pub mod {name};")) {
                reached_names.push(name.clone());
            }
            let used = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("pub mod "))
                .any(|l| l.contains(&format!(" {name}::")) || l.contains(&format!("({name}::")));
            if used {
                reached_names.push(name.clone());
            }
        }
    }
    let mut found = Vec::new();
    for name in reached_names {
        let target = layer_of(&name, layers, reexported);
        if target == module {
            continue;
        }
        match rank(&target) {
            Some(r) if r > own => {}
            _ => found.push(format!(
                "{file}: `{module}` uses `{name}` from `{target}`, which is not below it"
            )),
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn modules_import_only_from_layers_below_them() {
    let layers = layers();
    let lib = std::fs::read_to_string("src/lib.rs").expect("src/lib.rs");
    let reexported = reexports(&lib, &layers);
    let mut problems = Vec::new();
    for path in sources(Path::new("src")) {
        let relative = path.strip_prefix("src").expect("under src");
        let module = module_of(relative);
        let source = std::fs::read_to_string(&path).expect("readable");
        let file = path.display().to_string();
        problems.extend(violations(
            &file,
            &module,
            &code(&source),
            &layers,
            &reexported,
        ));
    }
    assert!(
        problems.is_empty(),
        "upward imports:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_listed_layer_exists() {
    for layer in layers() {
        let exists = layer == ROOT
            || Path::new("src").join(&layer).is_dir()
            || Path::new("src").join(format!("{layer}.rs")).is_file()
            || (layer == "cli" && Path::new("src/main.rs").is_file());
        assert!(
            exists,
            "docs/architecture.md lists `{layer}`, which src/ does not have"
        );
    }
}

/// The paths `docs/architecture.md`'s "Where things are" block lists: the
/// first word of each line that starts with `src/`.
fn mapped_paths() -> Vec<String> {
    let doc = std::fs::read_to_string("docs/architecture.md").expect("docs/architecture.md");
    let section = doc
        .split("## Where things are")
        .nth(1)
        .expect("a \"## Where things are\" section");
    let block = section
        .split("```text")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```text block in the Where things are section");
    block
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.starts_with("src/"))
        .map(|word| word.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn the_map_lists_every_entry_of_src_and_nothing_else() {
    let mapped = mapped_paths();
    let mut entries: Vec<String> = std::fs::read_dir("src")
        .expect("src/")
        .map(|e| format!("src/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    entries.sort();
    for entry in &entries {
        assert!(
            mapped.contains(entry),
            "docs/architecture.md does not list `{entry}`"
        );
    }
    for path in &mapped {
        assert!(
            entries.contains(path),
            "docs/architecture.md lists `{path}`, which does not exist"
        );
    }
}

#[test]
fn an_upward_import_is_reported() {
    let layers: Vec<String> = ["runtime", ROOT, "plan", "graph"]
        .map(String::from)
        .to_vec();
    let reexported = HashMap::from([("KernelPlan".to_string(), "plan".to_string())]);
    let code = code(
        r#"
        use crate::graph::Op;
        use crate::{plan::Step, KernelPlan};
        // use crate::runtime::Trainer; (a comment)
        fn f() { crate::runtime::run(); crate::compile(); }

        #[cfg(test)]
        #[allow(
            clippy::wildcard_enum_match_arm,
        )]
        mod tests {
            use crate::runtime::Trainer;
        }
    "#,
    );
    assert_eq!(
        violations("plan.rs", "plan", &code, &layers, &reexported),
        vec![
            "plan.rs: `plan` uses `compile` from `(pipeline)`, which is not below it".to_string(),
            "plan.rs: `plan` uses `runtime` from `runtime`, which is not below it".to_string(),
        ]
    );
    assert_eq!(
        violations("x.rs", "unlisted", "", &layers, &reexported),
        vec!["x.rs: module `unlisted` is not in docs/architecture.md's Layers".to_string()]
    );
}
