//! Front-end speed: parsing, elaborating and shape-checking whole models.
//! Run with `cargo bench --bench frontend`; the target is ResNet-50
//! in under 20 ms.

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

criterion_group!(benches, front_end);
criterion_main!(benches);
