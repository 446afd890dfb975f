"""Grader-side stand-ins for what a student defined: the checks run here, the code runs there.

A test cell runs in the trusted grader with each name the student defined replaced by a proxy:

* a function becomes :class:`RemoteFunction`: calling it pickles the arguments *into* the
  sandbox (the grader's objects are trusted), runs the student's function there, and decodes the
  reply as plain data (``wire.py``). What the call did to its arguments (a tensor modified in
  place, a model's modes, a generator's state, an appended list) is copied back onto the
  grader's own objects, so checks see exactly what they would see in one process;
* a class becomes a proxy class; an instance that is a ``torch.nn.Module`` becomes a mirror
  module here whose parameters, buffers, modes and plain attributes follow the sandbox's copy,
  and whose forward runs in the sandbox (with autograd across the boundary);
* any other object stays in the sandbox behind a :class:`RemoteObject` handle.

The global random state (Python, NumPy, PyTorch CPU and CUDA) travels with every call, so
``torch.manual_seed`` in a check governs the student's code as it would in one process.
"""

from __future__ import annotations

import builtins
import io
import pickle
from typing import Any

import numpy as np
import torch

from autograder.engine import wire
from autograder.engine.sandbox import Sandbox, SandboxGone

SAFE_ERRORS = {name: getattr(builtins, name) for name in (
    "ValueError", "TypeError", "RuntimeError", "NotImplementedError", "IndexError", "KeyError",
    "ZeroDivisionError", "AssertionError", "AttributeError", "ArithmeticError", "OverflowError",
    "LookupError", "NameError", "UnboundLocalError", "RecursionError", "MemoryError",
    "FloatingPointError", "UnicodeError", "OSError", "ImportError", "StopIteration",
    "Exception")}


class ProtocolViolation(SandboxGone):
    """The sandbox replied with something that is not a valid answer."""

    def __init__(self, detail: str) -> None:
        super().__init__("protocol", detail)


