"""A loopback OpenAI-compatible HTTP server for tests and benchmarks, with fault injection.

Real HTTP on ``127.0.0.1`` and a free port, served by aiohttp (asyncio; thousands of concurrent connections).
It answers ``POST /v1/chat/completions`` and ``GET /v1/models``; ``base_url`` is what an OpenAI client needs::

    with OpenAIServer(delay=0.2, fault_rate=0.2, seed=1) as server:
        backend = OpenAIBackend("test-model", base_url=server.base_url)
        ...
        assert max(server.counts.values()) <= 1 + backend.max_retries

Knobs:
- ``delay``: seconds every request waits before it is answered (or fails).
- ``reply``: ``body -> str``, the assistant text for a request body (default: a JSON tag list naming the
  prompt's first word). It may return a dict, sent as the whole JSON response.
- ``fault_rate`` / ``faults`` / ``seed``: the share of requests that get a fault, the kinds drawn from, and the
  seed. The draw is a hash of (seed, prompt, how many times that prompt arrived), so it does not depend on
  arrival order. ``fault_fn(prompt, n) -> kind | None`` replaces the draw (n counts from 1).
  Kinds (:data:`FAULT_KINDS`): ``429_retry_after`` (``Retry-After: <retry_after seconds>``), ``429_retry_after_ms``
  (``retry-after-ms``), ``429`` (no header), ``500``, ``503``, ``reset`` (connection reset, no response),
  ``timeout`` (hangs ``hang_seconds``, longer than the client's timeout), ``truncated_json`` (200 with half a
  JSON body), ``non_json`` (200 with an HTML page), ``empty_choices`` (200 with ``"choices": []``); and,
  only when named, ``400`` and ``401`` (:data:`FINAL_FAULT_KINDS`, which a client must not retry).
- ``served_model``: the ``model`` field of responses (default: the requested model).

What it saw: ``counts`` (requests per prompt, the last user message), ``bodies`` (every request body),
``faults_injected`` (per kind), ``ok`` (successful answers), ``max_in_flight``. ``stats()`` returns them (also
from a server in another process). ``mode="process"`` runs the server as a child process (benchmarks: the
client gets a core of its own; ``reply``/``fault_fn`` must then be importable top-level functions).

Bounded: ``stop()`` (or leaving the ``with`` block, or the pytest fixture ending) stops it, and it stops
itself after ``lifetime`` seconds, or when its parent process dies (process mode).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

FAULT_KINDS = (
    "429_retry_after",
    "429_retry_after_ms",
    "429",
    "500",
    "503",
    "reset",
    "timeout",
    "truncated_json",
    "non_json",
    "empty_choices",
)
#: Faults a client must not retry (not drawn unless named in ``faults`` or returned by ``fault_fn``).
FINAL_FAULT_KINDS = ("400", "401")


def last_user_message(body: dict) -> str:
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            return content if isinstance(content, str) else json.dumps(content, sort_keys=True)
    return ""


def default_reply(body: dict) -> str:
    """A valid tagging answer: one tag named after the prompt's first word."""
    words = last_user_message(body).split()
    word = words[0].strip(".,:;!?\"'").lower() if words else "empty"
    return json.dumps([{"tag": f"topic {word}", "explanation": "the query is about " + word}])


def _words(text: str) -> int:
    return len(text.split())


