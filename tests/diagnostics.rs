//! The bad-input corpus: every file in `tests/bad/` shows one kind of
//! mistake (or, `several_errors.cnn`, several at once), and its rendered
//! diagnostics are a snapshot (`tests/snapshots/diagnostics__NAME.snap`).
//!
//! A snapshot is accepted only after reading it: it must point at the fault,
//! say what was expected and what was found (both shapes, for shape errors),
//! and give a hint where there is an obvious one. A file that compiles, or
//! a panic, fails its test.

use std::collections::BTreeSet;
use std::path::Path;

/// Files of `tests/bad/` that cases import; they are not cases themselves.
const HELPERS: &[&str] = &["import_cycle_helper", "import_cycle_through_path_helper"];

/// Compiles `tests/bad/NAME.cnn` as `cnnc summary` would (no `--model`) and
/// renders its diagnostics without colour.
fn diagnose(name: &str) -> String {
    let path = Path::new("tests/bad").join(format!("{name}.cnn"));
    match cnnc::load_model(&path, None) {
        Ok(_) => panic!("{} compiled without errors", path.display()),
        Err(diagnostics) => {
            assert!(
                !diagnostics.errors.is_empty(),
                "{}: an error without diagnostics",
                path.display()
            );
            diagnostics.to_string()
        }
    }
}

/// One test and one named snapshot per case.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let rendered = diagnose(stringify!($name));
                insta::assert_snapshot!(stringify!($name), rendered);
            }
        )*

        /// Every case, for the check that the folder holds no untested file.
        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

cases! {
    // Syntax.
    syntax_missing_paren,
    syntax_stray_token,
    syntax_space_before_call_paren,
    syntax_equals_in_argument,
    syntax_unterminated_string,
    syntax_missing_brace_at_eof,
    unclosed_block_before_model,
    unclosed_loop_before_use,
    name_starting_with_as,
    nested_too_deeply,
    nested_ifs,
    expression_too_deep,
    nul_byte,
    invisible_character,
    byte_order_mark,
    old_mac_line_endings,
    // Names: layers, blocks, arguments.
    unknown_layer,
    unknown_block,
    unknown_layer_argument,
    unknown_block_argument,
    missing_layer_argument,
    missing_block_argument,
    duplicate_argument,
    too_many_arguments,
    duplicate_block,
    redefined_layer,
    duplicate_as_names,
    // Ill-typed arguments and values.
    bad_padding,
    bad_activation,
    gelu_approximate_not_a_bool,
    reshape_two_inferred,
    misspelt_hard_swish,
    unknown_initializer,
    fractional_filters,
    negative_filters,
    dropout_rate_too_large,
    bad_input_shape,
    statement_not_a_tensor,
    if_condition_not_boolean,
    index_out_of_range,
    unknown_field,
    pipeline_stage_not_a_layer,
    padding_list_of_three,
    negative_padding,
    ceil_mode_with_same,
    // Shapes.
    residual_shape_mismatch,
    concat_spatial_mismatch,
    concat_single_tensor,
    kernel_larger_than_input,
    pooled_to_nothing,
    se_channel_mismatch,
    dense_without_flatten,
    conv_after_flatten,
    depth_maxpool_indivisible,
    grouped_conv_indivisible,
    channel_slice_out_of_range,
    reshape_wrong_size,
    init_entry_outside_kernel,
    error_in_nested_block,
    cropping_too_much,
    pool_padding_as_large_as_the_window,
    // Blocks calling themselves.
    recursive_block,
    mutually_recursive_blocks,
    // Imports.
    import_cycle,
    import_cycle_through_path,
    missing_module,
    missing_path_import,
    // Arithmetic and limits.
    division_by_zero,
    integer_overflow,
    input_too_large,
    tensor_too_large,
    weight_too_large,
    range_too_long,
    too_many_loop_iterations,
    exponential_block_calls,
    fault_in_nested_loops,
    // Built-in functions, inclusive ranges, unpacking, `concat` of a list.
    int_of_a_string,
    min_without_arguments,
    len_of_a_number,
    whole_float_filters,
    unknown_function,
    block_named_like_a_function,
    function_as_a_layer,
    inclusive_range_of_a_float,
    unpacking_wrong_length,
    unpacking_not_a_list,
    concat_list_with_a_number,
    // Upsampling and transposed convolutions.
    upsample_zero_factor,
    upsample_unknown_mode,
    upsample_a_vector,
    output_padding_not_below_stride,
    conv_transpose_negative_output_padding,
    conv_transpose_even_kernel_same,
    conv_transpose_dilated_stride,
    // Models and outputs.
    model_parameter_without_default,
    several_models,
    no_model,
    output_in_block,
    output_declared_twice,
    // The train section.
    train_unknown_key,
    train_freeze_unmatched,
    train_freeze_not_strings,
    input_after_statements_in_a_model,
    model_named_current,
    train_unknown_optimizer,
    train_unknown_loss,
    train_zero_batch,
    train_loss_weights_unknown_output,
    train_key_twice,
    train_augment_out_of_range,
    train_unknown_precision,
    // All reported in one run.
    several_errors,
}

/// Every `.cnn` file of `tests/bad/` is a case above or a helper, so that a
/// new file cannot go untested.
#[test]
fn every_bad_file_is_a_case() {
    let files: BTreeSet<String> = std::fs::read_dir("tests/bad")
        .expect("tests/bad exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
        .collect();
    let listed: BTreeSet<String> = CASES.iter().chain(HELPERS).map(|s| s.to_string()).collect();
    let untested: Vec<&String> = files.difference(&listed).collect();
    let missing: Vec<&String> = listed.difference(&files).collect();
    assert!(untested.is_empty(), "files without a case: {untested:?}");
    assert!(missing.is_empty(), "cases without a file: {missing:?}");
}
