//! Front-end speed: parsing, elaborating and shape-checking whole models,
//! and refusing inputs nested too deeply. Run with `cargo bench --bench
//! frontend`; the target is ResNet-50 in under 20 ms.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};

fn front_end(c: &mut Criterion) {
    let cases = [
        ("resnet50", "stdlib/resnet.cnn", Some("resnet50")),
        ("resnet34_fashion", "examples/resnet34.cnn", None),
        ("xception", "stdlib/xception.cnn", None),
    ];
    for (name, file, model) in cases {
        let text = std::fs::read_to_string(file).expect("model file");
        let base = Path::new(file).parent();
        c.bench_function(&format!("front_end/{name}"), |b| {
            b.iter(|| cnnc::compile_source(file, &text, base, model).expect("compiles"))
        });
    }
}

/// The time to refuse `n` nested `not`s, which must grow linearly with `n`:
/// trimming each `not`'s span once scanned the rest of the line, so 16,000
/// took 1.7 s and 32,000 took 6.6 s (issue 12). Compare the four sizes.
fn nested_nots(c: &mut Criterion) {
    for n in [8_000, 16_000, 32_000, 64_000] {
        let text = format!(
            "model m : [4, 4, 1] {{ let x = {}true\n relu }}\n",
            "not ".repeat(n)
        );
        c.bench_function(&format!("refuse/nested_not/{n}"), |b| {
            b.iter(|| cnnc::compile_source("deep.cnn", &text, None, None).expect_err("too deep"))
        });
    }
}

criterion_group!(benches, front_end, nested_nots);
criterion_main!(benches);
