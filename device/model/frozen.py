"""The frozen stage of a bundle: one shared onnxruntime session per bundle and thread count.

The session runs the bundle's graph after :func:`device.model.fastgraph.fast_graph` (in memory,
the file is untouched): average pools onnxruntime computes slowly become depthwise convolutions
where that is provably bit-exact, so the latents are the same bits, computed faster.

``FrozenStage.shared(bundle)`` returns the process-wide instance, so every node of a process
that uses the same bundle shares ONE session. ``run`` is safe to call from several threads at
once (onnxruntime's ``InferenceSession.run`` is thread-safe).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
import onnx

from device.model.bundle import ModelBundle
from device.model.errors import ExportError, ModelInputError
from device.model.fastgraph import fast_graph


def frozen_graph(bundle: ModelBundle) -> str | bytes:
    """The bundle's frozen graph as its session loads it: the file's path, or the bytes of
    :func:`~device.model.fastgraph.fast_graph`'s rewrite when it rewrote anything."""
    model = onnx.load(str(bundle.frozen_path))
    sample = bundle.input.normalize(np.zeros((1, *bundle.input_shape), bundle.input_dtype))
    fast = fast_graph(model, sample)
    return str(bundle.frozen_path) if fast is None else fast.SerializeToString()


class FrozenStage:
    """INT8 frozen stage: raw wire input ``[N, *input_shape]`` -> float32 ``[N, *lr_shape]``."""

    _cache: ClassVar[dict[tuple[str, int, int, int], FrozenStage]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, bundle: ModelBundle, *, threads: int = 1) -> None:
        import onnxruntime as ort

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.bundle = bundle
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:  # the graph file is read (and maybe rewritten) here: a bad one is an ExportError
            self._session = ort.InferenceSession(
                frozen_graph(bundle), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise ExportError(f"{bundle.frozen_path}: onnxruntime cannot load it: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        if bundle.lr_tensor not in outputs:
            raise ExportError(f"{bundle.frozen_path}: no output {bundle.lr_tensor!r} ({outputs})")

    @classmethod
    def shared(cls, bundle: ModelBundle, *, threads: int = 1) -> FrozenStage:
        """The process-wide stage for this bundle file (re-created if the file changed)."""
        st = bundle.frozen_path.resolve().stat()
        key = (str(bundle.frozen_path.resolve()), st.st_mtime_ns, st.st_size, threads)
        with cls._cache_lock:
            stage = cls._cache.get(key)
            if stage is None:
                stage = cls._cache[key] = cls(bundle, threads=threads)
            return stage

    def check_input(self, x: np.ndarray) -> None:
        """Raise :class:`ModelInputError` unless ``x`` is the wire dtype, ``[N, *input_shape]``."""
        b = self.bundle
        if x.ndim != len(b.input_shape) + 1 or x.shape[1:] != b.input_shape:
            raise ModelInputError(f"input shape {x.shape} is not [N, *{b.input_shape}]")
        if x.dtype != b.input_dtype:
            raise ModelInputError(f"input dtype {x.dtype} is not {b.input_dtype}")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise ModelInputError("input holds non-finite values")

    def run(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Latents float32 ``[N, *lr_shape]`` of raw input ``x`` (normalised here)."""
        self.check_input(x)
        b = self.bundle
        parts: list[Any] = []
        for i in range(0, len(x), batch_size):
            feed = {self._input: b.input.normalize(x[i : i + batch_size])}
            parts.append(self._session.run([b.lr_tensor], feed)[0])
        if not parts:
            return np.zeros((0, *b.lr_shape), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


__all__ = ["FrozenStage", "frozen_graph"]
