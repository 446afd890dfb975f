"""The wire between the grader and a sandboxed submission: frames and a plain-data encoding.

Both sides import this module. The sandbox *encodes* what the student's code returned; the
trusted grader *decodes* it and never unpickles anything that came out of the sandbox. The
encoding holds only plain values (None, bool, int, float, str, bytes, lists, tuples, dicts,
fractions),
NumPy arrays and PyTorch tensors as raw bytes with a whitelisted dtype, and references:
``["ref", k]`` (object number k of the call's own arguments) and ``["h", id, type, repr]``
(an object that stays in the sandbox and is reached through a handle).

A frame is an 8-byte length, a 4-byte header length, a JSON header and the binary blobs it
names. Frames and what they decode to are size-capped, so a hostile sandbox can cost the
grader neither unbounded memory nor a crash: at worst a :class:`WireError` (whatever went
wrong while reading or decoding: ``json`` errors, ``RecursionError``, a bad dtype...).

Strings: a JSON header may carry lone surrogates (``"\\ud800"``), which no UTF-8 file can hold;
:func:`read_frame` and :class:`Decoder` replace each with U+FFFD (the Unicode replacement
character), so nothing downstream (CSV, reports, notebooks) can fail on them. Blobs: every
reference to one blob shares one buffer (tensors and arrays are views of it; a ``bytes`` value
is the blob itself), so decoding a reply materialises each blob at most twice (once as a
buffer, once as bytes), however often it is referenced.

Grader-side objects (``dropout_course.checks.boundary``) travel as stand-ins: calling one in the
sandbox goes through :data:`CALLBACK` (installed by the runner), which asks the grader to run the
real object and waits for its result.
"""

from __future__ import annotations

import fractions
import json
import os
import re
import struct
from collections.abc import Callable
from typing import Any

MAX_FRAME = 1 << 30
MAX_DEPTH = 64
MAX_TEXT = 1 << 20
#: How every error about what the other side sent begins (a grader's message, too).
MALFORMED = "the reply was malformed: "
ARRAY_KINDS = frozenset("biufc")
TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128",
                "uint8", "int8", "int16", "int32", "int64", "bool")


class WireError(Exception):
    """A frame or an encoded value broke the protocol (truncated, too big, malformed)."""


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (valid pairs were already joined
    by the JSON decoder)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _clean(value: Any) -> Any:
    """Replace lone surrogates in every string (keys too) of a decoded JSON value, iteratively
    (a deep value must not cost a RecursionError)."""
    if isinstance(value, str):
        return clean_text(value)
    root = [value]
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            for i, v in enumerate(item):
                if isinstance(v, str):
                    item[i] = clean_text(v)
                elif isinstance(v, (list, dict)):
                    stack.append(v)
        else:
            for k in list(item):
                v = item[k]
                if isinstance(k, str) and _SURROGATE.search(k):
                    del item[k]
                    k = clean_text(k)  # noqa: PLW2901  (the cleaned key replaces the old one)
                if isinstance(v, str):
                    v = clean_text(v)
                elif isinstance(v, (list, dict)):
                    stack.append(v)
                item[k] = v
    return root[0]


# --------------------------------------------------------------------------- frames

