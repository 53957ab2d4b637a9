//! Parameter counts and output shapes of every standard-library model, every
//! example and a few blocks, against Keras.
//!
//! Where a number has a Keras counterpart it comes from
//! `shared/peers/reference_models.py` (its run writes `reference_models.json`;
//! the key is named in the comment) or from building the Keras model named in
//! the comment with `weights=None` and calling `count_params()`. Models that
//! Keras does not have (LeNet-5 with trainable pooling and RBF units,
//! GoogLeNet with its auxiliary classifiers, the small example networks)
//! have their counts worked out in the comment.
//!
//! Conventions used in the arithmetic: a conv with bias has
//! `kh * kw * in * filters + filters` parameters, a separable conv without
//! bias `kh * kw * in + in * filters`, a dense layer `in * units + units`;
//! batch norm has `2 * c` trainable (gamma, beta) and `2 * c` non-trainable
//! (moving mean and variance) parameters.

use std::path::{Path, PathBuf};

/// Expected `(total, trainable, non_trainable)` parameter counts.
struct Counts {
    total: u64,
    trainable: u64,
    non_trainable: u64,
}

impl Counts {
    /// A model whose parameters are all trainable.
    fn trainable(total: u64) -> Counts {
        Counts {
            total,
            trainable: total,
            non_trainable: 0,
        }
    }

    /// A model with batch norms: `non_trainable` moving statistics.
    fn with_frozen(total: u64, non_trainable: u64) -> Counts {
        Counts {
            total,
            trainable: total - non_trainable,
            non_trainable,
        }
    }
}

/// Loads `model` from `path` (relative to the crate root) and checks its
/// parameter counts and its outputs (name and per-example shape; a model
/// without `output` statements has one output, named `output`).
fn check(path: &str, model: &str, expected: Counts, outputs: &[(&str, &[u64])]) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    check_file(&file, model, expected, outputs);
}

fn check_file(file: &Path, model: &str, expected: Counts, outputs: &[(&str, &[u64])]) {
    let graph = cnnc::load_model(file, Some(model))
        .unwrap_or_else(|d| panic!("{model} in {} does not compile:\n{d}", file.display()));
    let counts = graph.param_counts();
    assert_eq!(
        (counts.total, counts.trainable, counts.non_trainable),
        (expected.total, expected.trainable, expected.non_trainable),
        "{model} in {}: (total, trainable, non-trainable) parameters",
        file.display()
    );
    let mut actual_outputs = graph.outputs();
    actual_outputs.sort();
    let mut expected_outputs: Vec<(String, Vec<u64>)> = outputs
        .iter()
        .map(|(name, shape)| (name.to_string(), shape.to_vec()))
        .collect();
    expected_outputs.sort();
    assert_eq!(
        actual_outputs,
        expected_outputs,
        "{model} in {}: outputs",
        file.display()
    );
}

/// Writes a small `.cnn` fixture (which may `use` the standard library) to
/// the test's scratch folder and checks its model.
fn check_fixture(
    file_name: &str,
    source: &str,
    model: &str,
    expected: Counts,
    outputs: &[(&str, &[u64])],
) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("param_counts");
    std::fs::create_dir_all(&dir).expect("create the fixture folder");
    let file = dir.join(file_name);
    std::fs::write(&file, source).expect("write the fixture");
    check_file(&file, model, expected, outputs);
}

// ---- The standard library's models ------------------------------------------

#[test]
fn vgg16_matches_keras() {
    // keras.applications.VGG16(weights=None): 138,357,544, all trainable
    // (reference_models.json "vgg16"), output [1000].
    check(
        "stdlib/vgg.cnn",
        "vgg16",
        Counts::trainable(138_357_544),
        &[("output", &[1000])],
    );
}

#[test]
fn resnet34_matches_homl_keras() {
    // reference_models.json "resnet34_imagenet" (build_resnet34_functional at
    // 224x224x3, 1000 classes; equal to HOML's ResidualUnit version):
    // 21,814,696 total, 21,797,672 trainable, 17,024 non-trainable.
    // Non-trainable: batch norm moving statistics, 2 per channel of
    // 64 (conv1) + 3*2*64 + (4*2+1)*128 + (6*2+1)*256 + (3*2+1)*512 = 8,512
    // channels, 2 * 8,512 = 17,024.
    check(
        "stdlib/resnet.cnn",
        "resnet34",
        Counts::with_frozen(21_814_696, 17_024),
        &[("output", &[1000])],
    );
}

