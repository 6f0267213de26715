"""ONNX: `torch.onnx.export` (the TorchScript-based and the dynamo-based exporter) of FusedRNN, FusedLSTM and
FusedGRU on every backend; onnxruntime reproduces the outputs. While an export traces, the modules take PyTorch's
path, whose aten ops become ONNX's own RNN / LSTM / GRU nodes (a Triton kernel cannot travel in the file)."""

import warnings

import numpy as np
import pytest
import torch

from fused_rnn import FusedGRU, FusedLSTM, FusedRNN

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.parametrize("cls", [FusedRNN, FusedLSTM, FusedGRU], ids=lambda c: c.__name__)
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_export_and_run_in_onnxruntime(cls, backend, dynamo, tmp_path):
    m = cls(3, 5, num_layers=2, bidirectional=True, batch_first=True, backend=backend).eval()
    x = torch.randn(2, 7, 3)
    h = torch.randn(4, 2, 5)
    hx = (h, torch.randn(4, 2, 5)) if cls is FusedLSTM else h
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' own notes (opset choices, torchvision missing)
        torch.onnx.export(m, (x, hx), str(path), dynamo=dynamo)
    nodes = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not any("scan" in n.lower() for n in nodes)  # no custom op in the file
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = [x, *(hx if isinstance(hx, tuple) else (hx,))]
    got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), feeds, strict=True)})
    with torch.no_grad():
        out, hn = m(x, hx)  # the module itself, on its backend (the kernels in the interpreter for "triton")
    want = [out, *(hn if isinstance(hn, tuple) else (hn,))]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)
