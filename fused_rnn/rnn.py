"""`FusedRNN`: a drop-in for `torch.nn.RNN` (Elman, tanh or relu) on the fused recurrence kernels."""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .ops import BACKENDS, NONLINEARITIES, rnn_scan


class FusedRNN(nn.Module):
    """``torch.nn.RNN`` with the same constructor, parameters, inputs and outputs.

    Every layer and direction is one GEMM for the input half of all steps,
    ``u = x @ W_ih^T + b_ih + b_hh``, then one `rnn_scan` (one fused kernel launch
    in the single-program mode) for ``h_t = act(h_{t-1} @ W_hh^T + u_t)``. A
    PackedSequence runs as a padded batch with per-row lengths: each row stops at
    its own length in both directions, so ragged batches cost no more than padded
    ones.

    Args:
        input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout,
        bidirectional, device, dtype: as for ``torch.nn.RNN``.
        backend: "auto" (the Triton kernels where they can run, else PyTorch ops),
            "triton" or "torch"; see `fused_rnn.rnn_scan`.

    Shapes (D = 2 if bidirectional else 1, L = num_layers):
        input: (T, B, input_size), (B, T, input_size) with batch_first, (T, input_size)
        unbatched, or a PackedSequence. hx: (D*L, B, H), or (D*L, H) unbatched; None for zeros.
        Returns output (T, B, D*H) (or as the input is laid out, or a PackedSequence) and
        h_n (D*L, B, H).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if input_size < 0:
            raise ValueError("input_size must be at least zero")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        self.backend = backend
        num_directions = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {"weight_ih": (hidden_size, layer_input), "weight_hh": (hidden_size, hidden_size)}
                if bias:
                    shapes.update(bias_ih=(hidden_size,), bias_hh=(hidden_size,))
                names = []
                for kind, shape in shapes.items():
                    setattr(self, kind + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(kind + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as nn.RNN."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            nn.init.uniform_(w, -stdv, stdv)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op: the kernels read each weight where it lies (kept for nn.RNN compatibility)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s

    def _check_input(self, x: torch.Tensor, hx: torch.Tensor | None, batched: bool, B: int) -> None:
        """nn.RNN's checks and messages, before any work."""
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.size(-1)}"
            )
        w = self.weight_ih_l0
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({w.dtype}). Convert input: "
                f"input.to({w.dtype}), or convert model: model.to({x.dtype})"
            )
        if hx is not None:
            expected = (self.num_layers * (2 if self.bidirectional else 1), B, self.hidden_size)
            if not batched:
                if hx.dim() != 2:
                    raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
            elif hx.dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            got = tuple(hx.shape) if batched else (hx.shape[0], 1, hx.shape[1])
            if got != expected:
                raise RuntimeError(f"Expected hidden size {expected}, got {list(hx.shape)}")
            if hx.device != x.device:
                raise RuntimeError(
                    f"Input and hidden tensors are not at the same device, found input tensor at "
                    f"{x.device} and hidden tensor at {hx.device}"
                )
            if hx.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                raise ValueError(f"hx: expected dtype {x.dtype} (input's), got {hx.dtype}")

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        """(output, h_n) with nn.RNN's shapes; see the class docstring."""
        packed = isinstance(input, PackedSequence)
        lengths = sorted_indices = unsorted_indices = None
        batched = True
        if packed:
            sorted_indices, unsorted_indices = input.sorted_indices, input.unsorted_indices
            # (T, B, I) and (B,) on the CPU, kept in the packed order: longest rows first, so each
            # 16-row block of the kernels holds rows of like length and stops at its own longest
            x, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        B = x.shape[1]
        self._check_input(x, hx, batched, B)
        if hx is not None and not batched:
            hx = hx.unsqueeze(1)
        if hx is not None and sorted_indices is not None:
            hx = hx.index_select(1, sorted_indices)
        # lengths stay on the CPU for packing (no device sync); the kernels get a copy on x's device
        out, h_n = self._run(x, hx, None if lengths is None else lengths.to(x.device, non_blocking=True))
        if packed:
            data = pack_padded_sequence(out, lengths, enforce_sorted=True).data
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
            return PackedSequence(data, input.batch_sizes, sorted_indices, unsorted_indices), h_n
        if not batched:
            return out.squeeze(1), h_n.squeeze(1)
        return (out.transpose(0, 1) if self.batch_first else out), h_n

    def _run(
        self, x: torch.Tensor, hx: torch.Tensor | None, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, B, I), hx (D*L, B, H) or None, lengths (B,) on x's device or None -> (T, B, D*H), (D*L, B, H)."""
        num_directions = 2 if self.bidirectional else 1
        h_n = []
        for layer in range(self.num_layers):
            outs = []
            for direction in range(num_directions):
                k = layer * num_directions + direction
                w_ih, w_hh, *biases = (getattr(self, name) for name in self._all_weights[k])
                # the input half of every step in one GEMM; both biases fold into it
                u = F.linear(x, w_ih, biases[0] + biases[1] if biases else None)
                out, hn = rnn_scan(
                    u, w_hh, None if hx is None else hx[k], lengths=lengths, reverse=direction == 1,
                    nonlinearity=self.nonlinearity, backend=self.backend,
                )  # fmt: skip
                outs.append(out)
                h_n.append(hn)
            x = outs[0] if num_directions == 1 else torch.cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, torch.stack(h_n)
