"""ONNX Runtime as an inference engine: exporting a version's model (encoder and head as one
graph: token ids and mask in, the head's output out), quantising it to int8, and running it
where serving expects a PyTorch module (`OrtModel(input_ids=…, attention_mask=…)` -> tensor)."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import torch

log = logging.getLogger("flywheel.onnx")

OPSET = 17
INPUTS = ("input_ids", "attention_mask")


def export_onnx(model: torch.nn.Module, dst: Path) -> Path:
    """Export the fp32 model with batch and sequence length free (TorchScript exporter: it needs
    no extra packages and handles the BERT-like encoders we serve)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().cpu()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    out = model(ids, mask)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "output": {0: "batch"} if out.dim() == 2 else {0: "batch", 1: "tokens"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, mask), str(dst), input_names=list(INPUTS), output_names=["output"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return dst


def quantize_onnx(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation, one scale per output channel (per tensor loses accuracy on
    these encoders, as it does in PyTorch: see engine.prepare_for_inference)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _QuietThisThread()  # it advises pre-processing on the root logger, every time
    root.addFilter(quiet)
    try:
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(quiet)
    return dst


class _QuietThisThread(logging.Filter):
    """Drops the root logger's records below ERROR from the thread that made it, and nothing else:
    lowering the root logger's level instead silenced every other thread's INFO lines meanwhile
    (a worker's "claimed run" among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread or record.levelno >= logging.ERROR


def providers_for(device: torch.device) -> list[str]:
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OrtModel:
    """An ONNX Runtime session that serving calls like the PyTorch model it was made from.

    Threads: as many intra-op threads as torch uses in this process (FLYWHEEL_TORCH_THREADS,
    or torch's default), one inter-op thread: serving runs one forward at a time."""

    def __init__(self, path: Path, device: torch.device) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=providers_for(device))
        self.path = path

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def eval(self) -> "OrtModel":
        return self