#[test]
fn resnet50_matches_keras_applications() {
    // keras.applications.ResNet50(weights=None).count_params(): 25,636,712;
    // trainable 25,583,592, non-trainable 53,120.
    check(
        "stdlib/resnet.cnn",
        "resnet50",
        Counts::with_frozen(25_636_712, 53_120),
        &[("output", &[1000])],
    );
}

#[test]
fn resnext50_matches_torchvision() {
    // torchvision.models.resnext50_32x4d(): 25,028,904 parameters, which
    // are our trainable ones (PyTorch keeps batch norm's moving statistics
    // as buffers). By hand: 9,536 (stem, with its batch norm) + 205,824 +
    // 1,197,056 + 7,022,592 + 14,544,896 (the stages) + 2,049,000 (fc);
    // e.g. stage2's first unit is 64*128 + 3*3*4*128 + 128*256 + 64*256
    // weights and 2*(128 + 128 + 256 + 256) for its batch norms = 63,488.
    // Non-trainable: two moving statistics per batch-norm channel, 2 * (64
    // + 1,792 + 4,608 + 13,312 + 14,336) = 68,224.
    check(
        "stdlib/resnext.cnn",
        "resnext50",
        Counts::with_frozen(25_028_904 + 68_224, 68_224),
        &[("output", &[1000])],
    );
}

#[test]
fn se_resnet34_matches_keras() {
    // reference_models.py build_resnet34_functional((224, 224, 3), 1000, se=True)
    // built with Keras: 21,975,892 total, 21,958,868 trainable, 17,024
    // non-trainable. By hand: resnet34's 21,814,696 plus one SE-block per
    // unit, 2 * c * (c / 16) + c / 16 + c parameters:
    //   c =  64:  580 x 3 =  1,740
    //   c = 128: 2,184 x 4 =  8,736
    //   c = 256: 8,464 x 6 = 50,784
    //   c = 512: 33,312 x 3 = 99,936
    //   161,196 in all (reference_models.json "se_resnet34_fashion" minus
    //   "resnet34_fashion" = 21,461,750 - 21,300,554 = 161,196 too).
    //   21,814,696 + 161,196 = 21,975,892.
    check(
        "stdlib/se.cnn",
        "se_resnet34",
        Counts::with_frozen(21_975_892, 17_024),
        &[("output", &[1000])],
    );
}

#[test]
fn googlenet_is_keras_googlenet_plus_two_auxiliary_classifiers() {
    // reference_models.json "googlenet" (no auxiliary classifiers): 6,998,552.
    // Each auxiliary classifier: 5x5/3 average pool on 14x14 -> 4x4x c,
    // conv 1x1 128: c * 128 + 128, flatten 4*4*128 = 2,048,
    // dense 1024: 2,048 * 1,024 + 1,024 = 2,098,176,
    // dense 1000: 1,024 * 1,000 + 1,000 = 1,025,000.
    //   aux1 after 4a (c = 512): 65,664 + 2,098,176 + 1,025,000 = 3,188,840
    //   aux2 after 4d (c = 528): 67,712 + 2,098,176 + 1,025,000 = 3,190,888
    // 6,998,552 + 3,188,840 + 3,190,888 = 13,378,280 (a Keras build of the
    // same network with both heads counts 13,378,280 too).
    check(
        "stdlib/inception.cnn",
        "googlenet",
        Counts::trainable(13_378_280),
        &[("aux1", &[1000]), ("aux2", &[1000]), ("main", &[1000])],
    );
}

#[test]
fn xception_matches_keras_applications() {
    // keras.applications.Xception(weights=None): 22,910,480 total,
    // 22,855,952 trainable, 54,528 non-trainable (reference_models.json
    // "xception").
    check(
        "stdlib/xception.cnn",
        "xception",
        Counts::with_frozen(22_910_480, 54_528),
        &[("output", &[1000])],
    );
}

