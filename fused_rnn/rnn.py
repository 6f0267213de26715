"""`FusedRNN`, `FusedLSTM`, `FusedGRU`: `torch.nn.RNN`, `nn.LSTM` and `nn.GRU` to every caller.

FusedRNN runs the fused recurrence kernels where they run. FusedLSTM and FusedGRU run PyTorch's own
``aten::lstm`` / ``aten::gru`` with nn.LSTM's / nn.GRU's own forward (their kernels are not built yet):
bit for bit nn.LSTM and nn.GRU, at their speed, and compilable whole with ``torch.compile(fullgraph=True)``.

Not a subclass of ``nn.RNN``: dynamo refuses every ``nn.RNNBase`` instance ("TorchDynamo purposely
graph breaks on RNN, GRU, LSTMs"; ``torch._dynamo.config.allow_rnn`` is off by default), so a
subclass could not be compiled with ``fullgraph=True`` (``tests/test_rnn_compat.py`` checks that a
subclass is refused and FusedRNN is not). Instead each module has its nn class's constructor, checks, attributes
and methods, most of the latter taken from ``nn.RNNBase`` (and ``nn.LSTM``) itself, so they say and do exactly
what nn.RNN's do. ``isinstance(FusedRNN(...), nn.RNN)`` is False. `_FusedRNNBase` holds what the three share.
"""

from __future__ import annotations

import numbers
import sys
import types
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import launch, ops
from .gated_ops import gru_scan, lstm_scan
from .ops import BACKENDS, rnn_scan

#: nn.RNN raises for `proj_size` given at all, whatever its value
_NOT_GIVEN = object()
_NO_SEQUENCE = "Expected sequence length to be larger than 0 in RNN"
#: device type -> whether the kernels can run there at all (fixed when fused_rnn is imported); filled
#: here for the usual types so that compiled code only reads it
_KERNELS_RUN_ON: dict[str, bool] = {t: launch.unavailable_reason(torch.device(t)) is None for t in ("cpu", "cuda")}


