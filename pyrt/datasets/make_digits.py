"""Regenerate ``digits.npz`` from scikit-learn (run once; the result is committed).

Run: python -m pyrt.datasets.make_digits   (needs scikit-learn, the ``examples`` extra)

``sklearn.datasets.load_digits()`` returns 1,797 images of 8x8 pixels whose
values are counts 0..16 (stored there as float64); they are kept exactly, as
uint8, with the labels as int64, in sklearn's order. ``np.savez_compressed``
makes the file about 45 KB.
"""

from __future__ import annotations

import os

import numpy as np

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")


def main(path: str = OUTPUT) -> None:
    """Fetch the digits from scikit-learn and write them to ``path``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
        raise ValueError("expected integer pixel counts in 0..16 from sklearn's digits")
    np.savez_compressed(path, images=images.astype(np.uint8),
                        labels=np.asarray(digits.target, dtype=np.int64))
    print(f"wrote {path}: images {images.shape}, labels {digits.target.shape}")


if __name__ == "__main__":
    main()