#[test]
fn alexnet_matches_reference() {
    // reference_models.json "alexnet" (single-tower AlexNet, HOML table 14-2):
    // 62,378,344, all trainable.
    check(
        "stdlib/alexnet.cnn",
        "alexnet",
        Counts::trainable(62_378_344),
        &[("output", &[1000])],
    );
}

#[test]
fn lenet5_has_trainable_pooling_and_rbf_units() {
    // reference_models.json "lenet5" (plain average pooling, dense softmax
    // output): 61,706. By layer, with LeNet's subsampling and RBF output:
    //   C1  5*5*1*6 + 6      =    156
    //   S2  6 coefficients + 6 biases  =     12
    //   C3  5*5*6*16 + 16    =  2,416
    //   S4  16 + 16          =     32
    //   C5  5*5*16*120 + 120 = 48,120
    //   F6  120*84 + 84      = 10,164
    //   out RBF centres 84*10 =    840   (Keras' dense: 84*10 + 10 = 850)
    //   61,740 = 61,706 + 12 + 32 - 850 + 840, all trainable.
    check(
        "stdlib/lenet.cnn",
        "lenet5",
        Counts::trainable(61_740),
        &[("output", &[10])],
    );
}

#[test]
fn stdlib_fashion_cnn_matches_keras() {
    // reference_models.json "fashion_cnn" (the seed's Sequential model):
    // 1,413,834, all trainable.
    check(
        "stdlib/fashion.cnn",
        "fashion_cnn",
        Counts::trainable(1_413_834),
        &[("output", &[10])],
    );
}

// ---- The examples -----------------------------------------------------------

#[test]
fn example_resnet34_matches_keras() {
    // reference_models.json "resnet34_fashion" (28x28x1, 10 classes):
    // 21,300,554 total, 21,283,530 trainable, 17,024 non-trainable.
    check(
        "examples/resnet34.cnn",
        "resnet34_fashion",
        Counts::with_frozen(21_300_554, 17_024),
        &[("output", &[10])],
    );
}

#[test]
fn example_resnext50_is_torchvisions_on_fashion_mnist() {
    // The stdlib model's 25,028,904 trainable parameters with conv1 on one
    // channel (7*7*64 = 3,136 instead of 9,408) and a 10-class head
    // (2048*10 + 10 = 20,490 instead of 2,049,000): 22,994,122, plus the
    // same 68,224 moving statistics.
    check(
        "examples/resnext50.cnn",
        "resnext50_fashion",
        Counts::with_frozen(22_994_122 + 68_224, 68_224),
        &[("output", &[10])],
    );
}

#[test]
fn example_se_resnet_matches_keras() {
    // reference_models.json "se_resnet34_fashion": 21,461,750 total,
    // 21,444,726 trainable, 17,024 non-trainable.
    check(
        "examples/se_resnet.cnn",
        "se_resnet34_fashion",
        Counts::with_frozen(21_461_750, 17_024),
        &[("output", &[10])],
    );
}

#[test]
fn example_fashion_cnn_matches_keras() {
    // reference_models.json "fashion_cnn": 1,413,834, all trainable.
    //   conv 7*7*1*64 + 64 = 3,136; 3*3*64*128 + 128 = 73,856;
    //   3*3*128*128 + 128 = 147,584; 3*3*128*256 + 256 = 295,168;
    //   3*3*256*256 + 256 = 590,080; dense 2,304*128 + 128 = 295,040;
    //   128*64 + 64 = 8,256; 64*10 + 10 = 650.
    check(
        "examples/fashion_cnn.cnn",
        "fashion_cnn",
        Counts::trainable(1_413_834),
        &[("output", &[10])],
    );
}

#[test]
fn example_fine_tune_freezes_the_base_of_the_fashion_cnn() {
    // The fashion CNN's base under a new head: 1,413,834 in all, of which
    // the frozen base holds all but the head's 64*10 + 10 = 650 (Keras's
    // counts after `base.trainable = False`).
    for model in ["pretrain", "fine_tune"] {
        let all = Counts::trainable(1_413_834);
        check("examples/fine_tune.cnn", model, all, &[("output", &[10])]);
    }
    let frozen = Counts::with_frozen(1_413_834, 1_413_834 - 650);
    check(
        "examples/fine_tune.cnn",
        "new_head",
        frozen,
        &[("output", &[10])],
    );
}

