"""`convert_rnns`: swap every `torch.nn.RNN` of an existing model for a `FusedRNN` in one call."""

from __future__ import annotations

import warnings

from torch import nn
from torch.nn.utils import parametrize

from .rnn import FusedRNN

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
    """Replace every ``torch.nn.RNN`` inside `module`, `module` itself included, with a `FusedRNN`.

    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``'s convention: children are replaced in
    place and the converted module is returned, so convert the root with
    ``model = fused_rnn.convert_rnns(model)``. Each FusedRNN holds the very same Parameter
    objects (so the same device, dtype, requires_grad and values), buffers and hooks
    (``torch.nn.utils.weight_norm`` keeps working), and the same training mode. An nn.RNN
    reached twice (a shared submodule) becomes one FusedRNN reached twice.

    Only modules whose type is exactly ``nn.RNN`` are converted: ``nn.LSTM``, ``nn.GRU`` and
    subclasses of nn.RNN (whose own code FusedRNN would drop) are left as they are, and so is
    an nn.RNN with parametrizations (``torch.nn.utils.parametrize``), with a warning: convert
    first, then register parametrizations on the FusedRNN.

    Optimizer state is the caller's business: the parameters are the same objects, so an
    optimizer built before the conversion still steps them, but anything else keyed by the old
    modules (hooks held elsewhere, module references) still points at the nn.RNN.

    Args:
        module: any module.
        backend: the converted modules' `FusedRNN` backend ("auto", "triton" or "torch").

    Returns:
        `module` with its nn.RNNs replaced, or a new FusedRNN when `module` is an nn.RNN.
    """
    return _convert(module, backend, {})


def _convert(module: nn.Module, backend: str, done: dict[int, nn.Module]) -> nn.Module:
    if id(module) in done:
        return done[id(module)]
    out = module
    if type(module) is nn.RNN:
        out = _from_nn_rnn(module, backend)
    elif isinstance(module, nn.RNN) and parametrize.is_parametrized(module):
        warnings.warn(
            f"fused_rnn.convert_rnns: {type(module).__name__} has parametrizations and was left as an nn.RNN; "
            "convert the model first, then register parametrizations on the FusedRNN",
            stacklevel=3,
        )
    done[id(module)] = out
    for name, child in module.named_children():
        out.add_module(name, _convert(child, backend, done))
    return out


def _from_nn_rnn(rnn: nn.RNN, backend: str) -> FusedRNN:
    """A FusedRNN holding rnn's parameters, buffers, other weight attributes, hooks and training mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nn.RNN already warned about dropout with one layer
        fused = FusedRNN(
            rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.nonlinearity, rnn.bias, rnn.batch_first,
            rnn.dropout, rnn.bidirectional, device="meta", backend=backend,
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
