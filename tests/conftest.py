"""Shared test set-up: one intra-op thread. On a small shared machine torch's default thread
pool oversubscribes the cores and tiny forward passes get 100x slower; one thread keeps the
unit suite fast and its timings stable."""

import torch

torch.set_num_threads(1)