#[test]
fn batchnorm_without_scale_or_centre_matches_keras() {
    // Keras: Conv2D(32, 3, use_bias=False) -> BatchNormalization(scale=False)
    // -> relu -> Conv2D(16, 1, use_bias=False) ->
    // BatchNormalization(center=False) on 32x32x3 counts 1,520 parameters,
    // 96 of them moving statistics (keras.Model.count_params, Keras 3.15):
    // 864 + (beta 32 + 64) + 512 + (gamma 16 + 32). Inception-v3's
    // conv2d_bn is the first pair.
    check_fixture(
        "batchnorm_flags.cnn",
        "model m : [32, 32, 3] {
            conv(32, 3, use_bias: false) -> batchnorm(scale: false) -> relu
            conv(16, 1, use_bias: false) -> batchnorm(center: false)
        }",
        "m",
        Counts::with_frozen(1_520, 96),
        &[("output", &[30, 30, 16])],
    );
}

#[test]
fn example_lenet5_on_28x28() {
    // Padding C1 `same` on 28x28 keeps every layer of the 32x32 network, so
    // Keras' LeNet-5 at 28x28 with C1 `same` has 61,706 parameters, as
    // reference_models.json "lenet5". The example adds the trainable
    // subsampling (S2: 6 + 6, S4: 16 + 16) and keeps the dense softmax output:
    // 61,706 + 12 + 32 = 61,750, all trainable.
    check(
        "examples/lenet5.cnn",
        "lenet5",
        Counts::trainable(61_750),
        &[("output", &[10])],
    );
}

#[test]
fn example_googlenet_mini() {
    // By hand (a Keras build of the same network counts 580,648 too).
    // inception(c; f1, f3r, f3, f5r, f5, fp) =
    //   c*f1 + f1 + c*f3r + f3r + 9*f3r*f3 + f3 + c*f5r + f5r + 25*f5r*f5 + f5 + c*fp + fp
    //   conv1 3*3*1*32 + 32          =    320
    //   conv2_reduce 32*64 + 64      =  2,112
    //   conv2 3*3*64*96 + 96         = 55,392
    //   3a (c = 96): 3,104 + 4,656 + 27,712 + 776 + 3,216 + 1,552     = 41,016 -> 128 channels
    //   3b (c = 128): 8,256 + 8,256 + 55,392 + 2,064 + 19,248 + 4,128 = 97,344 -> 240
    //   4a (c = 240): 23,136 + 11,568 + 45,032 + 1,928 + 4,824 + 7,712 = 94,200 -> 256
    //   aux (7x7 -> 5x5/3 pool -> 1x1x256): 256*128 + 128 + 128*1,024 + 1,024
    //        + 1,024*10 + 10 = 32,896 + 132,096 + 10,250 = 175,242
    //   4b (c = 256): 20,560 + 14,392 + 56,560 + 3,084 + 9,632 + 8,224 = 112,452 -> 256
    //   classifier 256*10 + 10       =  2,570
    //   320 + 2,112 + 55,392 + 41,016 + 97,344 + 94,200 + 175,242 + 112,452 + 2,570 = 580,648
    check(
        "examples/inception.cnn",
        "googlenet_mini",
        Counts::trainable(580_648),
        &[("aux", &[10]), ("main", &[10])],
    );
}

