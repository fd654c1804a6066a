import os

import pytest
import torch

#: Devices the device-parametrised tests run on: "cpu" here; on a GPU machine
#: PARASAMPLE_TEST_DEVICES=cpu,cuda runs the same tests there with no other code.
DEVICES = [d.strip() for d in os.environ.get("PARASAMPLE_TEST_DEVICES", "cpu").split(",")
           if d.strip()]


#: Under pytest-xdist (the README's `-n auto`) each worker takes its share of the cores for
#: torch's threads, also where a CLI test asks for more (`--threads 2`): workers that each
#: spin two threads on two cores run slower than one worker.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    torch.set_num_threads(THREADS)
    # xdist gives its workers COLUMNS=80, which rich reads once when the CLI's console is made;
    # without it the console reads the width each CLI test sets, as in a serial run
    os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True)
def _threads_share(monkeypatch):
    if WORKERS > 1:
        from parasample.cli import common

        monkeypatch.setattr(common, "set_threads",
                            lambda threads: torch.set_num_threads(min(threads, THREADS)))


@pytest.fixture
def gen():
    """A fresh seeded generator per test (parasample never touches the global RNG)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request):
    """The device under test (see DEVICES)."""
    return torch.device(request.param)


@pytest.fixture(scope="module")
def tiny_dllm(tmp_path_factory):
    """A throwaway one-layer masked-diffusion checkpoint of the arithmetic task's shape (fast CLI
    runs of bench dllm; its answers are noise)."""
    from parasample.models import TinyTransformer, TransformerConfig
    from parasample.models.data import PROMPT_LEN
    from parasample.tasks.arith import CharTokenizer

    torch.manual_seed(0)  # weight init of a throwaway model
    cfg = TransformerConfig(vocab_size=CharTokenizer().vocab_size, d_model=16, n_layers=1,
                            n_heads=2, max_len=PROMPT_LEN + 256)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"model": TinyTransformer(cfg).state_dict(), "model_config": cfg.to_dict()}, path)
    return path
