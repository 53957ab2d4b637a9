//! Node building: turns a layer call (and `+`, `*`, `concat` and the
//! model's input) into nodes of the graph.
//!
//! Each node is named by its path in the block hierarchy
//! (`stage2.residual_unit1.conv2`, plus a suffix such as `.relu` for the
//! extra nodes one layer call expands into), keeps the span of the call
//! that made it and the spans of the block calls that led there, and gets
//! its shape from the op's rule as it is added, so that later expressions
//! can read it (`in.channels`).

use petgraph::stable_graph::NodeIndex;

use crate::diagnostics::{Diagnostic, Span};
use crate::graph::{Init, Node, Op, Param, Shape};
use crate::ops;
use crate::syntax::ast::{self, BinOp, Ident};

use super::calls::CallSite;
use super::definitions::Scope;
use super::expr::{self, Ctx};
use super::value::{self, Spanned, Value};
use super::{args, layers, Elaborator};

/// The most nodes a model may have; more means a runaway loop. The largest
/// models of the standard library have a few hundred; each node costs some
/// microseconds to add and check, so this bound keeps elaboration and shape
/// inference of any file to a fraction of a second.
pub const MAX_NODES: usize = 20_000;

/// What one node computes and which layer call it belongs to.
struct NodeSpec<'a> {
    /// The instance name of the layer call in its scope (`conv2`).
    layer: &'a str,
    /// The node's part of the layer call (`relu` for a conv's activation);
    /// empty for the call's main node.
    suffix: &'a str,
    /// The layer as written (`conv`), for messages and summaries.
    kind: &'a str,
    op: Op,
    /// The initializer of its kernel, if it has one.
    init: Init,
    /// Whether its weights are trained (where the op's weights are).
    trainable: bool,
    /// The call that made it.
    span: Span,
}

impl<'p> Elaborator<'p> {
    /// Applies primitive layer `site.callee` to `input`: checks its
    /// arguments and adds the nodes it expands into, in a chain.
    pub(super) fn layer(&mut self, scope: &mut Scope, site: CallSite, input: Value) -> Value {
        let name = site.callee.name.as_str();
        // Only called for names in the layer table.
        let signature = layers::signature(name).unwrap_or(&[]);
        // No layer takes a tensor as an argument: only values make sense.
        let values = self.eval_args(scope, site.args, Ctx::Value);
        let args = match args::bind_layer(name, signature, &values, site.span) {
            Ok(args) => args,
            Err(errors) => {
                for e in errors {
                    self.error(e);
                }
                return Value::Poison;
            }
        };
        let path = self.instance_name(scope, name, site.alias);
        let Some(mut current) = self.tensor_input(name, input, site.span) else {
            return Value::Poison;
        };
        // `avgpool`'s `trainable` asks for LeNet-5's trainable scale (off
        // by default) rather than freezing the layer.
        let trainable = signature.iter().all(|s| s.name != "trainable")
            || args.bool("trainable")
            || name == "avgpool";
        for part in layers::expand(name, &args) {
            let spec = NodeSpec {
                layer: &path,
                suffix: part.suffix,
                kind: name,
                op: part.op,
                init: part.init,
                trainable,
                span: site.span,
            };
            match self.add_node(scope, spec, &[current]) {
                Value::Tensor(id, shape) => current = (id, shape),
                other => return other,
            }
        }
        Value::Tensor(current.0, current.1)
    }

    /// `concat(a, b, ..., axis: -1)` or `concat(list, axis: -1)`: one node
    /// joining the tensors.
    pub(super) fn concat(&mut self, scope: &mut Scope, site: CallSite) -> Value {
        let values = self.eval_args(scope, site.args, Ctx::Argument);
        let (positional, named): (Vec<_>, Vec<_>) =
            values.into_iter().partition(|(name, _)| name.is_none());
        let signature = layers::signature("concat").unwrap_or(&[]);
        let options = match args::bind_layer("concat", signature, &named, site.span) {
            Ok(options) => options,
            Err(errors) => {
                errors.into_iter().for_each(|e| self.error(e));
                return Value::Poison;
            }
        };
        let Some(inputs) = self.concat_inputs(&positional, site) else {
            return Value::Poison;
        };
        let rank = inputs[0].1.rank() as i64;
        let axis = options.signed("axis");
        let normalized = if axis < 0 { rank + axis } else { axis };
        if normalized < 0 || normalized >= rank {
            self.error(Diagnostic::error(
                site.span,
                format!("`concat` along axis {axis}, but its inputs have rank {rank}"),
                "bad axis",
            ));
            return Value::Poison;
        }
        let path = self.instance_name(scope, "concat", site.alias);
        let op = Op::Concat {
            axis: normalized as usize,
        };
        self.add_node(
            scope,
            NodeSpec::plain(&path, "concat", op, site.span),
            &inputs,
        )
    }

