"""Records Keras's mean intersection over union, for cnnc's segmentation
metric (tests/fit.rs, `mean_iou`): `keras.metrics.MeanIoU` on per-pixel
class indices, including a class that is neither labelled nor predicted
(Keras leaves it out of the mean) and a class predicted but never
labelled (its IoU is 0 and counts).

Run with TensorFlow 2.21 / Keras 3.15:
    python tests/tf/iou.py > tests/tf/iou.out
It prints the versions it used, then one case per line: the classes, the
labels, the predictions, and MeanIoU's result.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402


def main():
    print(f"# tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}")
    rng = np.random.default_rng(5)
    cases = [
        # Two 3x3 masks of four classes; class 3 appears nowhere.
        (4, [0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 0, 0, 1, 1, 1, 2, 2, 0],
            [0, 1, 1, 1, 2, 0, 0, 1, 2, 0, 0, 1, 1, 2, 1, 2, 0, 0]),
        # Class 2 predicted but never labelled.
        (3, [0, 1, 1, 0, 0, 1], [0, 1, 2, 2, 0, 1]),
        # Random masks of five classes.
        (5, rng.integers(0, 5, 40).tolist(), rng.integers(0, 5, 40).tolist()),
    ]
    for classes, labels, predictions in cases:
        metric = keras.metrics.MeanIoU(num_classes=classes)
        metric.update_state(np.array(labels), np.array(predictions))
        value = float(metric.result().numpy())
        print(f"classes {classes} labels {' '.join(map(str, labels))} "
              f"predicted {' '.join(map(str, predictions))} mean_iou {value:.8g}")


if __name__ == "__main__":
    main()
