"""select_config per card, without compiling or launching: routing, shared-memory fit, and the reasons ops gives."""

from __future__ import annotations

import warnings

import pytest
import torch

import fused_rnn.ops as ops
from fused_rnn import dispatch as D

HALF = (torch.float16, torch.bfloat16)
#: Per-block opt-in shared memory in KiB (CUDA C++ Programming Guide, compute capability table).
KIB = {(8, 0): 163, (8, 6): 99, (8, 9): 99, (9, 0): 227}
CARDS = [None, *KIB]


def _operands_bytes(cfg: D.KernelConfig, dtype: torch.dtype) -> int:
    """A lower bound of a config's shared memory: the dot operands it stages there.

    single: all of W_h; split: the [BB, BK] rows of h and, unless the reduction is cut per warp (then
    each warp keeps its part of W's slice in registers), the program's [BK, BN] slice of W.
    """
    if cfg.mode == "single":
        return cfg.block_h * cfg.block_h * dtype.itemsize
    return cfg.block_h * (cfg.block_b + (0 if cfg.split_k else cfg.block_n)) * dtype.itemsize


def _all_h(dtype: torch.dtype) -> range:
    return range(1, D.SPLIT_MAX_H[dtype] + 2)


def test_limits_are_the_cards_per_block_opt_in():
    assert D.SMEM_LIMIT == {cap: kib * 1024 for cap, kib in KIB.items()}
    assert D.smem_limit(None) == 227 * 1024  # the interpreter takes sm_90's table
    assert D.smem_limit((8, 7)) == D.smem_limit((12, 0)) == 99 * 1024  # unknown cards: the smallest


@pytest.mark.parametrize("cap", CARDS)
@pytest.mark.parametrize("dtype", D.SUPPORTED_DTYPES)
@pytest.mark.parametrize("prec", ["ieee", "tf32", "tf32x3"])
def test_every_config_fits_its_card(cap, dtype, prec):
    limit = D.smem_limit(cap)
    for H in _all_h(dtype):
        cfg = D.select_config(7, H, dtype, prec, cap)
        if cfg is None:
            assert H > D.max_hidden(dtype, cap)
            continue
        # where tf32x3 does not fit, the IEEE config (the same accuracy) runs
        assert cfg.block_h >= H and cfg.dot_precision in ({prec, "ieee"} if prec == "tf32x3" else {prec})
        assert _operands_bytes(cfg, dtype) <= D.shared_bytes(cfg, dtype) <= limit, (cap, H, cfg)
        assert H <= D.max_hidden(dtype, cap)


@pytest.mark.parametrize("cap", [None, (8, 0), (9, 0)])
def test_large_cards_keep_the_full_table(cap):
    for prec in ("ieee", "tf32"):
        assert D.select_config(1, 128, torch.float32, prec, cap).mode == "single"
        assert D.select_config(1, 129, torch.float32, prec, cap).block_h == 256
        assert D.select_config(1, 1024, torch.float32, prec, cap).block_h == 1024
        assert D.select_config(1, 1025, torch.float32, prec, cap) is None
    for dtype in HALF:
        assert D.select_config(1, 2048, dtype, "ieee", cap).block_h == 2048
        assert D.select_config(1, 2049, dtype, "ieee", cap) is None
        assert D.max_hidden(dtype, cap) == 2048
    assert D.max_hidden(torch.float32, cap) == 1024


@pytest.mark.parametrize("cap", [(8, 6), (8, 9)])
def test_99_kib_cards_route_around_what_does_not_fit(cap):
    for prec in ("ieee", "tf32"):
        assert D.select_config(1, 64, torch.float32, prec, cap).mode == "single"
        # the single-program fp32 H = 128 config needs ~105 KiB: the split kernels take 64 < H <= 128
        for H in (65, 100, 128):
            cfg = D.select_config(1, H, torch.float32, prec, cap)
            assert (cfg.mode, cfg.block_h, cfg.block_n) == ("split", 128, D.SPLIT_BN)
        assert D.select_config(1, 512, torch.float32, prec, cap).block_h == 512
        assert D.select_config(1, 513, torch.float32, prec, cap) is None  # BK = 1024 needs ~130 KiB
    for dtype in HALF:
        assert D.select_config(1, 128, dtype, "ieee", cap).mode == "single"
        # cut into one reduction slice per warp, W's slice sits in registers: BK = 2048 takes 97 KiB
        assert D.select_config(1, 2048, dtype, "ieee", cap).block_h == 2048
        assert D.max_hidden(dtype, cap) == 2048
    assert D.max_hidden(torch.float32, cap) == 512


