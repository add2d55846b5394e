"""Reading a PyTorch ``.pth`` state dict of the legacy (non-zip) format into NumPy arrays,
without PyTorch: the file is three small pickles (magic, protocol, system info), the
state dict pickled with storages as persistent ids, the list of storage keys, then
each storage's raw bytes preceded by its element count. Only plain tensors of the
standard storage types are accepted; any other global in the pickle is refused, so
reading a file never runs code from it."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


class _Storage:
    def __init__(self, dtype: Any, key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any,
                    *_: Any) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _DTYPES:
            return name
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a weights file")

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__(handle)
        self.storages: dict[str, _Storage] = {}

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, numel, _view = pid
        if kind != "storage" or storage_type not in _DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage {storage_type!r}")
        storage = _Storage(_DTYPES[storage_type], str(key), int(numel))
        return self.storages.setdefault(storage.key, storage)


def load_state_dict(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a legacy-format ``.pth`` state dict, by name."""
    with path.open("rb") as handle:
        for _ in range(3):  # magic number, protocol version, system info
            _StateUnpickler(handle).load()
        unpickler = _StateUnpickler(handle)
        state = unpickler.load()
        keys = _StateUnpickler(handle).load()
        storages: dict[str, bytes] = {}
        for key in keys:  # each: its element count (int64), then its bytes
            storage = unpickler.storages[str(key)]
            numel = int.from_bytes(handle.read(8), "little")
            storages[str(key)] = handle.read(numel * np.dtype(storage.dtype).itemsize)
    found: dict[str, npt.NDArray[Any]] = {}
    for name, ref in state.items():
        raw = storages[ref.storage.key]
        flat = np.frombuffer(raw, dtype=ref.storage.dtype)
        item = flat.itemsize
        found[name] = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size,
            strides=tuple(s * item for s in ref.stride)).copy()
    return found
