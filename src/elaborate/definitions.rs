//! Definitions: the blocks and models each file can call, the model to
//! compile, and the scope of one block instance, where names are bound and
//! looked up.
//!
//! A file sees its own definitions and those of the files it imports
//! directly. A local definition shadows an imported one; two imports that
//! define the same name make it ambiguous, which is an error only where the
//! name is called.

use std::collections::{HashMap, HashSet};

use crate::diagnostics::{suggest, Diagnostic, FileId, Span};
use crate::syntax::ast::{self, Ident};
use crate::syntax::Program;

use super::calls::Expected;
use super::value::Value;
use super::Elaborator;
use super::{expr, functions, layers};

/// The names of the models defined in the program's root file, in order.
pub fn models(program: &Program) -> Vec<String> {
    own_definitions(program, program.root)
        .into_iter()
        .filter(|d| d.is_model)
        .map(|d| d.def.name.name.clone())
        .collect()
}

/// A block or model definition and the file it is in.
#[derive(Clone, Copy)]
pub(super) struct DefRef<'p> {
    pub(super) file: FileId,
    pub(super) def: &'p ast::Definition,
    pub(super) is_model: bool,
}

/// Per file (indexed by [`FileId`]): the definitions visible there by name.
/// A name with several entries is defined by several imported files.
pub(super) type Visible<'p> = Vec<HashMap<&'p str, Vec<DefRef<'p>>>>;

/// Builds the per-file tables of visible definitions, pushing onto `errors`
/// the definitions that clash within one file or with a built-in layer.
pub(super) fn index_definitions<'p>(
    program: &'p Program,
    errors: &mut Vec<Diagnostic>,
) -> Visible<'p> {
    let own: Vec<Vec<DefRef<'p>>> = (0..program.files.len())
        .map(|file| own_definitions(program, file))
        .collect();
    (0..own.len())
        .map(|file| {
            let mut table = local_table(&own[file], errors);
            add_imported(&mut table, file, &program.imports[file], &own);
            table
        })
        .collect()
}

/// Chooses the model to compile among those of the root file: the one
/// called `name`, or the only one.
pub(super) fn choose_model<'p>(
    program: &'p Program,
    name: Option<&str>,
) -> Result<DefRef<'p>, Diagnostic> {
    let models: Vec<DefRef<'p>> = own_definitions(program, program.root)
        .into_iter()
        .filter(|d| d.is_model)
        .collect();
    let names: Vec<&str> = models.iter().map(|d| d.def.name.name.as_str()).collect();
    let file_start = Span::new(program.root, 0, 0);
    match (name, models.as_slice()) {
        (Some(name), _) => models
            .iter()
            .find(|d| d.def.name.name == name)
            .copied()
            .ok_or_else(|| no_such_model(file_start, name, &names)),
        (None, [one]) => Ok(*one),
        (None, []) => Err(
            Diagnostic::error(file_start, "this file defines no model", "")
                .with_note("help: a model is `model name : [height, width, channels] { ... }`"),
        ),
        (None, _) => Err(Diagnostic::error(
            file_start,
            "this file defines several models; choose one",
            "",
        )
        .with_note(format!("its models: {}", names.join(", ")))
        .with_note(format!("help: pass `--model {}`", names[0]))),
    }
}

/// `names` joined with commas, or "none".
pub(super) fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// One block instance being expanded: its bound names, the numbering of
/// its layer and block instances, and the tensors its statements apply to.
pub(super) struct Scope {
    /// The file the block is defined in; its calls see that file's definitions.
    pub(super) file: FileId,
    /// The instance's path in the block hierarchy (`stage2.residual_unit1`);
    /// empty in the model.
    pub(super) path: String,
    /// Bound names, innermost last: the parameters, then one frame per
    /// `for` iteration or `if` branch being run.
    pub(super) frames: Vec<HashMap<String, Value>>,
    /// How many instances of each layer or block have been numbered here.
    pub(super) counters: HashMap<String, usize>,
    /// The instance names in use here, numbered or given with `as`.
    pub(super) taken: HashSet<String>,
    /// The block's input, `in`.
    pub(super) input: Value,
    /// The tensor the next statement applies to.
    pub(super) current: Value,
    /// The declared outputs; `Some` only in the model being compiled.
    pub(super) outputs: Option<Vec<(String, Value, Span)>>,
    /// Whether the definition is a model (a model called as a block may
    /// declare outputs, which are then ignored).
    pub(super) is_model: bool,
}