class _State:
    """The server proper: configuration, counters and the aiohttp handlers (runs inside one event loop)."""

    def __init__(
        self, delay, reply, fault_rate, faults, seed, retry_after, hang_seconds, served_model, fault_fn, keep_bodies
    ):
        self.delay = float(delay)
        self.reply = reply or default_reply
        self.fault_rate = float(fault_rate)
        self.fault_kinds = tuple(faults)
        unknown = set(self.fault_kinds) - set(FAULT_KINDS) - set(FINAL_FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS + FINAL_FAULT_KINDS}")
        self.seed = seed
        self.retry_after = float(retry_after)
        self.hang_seconds = float(hang_seconds)
        self.served_model = served_model
        self.fault_fn = fault_fn
        self.keep_bodies = keep_bodies
        self.reset()

    def reset(self) -> None:
        self.counts: Counter[str] = Counter()
        self.bodies: list[dict] = []
        self.faults_injected: Counter[str] = Counter()
        self.ok = 0
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def stats(self, bodies: bool = True) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "counts": dict(self.counts),
            "faults_injected": dict(self.faults_injected),
            "max_in_flight": self.max_in_flight,
            "bodies": list(self.bodies) if bodies else [],
        }

    def draw_fault(self, prompt: str, n: int) -> str | None:
        if self.fault_fn is not None:
            return self.fault_fn(prompt, n)
        if self.fault_rate <= 0 or not self.fault_kinds:
            return None
        h = hashlib.sha256(f"{self.seed}\x00{n}\x00{prompt}".encode()).digest()
        if int.from_bytes(h[:8], "big") / 2.0**64 >= self.fault_rate:
            return None
        return self.fault_kinds[int.from_bytes(h[8:16], "big") % len(self.fault_kinds)]

    def app(self):
        from aiohttp import web

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/_stats", self.http_stats)
        app.router.add_post("/_reset", self.http_reset)
        return app

    async def models(self, request):
        from aiohttp import web

        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.served_model or "test-model", "object": "model", "owned_by": "tests"}],
            }
        )

    async def http_stats(self, request):
        from aiohttp import web

        return web.json_response(self.stats(bodies=request.query.get("bodies", "1") == "1"))

    async def http_reset(self, request):
        from aiohttp import web

        self.reset()
        return web.json_response({"reset": True})

    async def chat(self, request):
        from aiohttp import web

        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response(
                {"error": {"message": "request body is not JSON", "type": "invalid_request"}}, status=400
            )
        prompt = last_user_message(body)
        self.requests += 1
        self.counts[prompt] += 1
        n = self.counts[prompt]
        if self.keep_bodies:
            self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            kind = self.draw_fault(prompt, n)
            if kind:
                self.faults_injected[kind] += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if kind:
                return await self.fault(kind, request, body)
            text = self.reply(body)
            if isinstance(text, dict):
                self.ok += 1
                return web.json_response(text)
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 1 << 30
            words = text.split(" ")
            finish = "stop"
            if len(words) > max_tokens:
                text, finish = " ".join(words[:max_tokens]), "length"
            prompt_tokens = sum(_words(str(m.get("content", ""))) + 4 for m in body.get("messages") or []) + 3
            completion_tokens = _words(text)
            self.ok += 1
            return web.json_response(
                {
                    "id": f"chatcmpl-{self.requests}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.served_model or body.get("model", "test-model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            )
        finally:
            self.in_flight -= 1

    async def fault(self, kind: str, request, body: dict):
        from aiohttp import web

        err = {"error": {"message": f"injected fault {kind}", "type": "test_fault", "code": kind}}
        if kind == "429_retry_after":
            ra = f"{self.retry_after:g}"
            return web.json_response(err, status=429, headers={"Retry-After": ra})
        if kind == "429_retry_after_ms":
            return web.json_response(err, status=429, headers={"retry-after-ms": str(int(self.retry_after * 1000))})
        if kind in ("429", "500", "503", "400", "401"):
            return web.json_response(err, status=int(kind))
        if kind == "reset":
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()  # aiohttp drops the request quietly
        if kind == "timeout":
            await asyncio.sleep(self.hang_seconds)
            return web.json_response(err, status=504)
        if kind == "truncated_json":
            full = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "[]"}, "finish_reason": "stop"}
                    ],
                }
            )
            return web.Response(body=full[: len(full) // 2].encode(), content_type="application/json")
        if kind == "non_json":
            return web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
        if kind == "empty_choices":
            return web.json_response(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0},
                }
            )
        raise ValueError(kind)