#[test]
fn example_xception_mini() {
    // By hand (a Keras build of the same network counts 1,900,650 total,
    // 1,887,402 trainable, 13,248 non-trainable too).
    // reduction(c; f1, f2) = shortcut c*f2 + sep 9*c + c*f1 + sep 9*f1 + f1*f2
    //                        + batch norms 4*(f2 + f1 + f2)
    //   stem: conv 3*3*1*32 = 288, bn 128; conv 3*3*32*64 = 18,432, bn 256  = 19,104
    //   reduction(64; 128, 128):   8,192 + 8,768 + 17,536 + 1,536        = 36,032
    //   reduction(128; 256, 256): 32,768 + 33,920 + 67,840 + 3,072       = 137,600
    //   middle module (256): 3 * (9*256 + 256*256 + 4*256) = 3 * 68,864 = 206,592; x 4 = 826,368
    //   exit reduction(256; 256, 384): 98,304 + 67,840 + 100,608 + 4,096 = 270,848
    //   sep 384 -> 512: 9*384 + 384*512 + 4*512 = 202,112
    //   sep 512 -> 768: 9*512 + 512*768 + 4*768 = 400,896
    //   dense 768*10 + 10 = 7,690
    //   total 1,900,650. Non-trainable: 2 per batch-norm channel,
    //   2 * (32 + 64 + 3*128 + 3*256 + 4*3*256 + (384 + 256 + 384) + 512 + 768) = 13,248.
    check(
        "examples/xception.cnn",
        "xception_mini",
        Counts::with_frozen(1_900_650, 13_248),
        &[("output", &[10])],
    );
}

#[test]
fn example_line_filters() {
    // reference_models.json "seed_line_filters": filters [7, 7, 3, 2], output
    // [427, 640, 2] for a 427x640x3 image. 7*7*3*2 = 294 weights, no bias,
    // not trainable.
    check(
        "examples/line_filters.cnn",
        "line_filters",
        Counts {
            total: 294,
            trainable: 0,
            non_trainable: 294,
        },
        &[("output", &[427, 640, 2])],
    );
}

// ---- Blocks, checked alone --------------------------------------------------

#[test]
fn inception_3a_alone_matches_keras() {
    // reference_models.json "inception_3a_alone": 28x28x192 -> 28x28x256,
    // 163,696 parameters.
    let source = r#"
use inception
model inception_3a : [28, 28, 192] {
    inception(64, 96, 128, 16, 32, 32)
}
"#;
    check_fixture(
        "inception_3a.cnn",
        source,
        "inception_3a",
        Counts::trainable(163_696),
        &[("output", &[28, 28, 256])],
    );
}

#[test]
fn se_block_alone_matches_keras() {
    // reference_models.json "se_block_14x14x256": 8,464 parameters
    // (256*16 + 16 + 16*256 + 256), output 14x14x256.
    let source = r#"
use se
model se_only : [14, 14, 256] {
    se_block(16)
}
"#;
    check_fixture(
        "se_only.cnn",
        source,
        "se_only",
        Counts::trainable(8_464),
        &[("output", &[14, 14, 256])],
    );
}

#[test]
fn downsampling_residual_unit_matches_keras() {
    // reference_models.json "resnet34_imagenet" per_residual_unit "ru04_128":
    // 56x56x64 -> 28x28x128, 230,912 parameters: convs 3*3*64*128 = 73,728,
    // 3*3*128*128 = 147,456, skip 64*128 = 8,192, three batch norms of 128
    // channels (512 trainable + 256 moving statistics each).
    let source = r#"
use resnet
model unit : [56, 56, 64] {
    residual_unit(128, stride: 2)
}
"#;
    check_fixture(
        "residual_unit.cnn",
        source,
        "unit",
        Counts::with_frozen(230_912, 768),
        &[("output", &[28, 28, 128])],
    );
}

#[test]
fn projecting_bottleneck_unit_matches_keras() {
    // keras.applications.ResNet50's conv2_block1 layers: 56x56x64 ->
    // 56x56x256, 76,928 parameters: convs 64*64 + 64 = 4,160,
    // 3*3*64*64 + 64 = 36,928, 64*256 + 256 = 16,640, shortcut 16,640;
    // batch norms over 64 + 64 + 256 + 256 = 640 channels, 4 * 640 = 2,560,
    // half of them (1,280) moving statistics.
    let source = r#"
use resnet
model unit : [56, 56, 64] {
    bottleneck_unit(64, project: true)
}
"#;
    check_fixture(
        "bottleneck_unit.cnn",
        source,
        "unit",
        Counts::with_frozen(76_928, 1_280),
        &[("output", &[56, 56, 256])],
    );
}