class Session:
    """The grader's side of one running sandbox: calls, handles and mirrors."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.calls = 0
        self.mirrors: dict[int, RemoteModule] = {}
        self.objects: dict[int, RemoteObject] = {}
        self.notes: list[str] = []
        self.errors: list[str] = []

    # ----------------------------------------------------------------- requests

    def request(self, header: dict[str, Any], blobs: list[bytes] = ()) -> tuple[dict, list]:
        return self.sandbox.request(header, list(blobs))

    def call(self, target: list[Any], args: tuple, kwargs: dict, owner: Any = None,
             instance_class: type | None = None) -> Any:
        """Run ``target(*args, **kwargs)`` in the sandbox; return the decoded result."""
        self.calls += 1
        payload = {"args": tuple(args), "kwargs": dict(kwargs), "rng": wire.get_rng(),
                   "self_state": owner._remote_state() if owner is not None else None}
        stream = io.BytesIO()
        dumper = _Dumper(stream, self)
        dumper.dump(payload)
        memo = {idx: obj for idx, obj in dumper.memo.copy().values()}
        grad = torch.is_grad_enabled()
        grad_refs = sorted(k for k, obj in memo.items() if isinstance(obj, torch.Tensor)
                           and obj.requires_grad and grad) if grad else []
        payload_blob = pickle.dumps((stream.getvalue(), grad_refs), protocol=5)
        header, blobs = self.request({"op": "call", "target": target, "grad": grad,
                                      "call": self.calls}, [payload_blob])
        return self._finish(header, blobs, memo, grad_refs, owner, instance_class)

    def _finish(self, header: dict, blobs: list, memo: dict[int, Any], grad_refs: list[int],
                owner: Any, instance_class: type | None) -> Any:
        try:
            decoder = wire.Decoder(blobs, memo, self._handle)
            self._pending = (header.get("modules") or {}, decoder, instance_class)
            self._update_mirrors(header.get("modules") or {}, decoder)
            for change in header.get("sync") or []:
                _apply_change(change, memo, decoder)
            wire.set_rng(decoder.decode(header["rng"]))
            self.notes += [str(n)[:300] for n in header.get("notes") or []][:20]
            error = header.get("error")
            result = None if error is not None else decoder.decode(header["result"])
        except (wire.WireError, KeyError, TypeError, ValueError, IndexError) as err:
            raise ProtocolViolation(f"unreadable reply ({type(err).__name__}: {err})") from None
        finally:
            self._pending = None
        if error is not None:
            raise remote_error(error, self)
        if header.get("graph") is not None:
            inputs = [memo[k] for k in grad_refs]
            if owner is not None:
                inputs += [p for _, p in owner.named_parameters() if p.requires_grad]
            result = _attach_graph(self, int(header["graph"]), inputs, result)
        return result

    def backward(self, cid: int, grads: tuple[Any, ...], inputs: list[Any]) -> list[Any]:
        stream = io.BytesIO()
        _Dumper(stream, self).dump([None if g is None else g.detach() for g in grads])
        header, blobs = self.request({"op": "backward", "call": cid}, [stream.getvalue()])
        found = [wire.Decoder(blobs, {}, self._handle).decode(n) for n in header["grads"]]
        if len(found) != len(inputs):
            raise ProtocolViolation("wrong number of gradients")
        out = []
        for g, x in zip(found, inputs, strict=True):
            if g is not None and (not isinstance(g, torch.Tensor) or g.shape != x.shape):
                raise ProtocolViolation("a gradient of the wrong shape")
            out.append(None if g is None else g.to(x.dtype).to(x.device))
        return out

    def getattr(self, hid: int, name: str) -> Any:
        header, blobs = self.request({"op": "getattr", "handle": hid, "name": name})
        if header.get("error") is not None:
            raise remote_error(header["error"], self)
        return wire.Decoder(blobs, {}, self._handle).decode(header["value"])

    # ----------------------------------------------------------------- handles

    def _handle(self, hid: int, type_name: str, text: str) -> Any:
        if hid in self.mirrors:
            return self.mirrors[hid]
        pending = getattr(self, "_pending", None)
        if pending and str(hid) in pending[0]:
            modules, decoder, instance_class = pending
            cls = instance_class if instance_class is not None and \
                instance_class.__name__ == type_name else _mirror_class(type_name)
            mirror = cls.__new__(cls)
            torch.nn.Module.__init__(mirror)
            object.__setattr__(mirror, "_remote_session", self)
            object.__setattr__(mirror, "_remote_hid", hid)
            object.__setattr__(mirror, "_remote_repr", text)
            self.mirrors[hid] = mirror
            _update_mirror(mirror, modules[str(hid)], decoder)
            return mirror
        if hid not in self.objects:
            self.objects[hid] = RemoteObject(self, hid, type_name, text)
        return self.objects[hid]

    def _update_mirrors(self, modules: dict[str, Any], decoder: wire.Decoder) -> None:
        for key, desc in modules.items():
            mirror = self.mirrors.get(int(key))
            if mirror is not None:
                _update_mirror(mirror, desc, decoder)


# --------------------------------------------------------------------------- proxies

class RemoteFunction:
    """A student's function, run in the sandbox."""

    def __init__(self, session: Session, name: str) -> None:
        self._session = session
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(["name", self.__name__], args, kwargs)

    def __repr__(self) -> str:
        return f"<function {self.__name__}>"