def test_cards_older_than_sm80_get_no_config():
    assert D.select_config(1, 64, torch.float16, "ieee", (7, 5)) is None
    assert D.max_hidden(torch.float16, (7, 5)) == 0
    assert "sm_75 is older than sm_80" in D.unsupported_reason(64, torch.float16, (7, 5))


def test_all_configs_is_everything_select_config_returns():
    seen = set()
    for cap in D.SMEM_LIMIT:
        for dtype in D.SUPPORTED_DTYPES:
            for prec in ("ieee", "tf32", "tf32x3") if dtype == torch.float32 else ("ieee",):
                for H in _all_h(dtype):
                    cfg = D.select_config(1, H, dtype, prec, cap)
                    if cfg is not None and cfg.dot_precision == prec:
                        seen.add((cap, dtype, prec, cfg))
    listed = D.all_configs()
    assert len(listed) == len(set(listed))
    assert set(listed) == seen
    assert {c.block_h for cap, _, _, c in listed if c.mode == "split" and cap in ((8, 6), (8, 9))} >= {128}
    assert all(c.block_h != 128 or c.mode == "single" for cap, _, _, c in listed if cap in ((8, 0), (9, 0)))


def test_reason_names_the_shared_memory():
    assert D.unsupported_reason(512, torch.float32, (8, 6)) is None
    assert D.unsupported_reason(1024, torch.float32, (8, 6)) == (
        "H = 1024 needs 129 KiB of shared memory per block for torch.float32; sm_86 allows 99 KiB per block "
        "(the triton limit there is H <= 512)"
    )
    assert D.unsupported_reason(1000, torch.float32, (8, 9)).startswith("H = 1000 needs 129 KiB")
    assert D.unsupported_reason(2000, torch.bfloat16, (8, 9)) is None
    # over every card's limit: the plain limit, with the card when there is one
    assert (
        D.unsupported_reason(1025, torch.float32) == "H = 1025 is over the triton limit of H <= 1024 for torch.float32"
    )
    assert D.unsupported_reason(4096, torch.float32, (8, 6)).endswith("H <= 512 for torch.float32 on sm_86")


@pytest.fixture
def sm86(monkeypatch):
    """Pretend the tensors live on an sm_86 card with 84 SMs (nothing is launched)."""
    monkeypatch.setattr(ops.launch, "unavailable_reason", lambda device: None)
    monkeypatch.setattr(ops.launch, "device_key", lambda device: ((8, 6), 84))
    ops._warned.clear()
    yield
    ops._warned.clear()


def _inputs(H: int, dtype=torch.float32):
    return torch.randn(2, 3, H, dtype=dtype), torch.randn(H, H, dtype=dtype) / H


def test_ops_raise_for_triton_on_sm86(sm86):
    u, w = _inputs(1024)
    with pytest.raises(ValueError, match="H = 1024 needs 129 KiB of shared memory .* sm_86 allows 99 KiB per block"):
        ops.rnn_scan(u, w, backend="triton")


