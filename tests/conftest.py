"""Test set-up shared by every test file: offline, and Triton kernels through the interpreter on CPU."""

import os

import pytest

# Nothing may reach the network at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_CUDA = False

if not HAS_CUDA:
    # must be set before triton is imported anywhere: kernels then run on the CPU interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

gpu = pytest.mark.skipif(not HAS_CUDA, reason="no GPU here")