class RemoteObject:
    """Any other object the student's code made; it stays in the sandbox."""

    def __init__(self, session: Session, hid: int, type_name: str, text: str) -> None:
        object.__setattr__(self, "_remote", (session, hid, type_name, text))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        session, hid, _, _ = self._remote
        return session.call(["h", hid, ""], args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        session, hid, _, _ = object.__getattribute__(self, "_remote")
        return session.getattr(hid, name)

    def __repr__(self) -> str:
        return self._remote[3]


class RemoteModule(torch.nn.Module):
    """The grader's mirror of a ``torch.nn.Module`` that lives in the sandbox."""

    _remote_session: Session
    _remote_hid: int
    _remote_repr: str

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._remote_session.call(["h", self._remote_hid, ""], args, kwargs, owner=self)

    def __repr__(self) -> str:
        return self._remote_repr

    def _remote_state(self) -> dict[str, Any]:
        return {
            "modes": {n: m.training for n, m in self.named_modules()},
            "params": {n: (p.detach(), p.requires_grad) for n, p in self.named_parameters()},
            "buffers": {n: b.detach() for n, b in self.named_buffers()},
        }


class _ProxyMeta(type(torch.nn.Module)):
    """Calling a proxy class constructs the object in the sandbox."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._remote_session.call(["name", cls._remote_name], args, kwargs,
                                        instance_class=cls)


def make_class(session: Session, name: str, is_module: bool) -> type:
    """A stand-in for the student's class ``name``."""
    base = RemoteModule if is_module else RemoteObject
    return _ProxyMeta(name, (base,), {"_remote_name": name, "_remote_session": session,
                                      "__module__": "__main__", "__qualname__": name})


def _mirror_class(type_name: str) -> type:
    return type(type_name, (RemoteModule,), {"__module__": "sandbox"})


class _Sub(torch.nn.Module):
    """A submodule of a mirror (its forward is never called on its own)."""


def _update_mirror(mirror: RemoteModule, desc: dict[str, Any], decoder: wire.Decoder) -> None:
    modules = dict(mirror.named_modules())

    def module(name: str) -> torch.nn.Module:
        if name not in modules:
            owner, _, leaf = name.rpartition(".")
            child = _Sub()
            module(owner).add_module(leaf, child)
            modules[name] = child
        return modules[name]

    for name, flag in desc["modes"]:
        if type(flag) is not bool or not isinstance(name, str):
            raise ProtocolViolation("malformed module modes")
        object.__setattr__(module(name), "training", flag)
    with torch.no_grad():
        for slot, items in (("_parameters", desc["params"]), ("_buffers", desc["buffers"])):
            for name, node in items:
                owner, _, leaf = name.rpartition(".")
                value = decoder.decode(node)
                _set_tensor(getattr(module(owner), slot), leaf, value, slot == "_parameters")
    for key, node in desc["attrs"]:
        if isinstance(key, str) and key.isidentifier() and not hasattr(torch.nn.Module, key):
            object.__setattr__(mirror, key, decoder.decode(node))
    object.__setattr__(mirror, "_remote_repr", str(desc["repr"])[:4000])


def _set_tensor(slots: dict[str, Any], leaf: str, value: Any, is_param: bool) -> None:
    if value is None:
        slots[leaf] = None
        return
    if not isinstance(value, torch.Tensor):
        raise ProtocolViolation("a module parameter that is not a tensor")
    current = slots.get(leaf)
    same = (isinstance(current, torch.Tensor) and current.shape == value.shape
            and current.dtype == value.dtype and current.device == value.device)
    if same:
        if not torch.equal(current, value):
            current.copy_(value)
        if is_param:
            current.requires_grad_(value.requires_grad)
    elif is_param:
        slots[leaf] = torch.nn.Parameter(value.detach().clone(), value.requires_grad)
    else:
        slots[leaf] = value.detach().clone()


# --------------------------------------------------------------------------- pickling into it

class _Dumper(pickle.Pickler):
    def __init__(self, stream: Any, session: Session) -> None:
        super().__init__(stream, protocol=5)
        self.session = session

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, RemoteModule) and getattr(obj, "_remote_session", None) is self.session:
            return ("h", obj._remote_hid, obj._remote_state())
        if isinstance(obj, RemoteObject):
            return ("h", obj._remote[1], None)
        if isinstance(obj, (RemoteModule, RemoteObject, RemoteFunction)):
            raise ProtocolViolation("an object from an earlier run of this submission")
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            data = obj.detach()
            dtype = str(data.dtype).removeprefix("torch.")
            cpu = data.to("cpu").contiguous()
            raw = cpu.view(torch.int16) if dtype == "bfloat16" else cpu
            return (wire.rebuild_tensor, (raw.numpy().tobytes() if raw.numel() else b"", dtype,
                                     list(cpu.shape), str(data.device), bool(obj.requires_grad),
                                     isinstance(obj, torch.nn.Parameter)))
        if isinstance(obj, RemoteFunction):
            return (wire.main_attribute, (obj.__name__,))
        return NotImplemented


