"""Run the kernels compiled on CUDA when a GPU is present, else in Triton's interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here,
before anything imports fused_rnn.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fused_rnn.launch  # noqa: E402


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def text_file(tmp_path):
    """A small text file to train on."""
    p = tmp_path / "tiny.txt"
    p.write_text("the quick brown fox jumps over the lazy dog.\n" * 60, encoding="utf-8")
    return p


@pytest.fixture
def poison(monkeypatch):
    """Fill every kernel output with NaN before launch: an unwritten element fails."""
    monkeypatch.setattr(fused_rnn.launch, "POISON", True)


@pytest.fixture(autouse=True)
def _fresh_seed():
    """Fresh random inputs every run; the seed is printed on failure."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    yield seed


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None and "_fresh_seed" in item.fixturenames:
        seed = item.funcargs.get("_fresh_seed")
        item.add_report_section("call", "seed", f"torch.manual_seed({seed})")


@pytest.fixture
def precision(request):
    """Sets torch's float32 matmul precision for "fp32" / "tf32" and gives the tensor dtype."""
    mode = request.param
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision({"fp32": "highest", "tf32": "high"}.get(mode, old))
    yield mode, torch.float32 if isinstance(mode, str) else mode
    torch.set_float32_matmul_precision(old)