async def _serve(state: _State, sock: socket.socket, stop: asyncio.Event, lifetime: float, parent: int | None):
    from aiohttp import web

    runner = web.AppRunner(state.app(), access_log=None, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    deadline = time.monotonic() + lifetime
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            if parent is not None and os.getppid() != parent:
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
    finally:
        await runner.cleanup()


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _ref(fn: Callable | None) -> str | None:
    """``module:qualname`` of an importable top-level function (what a server process can import)."""
    if fn is None:
        return None
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in qualname or module == "__main__":
        raise ValueError(f"process mode needs importable top-level functions, not {fn!r}")
    return f"{module}:{qualname}"


def _deref(ref: str | None) -> Callable | None:
    if ref is None:
        return None
    import importlib

    module, qualname = ref.split(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _child_main(argv: list[str]) -> None:  # process mode: python openai_server.py CONFIG_JSON PARENT_PID LIFETIME
    import logging

    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    config = json.loads(argv[0])
    config["reply"] = _deref(config["reply"])
    config["fault_fn"] = _deref(config["fault_fn"])
    state = _State(**config)
    sock = _bind()
    print(sock.getsockname()[1], flush=True)
    asyncio.run(_serve(state, sock, asyncio.Event(), float(argv[2]), int(argv[1])))


class OpenAIServer:
    """The server; a context manager. See the module docstring for the knobs."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        reply: Callable[[dict], str | dict] | None = None,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] | list[str] = FAULT_KINDS,
        seed: int = 0,
        retry_after: float = 0.05,
        hang_seconds: float = 5.0,
        served_model: str | None = None,
        fault_fn: Callable[[str, int], str | None] | None = None,
        keep_bodies: bool = True,
        mode: str = "thread",
        lifetime: float = 600.0,
    ):
        if mode not in ("thread", "process"):
            raise ValueError("mode must be 'thread' or 'process'")
        self._config = dict(
            delay=delay,
            reply=reply,
            fault_rate=fault_rate,
            faults=tuple(faults),
            seed=seed,
            retry_after=retry_after,
            hang_seconds=hang_seconds,
            served_model=served_model,
            fault_fn=fault_fn,
            keep_bodies=keep_bodies,
        )
        self.mode = mode
        self.lifetime = lifetime
        self.port: int | None = None
        self._state: _State | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._proc = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> OpenAIServer:
        if self.mode == "process":
            import subprocess
            import sys

            config = {**self._config, "reply": _ref(self._config["reply"]), "fault_fn": _ref(self._config["fault_fn"])}
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self._proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), json.dumps(config), str(os.getpid()), str(self.lifetime)],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=env,
                text=True,
            )
            line = self._proc.stdout.readline()
            if not line.strip().isdigit():
                self._proc.kill()
                raise RuntimeError(f"test server process did not start (said {line!r})")
            self.port = int(line)
            self._wait_ready()
            return self
        self._state = _State(**self._config)
        sock = _bind()
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await _serve(self._state, sock, self._stop, self.lifetime, None)

        def run() -> None:
            asyncio.run(main())  # cancels the handlers still running (hanging faults) at the end

        self._thread = threading.Thread(target=run, name="openai-test-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    resp.read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            import subprocess

            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            self._proc.stdout.close()
            self._proc = None
        if self._thread is not None and self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed (lifetime over)
                pass
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- what it saw
    def _in_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the server's loop thread (counters are only touched there)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()

        async def call():
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(30)

    def stats(self, bodies: bool = True) -> dict[str, Any]:
        if self._state is not None:
            state = self._state
            return self._in_loop(lambda: state.stats(bodies))
        with urllib.request.urlopen(f"{self.url}/_stats?bodies={int(bodies)}", timeout=30) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        """Forget counts, bodies and faults (the fault draw restarts at n=1 for every prompt)."""
        if self._state is not None:
            self._in_loop(self._state.reset)
            return
        req = urllib.request.Request(f"{self.url}/_reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()

    @property
    def counts(self) -> dict[str, int]:
        return self.stats(bodies=False)["counts"]

    @property
    def bodies(self) -> list[dict]:
        return self.stats()["bodies"]

    @property
    def faults_injected(self) -> dict[str, int]:
        return self.stats(bodies=False)["faults_injected"]

    @property
    def requests(self) -> int:
        return self.stats(bodies=False)["requests"]


try:  # pytest fixtures: `from tests.support.openai_server import openai_server, openai_server_factory`
    import pytest
except ImportError:  # pragma: no cover - the server also runs without pytest (benchmarks)
    pytest = None

if pytest is not None:

    @pytest.fixture
    def openai_server():
        """A default server (no delay, no faults) for one test."""
        with OpenAIServer() as server:
            yield server

    @pytest.fixture
    def openai_server_factory():
        """``make(**knobs)`` starts a server with those knobs; every server started is stopped after the test."""
        servers: list[OpenAIServer] = []

        def make(**knobs) -> OpenAIServer:
            server = OpenAIServer(**knobs).start()
            servers.append(server)
            return server

        yield make
        for server in servers:
            server.stop()


if __name__ == "__main__":
    import sys

    _child_main(sys.argv[1:])