class _FusedRNNBase(nn.Module):
    """What FusedRNN, FusedLSTM and FusedGRU share: nn.RNNBase's constructor (its checks, in its order, with its
    messages; the parameters, their names and their initialisation), and nn.RNNBase's own methods for everything
    that reads or keeps the weights."""

    __constants__ = nn.RNNBase.__constants__
    __jit_unused_properties__ = nn.RNNBase.__jit_unused_properties__
    #: the nn class each module stands in for (what `__prepare_scriptable__` builds)
    _nn_class: type[nn.RNNBase] = nn.RNNBase

    def _build(
        self, mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
        device, dtype, backend,
    ) -> None:  # fmt: skip
        """nn.RNNBase.__init__ after its super().__init__(), for `mode` ("RNN_TANH", "RNN_RELU", "LSTM" or
        "GRU"), then the backend check."""
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self._flat_weight_refs: list[weakref.ReferenceType | None] = []
        # the dropout checks, bool checks, sizes (nn.RNN does not check bidirectional's type)
        _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout)
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        gate_size = {"LSTM": 4, "GRU": 3}.get(mode, 1) * hidden_size
        num_directions = 2 if bidirectional else 1
        real_hidden = proj_size if proj_size > 0 else hidden_size
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                shapes = {"weight_ih": (gate_size, layer_input), "weight_hh": (gate_size, real_hidden)}
                if bias:
                    shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
                if proj_size > 0:
                    shapes.update(weight_hr=(proj_size, hidden_size))
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                names = []
                for kind, shape in shapes.items():
                    setattr(self, kind + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(kind + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self._init_flat_weights()
        self.reset_parameters()

    # nn.RNNBase's own code for everything that reads or keeps the weights, checks inputs or
    # prints: the same behaviour and messages by construction. (Methods that call super()
    # cannot be borrowed from a class FusedRNN does not derive from; they are written below.)
    _init_flat_weights = nn.RNNBase._init_flat_weights
    #: on CUDA with cuDNN, packs the weights into one buffer as nn.RNN does (the kernels read them
    #: wherever they lie, and PyTorch's path then needs no copy); elsewhere a no-op
    flatten_parameters = nn.RNNBase.flatten_parameters
    reset_parameters = nn.RNNBase.reset_parameters
    check_input = nn.RNNBase.check_input
    get_expected_hidden_size = nn.RNNBase.get_expected_hidden_size
    check_hidden_size = nn.RNNBase.check_hidden_size
    check_forward_args = nn.RNNBase.check_forward_args
    permute_hidden = nn.RNNBase.permute_hidden
    _weights_have_changed = nn.RNNBase._weights_have_changed
    _update_flat_weights = nn.RNNBase._update_flat_weights
    all_weights = nn.RNNBase.all_weights

    def __setattr__(self, attr, value) -> None:
        if hasattr(self, "_flat_weights_names") and attr in self._flat_weights_names:
            # keep self._flat_weights up to date if you do self.weight = ... (weight_norm does)
            self._flat_weights[self._flat_weights_names.index(attr)] = value
        super().__setattr__(attr, value)

    def _apply(self, fn, recurse=True):
        self._flat_weight_refs = []
        ret = super()._apply(fn, recurse)
        self._init_flat_weights()  # .to(), .half(), .cuda(): _flat_weights hold the new parameters
        return ret

    def __getstate__(self):
        self._update_flat_weights()
        state = self.__dict__.copy()
        del state["_flat_weight_refs"]  # weak references do not pickle
        return state

    def __setstate__(self, d):
        super().__setstate__(d)
        # states of older PyTorch modules, read as nn.RNNBase reads them: no proj_size before 1.8, and before
        # 1.0 the Parameters themselves under "all_weights" where the names are kept now
        if "all_weights" in d:
            self._all_weights = d["all_weights"]
        if "proj_size" not in d:
            self.proj_size = 0
        if self._all_weights and not isinstance(self._all_weights[0][0], str):
            kinds = ["weight_ih", "weight_hh", *(["bias_ih", "bias_hh"] if self.bias else []),
                     *(["weight_hr"] if self.proj_size > 0 else [])]  # fmt: skip
            suffixes = ("", "_reverse") if self.bidirectional else ("",)
            self._all_weights = [[f"{k}_l{layer}{sfx}" for k in kinds] for layer in range(self.num_layers)
                                 for sfx in suffixes]  # fmt: skip
            self._flat_weights_names = [name for names in self._all_weights for name in names]
            self._flat_weights = [getattr(self, name, None) for name in self._flat_weights_names]
        self._flat_weight_refs = [weakref.ref(w) if w is not None else None for w in self._flat_weights]

    def _replicate_for_data_parallel(self):
        replica = super()._replicate_for_data_parallel()
        # DataParallel replicas get their own lists (they share the module's __dict__ otherwise)
        replica._flat_weights = replica._flat_weights[:]
        replica._flat_weights_names = replica._flat_weights_names[:]
        return replica

    def __prepare_scriptable__(self) -> nn.RNNBase:
        """What ``torch.jit.script`` compiles in this module's place: the nn module (nn.RNN, nn.LSTM, nn.GRU)
        holding these very Parameters (shared, not copied), so the scripted model runs the same math on
        PyTorch's own kernels and trains the same weights. TorchScript cannot compile the Python dispatch that
        picks the kernels; ``torch.jit.trace`` can, and records the fused ``fused_rnn::scan`` op itself."""
        kw = {"nonlinearity": self.nonlinearity} if self.mode.startswith("RNN") else {}
        if self.proj_size:
            kw["proj_size"] = self.proj_size
        rnn = self._nn_class(
            self.input_size, self.hidden_size, self.num_layers, bias=self.bias, batch_first=self.batch_first,
            dropout=self.dropout, bidirectional=self.bidirectional, device="meta", **kw,
        )  # fmt: skip
        for name in self._flat_weights_names:
            setattr(rnn, name, getattr(self, name))  # nn.RNNBase keeps _flat_weights in step
        return rnn.train(self.training)

    def extra_repr(self) -> str:
        """The nn class's text (nn.RNN's leaves out nonlinearity), then backend where not "auto"."""
        s = nn.RNNBase.extra_repr(self)
        return s if self.backend == "auto" else f"{s}, backend={self.backend!r}"


class FusedRNN(_FusedRNNBase):
    """``torch.nn.RNN`` with the same constructor, checks, parameters, attributes, inputs and outputs.

    Where the kernels run (CUDA, or CPU under ``TRITON_INTERPRET=1``; float32 / float16 /
    bfloat16; H within their limits), every layer and direction is one GEMM for the input
    half of all steps, ``u = x @ W_ih^T + b_ih + b_hh``, then one `rnn_scan` (one fused
    kernel launch in the single-program mode) for ``h_t = act(h_{t-1} @ W_hh^T + u_t)``. A
    PackedSequence runs as a padded batch with per-row lengths: each row stops at its own
    length in both directions. Everywhere else (``backend="torch"``, or "auto" where the
    kernels cannot run) it calls PyTorch's own ``aten::rnn_tanh`` / ``rnn_relu`` with the
    same arguments nn.RNN passes (``torch._VF.rnn_tanh(input, hx, self._flat_weights, ...)``),
    so it runs exactly nn.RNN's code at nn.RNN's speed; dynamo traces that op too, so
    ``torch.compile(fullgraph=True)`` works on both paths.

    Args:
        input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout,
        bidirectional, device, dtype: as for ``torch.nn.RNN``, with its checks and messages.
        backend: "auto" (the Triton kernels where they can run, else PyTorch's own RNN),
            "triton" or "torch"; see `fused_rnn.rnn_scan`.

    Shapes (D = 2 if bidirectional else 1, L = num_layers):
        input: (T, B, input_size), (B, T, input_size) with batch_first, (T, input_size)
        unbatched, or a PackedSequence. hx: (D*L, B, H), or (D*L, H) unbatched; None for zeros.
        Returns output (T, B, D*H) (or as the input is laid out, or a PackedSequence) and
        h_n (D*L, B, H). T = 0 raises, as nn.RNN does.
    """

    _nn_class = nn.RNN

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
        proj_size=_NOT_GIVEN,
    ) -> None:
        # nn.RNN.__init__, then nn.RNNBase.__init__: the same checks in the same order, with the
        # same exception types and messages (tests/test_rnn_compat.py compares them with nn.RNN's)
        if proj_size is not _NOT_GIVEN:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        nn.Module.__init__(self)
        self.nonlinearity = nonlinearity
        self._build(
            mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype,
            backend,
        )  # fmt: skip

    def _runs_triton(self, input: Tensor, hx: Tensor, weights: list[Tensor]) -> bool:
        """Whether the kernels run this call: the backend allows them and input, hx and every weight
        share a device and (under autocast, after its cast) a dtype. Anything else runs PyTorch's own
        RNN, which raises nn.RNN's own error for mismatched devices or dtypes."""
        if self.backend == "torch" or _exporting():
            return False
        kind = input.device.type
        if kind not in _KERNELS_RUN_ON:  # a constant per device type: a dict lookup on the hot path
            _KERNELS_RUN_ON[kind] = launch.unavailable_reason(input.device) is None
        if self.backend == "auto" and not _KERNELS_RUN_ON[kind]:
            return False
        autocast = ops._autocast_dtype(input.device)

        def dtype(t: Tensor) -> torch.dtype:
            return autocast if autocast is not None and t.dtype == torch.float32 else t.dtype

        want = dtype(input)
        if ops.choose_backend(hx.shape[1], self.hidden_size, want, input.device, self.backend, 5) != "triton":
            return False
        return all(isinstance(t, Tensor) and t.device == input.device and dtype(t) == want for t in (hx, *weights))

    def forward(
        self, input: Tensor | PackedSequence, hx: Tensor | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """(output, h_n) with nn.RNN's shapes, checks and messages; see the class docstring."""
        if torch.compiler.is_compiling():
            weights = [getattr(self, name) for name in self._flat_weights_names]
        else:
            self._update_flat_weights()  # torch.func.functional_call, parametrizations: as nn.RNN
            weights = self._flat_weights
        num_directions = 2 if self.bidirectional else 1
        orig_input = input
        # nn.RNN.forward's preamble, step by step: its checks in its order
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = batch_sizes[0]
            if hx is None:
                hx = torch.zeros(
                    self.num_layers * num_directions, max_batch_size, self.hidden_size,
                    dtype=input.dtype, device=input.device,
                )  # fmt: skip
            else:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            batch_sizes = None
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor"
                        )
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
            sorted_indices = unsorted_indices = None
            if hx is None:
                hx = torch.zeros(
                    self.num_layers * num_directions, max_batch_size, self.hidden_size,
                    dtype=input.dtype, device=input.device,
                )  # fmt: skip
        self.check_forward_args(input, hx, batch_sizes)
        if self._runs_triton(input, hx, weights):
            result = rnn_forward(
                input, hx, weights, self.bias, self.num_layers, self.dropout, self.training,
                self.bidirectional, self.batch_first, batch_sizes,
                nonlinearity=self.nonlinearity, backend="triton",
            )  # fmt: skip
        else:
            result = _aten_rnn(
                self.mode, input, hx, weights, self.bias, self.num_layers, self.dropout, self.training,
                self.bidirectional, self.batch_first, batch_sizes,
            )  # fmt: skip
        output, hidden = result[0], result[1]
        if isinstance(orig_input, PackedSequence):
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), self.permute_hidden(
                hidden, unsorted_indices
            )
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = hidden.squeeze(1)
        return output, hidden


