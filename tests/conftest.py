import os
import sys

# Tests never reach the network: a stray hub id fails at once instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP threads that
# wait on each other make them many times slower; subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A student, a math and a code teacher and prompts of both domains (tests/tiny.py), built once."""
    import tiny
    return tiny.make_world(tmp_path_factory.mktemp("world"))
