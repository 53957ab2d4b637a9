//! IDX files (Fashion-MNIST's format) of a few images of the bundled
//! subset, for the tests that train from the command line.

use std::path::Path;

use cnnc::data::fashion;

/// Writes `PREFIX-images-idx3-ubyte` and `PREFIX-labels-idx1-ubyte` into
/// `dir`, holding the images and labels of `range`.
pub fn write_idx(
    dir: &Path,
    prefix: &str,
    (pixels, labels): (&[u8], &[u8]),
    range: std::ops::Range<usize>,
) {
    let size = fashion::IMAGE_SIZE;
    let count = (range.len() as u32).to_be_bytes();
    let mut images = [
        0x0803u32.to_be_bytes(),
        count,
        (size as u32).to_be_bytes(),
        (size as u32).to_be_bytes(),
    ]
    .concat();
    images.extend(&pixels[range.start * size * size..range.end * size * size]);
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).expect("images");
    let mut tags = [0x0801u32.to_be_bytes(), count].concat();
    tags.extend(&labels[range]);
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), tags).expect("labels");
}

/// A folder `dir` of Fashion-MNIST's four files, `train` training and
/// `test` test images from the bundled subset.
pub fn small_fashion(dir: &Path, train: usize, test: usize) {
    let bundled = Path::new("data/fashion-mnist-subset");
    let (pixels, count, ..) =
        fashion::read_idx_images(&bundled.join("t10k-images-idx3-ubyte.gz")).expect("images");
    let labels =
        fashion::read_idx_labels(&bundled.join("t10k-labels-idx1-ubyte.gz")).expect("labels");
    assert!(train + test <= count);
    std::fs::create_dir_all(dir).expect("data folder");
    write_idx(dir, "train", (&pixels, &labels), 0..train);
    write_idx(dir, "t10k", (&pixels, &labels), train..train + test);
}
