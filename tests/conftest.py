"""Test set-up shared by every test file: offline, Triton kernels through the interpreter on CPU, the
tiny saved model the end-to-end tests run (the models and q, k, v makers themselves: ``tiny_models``),
and one finished run of it (``tiny_runs``)."""

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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A saved 2-layer random Llama with its tokenizer, window 4096 (``tiny_models.make_tiny_llama``)."""
    from tiny_models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", max_positions=4096)


@pytest.fixture(scope="session")
def finished_run(tiny_model, tmp_path_factory):
    """A finished run directory of ``tiny_runs.ARGS``: copy it (``tiny_runs.copy``) before changing it."""
    import tiny_runs
    from s2o_eval.run.rundir import RunDir

    out = tmp_path_factory.mktemp("finished") / "run"
    result = tiny_runs.run(tiny_model, out)
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    assert len(run.samples()) == tiny_runs.SAMPLES
    return run
