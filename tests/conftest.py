"""Shared test setup: one torch thread (2-core machines collapse with 2 threads under load)."""

import os

import torch

os.environ.setdefault("MUJOCO_GL", "")
torch.set_num_threads(1)