    /// `a + b` or `a * b` of two tensors: one node, numbered like a layer.
    pub(super) fn elementwise(
        &mut self,
        scope: &mut Scope,
        op: BinOp,
        inputs: &[(NodeIndex, Shape); 2],
        span: Span,
    ) -> Value {
        let (kind, graph_op) = if op == BinOp::Add {
            ("add", Op::Add)
        } else {
            ("multiply", Op::Multiply)
        };
        let path = self.instance_name(scope, kind, None);
        self.add_node(scope, NodeSpec::plain(&path, kind, graph_op, span), inputs)
    }

    /// Creates the input node from the model's declared shape.
    pub(super) fn input(&mut self, scope: &mut Scope, def: &ast::Definition) -> Value {
        // The grammar requires a shape on every model.
        let shape_expr = def.input.as_ref().expect("models declare an input shape");
        let Some(dims) = self.input_dims(scope, shape_expr) else {
            return Value::Poison;
        };
        let op = Op::Input { shape: dims };
        let spec = NodeSpec::plain("input", "input", op, shape_expr.span);
        self.add_node(scope, spec, &[])
    }

    /// Makes the model's outputs the graph's: those it declared, or else
    /// the result of its last statement, called `output`.
    pub(super) fn graph_outputs(&mut self, scope: &mut Scope, def: &ast::Definition) {
        let mut outputs = scope.outputs.take().unwrap_or_default();
        if outputs.is_empty() {
            outputs.push(("output".into(), scope.current.clone(), def.name.span));
        }
        for (name, value, span) in outputs {
            match value {
                Value::Tensor(id, _) => self.graph.outputs.push((name, id)),
                Value::Poison => {}
                other => self.errors.push(Diagnostic::error(
                    span,
                    format!("output `{name}` is {}, not a tensor", other.describe()),
                    "declared here",
                )),
            }
        }
    }

