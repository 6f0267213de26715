"""fused_rnn: a persistent-weight Triton kernel for the character-level RNN recurrence.

The public names load on first use (PEP 562), so `fused-rnn --help` and `--version` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_LAZY = {
    "CharLoopModel": "reference",
    "FusedCharRNN": "models",
    "FusedRNN": "rnn",
    "FusedLSTM": "rnn",
    "FusedGRU": "rnn",
    "KernelConfig": "dispatch",
    "convert_rnns": "convert",
    "disable": "aten",
    "enable": "aten",
    "enabled": "aten",
    "is_enabled": "aten",
    "fused_recurrence": "ops",
    "recurrence_reference": "reference",
    "rnn_scan": "ops",
    "lstm_scan": "gated_ops",
    "gru_scan": "gated_ops",
    "scan_reference": "reference",
    "select_config": "dispatch",
}

__all__ = [
    "CharLoopModel",
    "FusedCharRNN",
    "FusedRNN",
    "FusedLSTM",
    "FusedGRU",
    "KernelConfig",
    "convert_rnns",
    "disable",
    "enable",
    "enabled",
    "fused_recurrence",
    "is_enabled",
    "recurrence_reference",
    "rnn_scan",
    "lstm_scan",
    "gru_scan",
    "scan_reference",
    "select_config",
]

if TYPE_CHECKING:  # pragma: no cover
    from .aten import disable, enable, enabled, is_enabled
    from .convert import convert_rnns
    from .dispatch import KernelConfig, select_config
    from .gated_ops import gru_scan, lstm_scan
    from .models import FusedCharRNN
    from .ops import fused_recurrence, rnn_scan
    from .reference import CharLoopModel, recurrence_reference, scan_reference
    from .rnn import FusedGRU, FusedLSTM, FusedRNN


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
