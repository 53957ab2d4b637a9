//! The standard library of `.cnn` modules, built into the binary so that
//! `use resnet` works wherever `cnnc` is installed. The files live in
//! `stdlib/`; a test checks that this list and the folder agree.

/// Every stdlib module: its name (as in `use NAME`) and its source text.
pub const MODULES: &[(&str, &str)] = &[
    ("alexnet", include_str!("../stdlib/alexnet.cnn")),
    ("densenet", include_str!("../stdlib/densenet.cnn")),
    ("efficientnet", include_str!("../stdlib/efficientnet.cnn")),
    ("fashion", include_str!("../stdlib/fashion.cnn")),
    ("inception", include_str!("../stdlib/inception.cnn")),
    ("inception_v3", include_str!("../stdlib/inception_v3.cnn")),
    ("lenet", include_str!("../stdlib/lenet.cnn")),
    ("mobilenet", include_str!("../stdlib/mobilenet.cnn")),
    ("resnet", include_str!("../stdlib/resnet.cnn")),
    ("resnext", include_str!("../stdlib/resnext.cnn")),
    ("se", include_str!("../stdlib/se.cnn")),
    ("squeezenet", include_str!("../stdlib/squeezenet.cnn")),
    ("unet", include_str!("../stdlib/unet.cnn")),
    ("vgg", include_str!("../stdlib/vgg.cnn")),
    ("xception", include_str!("../stdlib/xception.cnn")),
];

/// The source of stdlib module `name`, if there is one.
pub fn source(name: &str) -> Option<&'static str> {
    MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}