#[test]
fn separable_conv_alone_matches_keras() {
    // reference_models.json "separable_conv2d_64_3_on_28x28x32": valid
    // padding, 28x28x32 -> 26x26x64; depthwise 3*3*32 = 288 + pointwise
    // 32*64 = 2,048 + bias 64 = 2,400.
    let source = r#"
model sep : [28, 28, 32] {
    separable_conv(64, 3)
}
"#;
    check_fixture(
        "sep.cnn",
        source,
        "sep",
        Counts::trainable(2_400),
        &[("output", &[26, 26, 64])],
    );
}

#[test]
fn a_small_unet_with_a_transposed_convolution_matches_keras() {
    // The same model built in Keras 3.15 (Conv2D, MaxPooling2D,
    // Conv2DTranspose(16, 3, strides=2, padding="same"), Concatenate,
    // Conv2D(2, 1)), count_params() = 9,778: convs 3*3*3*16 + 16 = 448 and
    // 3*3*16*32 + 32 = 4,640; the transposed conv's kernel [3, 3, 16, 32]
    // and bias [16], 4,608 + 16 = 4,624; the 1x1 conv on the 32 joined
    // channels 32*2 + 2 = 66.
    let source = r#"
model tiny_unet : [32, 32, 3] {
    let skip = conv(16, 3, padding: same, activation: relu)
    let deep = skip -> maxpool(2) -> conv(32, 3, padding: same, activation: relu)
    let up = deep -> conv_transpose(16, 3, stride: 2, padding: same, activation: relu)
    concat(skip, up)
    conv(2, 1)
}
"#;
    check_fixture(
        "tiny_unet.cnn",
        source,
        "tiny_unet",
        Counts::trainable(9_778),
        &[("output", &[32, 32, 2])],
    );
}

#[test]
fn a_decoder_of_upsampling_layers_matches_keras() {
    // The same model built in Keras 3.15, count_params() = 24,713, output
    // 59x30x1: Conv2DTranspose(64, 3, strides=2, padding="same") on
    // 7x7x32, 3*3*64*32 + 64 = 18,496, to 14x14; UpSampling2D(2,
    // interpolation="bilinear"), no weights, to 28x28;
    // Conv2DTranspose(8, (4, 3), strides=(2, 1), output_padding=(1, 0),
    // use_bias=False), 4*3*8*64 = 6,144, to (28 - 1) * 2 + 4 + 1 = 59 by
    // (28 - 1) + 3 = 30; a 3x3 conv to 1 channel, 3*3*8 + 1 = 73.
    let source = r#"
model decoder : [7, 7, 32] {
    conv_transpose(64, 3, stride: 2, padding: same, activation: relu)
    upsample(2, mode: bilinear)
    conv_transpose(8, [4, 3], stride: [2, 1], output_padding: [1, 0], use_bias: false)
    conv(1, 3, padding: same, activation: sigmoid)
}
"#;
    check_fixture(
        "decoder.cnn",
        source,
        "decoder",
        Counts::trainable(24_713),
        &[("output", &[59, 30, 1])],
    );
}

// ---- The architectures after the chapter (issue 14) -------------------------
//
// Each against `keras.applications.NAME(weights=None)`'s `count_params()`
// and its trainable weights, printed by `tests/tf/counts.py` (Keras 3.15,
// TensorFlow 2.21; the counts do not depend on the version), or
// torchvision's figure where Keras has no such model.

#[test]
fn mobilenet_matches_keras_applications() {
    // MobileNet(): 4,253,864, trainable 4,231,976, non-trainable 21,888.
    check(
        "stdlib/mobilenet.cnn",
        "mobilenet",
        Counts::with_frozen(4_253_864, 21_888),
        &[("output", &[1000])],
    );
    // MobileNet(alpha=0.75): 2,601,976, trainable 2,585,560.
    let source = "use mobilenet\nmodel slim : [224, 224, 3] {\n    mobilenet(alpha: 0.75)\n}\n";
    let counts = Counts::with_frozen(2_601_976, 16_416);
    check_fixture(
        "mobilenet_075.cnn",
        source,
        "slim",
        counts,
        &[("output", &[1000])],
    );
}

#[test]
fn mobilenet_v2_matches_keras_applications() {
    // MobileNetV2(): 3,538,984, trainable 3,504,872, non-trainable 34,112.
    check(
        "stdlib/mobilenet.cnn",
        "mobilenet_v2",
        Counts::with_frozen(3_538_984, 34_112),
        &[("output", &[1000])],
    );
}