impl Scope {
    /// A scope with an empty parameter frame, applying to `input`.
    pub(super) fn new(file: FileId, path: String, input: Value, is_model: bool) -> Scope {
        Scope {
            file,
            path,
            frames: vec![HashMap::new()],
            counters: HashMap::new(),
            taken: HashSet::new(),
            current: input.clone(),
            input,
            outputs: None,
            is_model,
        }
    }

    /// The value bound to `name` in the innermost frame that binds it.
    pub(super) fn lookup(&self, name: &str) -> Option<&Value> {
        self.frames.iter().rev().find_map(|f| f.get(name))
    }

    /// Binds `name` in the innermost frame.
    pub(super) fn bind(&mut self, name: &str, value: Value) {
        // A scope always has at least its parameter frame.
        self.frames
            .last_mut()
            .expect("scope has a frame")
            .insert(name.to_string(), value);
    }

    /// The path of instance `name` of this scope: `stage2.residual_unit1.conv2`.
    pub(super) fn qualified(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn bound_names(&self) -> Vec<String> {
        self.frames.iter().flat_map(|f| f.keys().cloned()).collect()
    }
}

impl<'p> Elaborator<'p> {
    /// The block or model that `callee`, called in `scope` where
    /// `expected` can be called, names; reports names that are unknown or
    /// ambiguous there.
    pub(super) fn find_definition(
        &mut self,
        scope: &Scope,
        callee: &Ident,
        expected: Expected,
    ) -> Option<DefRef<'p>> {
        let candidates = self.visible[scope.file].get(callee.name.as_str());
        match candidates.map(Vec::as_slice).unwrap_or_default() {
            [def] => Some(*def),
            [] => {
                let error = self.unknown_callee(scope, callee, expected);
                self.error(error);
                None
            }
            many => {
                let error = ambiguous(callee, many);
                self.error(error);
                None
            }
        }
    }

    /// The error for a call of a name that is neither a layer, a visible
    /// definition, a built-in function nor a bound value, suggesting the
    /// closest of those that can be called where it is (`expected`).
    fn unknown_callee(&self, scope: &Scope, callee: &Ident, expected: Expected) -> Diagnostic {
        let name = callee.name.as_str();
        let mut known: Vec<String> = Vec::new();
        if expected != Expected::Function {
            known.extend(layers::LAYERS.iter().map(|(n, _)| n.to_string()));
            known.extend(self.visible[scope.file].keys().map(|k| k.to_string()));
            known.extend(scope.bound_names());
        }
        if expected != Expected::LayerOrBlock {
            known.extend(functions::FUNCTIONS.iter().map(|f| f.to_string()));
        }
        let (what, label) = match expected {
            Expected::LayerOrBlock => ("layer or block", "not a layer, block or value"),
            Expected::Function => ("function", "not a built-in function"),
            Expected::Any => (
                "layer, block or function",
                "not a layer, block, function or value",
            ),
        };
        let mut error = Diagnostic::error(callee.span, format!("unknown {what} `{name}`"), label);
        if expected == Expected::Function {
            error = error.with_note(format!(
                "built-in functions: {}",
                functions::FUNCTIONS.join(", ")
            ));
        }
        suggest(error, name, known.iter().map(String::as_str))
    }
}

