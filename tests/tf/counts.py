"""Prints the parameter counts of the keras.applications models that
tests/param_counts.rs checks the standard library against: for each, the
total, the trainable and the non-trainable count, built with weights=None
at Keras's default input size and 1000 classes.

Run with TensorFlow 2.21 / Keras 3.15 from the repository's root:
    python tests/tf/counts.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from keras import applications  # noqa: E402

MODELS = [
    ("MobileNet", {}),
    ("MobileNet", {"alpha": 0.75}),
    ("MobileNetV2", {}),
    ("DenseNet121", {}),
    ("EfficientNetB0", {}),
    ("InceptionV3", {}),
]


def size(weights):
    return sum(int(keras.ops.size(w)) for w in weights)


def main():
    for name, options in MODELS:
        model = getattr(applications, name)(weights=None, **options)
        trainable = size(model.trainable_weights)
        frozen = size(model.non_trainable_weights)
        print(f"{name}{options or ''}: {model.count_params()} total, {trainable} trainable, {frozen} non-trainable")


if __name__ == "__main__":
    main()