def write_frame(fd: int, header: dict[str, Any], blobs: list[bytes] = ()) -> None:
    """Write one frame (header plus blobs) to the file descriptor ``fd``."""
    head = dict(header)
    head["_blobs"] = [len(b) for b in blobs]
    text = json.dumps(head, allow_nan=True).encode("utf-8")
    payload = [struct.pack("<QI", 4 + len(text) + sum(len(b) for b in blobs), len(text)), text,
               *blobs]
    data = memoryview(b"".join(payload))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 22))
        if not chunk:
            raise WireError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(source: int | Any, limit: int = MAX_FRAME) -> tuple[dict[str, Any], list[bytes]]:
    """Read one frame: ``(header, blobs)``. ``source`` is a file descriptor or a function
    ``read(n) -> n bytes``. Raises :class:`WireError`."""
    read = (lambda n: read_exactly(source, n)) if isinstance(source, int) else source
    total, head_len = struct.unpack("<QI", read(12))
    if total > limit or head_len > total - 4 or head_len > MAX_TEXT * 8:
        raise WireError(f"{MALFORMED}frame of {total} bytes is over the limit")
    text = read(head_len)
    try:
        header = json.loads(text.decode("utf-8"))
        if _SURROGATE_ESCAPE.search(text):
            header = _clean(header)
    except Exception as err:
        raise WireError(f"{MALFORMED}unreadable frame header ({type(err).__name__}: "
                        f"{str(err)[:200]})") from None
    sizes = header.pop("_blobs", []) if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(sizes, list) or not all(
            isinstance(s, int) and s >= 0 for s in sizes) or sum(sizes) != total - 4 - head_len:
        raise WireError(f"{MALFORMED}malformed frame header")
    return header, [read(s) for s in sizes]


# --------------------------------------------------------------------------- encoding (sandbox)

class Encoder:
    """Turn a value into plain JSON nodes plus blobs (used inside the sandbox).

    ``refs`` maps ``id(obj)`` to a reference number for objects the caller already knows
    (the call's arguments); ``make_handle(obj)`` keeps any other object in the sandbox and
    returns its handle number.
    """

    def __init__(self, refs: dict[int, int] | None = None, make_handle: Any = None) -> None:
        self.blobs: list[bytes] = []
        self.refs = refs or {}
        self.make_handle = make_handle
        self.notes: list[str] = []

    def blob(self, data: bytes) -> int:
        self.blobs.append(bytes(data))
        return len(self.blobs) - 1

    def encode(self, value: Any, depth: int = 0) -> Any:  # noqa: PLR0911
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        if id(value) in self.refs and not isinstance(value, (bool, int, float, str, type(None))):
            return ["ref", self.refs[id(value)]]
        kind = type(value)
        if value is None:
            return ["n"]
        if kind is bool:
            return ["b", value]
        if kind is int:
            return ["i", value]
        if kind is float:
            return ["f", value]
        if kind is str:
            return ["s", value]
        if kind in (bytes, bytearray):
            return ["y", self.blob(value)]
        if kind in (list, tuple):
            return ["l" if kind is list else "u", [self.encode(v, depth + 1) for v in value]]
        if kind is dict:
            return ["d", [[self.encode(k, depth + 1), self.encode(v, depth + 1)]
                          for k, v in value.items()]]
        if kind is fractions.Fraction:  # an exact numeric answer (checks.questions)
            return ["fr", value.numerator, value.denominator]
        encoded = self._encode_library(value, depth)
        if encoded is not None:
            return encoded
        if kind in (set, frozenset):
            return ["u", [self.encode(v, depth + 1) for v in value]]
        return self._handle(value)

    def _encode_library(self, value: Any, depth: int) -> Any:  # noqa: PLR0911
        import numpy as np

        torch = _torch()
        if isinstance(value, np.ndarray):
            if type(value) is not np.ndarray:
                self.notes.append(f"returned an ndarray subclass ({type(value).__name__})")
            arr = np.asarray(value)
            if arr.dtype.kind not in ARRAY_KINDS:
                return self._handle(value)
            arr = np.ascontiguousarray(arr)
            return ["a", self.blob(arr.tobytes()), arr.dtype.str, list(arr.shape)]
        if isinstance(value, np.generic) and np.dtype(type(value)).kind in ARRAY_KINDS:
            return ["ns", np.dtype(type(value)).str, self.encode(value.item(), depth + 1)]
        if torch is not None:
            if isinstance(value, torch.Tensor):
                return self._tensor(value, torch)
            if isinstance(value, torch.dtype):
                return ["dt", str(value).removeprefix("torch.")]
            if isinstance(value, torch.device):
                return ["dev", str(value)]
            if isinstance(value, torch.Size):
                return ["sz", [int(v) for v in value]]
        return None

    def _tensor(self, value: Any, torch: Any) -> list[Any]:
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            self.notes.append(f"returned a tensor subclass ({type(value).__name__})")
        plain = torch.Tensor._make_subclass(torch.Tensor, value.detach()) if type(value) not in (
            torch.Tensor, torch.nn.Parameter) else value.detach()
        dtype = str(plain.dtype).removeprefix("torch.")
        if dtype not in TORCH_DTYPES or plain.layout != torch.strided:
            return self._handle(value)
        cpu = plain.to("cpu").contiguous()
        raw = cpu.view(torch.int16) if dtype == "bfloat16" else cpu
        data = raw.numpy().tobytes() if raw.numel() else b""
        return ["t", self.blob(data), dtype, list(cpu.shape), str(plain.device),
                bool(value.requires_grad), isinstance(value, torch.nn.Parameter)]

    def _handle(self, value: Any) -> list[Any]:
        if self.make_handle is None:
            raise WireError(f"cannot send a {type(value).__name__}")
        try:
            text = repr(value)
        except Exception:
            text = f"<{type(value).__name__} object>"
        return ["h", self.make_handle(value), type(value).__name__, text[:2000]]