_GATED_DOC = """``torch.nn.{cls}`` with the same constructor, checks, parameters, attributes, inputs and outputs.

    The forward is nn.{cls}'s own code (``nn.{cls}.forward``), so every check, error and shape is nn.{cls}'s.
    With ``backend="auto"`` or ``"torch"`` it runs PyTorch's ``aten::{op}``, bit for bit nn.{cls} at its speed.
    With ``backend="triton"`` the same code runs the fused kernels instead: per layer and direction one GEMM for
    the input half of every gate, then one `fused_rnn.{op}_scan` launch (every gate's W_hh on chip, the gates'
    pointwise math fused into the step; PackedSequence as a padded batch with per-row lengths). "auto" keeps
    PyTorch's op until the kernels have passed the compile gate and a GPU. Unlike nn.{cls}, the module
    compiles whole with ``torch.compile(fullgraph=True)`` (dynamo refuses every ``nn.RNNBase`` instance).

    Args:
        {args}
        backend: "auto", "torch" or "triton" (see above).

    Shapes (D = 2 if bidirectional else 1, L = num_layers{proj}):
        input: (T, B, input_size), (B, T, input_size) with batch_first, (T, input_size) unbatched, or a
        PackedSequence. {hx}
    """


class _KernelVF:
    """Stands in for ``torch._VF`` in copies of nn.LSTM.forward / nn.GRU.forward: nn's own code, nn's own
    arguments to ``_VF.lstm`` / ``_VF.gru``, the fused scans underneath."""

    @staticmethod
    def lstm(*args):
        return _vf_call("lstm", args)

    @staticmethod
    def gru(*args):
        return _vf_call("gru", args)


