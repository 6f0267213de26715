"""fused_rnn: a persistent-weight Triton kernel for the character-level RNN recurrence."""

from .aten import disable, enable, enabled, is_enabled
from .convert import convert_rnns
from .dispatch import KernelConfig, select_config
from .models import FusedCharRNN
from .ops import fused_recurrence, rnn_scan
from .reference import CharLoopModel, recurrence_reference, scan_reference
from .rnn import FusedRNN

__all__ = [
    "CharLoopModel",
    "FusedCharRNN",
    "FusedRNN",
    "KernelConfig",
    "convert_rnns",
    "disable",
    "enable",
    "enabled",
    "fused_recurrence",
    "is_enabled",
    "recurrence_reference",
    "rnn_scan",
    "scan_reference",
    "select_config",
]
__version__ = "0.1.0"
