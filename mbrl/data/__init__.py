"""Data layer: replay buffer, offline datasets (D4RL vocabulary), readers/writers, normalisers."""

from mbrl.data.buffer import ReplayBuffer
from mbrl.data.dataset import OfflineDataset
from mbrl.data.io import load_dataset, save_hdf5, save_minari, save_npz
from mbrl.data.normalizer import Normalizer
from mbrl.data.validate import DatasetError

__all__ = [
    "DatasetError",
    "Normalizer",
    "OfflineDataset",
    "ReplayBuffer",
    "load_dataset",
    "save_hdf5",
    "save_minari",
    "save_npz",
]