#[test]
fn densenet121_matches_keras_applications() {
    // DenseNet121(): 8,062,504, trainable 7,978,856, non-trainable 83,648.
    check(
        "stdlib/densenet.cnn",
        "densenet",
        Counts::with_frozen(8_062_504, 83_648),
        &[("output", &[1000])],
    );
}

#[test]
fn efficientnet_b0_matches_keras_applications_and_torchvision() {
    // EfficientNetB0(): 5,330,571, trainable 5,288,548 (torchvision's
    // efficientnet_b0 has the same 5,288,548), non-trainable 42,023: the
    // batch norms' 42,016 moving statistics and the 7 of Keras's input
    // Normalization layer (mean, variance, count), which cnnc leaves to
    // the data.
    check(
        "stdlib/efficientnet.cnn",
        "efficientnet_b0",
        Counts::with_frozen(5_330_571 - 7, 42_016),
        &[("output", &[1000])],
    );
}

#[test]
fn inception_v3_matches_keras_applications() {
    // InceptionV3(): 23,851,784, trainable 23,817,352, non-trainable
    // 34,432 (its batch norms have no gamma).
    check(
        "stdlib/inception_v3.cnn",
        "inception_v3",
        Counts::with_frozen(23_851_784, 34_432),
        &[("output", &[1000])],
    );
}

#[test]
fn cifar_vgg11_matches_the_pytorch_count() {
    // The CIFAR-10 VGG-11 with batch norm that PyTorch training scripts
    // build (cfg [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    // then Linear(512, 10)): 9,231,114 parameters as PyTorch counts them,
    // i.e. without batch norm's running statistics, which are buffers
    // there. Convolutions 9,220,480; batch norm gamma and beta
    // 2 * (64 + 128 + 2*256 + 4*512) = 5,504; dense 5,130. cnnc counts the
    // 5,504 moving statistics too, as Keras does, as non-trainable.
    let source = r#"
model vgg11 : [32, 32, 3] {
    for stage in [[64], [128], [256, 256], [512, 512], [512, 512]] {
        for filters in stage {
            conv(filters, 3, padding: same) -> batchnorm -> relu
        }
        maxpool(2)
    }
    flatten
    dense(10)
}
"#;
    let counts = Counts::with_frozen(9_231_114 + 5_504, 5_504);
    check_fixture("vgg11.cnn", source, "vgg11", counts, &[("output", &[10])]);
}

#[test]
fn unet_matches_its_keras_build() {
    // tests/tf/counts.py's Keras build of the same U-Net (Keras has none in
    // keras.applications): 31,030,658, all trainable. By hand: encoder
    // 37,568 + 221,440 + 885,248 + 3,539,968 + 14,157,824; decoder (a 2x2
    // transposed conv and two 3x3 convs on the joined channels per step)
    // 9,176,576 + 2,294,528 + 573,824 + 143,552; the 1x1 head 64*2 + 2 = 130.
    check(
        "stdlib/unet.cnn",
        "unet",
        Counts::trainable(31_030_658),
        &[("output", &[256, 256, 2])],
    );
}

#[test]
fn squeezenet_1_1_matches_torchvision() {
    // torchvision.models.squeezenet1_1(): 1,235,496, all trainable (Keras
    // has no SqueezeNet).
    check(
        "stdlib/squeezenet.cnn",
        "squeezenet",
        Counts::trainable(1_235_496),
        &[("output", &[1000])],
    );
}

// ---- Expressions: built-in functions, ranges, unpacking --------------------