    /// The name of a layer or block instance within its scope: `as NAME`, or
    /// the callee's name numbered per scope (`conv1`, `conv2`).
    pub(super) fn instance_name(
        &mut self,
        scope: &mut Scope,
        base: &str,
        alias: Option<&Ident>,
    ) -> String {
        if let Some(alias) = alias {
            if !scope.taken.insert(alias.name.clone()) {
                self.error(
                    Diagnostic::error(
                        alias.span,
                        format!("the name `{}` is already used in this block", alias.name),
                        "duplicate name",
                    )
                    .with_note(
                        "help: inside a `for` loop, leave out `as` and instances are numbered automatically",
                    ),
                );
            }
            return alias.name.clone();
        }
        loop {
            let counter = scope.counters.entry(base.to_string()).or_insert(0);
            *counter += 1;
            let candidate = format!("{base}{counter}");
            if scope.taken.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    /// The node and shape a layer called `name` applies to; reports an
    /// input that is not a tensor.
    fn tensor_input(&mut self, name: &str, input: Value, span: Span) -> Option<(NodeIndex, Shape)> {
        match input {
            Value::Tensor(id, shape) => Some((id, shape)),
            Value::Poison => None,
            other => {
                self.error(Diagnostic::error(
                    span,
                    format!("`{name}` must be applied to a tensor"),
                    format!("its input here is {}", other.describe()),
                ));
                None
            }
        }
    }

    /// The tensors that `concat` joins: its positional arguments, or the
    /// elements of its only one when that is a list; `None` after an error.
    fn concat_inputs(
        &mut self,
        positional: &[(Option<Ident>, Spanned)],
        site: CallSite,
    ) -> Option<Vec<(NodeIndex, Shape)>> {
        let operands = concat_operands(positional, site);
        let mut inputs = Vec::new();
        let mut poisoned = false;
        for operand in &operands {
            match &operand.value {
                Value::Tensor(id, shape) => inputs.push((*id, shape.clone())),
                Value::Poison => poisoned = true,
                other => {
                    let label = match operand.element {
                        Some(i) => format!("the element at index {i} is {}", other.describe()),
                        None => format!("this is {}", other.describe()),
                    };
                    let mut error =
                        Diagnostic::error(operand.span, "`concat` joins tensors", label);
                    if matches!(other, Value::List(_)) {
                        error = error.with_note(
                            "help: `concat(list)` joins the tensors of one list, \
                             `concat(a, b, ...)` its arguments",
                        );
                    }
                    self.error(error);
                    poisoned = true;
                }
            }
        }
        if operands.len() < 2 {
            let given = match positional {
                [(
                    _,
                    Spanned {
                        value: Value::List(items),
                        ..
                    },
                )] => {
                    format!("the list has {} elements", items.len())
                }
                _ => format!("{} given", positional.len()),
            };
            self.error(
                Diagnostic::error(site.span, "`concat` needs at least two tensors", given)
                    .with_note(
                        "help: `concat(a, b, ...)` and `concat([a, b, ...])` join tensors along the channels",
                    ),
            );
            return None;
        }
        (!poisoned).then_some(inputs)
    }

    /// The dimensions of a model's input shape, `[height, width, channels]`;
    /// `None` after an error.
    fn input_dims(&mut self, scope: &mut Scope, shape_expr: &ast::Expr) -> Option<Vec<u64>> {
        let value = self.eval(scope, shape_expr, Ctx::Argument);
        let items = match &value {
            Value::List(items) if !items.is_empty() => items,
            Value::Poison => return None,
            other => {
                self.errors.push(input_shape_error(shape_expr.span, other));
                return None;
            }
        };
        // An element with an error of its own has been reported already.
        if items.contains(&Value::Poison) {
            return None;
        }
        let mut dims = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::Int(d) if *d > 0 => dims.push(*d as u64),
                other => {
                    // The grammar makes the shape a list literal: point at the element.
                    let span = expr::element_span(shape_expr, i);
                    self.errors.push(input_shape_error(span, other));
                    return None;
                }
            }
        }
        Some(dims)
    }

    /// Adds one node for `spec` on `inputs`, inferring its shape and weights.
    fn add_node(&mut self, scope: &Scope, spec: NodeSpec, inputs: &[(NodeIndex, Shape)]) -> Value {
        if self.graph.nodes.node_count() >= MAX_NODES {
            self.report_node_budget(spec.span);
            return Value::Poison;
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|(_, s)| s).collect();
        let Some(shape) = self.node_shape(&spec, &shapes) else {
            return Value::Poison;
        };
        let params = node_params(&spec, &shapes);
        let layer_path = scope.qualified(spec.layer);
        let name = if spec.suffix.is_empty() {
            layer_path.clone()
        } else {
            format!("{layer_path}.{}", spec.suffix)
        };
        let node = Node {
            op: spec.op,
            name,
            layer: layer_path,
            layer_kind: spec.kind.to_string(),
            params,
            trainable: spec.trainable,
            span: spec.span,
            trace: self.stack.iter().map(|(_, s)| *s).collect(),
        };
        let ids: Vec<NodeIndex> = inputs.iter().map(|(id, _)| *id).collect();
        let id = self.graph.add(node, &ids);
        if matches!(self.graph.nodes[id].op, Op::Input { .. }) {
            self.graph.input = Some(id);
        }
        Value::Tensor(id, shape)
    }

    /// The output shape of the node `spec` on inputs of `shapes`, by the
    /// op's rule; reports a rule that fails.
    fn node_shape(&mut self, spec: &NodeSpec, shapes: &[&Shape]) -> Option<Shape> {
        match ops::infer(&spec.op, shapes) {
            Ok(shape) => Some(shape),
            Err(e) => {
                // Name the layer the user wrote (`conv`), not its op (`conv2d`).
                let e = e.for_layer(spec.kind);
                let label = shape_label(spec.kind, shapes);
                self.error(e.to_diagnostic(spec.span, label));
                None
            }
        }
    }

    /// Reports, once, that the model outgrew [`MAX_NODES`] (at `span`);
    /// loops stop from then on.
    fn report_node_budget(&mut self, span: Span) {
        if self.budget_reported {
            return;
        }
        self.budget_reported = true;
        self.error(
            Diagnostic::error(
                span,
                format!("the model grows beyond {MAX_NODES} nodes"),
                "while adding this layer",
            )
            .with_note("help: check the bounds of `for` loops"),
        );
    }
}

