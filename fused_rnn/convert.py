"""`convert_rnns`: swap every `torch.nn.RNN`, `nn.LSTM` and `nn.GRU` of an existing model for a `FusedRNN`,
`FusedLSTM` and `FusedGRU` in one call."""

from __future__ import annotations

import warnings

from torch import nn
from torch.nn.utils import parametrize

from .rnn import FusedGRU, FusedLSTM, FusedRNN

#: the nn classes converted (exactly these types) and what each becomes
_FUSED = {nn.RNN: FusedRNN, nn.LSTM: FusedLSTM, nn.GRU: FusedGRU}

#: per-module state that follows an nn.RNN into its FusedRNN: hooks (weight_norm's pre-hook among them)
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def convert_rnns(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace every ``torch.nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` inside `module`, `module` itself included, with
    a `FusedRNN`, `FusedLSTM` and `FusedGRU`.

    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``'s convention: children are replaced in
    place and the converted module is returned, so convert the root with
    ``model = fused_rnn.convert_rnns(model)``. Each converted module holds the very same Parameter
    objects (so the same device, dtype, requires_grad and values), buffers and hooks
    (``torch.nn.utils.weight_norm`` keeps working), and the same training mode. A module
    reached twice (a shared submodule) becomes one fused module reached twice.

    Only modules whose type is exactly ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` are converted:
    subclasses (whose own code the fused module would drop) are left as they are, and so is
    one with parametrizations (``torch.nn.utils.parametrize``), with a warning: convert
    first, then register parametrizations on the fused module.

    Optimizer state is the caller's business: the parameters are the same objects, so an
    optimizer built before the conversion still steps them, but anything else keyed by the old
    modules (hooks held elsewhere, module references) still points at the nn.RNN.

    Args:
        module: any module.
        backend: the converted modules' backend ("auto", "triton" or "torch"). An LSTM with proj_size gets
            "auto" (PyTorch's own op) for "triton", with a warning: the kernels do not run projections yet.

    Returns:
        `module` with its recurrent modules replaced, or a new fused module when `module` is one.
    """
    if backend == "triton" and any(type(m) is nn.LSTM and m.proj_size for m in module.modules()):
        warnings.warn(
            "fused_rnn.convert_rnns: backend='triton' does not run LSTM's proj_size yet: LSTMs with proj_size > 0 "
            "get backend='auto' (PyTorch's own LSTM)",
            stacklevel=2,
        )
    return _convert(module, backend, {})


def _convert(module: nn.Module, backend: str, done: dict[int, nn.Module]) -> nn.Module:
    if id(module) in done:
        return done[id(module)]
    out = module
    kind = type(module)
    if kind in _FUSED:
        out = _from_nn_rnn(module, backend)
    elif isinstance(module, tuple(_FUSED)) and parametrize.is_parametrized(module):
        base = next(c for c in _FUSED if isinstance(module, c))  # parametrize made a subclass of it
        warnings.warn(
            f"fused_rnn.convert_rnns: {kind.__name__} has parametrizations and was left as an nn.{base.__name__}; "
            f"convert the model first, then register parametrizations on the {_FUSED[base].__name__}",
            stacklevel=3,
        )
    done[id(module)] = out
    for name, child in module.named_children():
        out.add_module(name, _convert(child, backend, done))
    return out


def _from_nn_rnn(rnn: nn.RNNBase, backend: str) -> nn.Module:
    """The fused module holding rnn's parameters, buffers, other weight attributes, hooks and training mode."""
    kw = {"nonlinearity": rnn.nonlinearity} if type(rnn) is nn.RNN else {}
    if rnn.proj_size:
        kw["proj_size"] = rnn.proj_size
    if rnn.proj_size and backend == "triton":
        backend = "auto"  # convert_rnns said so once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nn.RNN already warned about dropout with one layer
        fused = _FUSED[type(rnn)](
            rnn.input_size, rnn.hidden_size, rnn.num_layers, bias=rnn.bias, batch_first=rnn.batch_first,
            dropout=rnn.dropout, bidirectional=rnn.bidirectional, device="meta", backend=backend, **kw,
        )  # fmt: skip
    for name in fused._flat_weights_names:
        if name not in rnn._parameters:
            delattr(fused, name)  # e.g. weight_norm made it a plain attribute computed by a pre-hook
            if name in rnn.__dict__:
                setattr(fused, name, rnn.__dict__[name])
    for name, p in rnn._parameters.items():
        fused.register_parameter(name, p)
    for name, b in rnn._buffers.items():
        fused.register_buffer(name, b, persistent=name not in rnn._non_persistent_buffers_set)
    for attr in _HOOK_DICTS:
        if attr in rnn.__dict__:
            fused.__dict__[attr] = rnn.__dict__[attr]  # shared: the old handles still remove them
    fused._init_flat_weights()
    fused.train(rnn.training)
    return fused