#[test]
fn mobilenet_width_multiplier_truncates_filters_with_int() {
    // keras.applications.MobileNet's blocks with alpha = 0.75: every
    // filter count is `int(filters * alpha)`: 32 -> 24, 64 -> 48, 128 -> 96.
    // conv1 3*3*3*24 = 648 and its batch norm 4*24 = 96; block 1: depthwise
    // 3*3*24 = 216, batch norm 96, pointwise 24*48 = 1,152, batch norm
    // 4*48 = 192; block 2: depthwise 3*3*48 = 432, batch norm 192, pointwise
    // 48*96 = 4,608, batch norm 4*96 = 384; dense 96*10 + 10 = 970. Total
    // 8,986, of which the moving statistics 48 + 48 + 96 + 96 + 192 = 480.
    let source = r#"
block depthwise_separable(filters, alpha, stride = 1) {
    depthwise_conv(3, stride: stride, padding: same, use_bias: false)
    batchnorm
    relu
    conv(int(filters * alpha), 1, use_bias: false)
    batchnorm
    relu
}
model mobilenet_slim(alpha = 0.75) : [32, 32, 3] {
    conv(int(32 * alpha), 3, stride: 2, padding: same, use_bias: false)
    batchnorm
    relu
    depthwise_separable(64, alpha)
    depthwise_separable(128, alpha, stride: 2)
    global_avg_pool
    dense(10, activation: softmax)
}
"#;
    check_fixture(
        "mobilenet_slim.cnn",
        source,
        "mobilenet_slim",
        Counts::with_frozen(8_986, 480),
        &[("output", &[10])],
    );
}

#[test]
fn densenet_block_concatenates_a_list_and_its_transition_compresses_with_int() {
    // Three dense layers of growth 12 on 24 channels (0..=2): each a batch
    // norm of c channels (4c) and a 3x3 conv of c*12*9 = 108c, for
    // c = 24, 36, 48: 96 + 2,592, 144 + 3,888, 192 + 5,184; the stem
    // 3*3*3*24 = 648; the transition's batch norm of 60 channels (240) and
    // conv to int(60 * 0.5) = 30 channels, 60*30 = 1,800; dense 30*10 + 10
    // = 310. Total 15,094; moving statistics 48 + 72 + 96 + 120 = 336.
    let source = r#"
block dense_layer(growth) {
    let new = in -> batchnorm -> relu -> conv(growth, 3, padding: same, use_bias: false)
    concat([in, new])
}
block transition(compression = 0.5) {
    batchnorm
    relu
    conv(int(in.channels * compression), 1, use_bias: false)
    avgpool(2)
}
model densenet_mini(growth = 12) : [16, 16, 3] {
    conv(2 * growth, 3, padding: same, use_bias: false)
    for i in 0..=2 {
        dense_layer(growth)
    }
    transition
    global_avg_pool
    dense(10, activation: softmax)
}
"#;
    check_fixture(
        "densenet_mini.cnn",
        source,
        "densenet_mini",
        Counts::with_frozen(15_094, 336),
        &[("output", &[10])],
    );
}

#[test]
fn built_in_functions_unpacking_and_concat_of_a_list_size_layers() {
    // On 8x8x16, convolutions with bias: max([1, 3, 5]) * 2 = 10 filters of
    // min(...) = 1: 16*10 + 10 = 170; len + sum = 3 + 9 = 12: 10*12 + 12 =
    // 132; round(16 * 0.15625) = round(2.5) = 2 (half to even): 12*2 + 2 =
    // 26; ceil(16 / 3) = 6: 2*6 + 6 = 18; floor(16 / 3) = 5: 6*5 + 5 = 35;
    // the unpacking loop: index 0, 4 filters of 1x1: 5*4 + 4 = 24, index 1,
    // 8 + 1 = 9 filters of 3x3: 3*3*4*9 + 9 = 333; concat of a list of
    // 2 + 3 channels: 9*2 + 2 = 20 and 3*3*9*3 + 3 = 246. Total 1,004.
    let source = r#"
model builtins : [8, 8, 16] {
    let image = in
    let kernels = [1, 3, 5]
    conv(max(kernels) * 2, min(kernels))
    conv(len(kernels) + sum(kernels), 1)
    conv(round(image.channels * 0.15625), 1)
    conv(ceil(image.channels / 3), 1)
    conv(floor(image.channels / 3), 1)
    for i, (kernel, filters) in [[1, 4], [3, 8]] {
        conv(filters + i, kernel, padding: same)
    }
    concat([conv(2, 1), conv(3, 3, padding: same)])
}
"#;
    check_fixture(
        "builtins.cnn",
        source,
        "builtins",
        Counts::trainable(1_004),
        &[("output", &[8, 8, 5])],
    );
}