impl<'a> NodeSpec<'a> {
    /// The only node of a call with no options: no suffix, trainable, and
    /// no kernel to initialize.
    fn plain(layer: &'a str, kind: &'a str, op: Op, span: Span) -> NodeSpec<'a> {
        NodeSpec {
            layer,
            suffix: "",
            kind,
            op,
            init: Init::Zeros,
            trainable: true,
            span,
        }
    }
}

/// One tensor `concat` joins, as given: its value, where it is written and,
/// for an element of a list, its index there.
struct ConcatOperand {
    value: Value,
    span: Span,
    element: Option<usize>,
}

/// The operands of `concat`: the elements of its only positional
/// argument when that is a list (`concat(branches)`), else the positional
/// arguments themselves.
fn concat_operands(positional: &[(Option<Ident>, Spanned)], site: CallSite) -> Vec<ConcatOperand> {
    match positional {
        [(
            _,
            Spanned {
                value: Value::List(items),
                span,
            },
        )] => {
            let written = site.args.iter().find(|a| a.name.is_none());
            items
                .iter()
                .enumerate()
                .map(|(i, value)| ConcatOperand {
                    value: value.clone(),
                    span: written.map_or(*span, |a| expr::element_span(&a.value, i)),
                    element: Some(i),
                })
                .collect()
        }
        _ => positional
            .iter()
            .map(|(_, v)| ConcatOperand {
                value: v.value.clone(),
                span: v.span,
                element: None,
            })
            .collect(),
    }
}

/// The weights of the node `spec` on inputs of `shapes`, with their initializers.
fn node_params(spec: &NodeSpec, shapes: &[&Shape]) -> Vec<Param> {
    ops::params(&spec.op, shapes)
        .into_iter()
        .map(|(name, shape, natural)| Param {
            name: name.to_string(),
            shape,
            trainable: natural && spec.trainable,
            init: param_init(name, &spec.init),
        })
        .collect()
}

/// The initializer of a weight called `name`: kernels and centres take the
/// layer's initializer; biases start at zero and scales at one.
fn param_init(name: &str, kernel_init: &Init) -> Init {
    match name {
        "kernel" | "centers" => kernel_init.clone(),
        "gamma" | "moving_variance" | "coefficient" => Init::Ones,
        _ => Init::Zeros,
    }
}