def _torch() -> Any:
    import sys

    return sys.modules.get("torch")


# --------------------------------------------------------------------------- decoding (grader)

class _HandleError(Exception):
    """Carries an error of the decoder's ``handle`` function out of the decoding."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Decoder:
    """Rebuild plain values from nodes and blobs (used by the trusted grader).

    ``refs`` maps reference numbers to the grader's own objects; ``handle(hid, type, repr)``
    builds the grader-side stand-in for an object that stays in the sandbox.
    """

    def __init__(self, blobs: list[bytes], refs: dict[int, Any] | None = None,
                 handle: Any = None) -> None:
        self.blobs = blobs
        self.refs = refs or {}
        self.handle = handle
        self._buffers: dict[int, bytearray] = {}
        self._moved: dict[tuple[int, str, str], Any] = {}
        self._bytes: dict[int, bytes] = {}

    def decode(self, node: Any, depth: int = 0) -> Any:
        """The value ``node`` stands for. Raises :class:`WireError` for anything wrong with the
        value (whatever the error underneath); an error raised by ``handle`` passes through
        unchanged."""
        if depth:
            return self._decode(node, depth)
        try:
            return self._decode(node, 0)
        except _HandleError as wrapped:
            raise wrapped.error from None
        except WireError:
            raise
        except Exception as err:
            raise WireError(f"malformed value ({type(err).__name__}: {str(err)[:200]})"
                            ) from None

    def _decode(self, node: Any, depth: int = 0) -> Any:  # noqa: PLR0911
        if depth > MAX_DEPTH or not isinstance(node, list) or not node:
            raise WireError("malformed value")
        tag, args = node[0], node[1:]
        if tag == "n":
            return None
        if tag in ("b", "i", "f", "s"):
            value = args[0]
            wanted = {"b": bool, "i": int, "f": float, "s": str}[tag]
            if tag == "f" and type(value) is int:
                value = float(value)
            if type(value) is not wanted or (tag == "s" and len(value) > MAX_TEXT):
                raise WireError(f"malformed {wanted.__name__}")
            return clean_text(value) if tag == "s" else value
        if tag == "y":
            data = self._blob(args[0])
            if type(data) is not bytes:  # the blob is already a shared buffer: one copy, once
                if args[0] not in self._bytes:
                    self._bytes[args[0]] = bytes(data)
                data = self._bytes[args[0]]
            return data
        if tag in ("l", "u"):
            items = [self._decode(v, depth + 1) for v in self._list(args[0])]
            return items if tag == "l" else tuple(items)
        if tag == "d":
            out = {}
            for pair in self._list(args[0]):
                if len(self._list(pair)) != 2:
                    raise WireError("malformed dict item")
                key, value = pair
                out[self._decode(key, depth + 1)] = self._decode(value, depth + 1)
            return out
        if tag == "fr":
            numerator, denominator = args
            if type(numerator) is not int or type(denominator) is not int or denominator <= 0:
                raise WireError("malformed fraction")
            return fractions.Fraction(numerator, denominator)
        if tag == "a":
            return self._array(*args)
        if tag == "ns":

            dtype = self._dtype(args[0])
            return dtype.type(self._decode(args[1], depth + 1))
        if tag in ("t", "dt", "dev", "sz"):
            return self._torch_value(tag, args)
        if tag == "ref":
            if args[0] not in self.refs:
                raise WireError("reference to an unknown object")
            return self.refs[args[0]]
        if tag == "h" and self.handle is not None:
            hid, type_name, text = args
            if not (type(hid) is int and isinstance(type_name, str) and isinstance(text, str)):
                raise WireError("malformed handle")
            try:
                return self.handle(hid, type_name[:200], clean_text(text[:2000]))
            except Exception as err:
                raise _HandleError(err) from err
        raise WireError(f"unknown value tag {tag!r}")

    @staticmethod
    def _list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise WireError("malformed list")
        return value

    def _blob(self, index: Any) -> bytes:
        if type(index) is not int or not 0 <= index < len(self.blobs):
            raise WireError("reference to a missing blob")
        return self.blobs[index]

    def _buffer(self, index: Any) -> bytearray:
        """Blob ``index`` as one writable buffer, shared by every reference to it: made once,
        and the blob list then holds the buffer instead of the bytes (no second copy lives)."""
        data = self._blob(index)
        if index not in self._buffers:
            self._buffers[index] = data if isinstance(data, bytearray) else bytearray(data)
            if isinstance(self.blobs, list):
                self.blobs[index] = self._buffers[index]
        return self._buffers[index]

    @staticmethod
    def _dtype(text: Any) -> Any:
        import numpy as np

        try:
            dtype = np.dtype(text) if isinstance(text, str) and len(text) < 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in ARRAY_KINDS:
            raise WireError(f"refused dtype {text!r}")
        return dtype

    @staticmethod
    def _shape(shape: Any) -> tuple[int, ...]:
        if not isinstance(shape, list) or len(shape) > 32 or not all(
                type(s) is int and s >= 0 for s in shape):
            raise WireError("malformed shape")
        return tuple(shape)

    def _array(self, index: Any, dtype_text: Any, shape: Any) -> Any:
        import numpy as np

        dtype, shape = self._dtype(dtype_text), self._shape(shape)
        data = self._blob(index)
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise WireError("array size does not match its shape")
        return np.frombuffer(self._buffer(index), dtype=dtype).reshape(shape)

    def _torch_value(self, tag: str, args: list[Any]) -> Any:
        import torch

        if tag == "dt":
            if args[0] not in TORCH_DTYPES:
                raise WireError(f"refused dtype {args[0]!r}")
            return getattr(torch, args[0])
        if tag == "dev":
            return torch.device(_device_text(args[0]))
        if tag == "sz":
            return torch.Size(self._shape(args[0]))
        index, dtype, shape, device, requires_grad, is_param = args
        return self.tensor(index, dtype, shape, device, requires_grad, is_param)

    def tensor(self, index: Any, dtype: Any, shape: Any, device: Any, requires_grad: Any,
               is_param: Any) -> Any:
        import numpy as np
        import torch

        if dtype not in TORCH_DTYPES or type(requires_grad) is not bool:
            raise WireError(f"refused tensor dtype {dtype!r}")
        shape, data = self._shape(shape), self._blob(index)
        real = torch.int16 if dtype == "bfloat16" else getattr(torch, dtype)
        itemsize = torch.empty((), dtype=real).element_size()
        if len(data) != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise WireError("tensor size does not match its shape")
        target = torch.device(_device_text(device))
        key = (index, str(real), str(target))
        if not data:
            flat = torch.empty(0, dtype=real, device=target)
        elif key in self._moved:  # one copy per blob and device, however often referenced
            flat = self._moved[key]
        else:
            flat = torch.frombuffer(self._buffer(index), dtype=real)
            if target.type != "cpu":
                flat = self._moved.setdefault(key, flat.to(target))
        out = flat.view(shape)
        if dtype == "bfloat16":
            out = out.view(torch.bfloat16)
        if is_param is True:
            return torch.nn.Parameter(out, requires_grad=requires_grad)
        return out.requires_grad_(requires_grad) if out.is_floating_point() or \
            out.is_complex() else out


def _device_text(text: Any) -> str:
    cuda_n = isinstance(text, str) and text.startswith("cuda:") and text[5:].isdigit()
    if not isinstance(text, str) or not (text in {"cpu", "cuda"} or cuda_n):
        raise WireError(f"refused device {text!r}")
    return text


# --------------------------------------------------------------------------- unpickling (sandbox)

def rebuild_tensor(data: bytes, dtype: str, shape: list[int], device: str, requires_grad: bool,
                   is_param: bool) -> Any:
    """Rebuild a tensor the grader pickled into the sandbox (the grader's tensor reducer)."""
    import torch

    real = torch.int16 if dtype == "bfloat16" else getattr(torch, dtype)
    flat = torch.frombuffer(bytearray(data), dtype=real) if data else torch.empty(0, dtype=real)
    out = flat.reshape(shape)
    out = out.view(torch.bfloat16) if dtype == "bfloat16" else out
    out = out.to(device)
    if is_param:
        return torch.nn.Parameter(out, requires_grad)
    return out.requires_grad_(requires_grad) if requires_grad else out


def main_attribute(name: str) -> Any:
    """The object the student's notebook defined as ``name`` (a function passed as argument)."""
    import __main__

    return getattr(__main__, name)


# --------------------------------------------------------------------------- random state

def get_rng() -> dict[str, Any]:
    """The global random state of Python, NumPy and PyTorch (CPU, and CUDA once initialised):
    sent with every call so that a seed set on one side governs the code on the other."""
    import random

    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state()),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng(state: Any) -> dict[str, Any]:
    """Install a state made by :func:`get_rng` (or the parts of one it holds), checking its
    types (it may come from the sandbox); return the parts installed, as :func:`get_rng` would
    now show them. Raises :class:`WireError` or ``TypeError``/``ValueError`` on a malformed
    one."""
    import random

    import numpy as np
    import torch

    if not isinstance(state, dict):
        raise WireError("malformed random state")
    installed: dict[str, Any] = {}
    if "torch" in state:
        installed["torch"] = state["torch"].to(torch.uint8).clone()
        torch.set_rng_state(installed["torch"])
    if "numpy" in state:
        numpy_state = state["numpy"]
        installed["numpy"] = [str(numpy_state[0]), np.array(numpy_state[1], dtype=np.uint32),
                              int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])]
        np.random.set_state(tuple(installed["numpy"]))
    if "python" in state:
        python = state["python"]
        installed["python"] = (int(python[0]), tuple(int(v) for v in python[1]),
                               None if python[2] is None else float(python[2]))
        random.setstate(installed["python"])
    if "cuda" in state and torch.cuda.is_available():
        installed["cuda"] = [s.to(torch.uint8).clone() for s in state["cuda"]]
        torch.cuda.set_rng_state_all(installed["cuda"])
    return installed