def _vf_call(cell: str, args: tuple):
    if isinstance(args[2], list):  # .input: input, hx, params, biases, layers, dropout, train, bidir, batch_first
        input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first = args
        batch_sizes = None
    else:  # .data: data, batch_sizes, hx, params, biases, layers, dropout, train, bidirectional
        input, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional = args
        batch_first = False
    if cell == "gru" and input.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # PyTorch's CPU autocast runs aten::gru in float32 (no CPU autocast rule for it; aten::lstm has one)
        with torch.autocast("cpu", enabled=False):
            return _vf_call(cell, args)
    return rnn_forward(
        input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first, batch_sizes,
        backend="triton", cell=cell,
    )  # fmt: skip


#: A module of its own for the copies below: torch.nn.modules.rnn's names with ``_VF`` bound to `_KernelVF`. A
#: real module (registered in sys.modules) so that dynamo's guards on these globals name it, not torch's own.
_KERNEL_GLOBALS = types.ModuleType("fused_rnn._nn_rnn_on_kernels")
_KERNEL_GLOBALS.__dict__.update(
    {k: v for k, v in vars(sys.modules[nn.LSTM.__module__]).items() if not k.startswith("__")},
    _VF=_KernelVF,
    __builtins__=vars(sys.modules[nn.LSTM.__module__])["__builtins__"],
)
sys.modules[_KERNEL_GLOBALS.__name__] = _KERNEL_GLOBALS