/// The label under a layer call whose shape rule failed: what it was applied to.
fn shape_label(layer: &str, shapes: &[&Shape]) -> String {
    match shapes {
        [] => "declared here".to_string(),
        [one] => format!("`{layer}` applied to a tensor of shape {one}"),
        many => format!(
            "`{layer}` of shapes {}",
            many.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
}

fn input_shape_error(span: Span, what: &Value) -> Diagnostic {
    let error = Diagnostic::error(
        span,
        "a model's input shape must be a list of positive integers",
        format!("this is {}", what.describe()),
    );
    match value::integer_help(what) {
        Some(help) => error.with_note(help),
        None => {
            error.with_note("help: write the shape as [height, width, channels], e.g. [28, 28, 1]")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    const NESTED: &str = r#"
block unit(filters) {
    conv(filters, 3, padding: same, activation: relu) as main
}
block stage {
    unit(4)
    unit(4) as second
}
model m : [8, 8, 1] {
    stage as s1
    flatten
}
"#;

    #[test]
    fn nodes_are_named_by_their_path_in_the_block_hierarchy() {
        let graph = fixture::graph(NESTED);
        assert_eq!(
            fixture::node_names(&graph),
            [
                "input",
                "s1.unit1.main",
                "s1.unit1.main.relu",
                "s1.second.main",
                "s1.second.main.relu",
                "flatten1"
            ]
        );
        let relu = fixture::node(&graph, "s1.second.main.relu");
        assert_eq!(
            (relu.layer.as_str(), relu.layer_kind.as_str()),
            ("s1.second.main", "conv")
        );
    }

    #[test]
    fn a_node_keeps_the_span_of_its_call_and_of_the_block_calls_above_it() {
        let program = fixture::program(NESTED);
        let graph = super::super::elaborate(&program, None).expect("elaborates");
        let text = |span| program.sources.snippet(span);
        let conv = fixture::node(&graph, "s1.second.main");
        assert_eq!(
            text(conv.span),
            "conv(filters, 3, padding: same, activation: relu) as main"
        );
        let trace: Vec<&str> = conv.trace.iter().map(|&s| text(s)).collect();
        // A bare name's span is the name alone; a call's includes its `as`.
        assert_eq!(trace, ["stage", "unit(4) as second"]);
        assert_eq!(fixture::node(&graph, "flatten1").trace, []);
    }

    #[test]
    fn weights_take_the_layers_initializer_for_kernels_and_fixed_ones_otherwise() {
        let graph = fixture::graph(
            "model m : [8, 8, 1] {\n    conv(2, 3, init: he_normal)\n    batchnorm(trainable: false)\n}\n",
        );
        let params = |name| {
            fixture::node(&graph, name)
                .params
                .iter()
                .map(|p| (p.name.clone(), p.init.clone(), p.trainable))
                .collect::<Vec<_>>()
        };
        let p = |name: &str, init, trainable| (name.to_string(), init, trainable);
        assert_eq!(
            params("conv1"),
            [
                p("kernel", Init::HeNormal, true),
                p("bias", Init::Zeros, true)
            ]
        );
        assert_eq!(
            params("batchnorm1"),
            [
                p("gamma", Init::Ones, false),
                p("beta", Init::Zeros, false),
                p("moving_mean", Init::Zeros, false),
                p("moving_variance", Init::Ones, false)
            ]
        );
    }

    #[test]
    fn a_shape_error_names_the_layer_as_written_and_its_input() {
        let errors = fixture::errors("model m : [8, 8, 1] {\n    conv(4, 9)\n}\n");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].at, "conv(4, 9)");
        assert_eq!(
            errors[0].label,
            "`conv` applied to a tensor of shape [8, 8, 1]"
        );
        assert_eq!(
            errors[0].message,
            "the kernel 9x9 does not fit into the 8x8 input with padding valid: the output would be empty"
        );
    }

    #[test]
    fn instances_are_numbered_per_scope_around_names_given_with_as() {
        let graph = fixture::graph(
            r#"
model m : [8, 8, 1] {
    let x = in
    conv(2, 1) as conv2
    conv(2, 1)
    conv(2, 1)
    x + x
    x * x
    x + x
}
"#,
        );
        assert_eq!(
            fixture::node_names(&graph),
            [
                "input",
                "conv2",
                "conv1",
                "conv3",
                "add1",
                "multiply1",
                "add2"
            ]
        );
    }

    #[test]
    fn a_name_given_with_as_is_used_once_per_block() {
        let error =
            fixture::error("model m : [8, 8, 1] {\n    for f in [2, 4] { conv(f, 1) as c }\n}\n");
        assert_eq!(error.message, "the name `c` is already used in this block");
        assert_eq!(error.at, "c");
    }

    #[test]
    fn concat_joins_two_or_more_tensors_along_an_axis() {
        let graph = fixture::graph(
            "model m : [8, 8, 1] {\n    let x = in\n    concat(x, x)\n    concat(x, x, axis: 0)\n}\n",
        );
        let axes: Vec<&Op> = ["concat1", "concat2"]
            .map(|n| &fixture::node(&graph, n).op)
            .into();
        assert_eq!(axes, [&Op::Concat { axis: 2 }, &Op::Concat { axis: 0 }]);
        let found = |call: &str| {
            let error = fixture::error(&format!("model m : [8, 8, 1] {{\n    {call}\n}}\n"));
            (error.message, error.at, error.label)
        };
        let single = found("concat(in)");
        assert_eq!(
            single,
            (
                "`concat` needs at least two tensors".into(),
                "concat(in)".into(),
                "1 given".into()
            )
        );
        let value = found("concat(in, 3)");
        assert_eq!(
            value,
            (
                "`concat` joins tensors".into(),
                "3".into(),
                "this is the integer 3".into()
            )
        );
        let axis = found("concat(in, in, axis: 3)");
        assert_eq!(axis.0, "`concat` along axis 3, but its inputs have rank 3");
    }

    #[test]
    fn concat_joins_the_tensors_of_one_list() {
        let graph = fixture::graph(
            r#"
model m : [8, 8, 1] {
    let image = in
    concat([conv(2, 1), conv(3, 1)])
    let branches = [conv(1, 1), image, image]
    concat(branches, axis: -1)
}
"#,
        );
        let inputs_of = |name: &str| -> Vec<String> {
            let id = graph
                .nodes
                .node_indices()
                .find(|&id| graph.nodes[id].name == name)
                .unwrap_or_else(|| panic!("no node `{name}`"));
            assert_eq!(graph.nodes[id].op, Op::Concat { axis: 2 });
            let inputs = graph.inputs_of(id);
            inputs
                .iter()
                .map(|&i| graph.nodes[i].name.clone())
                .collect()
        };
        assert_eq!(inputs_of("concat1"), ["conv1", "conv2"]);
        assert_eq!(inputs_of("concat2"), ["conv3", "input", "input"]);
        let typed = crate::shapes::infer(graph.clone()).expect("shapes");
        assert_eq!(typed.outputs(), [("output".to_string(), vec![8, 8, 3])]);
    }

    #[test]
    fn concat_of_a_list_names_the_element_that_is_not_a_tensor() {
        let found = |call: &str| {
            let error = fixture::error(&format!("model m : [8, 8, 1] {{\n    {call}\n}}\n"));
            (error.message, error.at, error.label, error.notes)
        };
        let (message, at, label, _) = found("concat([in, 3])");
        assert_eq!(message, "`concat` joins tensors");
        assert_eq!(
            (at.as_str(), label.as_str()),
            ("3", "the element at index 1 is the integer 3")
        );
        let (message, at, label, _) = found("concat([in])");
        assert_eq!(message, "`concat` needs at least two tensors");
        assert_eq!(
            (at.as_str(), label.as_str()),
            ("concat([in])", "the list has 1 elements")
        );
        let (_, at, label, notes) = found("concat([in, in], in)");
        assert_eq!(
            (at.as_str(), label.as_str()),
            ("[in, in]", "this is a list of 2 elements")
        );
        assert_eq!(
            notes,
            ["help: `concat(list)` joins the tensors of one list, `concat(a, b, ...)` its arguments"]
        );
    }

    #[test]
    fn the_input_shape_is_a_list_of_positive_integers() {
        let graph = fixture::graph("model m : [8, 6, 3] { relu }\n");
        let input = graph.input.map(|id| &graph.nodes[id].op);
        assert_eq!(
            input,
            Some(&Op::Input {
                shape: vec![8, 6, 3]
            })
        );
        let zero = fixture::error("model m : [8, 0, 1] { relu }\n");
        assert_eq!(
            zero.message,
            "a model's input shape must be a list of positive integers"
        );
        assert_eq!(
            (zero.at.as_str(), zero.label.as_str()),
            ("0", "this is the integer 0")
        );
        assert_eq!(fixture::error("model m : [] { relu }\n").at, "[]");
    }

    #[test]
    fn a_layer_applies_to_a_tensor() {
        let error = fixture::error("model m : [8, 8, 1] {\n    let n = 3\n    n -> relu\n}\n");
        assert_eq!(error.message, "`relu` must be applied to a tensor");
        assert_eq!(error.label, "its input here is the integer 3");
    }

    #[test]
    fn the_graphs_outputs_are_the_declared_ones_or_the_last_result() {
        let declared = fixture::graph(
            "model m : [8, 8, 1] {\n    output logits = flatten\n    output probs = softmax\n}\n",
        );
        let names: Vec<&str> = declared.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["logits", "probs"]);
        let implicit = fixture::graph("model m : [8, 8, 1] { relu }\n");
        assert_eq!(implicit.outputs.len(), 1);
        assert_eq!(implicit.outputs[0].0, "output");
        let not_a_tensor = fixture::error("model m : [8, 8, 1] {\n    output n = 3\n}\n");
        assert_eq!(
            not_a_tensor.message,
            "output `n` is the integer 3, not a tensor"
        );
        assert_eq!(
            (not_a_tensor.at.as_str(), not_a_tensor.label.as_str()),
            ("n", "declared here")
        );
    }

    #[test]
    fn an_error_inside_a_block_is_labelled_with_the_calls_that_led_there() {
        let error = fixture::error(
            "block inner { conv(4, 9) }\nblock outer { inner as i }\nmodel m : [8, 8, 1] { outer }\n",
        );
        assert_eq!(error.at, "conv(4, 9)");
        assert_eq!(
            error.context,
            [
                pair("inner", "while expanding `inner` called here"),
                pair("outer", "while expanding `outer` called here")
            ]
        );
    }
}
