"""Data sets: in-memory ``ArrayDataset``, MNIST, digits, toys; ``RandomShift`` augmentation."""

from quasineuron.data.augment import RandomShift
from quasineuron.data.dataset import ArrayDataset
from quasineuron.data.mnist import (
    MNIST_FILES,
    MNIST_MIRRORS,
    default_data_root,
    load_mnist,
    read_idx,
)
from quasineuron.data.toy import load_digits, regression_1d, xor

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "ArrayDataset",
    "RandomShift",
    "default_data_root",
    "load_digits",
    "load_mnist",
    "read_idx",
    "regression_1d",
    "xor",
]