RNG_PARTS = frozenset({"torch", "numpy", "python", "cuda"})


def _same_part(a: Any, b: Any) -> bool:
    """Whether two values of one part of :func:`get_rng` are the same state: tensors and
    arrays by value, anything else (Python's state: nested tuples of numbers) by ``==``."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and \
            a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and \
            a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, list) and isinstance(b, list):  # NumPy's state, CUDA's list of tensors
        return len(a) == len(b) and all(_same_part(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


class RngSync:
    """The global random state (:func:`get_rng`) kept in step across the wire by sending only
    what changed.

    Each side holds one of these per channel. Every message that carries a random state
    carries :meth:`outgoing` (the parts that differ from the last state both sides agreed on)
    and the receiver applies it with :meth:`incoming` (the parts not sent are taken from that
    agreed state), so each message has the same effect as sending the whole state, which it did
    before: a seed set on one side still governs the code on the other. Why not send it whole:
    Python's state is 625 integers, which cost more than the call itself (about 1 ms a call
    on both sides, over a thousand calls for one submission). Both sides start with no agreed
    state, so the first message is whole."""

    def __init__(self) -> None:
        self.synced: dict[str, Any] | None = None

    def outgoing(self) -> dict[str, Any]:
        """The parts of this side's state that changed since the last agreed state, which
        becomes this side's whole state now."""
        now = get_rng()
        agreed = self.synced
        self.synced = now
        if agreed is None:
            return now
        return {k: v for k, v in now.items() if k not in agreed or not _same_part(v, agreed[k])}

    def incoming(self, delta: Any) -> None:
        """Install the agreed state updated by ``delta`` (what the other side's
        :meth:`outgoing` sent; it may come from the sandbox). Raises :class:`WireError` or
        ``TypeError``/``ValueError``/``KeyError`` on a malformed one, like :func:`set_rng`."""
        if not isinstance(delta, dict) or not set(delta) <= RNG_PARTS:
            raise WireError("malformed random state")
        agreed, now = self.synced or {}, get_rng()
        # Parts not sent are the agreed ones; they are set again only where they drifted here
        # (code that ran between messages, a cell say, drew from them).
        state = {k: v for k, v in agreed.items() if k not in delta and not (
            k in now and _same_part(now[k], v))}
        self.synced = {**now, **set_rng({**state, **delta})}