/// The blocks and models defined in `file` itself, in order.
fn own_definitions(program: &Program, file: FileId) -> Vec<DefRef<'_>> {
    program.files[file]
        .items
        .iter()
        .filter_map(|item| match item {
            ast::Item::Block(def) => Some(DefRef {
                file,
                def,
                is_model: false,
            }),
            ast::Item::Model(def) => Some(DefRef {
                file,
                def,
                is_model: true,
            }),
            _ => None,
        })
        .collect()
}

/// The table of one file's own definitions, leaving out (and reporting)
/// those that redefine a built-in layer or an earlier definition.
fn local_table<'p>(
    defs: &[DefRef<'p>],
    errors: &mut Vec<Diagnostic>,
) -> HashMap<&'p str, Vec<DefRef<'p>>> {
    let mut table: HashMap<&'p str, Vec<DefRef<'p>>> = HashMap::new();
    for d in defs {
        let name = d.def.name.name.as_str();
        let built_in = if layers::signature(name).is_some() {
            Some("layer")
        } else if functions::is_function(name) {
            // `max(a, b)` in an expression always calls the function.
            Some("function")
        } else if name == expr::CURRENT {
            // A bare `current` always names the current tensor.
            Some("name")
        } else {
            None
        };
        if let Some(kind) = built_in {
            let mut error = Diagnostic::error(
                d.def.name.span,
                format!("`{name}` is a built-in {kind} and cannot be redefined"),
                "this definition",
            );
            if kind == "function" {
                error = error.with_note(format!("`{name}(...)` calls the built-in function"));
            }
            if kind == "name" {
                error = error.with_note("`current` names the current tensor");
            }
            let what = if d.is_model { "model" } else { "block" };
            errors.push(error.with_note(format!("help: choose another name for the {what}")));
        } else if let Some(first) = table.get(name).and_then(|v| v.first()) {
            errors.push(
                Diagnostic::error(
                    d.def.name.span,
                    format!("`{name}` is defined twice"),
                    "second definition",
                )
                .with_context(first.def.name.span, "first definition"),
            );
        } else {
            table.insert(name, vec![*d]);
        }
    }
    table
}

/// Adds the definitions of the files that `file` imports to its table.
fn add_imported<'p>(
    table: &mut HashMap<&'p str, Vec<DefRef<'p>>>,
    file: FileId,
    imports: &[FileId],
    own: &[Vec<DefRef<'p>>],
) {
    for &import in imports {
        for d in &own[import] {
            let entry = table.entry(d.def.name.name.as_str()).or_default();
            // Local definitions shadow imported ones; two imports with the
            // same name are ambiguous (reported on use). A file reached
            // through two imports adds its definitions once.
            if entry.first().is_none_or(|e| e.file != file)
                && !entry.iter().any(|e| std::ptr::eq(e.def, d.def))
            {
                entry.push(*d);
            }
        }
    }
}

fn no_such_model(file_start: Span, name: &str, names: &[&str]) -> Diagnostic {
    let error = Diagnostic::error(file_start, format!("this file has no model `{name}`"), "")
        .with_note(format!("its models: {}", list_or_none(names)));
    suggest(error, name, names.iter().copied())
}

