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

What the grader believes: only what it observed itself, or what it derives from data it sent and
received. So records a check keeps never travel into the sandbox (``dropout_course.checks.
boundary``):

* a :class:`~dropout_course.checks.boundary.GraderSide` object among a call's arguments becomes
  a stand-in there; calling it sends a *callback* frame, the grader runs the real object here
  and sends back its result (pickled into the sandbox, like arguments). While handling one, the
  grader may call into the sandbox again (the runner serves requests while it waits); nesting
  is capped at :data:`MAX_CALLBACK_DEPTH` (deeper: RecursionError there) and a session at
  :data:`MAX_CALLBACKS` callbacks (more: a protocol violation);
* a model marked with ``boundary.run_on_grader`` (by ``ForwardRecorder``) becomes a real copy
  there, but calling the copy or any submodule calls back with the copy's train/eval flags, the
  autograd mode and the random state; the grader's own model runs (its hooks record what really
  ran, its BatchNorm statistics are authoritative) and its output comes back. Afterwards only
  the copy's train/eval flags are copied onto the grader's model;
* whatever the sandbox reports about a grader-side object or a grader-run model's internals
  (lists, dicts, attributes, tensors) is never applied.

Any failure to read or decode a reply, of whatever exception type, is a
:class:`ProtocolViolation` ("the reply was malformed: ...") that marks the sandbox gone, so
``expect_raises`` can never take it for the student's exception.
"""

from __future__ import annotations

import builtins
import io
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
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
MAX_CALLBACK_DEPTH = 16
MAX_CALLBACKS = 200_000
_KEY_STRIDE = 1 << 24  # the keys of a callback result's objects: base + pickle memo index
MALFORMED = wire.MALFORMED


class ProtocolViolation(SandboxGone):
    """The sandbox replied with something that is not a valid answer."""

    def __init__(self, detail: str) -> None:
        super().__init__("protocol", detail)


class _Frame:
    """What the grader sent into the sandbox for one call in flight: the objects by key (the
    arguments, then every callback's result), the keys of grader-side objects and grader-run
    modules' internals (whose reported changes are never applied), the modules among them
    (whose train/eval flag is), the callback tokens it made live and each grader-run model's
    modes when it was sent."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.protected: set[int] = set()
        self.modules: set[int] = set()
        self.tokens: list[int] = []
        self.modes: list[tuple[int, torch.nn.Module, dict[str, bool]]] = []

    def add(self, memo: dict[int, Any], dumper: _Dumper) -> None:
        self.memo.update(memo)
        for key, obj in memo.items():
            if id(obj) in dumper.protected:
                self.protected.add(key)
                if isinstance(obj, torch.nn.Module):
                    self.modules.add(key)

    def restore_modes(self) -> None:
        """Put every grader-run model back in the modes it had when it was sent: the copy's
        final flags (the call's reported changes) are applied on top of these."""
        for _token, model, modes in self.modes:
            for name, module in model.named_modules():
                if name in modes:
                    module.training = modes[name]

    def apply_reported_modes(self, report: Any) -> None:
        """Set every grader-run model to the flags its copy ended the call with. The reply must
        give all of them, for every submodule: one that leaves a model out (as a patched runner
        that drops its changes would) is malformed, not "nothing changed"."""
        if not self.modes:
            return
        if not isinstance(report, list) or not all(
                isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                and isinstance(item[1], list) for item in report):
            raise wire.WireError("malformed report of the models' modes")
        given = {item[0]: item[1] for item in report}
        for token, model, _ in self.modes:
            flags = given.get(token)
            modules = dict(model.named_modules())
            if flags is None or not all(
                    isinstance(f, list) and len(f) == 2 and isinstance(f[0], str)
                    and type(f[1]) is bool for f in flags) or {f[0] for f in flags} != set(
                        modules):
                raise wire.WireError("the reply does not report every module's mode")
            for name, flag in flags:
                modules[name].training = flag


class _NeedsGraph(Exception):
    """A batch of calls whose arguments need autograd across the boundary (made one by one)."""


class Session:
    """The grader's side of one running sandbox: calls, handles and mirrors."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.calls = 0
        self.mirrors: dict[int, RemoteModule] = {}
        self.objects: dict[int, RemoteObject] = {}
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.frames: list[_Frame] = []
        self.live: dict[int, Any] = {}
        self.tokens = 0
        self.callbacks = 0
        self.depth = 0
        self._pending: Any = None
        self.rng = wire.RngSync()

    # ----------------------------------------------------------------- frames

    def violation(self, detail: str) -> ProtocolViolation:
        """Mark the sandbox gone for a malformed reply; return the error to raise."""
        detail = detail if detail.startswith(MALFORMED) else MALFORMED + detail
        detail = detail[:800]
        if self.sandbox.gone is None:
            self.sandbox._gone("protocol", detail)
        return ProtocolViolation(detail)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Turn any failure to read or decode a reply into a :class:`ProtocolViolation`."""
        try:
            yield
        except ProtocolViolation as err:
            raise self.violation(err.detail) from None
        except SandboxGone:
            raise
        except Exception as err:
            raise self.violation(f"{type(err).__name__}: {str(err)[:300]}") from None

    def _send(self, header: dict[str, Any], blobs: list[bytes], timeout: float | None = None
              ) -> int:
        return self.sandbox.send(header, list(blobs), timeout=timeout)

    def _receive(self, timeout: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        with self.reading():
            try:
                return self.sandbox.receive(timeout=timeout)
            except ProtocolViolation:
                raise
            except SandboxGone as gone:
                if gone.reason == "protocol":  # an unreadable frame (the sandbox is gone)
                    raise ProtocolViolation(gone.detail) from None
                raise

    def request(self, header: dict[str, Any], blobs: list[bytes] = (),
                timeout: float | None = None) -> tuple[dict, list]:
        """Send one request and return its reply, serving the sandbox's callbacks meanwhile;
        each wait lasts at most ``timeout`` seconds (default: the call limit). Raises
        :class:`SandboxGone` (a :class:`ProtocolViolation` for a malformed reply)."""
        rid = self._send(header, list(blobs), timeout)
        while True:
            reply, out = self._receive(timeout)
            if reply.get("op") == "callback":
                self._callback(reply, out)
                continue
            if reply.get("id") != rid:
                raise self.violation("a reply did not answer its request")
            if "fault" in reply:
                raise SandboxGone("protocol", f"the runner failed: {str(reply['fault'])[:2000]}")
            return reply, out

    def call(self, target: list[Any], args: tuple, kwargs: dict, owner: Any = None,
             instance_class: type | None = None) -> Any:
        """Run ``target(*args, **kwargs)`` in the sandbox; return the decoded result."""
        payload = {"args": tuple(args), "kwargs": dict(kwargs), "rng": self.rng.outgoing(),
                   "self_state": owner._remote_state() if owner is not None else None}
        header, blobs, frame, grad_refs = self._exchange(target, payload)
        return self._finish(header, blobs, frame, grad_refs, owner, instance_class)

    def call_many(self, target: list[Any], calls: list[tuple[tuple, dict]], stop: bool = True
                  ) -> list[tuple[Any, BaseException | None]]:
        """Run ``target(*args, **kwargs)`` for each ``(args, kwargs)`` of ``calls`` in order, as
        a loop of :meth:`call` would, in one round trip; with ``stop`` the calls after the first
        that raises are not made. Return, per call made, ``(result, None)`` or ``(None, the
        student's exception)``. A batch whose arguments need autograd across the boundary is
        made one call at a time (its results carry graphs)."""
        if not calls:
            return []
        agreed = self.rng.synced
        payload = {"calls": [(tuple(a), dict(k)) for a, k in calls], "stop": stop,
                   "rng": self.rng.outgoing(), "self_state": None}
        try:
            # each call may take the call limit, as each would in a loop
            header, blobs, frame, _ = self._exchange(
                target, payload, timeout=len(calls) * self.sandbox.limits.call_seconds)
        except _NeedsGraph:
            self.rng.synced = agreed  # nothing was sent: the agreed state is still the last one
            return self._call_each(target, calls, stop)
        with self.reading():
            try:
                decoder = self._finish_common(header, blobs, frame, None)
                if header.get("error") is not None:
                    raise wire.WireError("an error for a batch of calls as a whole")
                outcomes = _batch_outcomes(header.get("outcomes"), len(calls), stop)
                found = [(decoder.decode(value), None) if ok else (None, remote_error(value, self))
                         for ok, value in outcomes]
            finally:
                self._pending = None
        return found

    def _call_each(self, target: list[Any], calls: list[tuple[tuple, dict]], stop: bool
                   ) -> list[tuple[Any, BaseException | None]]:
        found: list[tuple[Any, BaseException | None]] = []
        for args, kwargs in calls:
            try:
                found.append((self.call(target, args, kwargs), None))
            except SandboxGone:
                raise
            except Exception as exc:  # the student's error, rebuilt by remote_error
                found.append((None, exc))
                if stop:
                    break
        return found

    def _exchange(self, target: list[Any], payload: dict[str, Any],
                  timeout: float | None = None) -> tuple[dict, list, _Frame, list[int]]:
        """Send one call request (``payload`` pickled into the sandbox) and return its reply
        (waiting at most ``timeout``, default the call limit), the call's frame and the keys of
        the tensors whose gradients flow back. Raises :class:`_NeedsGraph`, sending nothing,
        for a batch (``payload["calls"]``) with such tensors."""
        frame = _Frame()
        stream = io.BytesIO()
        dumper = _Dumper(stream, self, frame)
        try:
            dumper.dump(payload)
            frame.add({idx: obj for idx, obj in dumper.memo.copy().values()}, dumper)
            grad = torch.is_grad_enabled()
            grad_refs = sorted(k for k, obj in frame.memo.items() if isinstance(
                obj, torch.Tensor) and obj.requires_grad and k not in frame.protected) \
                if grad else []
            if grad_refs and "calls" in payload:
                raise _NeedsGraph
            payload_blob = pickle.dumps((stream.getvalue(), grad_refs), protocol=5)
            self.frames.append(frame)
            self.calls += 1
            try:
                header, blobs = self.request({"op": "call", "target": target, "grad": grad,
                                              "call": self.calls}, [payload_blob], timeout)
            finally:
                self.frames.pop()
        finally:
            for token in frame.tokens:
                self.live.pop(token, None)
            frame.restore_modes()
        return header, blobs, frame, grad_refs

    def _finish_common(self, header: dict, blobs: list, frame: _Frame,
                       instance_class: type | None) -> wire.Decoder:
        """Apply what a call's reply reports besides its result (mirrors, argument changes,
        models' modes, random state, notes); return the reply's decoder. Call within
        :meth:`reading`, and clear ``_pending`` afterwards."""
        decoder = wire.Decoder(blobs, frame.memo, self._handle)
        self._pending = (header.get("modules") or {}, decoder, instance_class)
        self._update_mirrors(header.get("modules") or {}, decoder)
        for change in header.get("sync") or []:
            _apply_change(change, frame, decoder)
        frame.apply_reported_modes(header.get("grader_modes"))
        self.rng.incoming(decoder.decode(header["rng"]))
        notes = header.get("notes") or []
        self.notes += [wire.clean_text(str(n))[:300] for n in notes][:20]
        return decoder

    def _finish(self, header: dict, blobs: list, frame: _Frame, grad_refs: list[int],
                owner: Any, instance_class: type | None) -> Any:
        memo = frame.memo
        with self.reading():
            try:
                decoder = self._finish_common(header, blobs, frame, instance_class)
                error = header.get("error")
                result = None if error is not None else decoder.decode(header["result"])
                raised = remote_error(error, self) if error is not None else None
                graph = header.get("graph")
                if graph is not None and type(graph) is not int:
                    raise wire.WireError("malformed graph number")
            finally:
                self._pending = None
        if raised is not None:
            raise raised
        if graph is not None:
            inputs = [memo[k] for k in grad_refs]
            if owner is not None:
                inputs += [p for _, p in owner.named_parameters() if p.requires_grad]
            result = _attach_graph(self, graph, inputs, result)
        return result

    # ----------------------------------------------------------------- callbacks

    def _token(self, obj: Any, frame: _Frame) -> int:
        self.tokens += 1
        self.live[self.tokens] = obj
        frame.tokens.append(self.tokens)
        return self.tokens

    def _callback(self, header: dict[str, Any], blobs: list[bytes]) -> None:
        """Run a grader-side object (or a grader-run model's submodule) for the sandbox and send
        back its result or error."""
        if not self.frames:
            raise self.violation("a callback outside a call")
        self.callbacks += 1
        if self.callbacks > MAX_CALLBACKS:
            raise self.violation(f"more than {MAX_CALLBACKS} callbacks")
        with self.reading():
            token, name, grad, modes = (header["token"], header["name"], header["grad"],
                                        header["modes"])
            if type(token) is not int or not isinstance(name, str) or type(grad) is not bool \
                    or not isinstance(modes, list) or not all(
                        isinstance(m, list) and len(m) == 2 and isinstance(m[0], str)
                        and type(m[1]) is bool for m in modes):
                raise wire.WireError("malformed callback")
            decoder = wire.Decoder(blobs, {}, self._handle)
            args, kwargs = decoder.decode(header["args"]), decoder.decode(header["kwargs"])
            if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(
                    isinstance(k, str) for k in kwargs):
                raise wire.WireError("malformed callback arguments")
            target = self.live.get(token)
            modules: dict[str, torch.nn.Module] = {}
            refused: str | None = None
            if isinstance(target, torch.nn.Module):
                modules = dict(target.named_modules())
                if name not in modules or any(n not in modules for n, _ in modes):
                    raise wire.WireError("a callback for a module the model does not have")
                refused = _refused_forward_inputs(args, kwargs)
            elif name:
                raise wire.WireError("a callback for a module of something else")
            self.rng.incoming(decoder.decode(header["rng"]))
        value, error = None, None
        if refused is not None:
            error = TypeError(refused)
        elif target is None:
            error = RuntimeError("this object of the checks was sent for another call; it can "
                                 "only be used during the call it was passed to")
        elif self.depth >= MAX_CALLBACK_DEPTH:
            error = RecursionError(f"calls between your code and the checks nested more than "
                                   f"{MAX_CALLBACK_DEPTH} deep")
        else:
            self.depth += 1
            try:
                if modules:
                    for n, flag in modes:
                        modules[n].training = flag
                    # Autograd only where the check itself asked for it: a graph the sandbox
                    # asks for would cost this process memory for activations it never uses.
                    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                        value = modules[name](*args, **kwargs)
                else:
                    value = target(*args, **kwargs)
            except SandboxGone:
                raise
            except Exception as exc:
                error = exc
            finally:
                self.depth -= 1
        self._send_result(value, error)

    def _send_result(self, value: Any, error: BaseException | None) -> None:
        frame = self.frames[-1]
        base = self.callbacks * _KEY_STRIDE
        rng = self.rng.outgoing()  # once: a second dump must not send a delta of the first
        for attempt in (0, 1):
            stream = io.BytesIO()
            dumper = _Dumper(stream, self, frame)
            try:
                dumper.dump({"value": value if error is None else None, "rng": rng})
                break
            except SandboxGone:
                raise
            except Exception as exc:  # an unpicklable result: the sandbox gets an error
                if attempt:
                    raise
                value, error = None, TypeError(f"the checks' result cannot be sent: {exc}")
        frame.add({base + idx: obj for idx, obj in dumper.memo.copy().values()}, dumper)
        described = None if error is None else {
            "type": type(error).__name__, "message": str(error)[:4000],
            "bases": [k.__name__ for k in type(error).__mro__ if k.__module__ == "builtins"]}
        self._send({"op": "result", "base": base, "error": described},
                   [pickle.dumps(stream.getvalue(), protocol=5)])

    def backward(self, cid: int, grads: tuple[Any, ...], inputs: list[Any]) -> list[Any]:
        stream = io.BytesIO()
        _Dumper(stream, self, _Frame()).dump([None if g is None else g.detach() for g in grads])
        header, blobs = self.request({"op": "backward", "call": cid}, [stream.getvalue()])
        with self.reading():
            decoder = wire.Decoder(blobs, {}, self._handle)
            found = [decoder.decode(n) for n in header["grads"]]
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
        with self.reading():
            if header.get("error") is not None:
                raised = remote_error(header["error"], self)
            else:
                return wire.Decoder(blobs, {}, self._handle).decode(header["value"])
        raise raised

    # ----------------------------------------------------------------- handles

    def _handle(self, hid: int, type_name: str, text: str) -> Any:
        if hid in self.mirrors:
            return self.mirrors[hid]
        pending = self._pending
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

    def __dropout_call_many__(self, calls: list[tuple[tuple, dict]], stop: bool = True
                              ) -> list[tuple[Any, BaseException | None]]:
        """The checks' batch protocol (``dropout_course.checks.core.run_student_many`` and
        ``expect_raises_many``): every call in one round trip (:meth:`Session.call_many`)."""
        return self._session.call_many(["name", self.__name__], calls, stop)

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
    """Pickles grader objects into the sandbox: the sandbox's own objects as handles, tensors as
    raw bytes, grader-side objects as stand-ins and grader-run modules as copies whose forward
    calls back. ``protected`` collects the ids of what the sandbox must never change here."""

    def __init__(self, stream: Any, session: Session, frame: _Frame) -> None:
        super().__init__(stream, protocol=5)
        self.session = session
        self.frame = frame
        self.protected: set[int] = set()
        self.keep: list[Any] = []  # temporary state dicts: their ids must stay unique
        self.tokens: dict[int, int] = {}
        self.grader_run: dict[int, tuple[torch.nn.Module, str]] = {}
        for top in _grader_run_models():
            for name, module in top.named_modules():
                self.grader_run.setdefault(id(module), (top, name))

    def _protect(self, *objs: Any) -> None:
        for obj in objs:
            self.protected.add(id(obj))
            self.keep.append(obj)

    def _grader_module(self, obj: torch.nn.Module) -> Any:
        top, name = self.grader_run[id(obj)]
        token = self.tokens.get(id(top))
        if token is None:
            token = self.tokens[id(top)] = self.session._token(top, self.frame)
            self.frame.modes.append(
                (token, top, {n: m.training for n, m in top.named_modules()}))
        # Hooks stay here: they run around the grader's own forward, never in the sandbox.
        state = {k: (type(v)() if "hooks" in k and isinstance(v, dict) else v)
                 for k, v in vars(obj).items()}
        self._protect(obj, state, *state.values(), *obj._parameters.values(),
                      *obj._buffers.values())
        return (wire.grader_module, (type(obj), token, name), state)

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
        if isinstance(obj, _grader_side()):
            self._protect(obj)
            name = getattr(obj, "__name__", None)
            return (wire.grader_stand_in, (self.session._token(obj, self.frame),
                                           name if isinstance(name, str) else type(obj).__name__))
        if isinstance(obj, torch.nn.Module) and id(obj) in self.grader_run:
            return self._grader_module(obj)
        return NotImplemented


def _grader_side() -> type:
    try:
        from dropout_course.checks.boundary import GraderSide
    except ImportError:  # the student package is not importable: nothing is grader-side
        return _Never
    return GraderSide


def _grader_run_models() -> list[torch.nn.Module]:
    try:
        from dropout_course.checks.boundary import grader_run_models
    except ImportError:
        return []
    return grader_run_models()


class _Never:
    """No object is an instance of this."""


# --------------------------------------------------------------------------- sync and errors

def _apply_change(change: list[Any], frame: _Frame, decoder: wire.Decoder) -> None:
    """Copy one change the sandbox reports onto the grader's object, except on grader-side
    objects and grader-run modules' internals, where only a module's train/eval flag is taken."""
    kind, k = change[0], change[1]
    obj = frame.memo.get(k)
    if obj is None:
        raise ProtocolViolation("a change to an unknown argument")
    if k in frame.protected:
        if kind == "attrs" and k in frame.modules:
            for key, value in change[2]:
                flag = decoder.decode(value) if key == "training" else None
                if type(flag) is bool:
                    obj.training = flag
        return
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


MAX_FORWARD_INPUT_BYTES = 16 << 20  # the checks' own inputs are a few KiB


def _refused_forward_inputs(args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Why a grader-run model must not run on these inputs (None: it may). It is only ever
    called on tensors (what the checks' models take), of a bounded size: anything else is
    refused before this process runs the model (an object of the sandbox would run student code
    inside the grader's forward; a huge input would cost this process many times its size)."""
    if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        return "the checks' models take tensors only (call model(batch) with a tensor)"
    size = sum(a.numel() * a.element_size() for a in args)
    if size > MAX_FORWARD_INPUT_BYTES:
        return (f"the checks' models take at most {MAX_FORWARD_INPUT_BYTES >> 20} MiB of input "
                f"at once, not {size >> 20} MiB")
    return None


def _batch_outcomes(outcomes: Any, n: int, stop: bool) -> list[list[Any]]:
    """A batch reply's outcomes, ``[ok, value]`` each, if they answer ``n`` calls: one per call,
    or (with ``stop``) fewer, ending at the one that raised; else :class:`wire.WireError`."""
    if not isinstance(outcomes, list) or not all(
            isinstance(o, list) and len(o) == 2 and type(o[0]) is bool for o in outcomes):
        raise wire.WireError("malformed outcomes of a batch of calls")
    failed = [i for i, (ok, _) in enumerate(outcomes) if not ok]
    if stop:
        answered = failed in ([], [len(outcomes) - 1]) and (
            len(outcomes) == n or (failed and len(outcomes) < n))
    else:
        answered = len(outcomes) == n
    if not answered:
        raise wire.WireError("the outcomes do not answer the batch of calls")
    return outcomes


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