# --------------------------------------------------------------------------- grader-side objects

#: Installed by the runner inside the sandbox: ``CALLBACK(token, name, args, kwargs)`` asks the
#: grader to run its object ``token`` (for a model: its submodule ``name``) and returns the
#: result or raises the error the grader reports.
CALLBACK: Callable[[int, str, tuple, dict], Any] | None = None
#: (token, submodule name, the sandbox's copy) of every grader-run module copy made here.
GRADER_MODULES: list[tuple[int, str, Any]] = []


class GraderStandIn:
    """In the sandbox, the stand-in for a grader-side object: calling it calls the real one."""

    def __init__(self, token: int, name: str) -> None:
        self._token = token
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if CALLBACK is None:
            raise RuntimeError(f"{self.__name__} can only be called while grading")
        return CALLBACK(self._token, "", args, kwargs)

    def __repr__(self) -> str:
        return f"<grader-side {self.__name__}>"


def grader_stand_in(token: int, name: str) -> GraderStandIn:
    """Unpickling hook (sandbox side) for a grader-side object."""
    return GraderStandIn(token, str(name)[:200])


def grader_module(cls: type, token: int, name: str) -> Any:
    """Unpickling hook (sandbox side) for a module of a grader-run model: a real, empty instance
    of ``cls`` (pickle then sets its state) whose forward asks the grader to run its own."""
    module = cls.__new__(cls)
    GRADER_MODULES.append((token, name, module))
    return module


def install_forwards() -> None:
    """Give every grader-run module copy made since the last call a forward that calls back
    (after unpickling: its state, set by pickle, must not overwrite the forward)."""
    for token, name, module in GRADER_MODULES:
        if "forward" not in vars(module):
            object.__setattr__(module, "forward", _forward(token, name))


def _forward(token: int, name: str) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        if CALLBACK is None:
            raise RuntimeError("this model can only be called while grading")
        return CALLBACK(token, name, args, kwargs)

    return forward


def grader_modes(token: int) -> list[list[Any]]:
    """[[submodule name, training flag], ...] of the copies of grader-run model ``token``."""
    return [[name, bool(module.training)] for t, name, module in GRADER_MODULES if t == token]
