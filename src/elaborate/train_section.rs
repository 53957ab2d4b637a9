//! The train section: `train { optimizer: nadam(lr: 0.001) ... }`, or
//! `train MODEL { ... }` in a file with several models, evaluated in the
//! model's scope (so that it can use the model's parameters) and checked
//! into the training configuration by [`train_config::check`].

use crate::config::TrainConfig;
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::{self, Ident};

use super::definitions::{DefRef, Scope};
use super::expr::{self, Ctx};
use super::freeze;
use super::train_config;
use super::value::Spanned;
use super::Elaborator;

impl<'p> Elaborator<'p> {
    /// The training configuration of `model`, from the train section of its
    /// file that applies to it; `None` without one, or after an error.
    pub(super) fn train_section(
        &mut self,
        model: DefRef<'p>,
        scope: &mut Scope,
    ) -> Option<TrainConfig> {
        let section = self.choose_train_section(model)?;
        let entries: Vec<(Ident, Spanned)> = section
            .entries
            .iter()
            .map(|(key, value)| (key.clone(), self.spanned(scope, value, Ctx::Train)))
            .collect();
        let outputs: Vec<&str> = self.graph.outputs.iter().map(|(n, _)| n.as_str()).collect();
        match train_config::check(&entries, &outputs) {
            Ok(config) => {
                self.freeze(section, &config.freeze);
                Some(config)
            }
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }

    /// Freezes the layers that `patterns`, the section's checked `freeze`
    /// entry, match; reports each pattern that matches nothing, at its place.
    fn freeze(&mut self, section: &ast::Train, patterns: &[String]) {
        let Some((_, list)) = section.entries.iter().find(|(k, _)| k.name == "freeze") else {
            return;
        };
        let spanned: Vec<(String, Span)> = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), expr::element_span(list, i)))
            .collect();
        let errors = freeze::apply(&mut self.graph, &spanned);
        self.errors.extend(errors);
    }

    /// The train section for `model` in its file: `train MODEL { ... }`, or
    /// a bare `train { ... }` when the file has one model. Reports bare
    /// sections in files with several models, and second sections.
    fn choose_train_section(&mut self, model: DefRef<'p>) -> Option<&'p ast::Train> {
        let program = self.program;
        let file = &program.files[model.file];
        let models = file
            .items
            .iter()
            .filter(|i| matches!(i, ast::Item::Model(_)))
            .count();
        let mut chosen = None;
        for item in &file.items {
            let ast::Item::Train(section) = item else {
                continue;
            };
            if !self.applies(section, model, models == 1) {
                continue;
            }
            if chosen.is_some() {
                self.errors.push(Diagnostic::error(
                    section.span,
                    "a second `train` section for the same model",
                    "duplicate",
                ));
            } else {
                chosen = Some(section);
            }
        }
        chosen
    }

    /// Whether `section` trains `model`; reports a section that names no
    /// model in a file that has several.
    fn applies(&mut self, section: &ast::Train, model: DefRef<'p>, single_model: bool) -> bool {
        match &section.model {
            Some(name) => name.name == model.def.name.name,
            None if single_model => true,
            None => {
                self.errors.push(
                    Diagnostic::error(
                        section.span,
                        "this `train` section does not say which model it trains",
                        "",
                    )
                    .with_note("help: the file has several models: write `train MODEL { ... }`"),
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use crate::config::{OptimizerKind, TrainConfig};

    fn config_of(text: &str, model: Option<&str>) -> Option<TrainConfig> {
        let program = fixture::program(text);
        let graph = super::super::elaborate(&program, model).expect("elaborates");
        graph.train
    }

    #[test]
    fn a_bare_section_trains_the_only_model_in_its_scope() {
        let config = config_of(
            r#"
model m(width = 8) : [4, 4, 1] {
    flatten
    dense(width, activation: softmax)
}
train {
    optimizer: nadam(lr: 0.01)
    batch: width * 2
    epochs: 3
}
"#,
            None,
        )
        .expect("a train section");
        assert_eq!((config.batch, config.epochs), (16, 3));
        assert_eq!(config.optimizer.kind, OptimizerKind::Nadam);
        assert_eq!(config.optimizer.lr, 0.01);
    }

    #[test]
    fn a_named_section_trains_only_its_model() {
        let text =
            "model a : [4, 4, 1] { relu }\nmodel b : [4, 4, 1] { relu }\ntrain a { batch: 4 }\n";
        assert_eq!(config_of(text, Some("a")).map(|c| c.batch), Some(4));
        assert_eq!(config_of(text, Some("b")).map(|c| c.batch), None);
        assert_eq!(
            config_of("model a : [4, 4, 1] { relu }\n", None).map(|c| c.batch),
            None
        );
    }

    #[test]
    fn a_bare_section_in_a_file_of_several_models_is_an_error() {
        let program = fixture::program(
            "model a : [4, 4, 1] { relu }\nmodel b : [4, 4, 1] { relu }\ntrain { batch: 4 }\n",
        );
        let errors = fixture::errors_of(&program, Some("a"));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(
            errors[0].message,
            "this `train` section does not say which model it trains"
        );
        assert_eq!(errors[0].at, "train { batch: 4 }");
        assert_eq!(
            errors[0].notes,
            ["help: the file has several models: write `train MODEL { ... }`"]
        );
    }

    /// Each layer of `text`'s model that trains, and whether each of its
    /// weights does, by path.
    fn trainable_of(text: &str) -> Vec<(String, bool, Vec<bool>)> {
        let program = fixture::program(text);
        let graph = super::super::elaborate(&program, None).expect("elaborates");
        let mut layers: Vec<(String, bool, Vec<bool>)> = graph
            .nodes
            .node_weights()
            .filter(|n| !n.params.is_empty())
            .map(|n| {
                let weights = n.params.iter().map(|p| p.trainable).collect();
                (n.name.clone(), n.trainable, weights)
            })
            .collect();
        layers.sort();
        layers
    }

    #[test]
    fn freeze_stops_the_layers_and_blocks_it_matches_from_training() {
        let text = r#"
block unit(f) {
    conv(f, 3, padding: same) -> batchnorm -> relu
}
model m : [8, 8, 1] {
    unit(4) as stem
    unit(4)
    unit(4)
    flatten
    dense(2) as head
}
train { freeze: ["stem", "unit*.batchnorm1"] }
"#;
        let moving = [true, true, false, false];
        let frozen_bn = vec![false; 4];
        let expect =
            |name: &str, trains: bool, weights: Vec<bool>| (name.to_string(), trains, weights);
        assert_eq!(
            trainable_of(text),
            [
                expect("head", true, vec![true, true]),
                expect("stem.batchnorm1", false, frozen_bn.clone()),
                expect("stem.conv1", false, vec![false, false]),
                expect("unit1.batchnorm1", false, frozen_bn.clone()),
                expect("unit1.conv1", true, vec![true, true]),
                expect("unit2.batchnorm1", false, frozen_bn),
                expect("unit2.conv1", true, vec![true, true]),
            ]
        );
        // Without the section every layer trains.
        let plain = text.replace(r#"freeze: ["stem", "unit*.batchnorm1"]"#, "");
        assert!(trainable_of(&plain)
            .iter()
            .all(|(name, trains, weights)| *trains
                && (weights == &moving || !name.contains("batchnorm"))));
    }

    #[test]
    fn a_freeze_pattern_that_matches_nothing_is_an_error_at_its_place() {
        let error = fixture::error(
            "model m : [4, 4, 1] {\n    conv(2, 3) as backbone\n    flatten\n    dense(2)\n}\ntrain {\n    freeze: [\"backbone\", \"bakbone.*\"]\n}\n",
        );
        assert_eq!(
            error.message,
            "`freeze` pattern \"bakbone.*\" matches no layer or block of the model"
        );
        assert_eq!((error.at.as_str(), error.line), ("\"bakbone.*\"", 7));
    }

    #[test]
    fn a_second_section_for_a_model_is_an_error() {
        let error = fixture::error(
            "model m : [4, 4, 1] { relu }\ntrain { batch: 4 }\ntrain m { epochs: 2 }\n",
        );
        assert_eq!(error.message, "a second `train` section for the same model");
        assert_eq!(
            (error.at.as_str(), error.line),
            ("train m { epochs: 2 }", 3)
        );
    }

    #[test]
    fn the_checkers_errors_point_into_the_section() {
        let error = fixture::error("model m : [4, 4, 1] { relu }\ntrain {\n    batch: 0\n}\n");
        assert_eq!(error.message, "`batch` must be a positive integer");
        assert_eq!((error.at.as_str(), error.line), ("0", 3));
    }

    #[test]
    fn built_in_functions_compute_in_the_section() {
        let config = config_of(
            r#"
model m(width = 8) : [4, 4, 1] {
    flatten
    dense(width, activation: softmax)
}
train {
    batch: int(width * 1.5)
    epochs: max(2, len([1, 2, 3]))
}
"#,
            None,
        )
        .expect("a train section");
        assert_eq!((config.batch, config.epochs), (12, 3));
        let error =
            fixture::error("model m : [4, 4, 1] { relu }\ntrain {\n    batch: 64 * 0.5\n}\n");
        assert_eq!(error.label, "this is the number 32.0");
        assert_eq!(
            error.notes,
            ["help: 32.0 is a float, not an integer; `int(...)` makes it one"]
        );
    }
}
