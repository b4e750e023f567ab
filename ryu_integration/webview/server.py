"""The HTTP side of `coordctl serve`: the live page, the JSON API and the event stream (aiohttp).

    GET /                      the page (static/index.html; its JS and CSS under /static/)
    GET /api/state             everything below in one document (what the stream starts with)
    GET /api/members           members: record, alive, how many elections each leads
    GET /api/elections         every observed election: leader, term
    GET /api/elections/{name}  one election read now, with its candidates in rank order
    GET /api/masters           switch -> master, term, confirmed by the switch
    GET /api/topology          switches, links, hosts, masterships
    GET /api/events            Server-Sent Events: a `state` document, then every event

Errors are JSON, `{"error": "<one line>"}`, with the HTTP status. Each stream has a bounded
queue: a client that cannot keep up is disconnected, and its EventSource reconnects to a fresh
`state` (no unbounded memory per client). The page is served with a Content-Security-Policy
that allows scripts from this server only, behind the page's own escaping.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from coordination.api import Coordinator
from coordination.errors import ConfigurationError, CoordinationError
from coordination.names import printable

from .model import Event, LiveView

LOG = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: Events queued for one stream before it is dropped as too slow (it reconnects to a fresh state).
STREAM_QUEUE = 10_000
#: Seconds between SSE comments on an idle stream, so a dead client is noticed.
KEEPALIVE = 15.0
#: Open streams at most (each holds a bounded queue); more get 503 until one closes.
MAX_STREAMS = 100
#: Host names a loopback-bound server answers to (DNS rebinding: a web page elsewhere must not
#: be able to read the API through a name that resolves to 127.0.0.1).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

VIEW: web.AppKey[LiveView] = web.AppKey("view", LiveView)
HOSTS: web.AppKey[frozenset[str] | None] = web.AppKey("hosts", frozenset)
STREAMS: web.AppKey[set[asyncio.Queue[Event | None]]] = web.AppKey("streams", set)

_dumps = partial(json.dumps, default=str)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": printable(" ".join(message.split()), 300)}, status)


@web.middleware
async def _errors_and_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """JSON errors on one line (no traceback to the client); security headers on every page;
    a loopback-bound server refuses requests for other host names (DNS rebinding)."""
    allowed = request.app[HOSTS]
    if allowed is not None and _host_name(request.host) not in allowed:
        return _error(421, "this server answers to localhost names only (see --listen)")
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
    except CoordinationError as exc:
        response = _error(503, f"backend: {exc}")
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


def _host_name(host: str) -> str:
    """The name part of a Host header (`[::1]:8780` -> `::1`, `localhost:80` -> `localhost`)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def allowed_hosts(listen_host: str) -> frozenset[str] | None:
    """Host names to answer to: loopback names when bound to loopback, else any (None)."""
    try:
        loopback = ipaddress.ip_address(listen_host).is_loopback
    except ValueError:
        loopback = listen_host == "localhost"
    return LOOPBACK_NAMES | {listen_host} if loopback else None


# ---- handlers -------------------------------------------------------------------------------

async def page(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def api_state(request: web.Request) -> web.Response:
    return _json(request.app[VIEW].state())


async def api_members(request: web.Request) -> web.Response:
    return _json(await asyncio.to_thread(request.app[VIEW].refresh_members))


async def api_elections(request: web.Request) -> web.Response:
    return _json(request.app[VIEW].elections())


async def api_election(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    doc = await asyncio.to_thread(request.app[VIEW].election, name)
    if doc is None:
        return _error(404, f"no election {printable(name, 100)!r}")
    return _json(doc)


async def api_masters(request: web.Request) -> web.Response:
    return _json(request.app[VIEW].masters())


async def api_topology(request: web.Request) -> web.Response:
    return _json(request.app[VIEW].topology())


async def api_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `state` first, then each event as it happens, in order."""
    if len(request.app[STREAMS]) >= MAX_STREAMS:
        return _error(503, f"too many open event streams (at most {MAX_STREAMS})")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=STREAM_QUEUE)

    def put(event: Event | None) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:  # too slow: end this stream, the client reconnects
            queue.get_nowait()
            queue.put_nowait(None)

    def push(event: Event) -> None:  # on a backend thread
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(put, event)

    state, unsubscribe = request.app[VIEW].subscribe(push)
    request.app[STREAMS].add(queue)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", **SECURITY_HEADERS})
    try:
        await response.prepare(request)
        await _send(response, state)
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                break
            await _send(response, event)
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        unsubscribe()
        request.app[STREAMS].discard(queue)
    return response


async def _send(response: web.StreamResponse, event: Event) -> None:
    data = _dumps(event, separators=(",", ":"))
    await response.write(f"id: {event.get('seq', 0)}\ndata: {data}\n\n".encode())


async def _close_streams(app: web.Application) -> None:
    for queue in list(app[STREAMS]):
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)


def build_app(view: LiveView, hosts: frozenset[str] | None = None) -> web.Application:
    """The aiohttp application over a started `LiveView`; `hosts`: the only Host names it
    answers to (None: any)."""
    app = web.Application(middlewares=[_errors_and_headers])
    app[VIEW] = view
    app[HOSTS] = hosts
    app[STREAMS] = set()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/", page)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/members", api_members)
    app.router.add_get("/api/elections", api_elections)
    app.router.add_get("/api/elections/{name}", api_election)
    app.router.add_get("/api/masters", api_masters)
    app.router.add_get("/api/topology", api_topology)
    app.router.add_get("/api/events", api_events)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


def page_url(host: str, port: int) -> str:
    shown_host = f"[{host}]" if ":" in host else host
    return f"http://{shown_host}:{port}/"


async def run(view: LiveView, host: str, port: int,
              ready: Callable[[str], None], stop: asyncio.Event) -> None:
    """Serve until `stop` is set; `ready(url)` once listening (port 0: the port picked)."""
    runner = web.AppRunner(build_app(view, allowed_hosts(host)), handle_signals=False,
                           access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=2.0)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {page_url(host, port)}: {exc.strerror or exc}") from None
        bound = runner.addresses[0][1] if runner.addresses else port
        ready(page_url(host, bound))
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(coord: Coordinator, host: str, port: int, *, backend: str = "") -> None:
    """Run the page and the API over `coord` until SIGINT or SIGTERM."""
    view = LiveView(coord, backend=backend)
    view.start()

    def ready(url: str) -> None:
        print(f"coordctl: serving {url} (backend {backend or coord.url}); Ctrl-C stops",
              flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(view, host, port, ready, stop)

    try:
        asyncio.run(main())
    finally:
        view.close()