# --------------------------------------------------------------------------- sync and errors

def _apply_change(change: list[Any], memo: dict[int, Any], decoder: wire.Decoder) -> None:
    kind, k = change[0], change[1]
    obj = memo.get(k)
    if obj is None:
        raise ProtocolViolation("a change to an unknown argument")
    if kind == "tensor" and isinstance(obj, torch.Tensor):
        value = decoder.decode(change[2])
        with torch.no_grad():
            if value.shape == obj.shape and value.dtype == obj.dtype:
                obj.copy_(value.to(obj.device))
            else:
                obj.data = value.to(obj.device)
        if obj.is_leaf and change[3] != obj.requires_grad and (
                obj.is_floating_point() or obj.is_complex()):
            obj.requires_grad_(bool(change[3]))
    elif kind == "array" and isinstance(obj, np.ndarray):
        value = decoder.decode(change[2])
        if value.shape == obj.shape and obj.flags.writeable:
            np.copyto(obj, value, casting="unsafe")
    elif kind == "list" and isinstance(obj, list):
        obj[:] = decoder.decode(change[2])
    elif kind == "dict" and isinstance(obj, dict):
        for key, value in change[2]:
            obj[decoder.decode(key)] = decoder.decode(value)
        for key in change[3]:
            obj.pop(decoder.decode(key), None)
    elif kind == "attrs" and hasattr(obj, "__dict__") and not isinstance(obj, type):
        for key, value in change[2]:
            if not isinstance(key, str):
                raise ProtocolViolation("an attribute name that is not a string")
            vars(obj)[key] = decoder.decode(value)
        for key in change[3]:
            if isinstance(key, str):
                vars(obj).pop(key, None)
    elif kind == "generator" and isinstance(obj, torch.Generator):
        obj.set_state(decoder.decode(change[2]).to(torch.uint8))
    elif kind == "nprng" and isinstance(obj, np.random.Generator):
        obj.bit_generator.state = decoder.decode(change[2])
    else:
        raise ProtocolViolation(f"a change of kind {kind!r} to a {type(obj).__name__}")


def remote_error(err: dict[str, Any], session: Session) -> BaseException:
    """The grader-side exception for one the student's code raised in the sandbox."""
    message = str(err.get("message", ""))[:4000]
    name = str(err.get("type", "Exception"))[:100]
    bases = [b for b in err.get("bases", []) if isinstance(b, str)]
    cls = next((SAFE_ERRORS[b] for b in bases if b in SAFE_ERRORS), RuntimeError)
    if cls is MemoryError:
        session.errors.append("memory")
    if cls is RuntimeError and name not in SAFE_ERRORS and "RuntimeError" not in bases:
        message = f"{name}: {message}"
    exc = cls(message) if cls is not KeyError else KeyError(message)
    exc.student_traceback = str(err.get("traceback", ""))[:6000]
    return exc


# --------------------------------------------------------------------------- autograd

class _RemoteGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, session: Session, cid: int, n_inputs: int, *tensors: Any) -> Any:
        ctx.session, ctx.cid, ctx.n_inputs = session, cid, n_inputs
        ctx.inputs = tensors[:n_inputs]
        return tuple(t.clone() for t in tensors[n_inputs:])

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        found = ctx.session.backward(ctx.cid, grads, list(ctx.inputs))
        return (None, None, None, *found, *([None] * len(grads)))


def _attach_graph(session: Session, cid: int, inputs: list[Any], result: Any) -> Any:
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    slots = [i for i, t in enumerate(items) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not slots or not inputs:
        return result
    outs = _RemoteGrad.apply(session, cid, len(inputs), *inputs,
                             *[items[i].detach() for i in slots])
    for i, t in zip(slots, outs, strict=True):
        items[i] = t
    if isinstance(result, tuple):
        return tuple(items)
    return items if isinstance(result, list) else items[0]