fn ambiguous(callee: &Ident, definitions: &[DefRef<'_>]) -> Diagnostic {
    let mut error = Diagnostic::error(
        callee.span,
        format!(
            "`{}` is ambiguous: several imported files define it",
            callee.name
        ),
        "which one?",
    );
    for d in definitions {
        error = error.with_context(d.def.name.span, "defined here");
    }
    error.with_note("help: define it once, or import only one of these files")
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn models_are_the_root_files_own_in_order() {
        let program = fixture::program(
            r#"
use lenet
block helper { relu }
model second : [4, 4, 1] { helper }
model first : [4, 4, 1] { relu }
"#,
        );
        assert_eq!(models(&program), ["second", "first"]);
    }

    #[test]
    fn a_second_definition_of_a_name_is_reported_and_the_first_kept() {
        let errors = fixture::errors(
            r#"
block twice { relu }
block twice { tanh }
model m : [4, 4, 1] { twice }
"#,
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].message, "`twice` is defined twice");
        assert_eq!((errors[0].at.as_str(), errors[0].line), ("twice", 3));
        assert_eq!(errors[0].context, [pair("twice", "first definition")]);
    }

    #[test]
    fn a_block_cannot_take_a_built_in_layers_name() {
        let error = fixture::error("block conv { relu }\nmodel m : [4, 4, 1] { relu }\n");
        assert_eq!(
            error.message,
            "`conv` is a built-in layer and cannot be redefined"
        );
        assert_eq!(error.at, "conv");
        assert_eq!(error.notes, ["help: choose another name for the block"]);
    }

    #[test]
    fn a_block_cannot_take_a_built_in_functions_name() {
        let error = fixture::error("block max { relu }\nmodel m : [4, 4, 1] { relu }\n");
        assert_eq!(
            error.message,
            "`max` is a built-in function and cannot be redefined"
        );
        assert_eq!((error.at.as_str(), error.line), ("max", 1));
        assert_eq!(
            error.notes,
            [
                "`max(...)` calls the built-in function",
                "help: choose another name for the block"
            ]
        );
    }

    #[test]
    fn a_built_in_function_is_not_a_layer() {
        let errors = fixture::errors("model m : [4, 4, 1] {\n    max\n    in -> len(2)\n}\n");
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.message.as_str(), e.at.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("`max` is a built-in function, not a layer or block", "max"),
                ("`len` is a built-in function, not a layer or block", "len")
            ]
        );
    }

    #[test]
    fn an_unknown_call_is_suggested_among_what_can_be_called_there() {
        // `lan` is one edit from the function `len` and from the layer `lrn`;
        // `lenn` is one from `len` and two from `lrn`.
        let text = r#"
model m : [4, 4, 1] {
    lan
    in -> lan(1)
    lan(1)
    conv(lan(in.shape), 1)
    let n = lenn(in.shape)
}
"#;
        let errors = fixture::errors(text);
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| {
                (
                    e.message.as_str(),
                    e.notes.last().map_or("", String::as_str),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("unknown layer or block `lan`", "help: did you mean `lrn`?"),
                ("unknown layer or block `lan`", "help: did you mean `lrn`?"),
                ("unknown layer or block `lan`", "help: did you mean `lrn`?"),
                ("unknown function `lan`", "help: did you mean `len`?"),
                (
                    "unknown layer, block or function `lenn`",
                    "help: did you mean `len`?"
                ),
            ]
        );
        assert_eq!(errors[3].label, "not a built-in function");
        assert_eq!(errors[4].label, "not a layer, block, function or value");
    }

    #[test]
    fn a_local_block_shadows_an_imported_one() {
        let graph = fixture::graph(
            r#"
use resnet
block residual_unit(filters) { conv(filters, 1) }
model m : [8, 8, 4] { residual_unit(4) }
"#,
        );
        assert_eq!(
            fixture::node_names(&graph),
            ["input", "residual_unit1.conv1"]
        );
    }

    #[test]
    fn a_name_two_imports_define_is_ambiguous_where_it_is_called() {
        let files = |body: &'static str| {
            let main = format!("use \"a.cnn\"\nuse \"b.cnn\"\nmodel m : [4, 4, 1] {{ {body} }}\n");
            fixture::program_on_disk(&[
                ("main.cnn", &main),
                ("a.cnn", "block shared { relu }\n"),
                ("b.cnn", "block shared { tanh }\n"),
            ])
        };
        assert_eq!(fixture::errors_of(&files("relu"), None), []);
        let errors = fixture::errors_of(&files("shared"), None);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(
            errors[0].message,
            "`shared` is ambiguous: several imported files define it"
        );
        assert_eq!(
            errors[0].context,
            [
                pair("shared", "defined here"),
                pair("shared", "defined here")
            ]
        );
    }

    #[test]
    fn imports_are_not_transitive() {
        let program = fixture::program_on_disk(&[
            ("main.cnn", "use \"a.cnn\"\nmodel m : [4, 4, 1] { deep }\n"),
            ("a.cnn", "use \"b.cnn\"\nblock shallow { deep }\n"),
            ("b.cnn", "block deep { relu }\n"),
        ]);
        let errors = fixture::errors_of(&program, None);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].message, "unknown layer or block `deep`");
        assert_eq!(errors[0].line, 2);
    }

    #[test]
    fn an_unknown_name_suggests_the_closest_layer_block_or_value() {
        let text = "block widen { relu }\nmodel m : [4, 4, 1] {\n    let filters = 3\n    relux\n    widn\n    filter\n}\n";
        let errors = fixture::errors(text);
        let notes: Vec<&[String]> = errors.iter().map(|e| e.notes.as_slice()).collect();
        assert_eq!(
            notes,
            [
                ["help: did you mean `relu`?"],
                ["help: did you mean `widen`?"],
                ["help: did you mean `filters`?"]
            ]
        );
        assert_eq!(errors[0].label, "not a layer, block or value");
    }

    #[test]
    fn the_model_is_chosen_by_name_or_as_the_only_one() {
        let two = fixture::program("model a : [4, 4, 1] { relu }\nmodel b : [4, 4, 1] { tanh }\n");
        let chosen = choose_model(&two, Some("b")).map(|d| d.def.name.name.as_str());
        assert_eq!(chosen.ok(), Some("b"));
        let one = fixture::program("block x { relu }\nmodel only : [4, 4, 1] { x }\n");
        let chosen = choose_model(&one, None).map(|d| d.def.name.name.as_str());
        assert_eq!(chosen.ok(), Some("only"));
    }

    #[test]
    fn choosing_a_model_that_is_not_there_is_an_error_at_the_files_start() {
        let two =
            fixture::program("model lenet5 : [4, 4, 1] { relu }\nmodel vgg : [4, 4, 1] { relu }\n");
        let errors = fixture::errors_of(&two, Some("lenet"));
        assert_eq!(errors[0].message, "this file has no model `lenet`");
        assert_eq!((errors[0].at.as_str(), errors[0].line), ("", 1));
        assert_eq!(
            errors[0].notes,
            ["its models: lenet5, vgg", "help: did you mean `lenet5`?"]
        );
        let errors = fixture::errors_of(&two, None);
        assert_eq!(
            errors[0].message,
            "this file defines several models; choose one"
        );
        assert_eq!(
            errors[0].notes,
            ["its models: lenet5, vgg", "help: pass `--model lenet5`"]
        );
        let none = fixture::error("block b { relu }\n");
        assert_eq!(none.message, "this file defines no model");
    }

    #[test]
    fn a_scope_looks_names_up_innermost_frame_first() {
        let mut scope = Scope::new(0, String::new(), Value::Poison, false);
        scope.bind("x", Value::Int(1));
        scope.frames.push(HashMap::new());
        scope.bind("x", Value::Int(2));
        assert_eq!(scope.lookup("x"), Some(&Value::Int(2)));
        scope.frames.pop();
        assert_eq!(scope.lookup("x"), Some(&Value::Int(1)));
        assert_eq!(scope.lookup("y"), None);
    }

    #[test]
    fn a_scope_qualifies_instance_names_with_its_path() {
        let model = Scope::new(0, String::new(), Value::Poison, true);
        assert_eq!(model.qualified("conv1"), "conv1");
        let block = Scope::new(0, "stage2.unit1".into(), Value::Poison, false);
        assert_eq!(block.qualified("conv1"), "stage2.unit1.conv1");
    }
}