def _with_kernel_vf(fn):
    """fn's code with ``_VF`` bound to `_KernelVF`: the very same statements, the fused scans at the end."""
    return types.FunctionType(fn.__code__, _KERNEL_GLOBALS.__dict__, fn.__name__, fn.__defaults__, fn.__closure__)


_lstm_forward_kernels = _with_kernel_vf(nn.LSTM.forward)
_gru_forward_kernels = _with_kernel_vf(nn.GRU.forward)


class FusedLSTM(_FusedRNNBase):
    __doc__ = _GATED_DOC.format(
        cls="LSTM",
        op="lstm",
        args="input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size, device,\n"
        "        dtype: as for ``torch.nn.LSTM``, in its order, with its checks and messages.",
        proj=", H_out = proj_size or hidden_size",
        hx="hx: (h_0 (D*L, B, H_out), c_0 (D*L, B, hidden_size)),\n        2-D each unbatched; None for zeros. "
        "Returns output (T, B, D*H_out) and (h_n, c_n).",
    )
    _nn_class = nn.LSTM

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
    ) -> None:
        nn.Module.__init__(self)
        self._build(
            "LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
            device, dtype, backend,
        )  # fmt: skip
        if backend == "triton" and proj_size > 0:
            raise ValueError(
                "backend: 'triton' does not run proj_size > 0 yet; use 'auto' or 'torch' (PyTorch's own LSTM)"
            )

    # nn.LSTM's own: (h, c) pairs, the cell size check (no super() in any of them)
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def forward(self, input, hx=None):
        """nn.LSTM.forward: on PyTorch's op, or with backend="triton" on the fused kernels."""
        if self.backend == "triton" and not _exporting():
            return _lstm_forward_kernels(self, input, hx)
        return nn.LSTM.forward(self, input, hx)


class FusedGRU(_FusedRNNBase):
    __doc__ = _GATED_DOC.format(
        cls="GRU",
        op="gru",
        args="input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype: as\n"
        "        for ``torch.nn.GRU``, in its order, with its checks and messages (proj_size is refused as there).",
        proj="",
        hx="hx: (D*L, B, hidden_size), or (D*L, hidden_size) unbatched; None for\n        zeros. "
        "Returns output (T, B, D*hidden_size) and h_n.",
    )
    _nn_class = nn.GRU

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        if "proj_size" in kwargs:  # nn.GRU's own check, before any other
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        nn.Module.__init__(self)
        self._build("GRU", *_gru_arguments(*args, **kwargs), backend)

    def forward(self, input, hx=None):
        """nn.GRU.forward: on PyTorch's op, or with backend="triton" on the fused kernels."""
        if self.backend == "triton" and not _exporting():
            return _gru_forward_kernels(self, input, hx)
        return nn.GRU.forward(self, input, hx)


def _gru_arguments(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    device=None,
    dtype=None,
) -> tuple:
    """nn.GRU's positional order (nn.RNNBase's after mode: proj_size is the 8th) -> _build's arguments. A GRU has
    no projections: nn.GRU refuses proj_size as a keyword, and this refuses a non-zero positional one too."""
    if proj_size:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
    return input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype


def _exporting() -> bool:
    """Whether an ONNX export is tracing (either exporter): the modules then take PyTorch's path, whose aten ops
    become ONNX's own RNN / LSTM / GRU, which any ONNX runtime runs (a Triton kernel cannot travel in the file)."""
    return torch.onnx.is_in_onnx_export()


def _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout) -> None:
    """nn.RNNBase.__init__'s argument checks, in its order, with its exception types and messages."""
    if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
            f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
            stacklevel=3,
        )
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
    if not isinstance(input_size, int):
        raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
    if input_size <= 0:
        raise ValueError("input_size must be greater than zero")
    if not isinstance(hidden_size, int):
        raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")


