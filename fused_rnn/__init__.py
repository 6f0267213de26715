"""fused_rnn: a persistent-weight Triton kernel for the character-level RNN recurrence."""

from .dispatch import KernelConfig, select_config
from .models import FusedCharRNN
from .ops import fused_recurrence
from .reference import CharLoopModel, recurrence_reference

__all__ = [
    "CharLoopModel",
    "FusedCharRNN",
    "KernelConfig",
    "fused_recurrence",
    "recurrence_reference",
    "select_config",
]
__version__ = "0.1.0"