def test_ops_auto_falls_back_once_on_sm86(sm86):
    u, w = _inputs(1024)
    with pytest.warns(UserWarning, match="sm_86 allows 99 KiB per block.*falling back to the torch path"):
        out, hn = ops.rnn_scan(u, w, backend="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.rnn_scan(u, w, backend="auto")  # once per size
    ref, ref_n = ops.rnn_scan(u, w, backend="torch")
    assert torch.equal(out, ref) and torch.equal(hn, ref_n)


def test_ops_route_fp32_h128_to_the_split_kernels_on_sm86(sm86):
    name, cfg = ops.resolve_backend(torch.empty(2, 3, 100), "auto")
    assert name == "triton" and (cfg.mode, cfg.block_h) == ("split", 128)
    name, cfg = ops.resolve_backend(torch.empty(2, 3, 1024, dtype=torch.float16), "auto")
    assert name == "triton" and (cfg.mode, cfg.block_h) == ("split", 1024)


def test_reason_reads_no_device_under_compile(monkeypatch, sm86):
    """Compiled code takes the largest card's table; the op's eager body then names the card's limit."""

    def no_device_read(device):
        raise AssertionError("device properties read while compiling")

    u = torch.empty(2, 3, 1024)
    monkeypatch.setattr(ops.launch, "device_key", no_device_read)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert ops._triton_reason(u) is None
    monkeypatch.undo()
    monkeypatch.setattr(ops.launch, "device_key", lambda device: ((8, 6), 84))
    with pytest.raises(ValueError, match="no triton config .* sm_86 allows 99 KiB per block"):
        ops._config(u, "")


KINDS = [(torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float32, "tf32x3"), *((d, "ieee") for d in HALF)]


@pytest.mark.parametrize("cap", CARDS)
@pytest.mark.parametrize("dtype,prec", KINDS)
def test_split_k_slices_are_mma_wide_and_one_per_warp(cap, dtype, prec):
    """Tensor-core dots cut the reduction into one slice per warp, each >= 16 wide; the FMA dot does not cut it."""
    for H in _all_h(dtype):
        cfg = D.select_config(1, H, dtype, prec, cap)
        if cfg is None or cfg.mode != "split":
            continue
        assert cfg.split_k == (D.dot_kind(dtype, cfg.dot_precision) != "ieee")
        for backward in (False, True):
            for persistent in (False, True):
                opts = cfg.launch_options(backward, persistent)
                assert opts["SK"] == (opts["num_warps"] if cfg.split_k else 1)
                assert cfg.block_h % opts["SK"] == 0 and cfg.block_h // opts["SK"] >= 16, (cfg, opts)
        assert D.KernelConfig.from_key(cfg.key()) == cfg
    single = D.select_config(1, 16, dtype, prec, cap)
    assert "SK" not in single.launch_options(False, False)  # the single-program kernels take no SK


def test_dot_precision_and_the_tf32x3_option():
    assert D.dot_precision(torch.float32, "highest") == "ieee"
    assert D.dot_precision(torch.float32, "highest", tf32x3=True) == "tf32x3"
    for allowed in ("high", "medium"):  # TF32 allowed: tf32x3 would only cost more
        assert D.dot_precision(torch.float32, allowed, tf32x3=True) == "tf32"
    for dtype in HALF:
        assert D.dot_precision(dtype, "highest", tf32x3=True) == "ieee"


@pytest.mark.parametrize("cap", CARDS)
def test_tf32x3_changes_only_the_dot_and_falls_back_to_ieee(cap):
    for H in _all_h(torch.float32):
        x3 = D.select_config(1, H, torch.float32, "tf32x3", cap)
        ieee = D.select_config(1, H, torch.float32, "ieee", cap)
        assert (x3 is None) == (ieee is None)  # the option never narrows what runs
        if x3 is None:
            continue
        assert (x3.mode, x3.block_h) == (ieee.mode, ieee.block_h)
        if x3.dot_precision == "ieee":  # its tf32x3 twin does not fit the card, or is not built
            assert x3 == ieee
            twin = ("split", x3.block_h, "tf32x3")
            if x3.mode == "split" and x3.block_h > D.TF32X3_MAX_SPLIT_BK:
                assert twin not in D.SHARED_BYTES
            else:
                assert D.SHARED_BYTES[x3.mode, x3.block_h, "tf32x3"] > D.smem_limit(cap)
    assert D.select_config(1, 512, torch.float32, "tf32x3", cap).dot_precision == "tf32x3"
    fp32 = torch.float32
    assert D.select_config(1, 1024, fp32, "tf32x3", cap) == D.select_config(1, 1024, fp32, "ieee", cap)


def test_ops_reads_the_tf32x3_option(monkeypatch, sm86):
    u = torch.empty(2, 3, 256)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert ops._config(u, "").dot_precision == "ieee"
        monkeypatch.setenv("FUSED_RNN_TF32X3", "1")
        assert ops._config(u, "").dot_precision == "tf32x3"
        torch.set_float32_matmul_precision("high")
        assert ops._config(u, "").dot_precision == "tf32"
    finally:
        torch.set_float32_matmul_precision(old)


def test_forced_configs_are_checked_before_any_launch(sm86):
    """config= can be anything: a block too small or a reduction cut under the mma's 16 is refused by name."""
    for cap, dtype, prec, cfg in D.all_configs():
        assert cfg.problem() is None, (cap, dtype, prec, cfg)
    u, w = torch.randn(2, 3, 100), torch.randn(100, 100) / 10
    small = D.KernelConfig("split", 16, 64, 16, 4, "ieee", 4)
    with pytest.raises(ValueError, match="config: block_h = 64 is smaller than H = 100"):
        ops.rnn_scan(u, w, config=small)
    sliced = D.KernelConfig("split", 16, 128, 16, 16, "ieee", 8, split_k=True)  # 16 slices of 8
    with pytest.raises(ValueError, match="config: split_k with 16 warps cuts block_h = 128 into slices under 16"):
        ops.rnn_scan(u, w, config=sliced)
    odd = D.KernelConfig("split", 16, 192, 16, 4, "ieee", 4)
    with pytest.raises(ValueError, match="config: mode .split. with block_h = 192"):
        ops.rnn_scan(u, w, config=odd)