def _aten_rnn(
    mode, input, hx, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first, batch_sizes
):
    """PyTorch's own RNN, called exactly as nn.RNN.forward calls it."""
    if batch_sizes is None:
        if mode == "RNN_TANH":
            return _VF.rnn_tanh(input, hx, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        return _VF.rnn_relu(input, hx, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    if mode == "RNN_TANH":
        return _VF.rnn_tanh(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, train, bidirectional)
    return _VF.rnn_relu(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, train, bidirectional)


def rnn_forward(
    input: Tensor,
    hx: Tensor,
    params: list[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
    batch_sizes: Tensor | None = None,
    *,
    nonlinearity: str = "tanh",
    backend: str = "auto",
    cell: str = "rnn",
) -> tuple[Tensor, ...]:
    """``aten::rnn_tanh`` / ``rnn_relu`` / ``lstm`` / ``gru`` on the fused scans: the ``.input`` overload, or
    ``.data`` with batch_sizes.

    input: (T, B, I) ((B, T, I) with batch_first), or with batch_sizes (T,) the packed data (N, I)
    in the packed (longest-first) order; hx (D*L, B, H), for cell "lstm" the pair (h_0, c_0); params: per
    layer and direction w_ih, w_hh[, b_ih, b_hh] (nn's ``_flat_weights``; no ``weight_hr``). Returns output
    (T, B, D*H) (as the input is laid out; packed data (N, D*H) with batch_sizes) and h_n (D*L, B, H), and for
    "lstm" c_n (D*L, B, H).
    """
    if batch_sizes is not None:
        # (T, B, I) and (B,) on the CPU, in the packed order: longest rows first, so each
        # 16-row block of the kernels holds rows of like length and stops at its own longest
        x, lengths = pad_packed_sequence(PackedSequence(input, batch_sizes))
    else:
        x, lengths = (input.transpose(0, 1) if batch_first else input), None
    if x.shape[0] == 0:
        raise RuntimeError(_NO_SEQUENCE)
    num_directions = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    # lengths stay on the CPU for packing (no device sync); the kernels get a copy on x's device
    lens = None if lengths is None else lengths.to(x.device, non_blocking=True)
    h0, c0 = hx if cell == "lstm" else (hx, None)
    h_n, c_n = [], []
    for layer in range(num_layers):
        outs = []
        for direction in range(num_directions):
            k = layer * num_directions + direction
            w_ih, w_hh, *biases = params[k * per : (k + 1) * per]
            reverse = direction == 1
            if cell == "lstm":
                u = F.linear(x, w_ih, biases[0] + biases[1] if biases else None)
                out, hn, cn = lstm_scan(u, w_hh, h0[k], c0[k], lengths=lens, reverse=reverse, backend=backend)
                c_n.append(cn)
            elif cell == "gru":
                # b_hr and b_hz fold into the input half; b_hn stays inside the reset product
                H = w_hh.shape[1]
                b_u = biases[0] + torch.cat([biases[1][: 2 * H], biases[1].new_zeros(H)]) if biases else None
                u = F.linear(x, w_ih, b_u)
                b_hn = biases[1][2 * H :] if biases else None
                out, hn = gru_scan(u, w_hh, b_hn, h0[k], lengths=lens, reverse=reverse, backend=backend)
            else:
                # the input half of every step in one GEMM; both biases fold into it
                u = F.linear(x, w_ih, biases[0] + biases[1] if biases else None)
                out, hn = rnn_scan(
                    u, w_hh, h0[k], lengths=lens, reverse=reverse, nonlinearity=nonlinearity, backend=backend
                )
            outs.append(out)
            h_n.append(hn)
        x = outs[0] if num_directions == 1 else torch.cat(outs, dim=-1)
        if dropout and train and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    if lengths is not None:
        x = pack_padded_sequence(x, lengths, enforce_sorted=True).data
    elif batch_first:
        x = x.transpose(0, 1)
    if cell == "lstm":
        return x, torch.stack(h_n), torch.stack(c_n)
    return x, torch.stack(h_n)
