"""Records what Keras does with labels, for the label checks of cnnc's
training (tests/training.rs, tests/fit.rs): the sparse categorical
cross-entropy of an output with more scores than the data set's classes
(allowed), and the errors for a label outside an output's scores.

Run with TensorFlow 2.21 / Keras 3.15:
    python tests/tf/labels.py > tests/tf/labels.out
It prints the versions it used, then one result per line.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402


def first_line(error):
    """The sentence of a TensorFlow error that names the label."""
    text = str(error)
    start = text.find("Received a label value")
    return text[start:].split("[Op:")[0].split("\n")[0].strip() if start >= 0 else text[:200]


def main():
    print(f"# tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}")
    # Two examples' logits over five scores: a data set of four classes
    # (labels 0..3) may be scored by it, and so may label 4.
    z = np.array([[1.0, 2.0, 0.5, -1.0, 3.0], [0.0, -2.0, 1.5, 2.5, -0.5]], np.float32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    values = loss(np.array([3, 4]), z).numpy()
    print("logits", z.tolist())
    print("losses for labels [3, 4] on 5 scores:", " ".join(f"{v:.8g}" for v in values))
    for labels in ([0, 5], [0, 4_000_000_000]):
        try:
            loss(np.array(labels), z)
            print(f"labels {labels} on 5 scores: accepted")
        except tf.errors.InvalidArgumentError as error:
            print(f"labels {labels} on 5 scores: {first_line(error)}")
    # A model whose second output has 2 scores, trained on labels of four
    # classes: model.fit refuses it; with only the 5-score output it trains.
    x = np.ones((4, 5), np.float32)
    y = np.array([0, 1, 2, 3])
    inputs = keras.Input((5,))
    main_out = keras.layers.Dense(5, name="main")(inputs)
    aux = keras.layers.Dense(2, name="aux")(inputs)
    for name, outputs, targets in (
        ("main (5 scores) only", [main_out], [y]),
        ("main (5 scores) and aux (2 scores)", [main_out, aux], [y, y]),
    ):
        model = keras.Model(inputs, outputs)
        model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
        try:
            model.fit(x, targets, verbose=0, epochs=1, batch_size=4)
            print(f"fit of {name} on labels 0..3: trains")
        except tf.errors.InvalidArgumentError as error:
            print(f"fit of {name} on labels 0..3: {first_line(error)}")


if __name__ == "__main__":
    main()
