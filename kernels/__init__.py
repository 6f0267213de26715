"""Triton kernels of fused_rnn (installed as ``fused_rnn.kernels``). Only ``@triton.jit`` code lives here."""

from .fused_recurrent import fused_recurrent_bwd_kernel, fused_recurrent_fwd_kernel
from .gated_recurrent import (
    gated_recurrent_bwd_kernel,
    gated_recurrent_fwd_kernel,
    gated_split_bwd_kernel,
    gated_split_bwd_step_kernel,
    gated_split_fwd_kernel,
    gated_split_fwd_step_kernel,
)
from .generate import generate_draw_step_kernel, generate_kernel
from .split_recurrent import (
    split_recurrent_bwd_kernel,
    split_recurrent_bwd_step_kernel,
    split_recurrent_fwd_kernel,
    split_recurrent_fwd_step_kernel,
)

__all__ = [
    "fused_recurrent_fwd_kernel",
    "fused_recurrent_bwd_kernel",
    "split_recurrent_fwd_kernel",
    "split_recurrent_fwd_step_kernel",
    "split_recurrent_bwd_kernel",
    "split_recurrent_bwd_step_kernel",
    "gated_recurrent_fwd_kernel",
    "gated_recurrent_bwd_kernel",
    "gated_split_fwd_kernel",
    "gated_split_fwd_step_kernel",
    "gated_split_bwd_kernel",
    "gated_split_bwd_step_kernel",
    "generate_kernel",
    "generate_draw_step_kernel",
]
