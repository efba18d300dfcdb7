"""The guarded image fetcher against a real HTTP server on the loopback interface.

Every test starts its own ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) whose
behaviour per path is set by the test, and which records every request it receives
(path and ``time.monotonic()``), so the tests can assert how many requests were made,
to which paths, and when. No address outside 127.0.0.0/8 is ever contacted: the
refused addresses (link-local, private, ::1) are refused by the policy before any
connection, and unresolvable names use the reserved ``.invalid`` TLD.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from asagi_dagster.web.fetch import (
    AddressPolicy,
    BlockedAddress,
    Fetcher,
    HostThrottle,
    InvalidURL,
    Unresolvable,
    has_noai,
)
from asagi_dagster.web.settings import DownloaderSettings

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"  # not a real picture; bytes are bytes
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x01\x02\x03" * 50

# --------------------------------------------------------------------------------------
# A real HTTP server whose behaviour per path is defined by the test
# --------------------------------------------------------------------------------------

Route = Callable[["_Handler", int], None]  # (handler, n-th request to this path, 1-based)


class LoopbackServer:
    """A ThreadingHTTPServer in a daemon thread; ``routes`` maps a path to a behaviour."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None):
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, float, dict[str, str]]] = []  # (path, monotonic time, headers)
        self._lock = threading.Lock()
        self.httpd = _Server((host, port), _Handler)
        if tls is not None:  # the handshake happens on accept, in the serving thread: fine for tests
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.owner = self
        self.httpd.handle_error = lambda request, address: None  # clients that hang up are expected
        self.host, self.port = self.httpd.server_address[:2]
        self.base = f"{'https' if tls else 'http'}://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def record(self, path: str, headers: dict[str, str]) -> int:
        with self._lock:
            self.requests.append((path, time.monotonic(), headers))
            return sum(1 for p, _, _ in self.requests if p == path)

    def paths(self) -> list[str]:
        with self._lock:
            return [p for p, _, _ in self.requests]

    def count(self, path: str) -> int:
        return self.paths().count(path)

    def times(self, path: str | None = None, prefix: str | None = None) -> list[float]:
        with self._lock:
            return [t for p, t, _ in self.requests if (path is None or p == path) and (prefix is None or p.startswith(prefix))]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many threads connect at once; the default backlog of 5 drops SYNs under load


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and real chunked transfer encoding

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        owner: LoopbackServer = self.server.owner
        nth = owner.record(self.path, dict(self.headers.items()))
        route = owner.routes.get(self.path)
        if route is None:
            send(self, 404, b"not found", "text/plain")
        else:
            route(self, nth)


def send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", content_type: str | None = None, headers: list[tuple[str, str]] | None = None
) -> None:
    handler.send_response(status)
    if content_type is not None:
        handler.send_header("Content-Type", content_type)
    for name, value in headers or []:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# --- behaviours ------------------------------------------------------------------------


def image(body: bytes = JPEG, content_type: str | None = "image/jpeg", headers: list[tuple[str, str]] | None = None) -> Route:
    return lambda h, n: send(h, 200, body, content_type, headers)


def text(body: str, content_type: str = "text/plain", status: int = 200) -> Route:
    return lambda h, n: send(h, status, body.encode(), content_type)


def status(code: int, headers: list[tuple[str, str]] | None = None) -> Route:
    return lambda h, n: send(h, code, b"nope", "text/plain", headers)


def redirect(location: str, code: int = 302) -> Route:
    return lambda h, n: send(h, code, b"", "text/plain", [("Location", location)])


def slow(delay: float, then: Route) -> Route:
    def route(h, n):
        time.sleep(delay)  # bounded: the test picks it
        then(h, n)

    return route


def sequence(*routes: Route) -> Route:
    """The n-th request gets the n-th behaviour; the last one repeats."""
    return lambda h, n: routes[min(n, len(routes)) - 1](h, n)


def chunked(total: int, chunk: int = 512, content_type: str = "image/jpeg") -> Route:
    """A body streamed with Transfer-Encoding: chunked, so without a Content-Length."""

    def route(h, n):
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        try:
            while sent < total:
                size = min(chunk, total - sent)
                h.wfile.write(f"{size:x}\r\n".encode() + b"z" * size + b"\r\n")
                sent += size
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            h.close_connection = True  # the client hung up, as it should on a too-large body

    return route


def declared_length(declared: int, actual: bytes, content_type: str = "image/jpeg") -> Route:
    """Declares ``declared`` bytes in Content-Length but sends only ``actual`` then closes."""

    def route(h, n):
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        try:
            h.wfile.write(actual)
        except OSError:
            pass
        h.close_connection = True

    return route


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def settings(**overrides) -> DownloaderSettings:
    """Fast settings: small backoff, no throttle, loopback allowed. The timeouts are short, but
    not so short that a loaded machine turns a healthy response into a timeout; the timeout
    test sets its own."""
    base = dict(
        user_agent="asagi-test-bot/1.0",
        connect_timeout_s=2.0,
        read_timeout_s=1.0,
        max_bytes=64 * 1024,
        max_redirects=3,
        retries=0,
        backoff_s=0.02,
        per_host_interval_s=0.0,
        workers=4,
        allowed_content_types=["image/"],
        respect_robots_txt=True,
        allow_networks=["127.0.0.1/32"],
    )
    base.update(overrides)
    return DownloaderSettings(**base)


def fetch(url: str, **overrides):
    with Fetcher(settings(**overrides)) as fetcher:
        return fetcher.fetch_image(url)


def image_paths(srv: LoopbackServer) -> list[str]:
    return [p for p in srv.paths() if p != "/robots.txt"]


# --------------------------------------------------------------------------------------
# Success
# --------------------------------------------------------------------------------------


def test_success_returns_the_body_byte_for_byte(server):
    server.routes["/img/cat.jpg"] = image(JPEG, "image/jpeg; charset=binary")
    result = fetch(server.url("/img/cat.jpg"))
    assert result.ok is True
    assert result.reason is None
    assert result.body == JPEG
    assert result.content_type == "image/jpeg"  # parameters dropped
    assert result.url == server.url("/img/cat.jpg")
    assert server.paths() == ["/robots.txt", "/img/cat.jpg"]
    # the configured User-Agent is what the server sees, on robots.txt and the image
    assert {headers.get("User-Agent") for _, _, headers in server.requests} == {"asagi-test-bot/1.0"}


def test_content_type_is_lowercased_before_the_check(server):
    server.routes["/a.png"] = image(PNG, "IMAGE/PNG")
    result = fetch(server.url("/a.png"))
    assert result.ok is True
    assert result.content_type == "image/png"
    assert result.body == PNG


def test_a_body_of_exactly_max_bytes_is_accepted(server):
    server.routes["/edge.jpg"] = chunked(1000, chunk=100)
    result = fetch(server.url("/edge.jpg"), max_bytes=1000)
    assert result.ok is True
    assert result.body == b"z" * 1000


# --------------------------------------------------------------------------------------
# robots.txt
# --------------------------------------------------------------------------------------


def test_robots_disallow_refuses_only_the_disallowed_path(server):
    server.routes["/robots.txt"] = text("User-agent: *\nDisallow: /private/\n")
    server.routes["/private/x.jpg"] = image()
    server.routes["/public/x.jpg"] = image()
    with Fetcher(settings()) as fetcher:
        denied = fetcher.fetch_image(server.url("/private/x.jpg"))
        allowed = fetcher.fetch_image(server.url("/public/x.jpg"))
    assert denied.ok is False
    assert denied.reason == "robots_disallowed"
    assert denied.transient is False
    assert denied.detail == f"{server.base}/robots.txt"
    assert allowed.ok is True and allowed.reason is None
    assert server.count("/private/x.jpg") == 0  # never requested
    assert server.count("/public/x.jpg") == 1
    assert server.count("/robots.txt") == 1


def test_robots_group_for_our_user_agent_applies(server):
    server.routes["/robots.txt"] = text("User-agent: asagi-test-bot\nDisallow: /\n\nUser-agent: *\nAllow: /\n")
    server.routes["/x.jpg"] = image()
    result = fetch(server.url("/x.jpg"))
    assert (result.ok, result.reason) == (False, "robots_disallowed")
    assert server.count("/x.jpg") == 0


def test_robots_is_ignored_when_the_profile_says_so(server):
    server.routes["/robots.txt"] = text("User-agent: *\nDisallow: /\n")
    server.routes["/x.jpg"] = image()
    result = fetch(server.url("/x.jpg"), respect_robots_txt=False)
    assert result.ok is True
    assert server.paths() == ["/x.jpg"]


def test_robots_fetched_once_per_origin_across_threads(server):
    # A slow robots.txt widens the window in which threads race to load it.
    server.routes["/robots.txt"] = slow(0.15, text("User-agent: *\nDisallow: /private/\n"))
    urls = []
    for i in range(12):
        folder = "private" if i % 3 == 0 else "img"
        server.routes[f"/{folder}/{i}.jpg"] = image()
        urls.append(server.url(f"/{folder}/{i}.jpg"))
    with Fetcher(settings(workers=8)) as fetcher, ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fetcher.fetch_image, urls))
    assert server.count("/robots.txt") == 1
    for url, result in zip(urls, results):
        if "/private/" in url:
            assert (result.ok, result.reason) == (False, "robots_disallowed"), result
        else:
            assert (result.ok, result.reason) == (True, None), result
    assert not [p for p in server.paths() if p.startswith("/private/")]
    assert len([p for p in server.paths() if p.startswith("/img/")]) == 8


def test_robots_404_allows_everything(server):
    server.routes["/anything/x.jpg"] = image()  # no /robots.txt route: the server answers 404
    result = fetch(server.url("/anything/x.jpg"))
    assert result.ok is True
    assert server.paths() == ["/robots.txt", "/anything/x.jpg"]


def test_robots_500_means_unavailable_and_transient(server):
    server.routes["/robots.txt"] = status(500)
    server.routes["/x.jpg"] = image()
    with Fetcher(settings(retries=1)) as fetcher:
        first = fetcher.fetch_image(server.url("/x.jpg"))
        second = fetcher.fetch_image(server.url("/x.jpg"))
    for result in (first, second):
        assert result.ok is False
        assert result.reason == "robots_unavailable"
        assert result.transient is True
        assert "500" in result.detail
    assert server.count("/x.jpg") == 0  # full disallow while robots.txt is unavailable
    assert server.count("/robots.txt") == 2  # one try plus one retry, then the verdict is kept


def test_robots_wildcard_patterns_are_honoured(server):
    server.routes["/robots.txt"] = text("User-agent: *\nDisallow: /*.jpg$\n")
    server.routes["/photos/cat.jpg"] = image()
    server.routes["/photos/cat.jpg.png"] = image(PNG, "image/png")  # '$' anchors: not disallowed
    with Fetcher(settings()) as fetcher:
        result = fetcher.fetch_image(server.url("/photos/cat.jpg"))
        anchored = fetcher.fetch_image(server.url("/photos/cat.jpg.png"))
    assert (result.ok, result.reason) == (False, "robots_disallowed")
    assert server.count("/photos/cat.jpg") == 0
    assert anchored.ok is True


def test_robots_429_means_unavailable_not_no_rules(server):
    # RFC 9309 lets a 4xx robots.txt mean "no rules", but a 429 asks us to slow down
    server.routes["/robots.txt"] = status(429)
    server.routes["/x.jpg"] = image()
    result = fetch(server.url("/x.jpg"))
    assert (result.ok, result.reason, result.transient) == (False, "robots_unavailable", True)
    assert "429" in result.detail
    assert server.count("/x.jpg") == 0


def test_robots_is_honoured_for_a_redirect_target_on_the_same_origin(server):
    server.routes["/robots.txt"] = text("User-agent: *\nDisallow: /private/\n")
    server.routes["/hop.jpg"] = redirect("/private/x.jpg")
    server.routes["/private/x.jpg"] = image()
    result = fetch(server.url("/hop.jpg"))
    assert (result.ok, result.reason, result.transient) == (False, "robots_disallowed", False)
    assert result.url == server.url("/hop.jpg")
    assert server.paths() == ["/robots.txt", "/hop.jpg"]  # the disallowed target is never requested


def test_robots_is_honoured_for_a_redirect_target_on_another_origin(server, second_server):
    server.routes["/hop.jpg"] = redirect(second_server.url("/x.jpg"))  # server: no robots.txt, allow all
    second_server.routes["/robots.txt"] = text("User-agent: asagi-test-bot\nDisallow: /x.jpg\n")
    second_server.routes["/x.jpg"] = image()
    result = fetch(server.url("/hop.jpg"), allow_networks=["127.0.0.0/8"])
    assert (result.ok, result.reason) == (False, "robots_disallowed")
    assert result.detail == f"{second_server.base}/robots.txt"  # the target origin's robots.txt
    assert server.paths() == ["/robots.txt", "/hop.jpg"]
    assert second_server.paths() == ["/robots.txt"]  # fetched once, the image never


# --------------------------------------------------------------------------------------
# X-Robots-Tag
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["noai", "googlebot: noimageai", "noindex, NoAI"])
def test_x_robots_tag_noai_refuses(server, value):
    server.routes["/x.jpg"] = image(headers=[("X-Robots-Tag", value)])
    result = fetch(server.url("/x.jpg"))
    assert result.ok is False
    assert result.reason == "x_robots_noai"
    assert result.detail == value
    assert result.body is None
    assert result.transient is False


def test_x_robots_tag_noai_in_a_second_header_refuses(server):
    server.routes["/x.jpg"] = image(headers=[("X-Robots-Tag", "noindex"), ("X-Robots-Tag", "noai")])
    result = fetch(server.url("/x.jpg"))
    assert (result.ok, result.reason) == (False, "x_robots_noai")


def test_x_robots_tag_noindex_alone_is_allowed(server):
    server.routes["/x.jpg"] = image(headers=[("X-Robots-Tag", "noindex, nofollow")])
    result = fetch(server.url("/x.jpg"))
    assert result.ok is True
    assert result.body == JPEG


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, False),
        ("", False),
        ("noai", True),
        ("NOAI", True),
        ("noimageai", True),
        ("  noimageai  ", True),
        ("googlebot: noimageai", True),
        ("otherbot: noindex, noai", True),
        ("noindex", False),
        ("noindex, nofollow", False),
        ("none", False),
        ("noarchive, nosnippet", False),
        ("unavailable_after: 25 Jun 2030 15:00:00 PST", False),
        ("noaiX", False),
        ("xnoai", False),
    ],
)
def test_has_noai(value, expected):
    assert has_noai(value) is expected


# --------------------------------------------------------------------------------------
# Per-host rate limit
# --------------------------------------------------------------------------------------


def test_per_host_interval_spaces_requests_across_threads(server):
    for i in range(4):
        server.routes[f"/img/{i}.jpg"] = image()
    urls = [server.url(f"/img/{i}.jpg") for i in range(4)]
    with Fetcher(settings(per_host_interval_s=0.25, workers=4)) as fetcher, ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(fetcher.fetch_image, urls))
    assert all(r.ok for r in results), results
    times = sorted(server.times())  # robots.txt counts as a request to the host too
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times, times[1:])]
    # the gaps are measured where the requests arrive; 50 ms of slack for scheduling jitter
    assert min(gaps) >= 0.2, gaps
    image_times = sorted(server.times(prefix="/img/"))
    assert len(image_times) == 4
    assert all(b - a >= 0.2 for a, b in zip(image_times, image_times[1:])), image_times


def test_zero_interval_does_not_throttle(server):
    for i in range(8):
        server.routes[f"/img/{i}.jpg"] = image()
    urls = [server.url(f"/img/{i}.jpg") for i in range(8)]
    with Fetcher(settings(per_host_interval_s=0.0, workers=4)) as fetcher, ThreadPoolExecutor(max_workers=4) as pool:
        started = time.monotonic()
        results = list(pool.map(fetcher.fetch_image, urls))
        elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    assert len(server.times(prefix="/img/")) == 8
    assert elapsed < 1.2, elapsed  # 9 requests (robots.txt too) at a 0.2 s gap would take at least 1.6 s


def test_host_throttle_unit():
    throttle = HostThrottle(0.3)
    started = time.monotonic()
    throttle.wait("a.test")
    first = time.monotonic()
    throttle.wait("b.test")  # another host: no wait
    other = time.monotonic()
    throttle.wait("a.test")
    second = time.monotonic()
    assert first - started < 0.1
    assert other - first < 0.1
    assert second - first >= 0.29


# --------------------------------------------------------------------------------------
# Timeouts, size caps, content types
# --------------------------------------------------------------------------------------


def test_slow_response_times_out(server):
    server.routes["/slow.jpg"] = slow(1.5, image())
    started = time.monotonic()
    result = fetch(server.url("/slow.jpg"), read_timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert result.ok is False
    assert result.reason == "timeout"
    assert result.transient is True
    assert elapsed < 1.2, elapsed  # gave up well before the server answered (1.5 s)
    assert server.count("/slow.jpg") == 1  # retries=0


def test_declared_content_length_over_max_bytes_is_too_large(server):
    server.routes["/big.jpg"] = declared_length(10_000_000, b"x" * 4096)
    result = fetch(server.url("/big.jpg"), max_bytes=1000)
    assert result.ok is False
    assert result.reason == "too_large"
    assert result.detail.startswith("Content-Length 10000000")
    assert result.transient is False


def test_streamed_body_over_max_bytes_is_too_large(server):
    server.routes["/stream.jpg"] = chunked(50_000, chunk=1000)
    result = fetch(server.url("/stream.jpg"), max_bytes=5000)
    assert result.ok is False
    assert result.reason == "too_large"
    assert result.detail == "body over 5000 bytes"
    assert result.body is None


def test_html_at_an_image_url_is_bad_content_type(server):
    server.routes["/x.jpg"] = text("<html><body>hi</body></html>", "text/html; charset=utf-8")
    result = fetch(server.url("/x.jpg"))
    assert result.ok is False
    assert result.reason == "bad_content_type"
    assert result.detail == "text/html"
    assert result.body is None


def test_missing_content_type_is_bad_content_type(server):
    server.routes["/x.jpg"] = image(JPEG, content_type=None)
    result = fetch(server.url("/x.jpg"))
    assert (result.ok, result.reason) == (False, "bad_content_type")


def test_allowed_content_types_come_from_settings(server):
    server.routes["/x.bin"] = image(b"data", "application/octet-stream")
    assert fetch(server.url("/x.bin")).reason == "bad_content_type"
    result = fetch(server.url("/x.bin"), allowed_content_types=["image/", "application/octet-stream"])
    assert result.ok is True and result.body == b"data"


def test_empty_image_body_is_refused(server):
    server.routes["/empty.jpg"] = image(b"", "image/jpeg")
    result = fetch(server.url("/empty.jpg"))
    assert result.ok is False
    assert result.reason == "empty_body"
    assert result.transient is False


# --------------------------------------------------------------------------------------
# HTTP status and retries
# --------------------------------------------------------------------------------------


def test_503_twice_then_200_succeeds_with_retries(server):
    server.routes["/flaky.jpg"] = sequence(status(503), status(503), image())
    result = fetch(server.url("/flaky.jpg"), retries=3, backoff_s=0.05)
    assert result.ok is True
    assert result.body == JPEG
    times = server.times("/flaky.jpg")
    assert len(times) == 3
    # exponential backoff: 0.05 s then 0.1 s
    assert times[1] - times[0] >= 0.045, times
    assert times[2] - times[1] >= 0.095, times


def test_503_beyond_retries_is_transient_http_status(server):
    server.routes["/down.jpg"] = status(503)
    result = fetch(server.url("/down.jpg"), retries=1, backoff_s=0.02)
    assert result.ok is False
    assert result.reason == "http_status"
    assert result.detail == "503"
    assert result.transient is True
    assert server.count("/down.jpg") == 2


def test_429_retry_after_is_honoured(server):
    server.routes["/busy.jpg"] = sequence(status(429, [("Retry-After", "0.2")]), image())
    result = fetch(server.url("/busy.jpg"), retries=2, backoff_s=0.0)  # any wait comes from Retry-After
    assert result.ok is True
    times = server.times("/busy.jpg")
    assert len(times) == 2
    assert times[1] - times[0] >= 0.18, times


def test_404_is_permanent_and_not_retried(server):
    result = fetch(server.url("/missing.jpg"), retries=3)
    assert result.ok is False
    assert result.reason == "http_status"
    assert result.detail == "404"
    assert result.transient is False
    assert server.count("/missing.jpg") == 1


# --------------------------------------------------------------------------------------
# Redirects
# --------------------------------------------------------------------------------------


def test_redirect_to_an_allowed_path_is_followed(server):
    server.routes["/old.jpg"] = redirect("/new.jpg")
    server.routes["/abs.jpg"] = redirect(server.url("/new.jpg"), code=301)
    server.routes["/new.jpg"] = image(PNG, "image/png")
    for path in ("/old.jpg", "/abs.jpg"):
        result = fetch(server.url(path))
        assert result.ok is True, path
        assert result.body == PNG
        assert result.url == server.url(path)  # the result is keyed by the URL asked for
    assert server.count("/new.jpg") == 2


def test_exactly_max_redirects_hops_succeed(server):
    server.routes["/r1"] = redirect("/r2")
    server.routes["/r2"] = redirect("/r3")
    server.routes["/r3"] = redirect("/final.jpg")
    server.routes["/final.jpg"] = image()
    result = fetch(server.url("/r1"), max_redirects=3)
    assert result.ok is True


def test_a_transient_failure_after_a_redirect_retries_that_hop(server):
    server.routes["/old.jpg"] = redirect("/flaky.jpg")
    server.routes["/flaky.jpg"] = sequence(status(503), image())
    result = fetch(server.url("/old.jpg"), retries=1, backoff_s=0.01)
    assert result.ok is True
    assert (server.count("/old.jpg"), server.count("/flaky.jpg")) == (1, 2)


def test_redirect_loop_is_too_many_redirects(server):
    server.routes["/loop"] = redirect("/loop")
    result = fetch(server.url("/loop"), max_redirects=3, retries=2)
    assert result.ok is False
    assert result.reason == "too_many_redirects"
    assert result.transient is False
    assert server.count("/loop") == 4  # the first request plus three followed hops, no retry


@pytest.fixture
def second_server():
    """A server on 127.0.0.2 (Linux routes all of 127/8 to loopback)."""
    try:
        srv = LoopbackServer("127.0.0.2")
    except OSError as exc:  # pragma: no cover - platforms without 127/8 on lo
        pytest.skip(f"cannot bind 127.0.0.2: {exc}")
    yield srv
    srv.close()


def test_redirect_to_a_refused_address_is_blocked_at_the_hop(server, second_server):
    second_server.routes["/x.jpg"] = image()
    server.routes["/hop.jpg"] = redirect(second_server.url("/x.jpg"))
    result = fetch(server.url("/hop.jpg"), allow_networks=["127.0.0.1/32"])
    assert result.ok is False
    assert result.reason == "blocked_address"
    assert "127.0.0.2" in result.detail
    assert server.count("/hop.jpg") == 1
    assert second_server.requests == []


def test_redirect_to_an_allow_listed_address_is_followed(server, second_server):
    # the control for the test above: the same redirect goes through when 127.0.0.2 is allowed
    second_server.routes["/x.jpg"] = image()
    server.routes["/hop.jpg"] = redirect(second_server.url("/x.jpg"))
    result = fetch(server.url("/hop.jpg"), allow_networks=["127.0.0.0/8"])
    assert result.ok is True
    assert second_server.count("/x.jpg") == 1


def test_redirect_to_a_non_http_scheme_is_invalid_url(server):
    server.routes["/hop.jpg"] = redirect("ftp://127.0.0.1/x.jpg")
    result = fetch(server.url("/hop.jpg"))
    assert (result.ok, result.reason, result.transient) == (False, "invalid_url", False)


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1:99999/x.jpg", "http://127.0.0.1:0/x.jpg", "http://[::1/x.jpg", "http://a..b/x.jpg", "http://127.0.0.1:x/x.jpg"]
)
def test_redirect_to_a_malformed_url_is_refused_not_raised(server, location):
    server.routes["/hop.jpg"] = redirect(location)
    result = fetch(server.url("/hop.jpg"), retries=2)
    assert (result.ok, result.reason, result.transient) == (False, "invalid_url", False)
    assert server.paths() == ["/robots.txt", "/hop.jpg"]  # no retry, no request to the target


# --------------------------------------------------------------------------------------
# Address policy
# --------------------------------------------------------------------------------------


def test_loopback_is_blocked_unless_allow_listed(server):
    server.routes["/x.jpg"] = image()
    result = fetch(server.url("/x.jpg"), allow_networks=[])
    assert result.ok is False
    assert result.reason == "blocked_address"
    assert result.transient is False
    assert "127.0.0.1" in result.detail
    assert server.requests == []  # neither robots.txt nor the image


def test_loopback_is_blocked_without_robots_too(server):
    server.routes["/x.jpg"] = image()
    result = fetch(server.url("/x.jpg"), allow_networks=[], respect_robots_txt=False)
    assert (result.ok, result.reason) == (False, "blocked_address")
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",  # cloud metadata, link-local
        "http://[::1]:1/x",
        "http://10.0.0.1/x.jpg",
        "http://192.168.1.1/x.jpg",
        "http://172.16.0.1/x.jpg",
        "http://0.0.0.0:1/x.jpg",
        "http://[::ffff:127.0.0.1]:1/x.jpg",
    ],
)
@pytest.mark.parametrize("robots", [True, False])
def test_non_public_addresses_are_blocked_before_connecting(url, robots):
    started = time.monotonic()
    result = fetch(url, allow_networks=["127.0.0.1/32"], respect_robots_txt=robots, connect_timeout_s=2.0)
    assert result.ok is False
    assert result.reason == "blocked_address"
    assert result.transient is False
    assert time.monotonic() - started < 1.0  # refused by the policy: no connection attempt (it would wait 2 s)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "172.16.0.1", "127.0.0.1", "169.254.169.254", "::1", "0.0.0.0", "100.64.0.1"])
def test_address_policy_refuses_non_public(host):
    with pytest.raises(BlockedAddress, match="non-public"):
        AddressPolicy([]).check(host, 80)


def test_address_policy_accepts_allow_listed_networks():
    policy = AddressPolicy(["10.0.0.0/8", "192.168.1.0/24", "::1/128"])
    policy.check("10.0.0.1", 80)
    policy.check("10.255.1.2", 443)
    policy.check("192.168.1.1", 80)
    policy.check("::1", 80)
    with pytest.raises(BlockedAddress):
        policy.check("192.168.2.1", 80)  # outside the listed /24
    with pytest.raises(BlockedAddress):
        policy.check("172.16.0.1", 80)


def test_address_policy_accepts_public_literals():
    AddressPolicy([]).check("8.8.8.8", 80)  # an IP literal: no lookup, no connection
    AddressPolicy([]).check("2001:4860:4860::8888", 80)


def test_address_policy_unresolvable():
    with pytest.raises(Unresolvable):
        AddressPolicy([]).check("no-such-host.invalid", 80)


# --------------------------------------------------------------------------------------
# DNS and URL errors
# --------------------------------------------------------------------------------------


def test_unresolvable_host_is_transient_dns_error():
    result = fetch("http://no-such-host.invalid/x.jpg", respect_robots_txt=False, retries=1)
    assert result.ok is False
    assert result.reason == "dns_error"
    assert result.transient is True


def test_unresolvable_host_is_dns_error_with_robots_on():
    with Fetcher(settings(respect_robots_txt=True)) as fetcher:
        results = [fetcher.fetch_image(f"http://no-such-host.invalid/{i}.jpg") for i in range(2)]
    for result in results:
        assert result.ok is False
        assert result.reason == "dns_error"
        assert result.transient is True
        assert "no-such-host.invalid" in result.detail


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.jpg", "file:///etc/passwd", "http:///x.jpg"])
def test_non_http_url_is_invalid_url(url):
    result = fetch(url, respect_robots_txt=False)
    assert result.ok is False
    assert result.reason == "invalid_url"
    assert result.transient is False


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.jpg", "http:///x.jpg"])
def test_non_http_url_is_invalid_url_with_robots_on(url):
    result = fetch(url, respect_robots_txt=True)
    assert result.ok is False
    assert result.reason == "invalid_url"
    assert result.transient is False


@pytest.mark.parametrize("url", ["http://a..b/x.jpg", f"http://{'a' * 64}.invalid/x.jpg", "http://127.0.0.1:99999/x.jpg"])
@pytest.mark.parametrize("robots", [True, False])
def test_malformed_host_or_port_is_invalid_url(url, robots):
    result = fetch(url, respect_robots_txt=robots, retries=2)
    assert (result.ok, result.reason, result.transient) == (False, "invalid_url", False)
    assert result.url == url


def test_address_policy_malformed_host_is_invalid_url_not_unicode_error():
    with pytest.raises(InvalidURL, match="a..b"):
        AddressPolicy([]).check("a..b", 80)


# Strings that once raised somewhere between parsing and connecting; none may reach the network.
ODD_URLS = [
    "",
    " ",
    "x.jpg",
    "/x.jpg",
    "//no-such-host.invalid/x.jpg",
    "http:",
    "http://",
    "http://:80/x",
    "http://[::1/x",
    "http://[zz]/x",
    "http://h.invalid:abc/x",
    "http://h.invalid:-1/x",
    "http://h.invalid:65536/x",
    "http://h\x00.invalid/x",
    "http://.invalid/x",
    "http://a.b../x",
    "javascript:alert(1)",
    "data:image/png;base64,AAAA",
    "mailto:a@b.invalid",
    "http://\u2603..invalid/x",
]


@pytest.mark.parametrize("url", ODD_URLS)
@pytest.mark.parametrize("robots", [True, False])
def test_odd_url_strings_are_refused_never_raised(url, robots):
    result = fetch(url, respect_robots_txt=robots, connect_timeout_s=0.5)
    assert result.ok is False
    assert result.url == url
    assert (result.reason, result.transient) == ("invalid_url", False), result
    assert result.detail


def test_an_unexpected_exception_becomes_a_transient_refusal(server, monkeypatch):
    server.routes["/x.jpg"] = image()
    with Fetcher(settings()) as fetcher:

        def boom(*args, **kwargs):
            raise RuntimeError("kaboom")

        monkeypatch.setattr(fetcher.transport, "handle_request", boom)
        result = fetcher.fetch_image(server.url("/x.jpg"))
    assert (result.ok, result.reason, result.transient) == (False, "unexpected_error", True)
    assert result.detail == "RuntimeError: kaboom"


@pytest.mark.parametrize("value", ["-1", "nan", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_an_unusable_retry_after_falls_back_to_backoff(server, value):
    server.routes["/busy.jpg"] = sequence(status(429, [("Retry-After", value)]), image())
    result = fetch(server.url("/busy.jpg"), retries=1, backoff_s=0.01)
    assert result.ok is True
    assert server.count("/busy.jpg") == 2


# --- robots.txt edge cases and slow bodies ------------------------------------------


def test_robots_txt_over_the_cap_is_cut_and_parsed(server):
    from asagi_dagster.web.fetch import ROBOTS_MAX_BYTES

    rules = "User-agent: *\nDisallow: /private/\n" + "# padding\n" * (ROBOTS_MAX_BYTES // 10 + 100)
    server.routes["/robots.txt"] = text(rules)
    server.routes["/ok.jpg"] = image()
    server.routes["/private/x.jpg"] = image()
    assert len(rules) > ROBOTS_MAX_BYTES
    assert fetch(server.url("/ok.jpg")).ok
    assert fetch(server.url("/private/x.jpg")).reason == "robots_disallowed"


def test_robots_txt_served_with_noai_is_still_read(server):
    server.routes["/robots.txt"] = lambda h, n: send(h, 200, b"User-agent: *\nDisallow: /private/\n", "text/plain", [("X-Robots-Tag", "noai")])
    server.routes["/ok.jpg"] = image()
    server.routes["/private/x.jpg"] = image()
    assert fetch(server.url("/ok.jpg")).ok
    assert fetch(server.url("/private/x.jpg")).reason == "robots_disallowed"


def test_a_body_that_drips_hits_the_total_deadline(server):
    def drip(h, n):
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for _ in range(40):  # bounded: at most 4 s
                h.wfile.write(b"10\r\n" + b"z" * 16 + b"\r\n")
                h.wfile.flush()
                time.sleep(0.1)  # each chunk well inside the read timeout
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            h.close_connection = True

    server.routes["/robots.txt"] = status(404)
    server.routes["/drip.jpg"] = drip
    started = time.monotonic()
    result = fetch(server.url("/drip.jpg"), total_timeout_s=0.5)
    assert (result.reason, result.transient) == ("timeout", True)
    assert time.monotonic() - started < 2.5


# --------------------------------------------------------------------------------------
# Credentials in URLs
# --------------------------------------------------------------------------------------


def test_credentials_in_an_image_url_are_never_sent(server):
    server.routes["/x.jpg"] = image()
    url = f"http://user:secret@127.0.0.1:{server.port}/x.jpg"
    result = fetch(url)
    assert result.ok is True and result.body == JPEG
    assert result.url == url  # the result is still keyed by the URL asked for
    assert server.paths() == ["/robots.txt", "/x.jpg"]
    for _, _, headers in server.requests:
        assert "Authorization" not in headers, headers
        assert headers["Host"] == f"127.0.0.1:{server.port}"


def test_credentials_in_a_redirect_location_are_never_sent(server):
    server.routes["/hop.jpg"] = redirect(f"http://admin:hunter2@127.0.0.1:{server.port}/x.jpg")
    server.routes["/x.jpg"] = image()
    result = fetch(server.url("/hop.jpg"))
    assert result.ok is True
    assert server.paths() == ["/robots.txt", "/hop.jpg", "/x.jpg"]
    assert all("Authorization" not in headers for _, _, headers in server.requests)


# --------------------------------------------------------------------------------------
# Address policy: IPv6 forms that carry an IPv4 address, and the ranges is_global misses
# --------------------------------------------------------------------------------------

# Python 3.11's ipaddress calls every one of these global except the IPv4-mapped and
# Teredo ones; each is refused with nothing allow-listed.
NOT_PUBLIC = [
    "64:ff9b::7f00:1",  # NAT64 well-known prefix carrying 127.0.0.1
    "64:ff9b::a00:1",  # ... 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # ... 169.254.169.254, cloud metadata
    "64:ff9b:1::808:808",  # the local-use NAT64 prefix (RFC 8215): refused whatever it carries
    "64:ff9b:1:ffff::1",
    "2002:7f00:1::",  # 6to4 carrying 127.0.0.1
    "2002:a00:1::1",  # ... 10.0.0.1
    "2002:a9fe:a9fe::",  # ... 169.254.169.254
    "::127.0.0.1",  # IPv4-compatible: deprecated, refused outright
    "::10.0.0.1",
    "::8.8.8.8",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:224.0.0.1",
    "2001::1",  # Teredo
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "ff02::1",  # multicast
    "ff0e::1",
    "224.0.0.1",
    "239.255.255.250",
    "233.252.0.1",
    "fec0::1",  # site-local, deprecated
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_address_policy_refuses_addresses_that_are_not_public(address):
    with pytest.raises(BlockedAddress, match="non-public"):
        AddressPolicy([]).check(address, 80)  # an IP literal: getaddrinfo returns it, no lookup


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2001:4860:4860::8888", "8.8.8.8"])
def test_address_policy_judges_embedded_ipv4_by_itself(address):
    # NAT64 and 6to4 forms of a public IPv4 address are public: DNS64 gives public sites such addresses
    AddressPolicy([]).check(address, 80)


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "2002:7f00:1::", "ff02::1", "224.0.0.1"])
def test_address_policy_refuses_them_when_dns_returns_them(monkeypatch, address):
    # No real resolver here returns these, so getaddrinfo is replaced for this one name.
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host == "sneaky.test":
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(BlockedAddress, match=f"sneaky.test resolves to non-public address {address}"):
        AddressPolicy([]).check("sneaky.test", 80)
    result = fetch("http://sneaky.test/x.jpg", allow_networks=[])
    assert (result.ok, result.reason, result.transient) == (False, "blocked_address", False)


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]:1/x.jpg",
        "http://[2002:7f00:1::]:1/x.jpg",
        "http://[::127.0.0.1]:1/x.jpg",
        "http://224.0.0.1:1/x.jpg",
        "http://[ff02::1]:1/x.jpg",
    ],
)
def test_fetch_refuses_them_before_connecting(url):
    result = fetch(url, allow_networks=["127.0.0.1/32"], respect_robots_txt=False)
    assert (result.ok, result.reason, result.transient) == (False, "blocked_address", False)
    assert "non-public" in result.detail


# --------------------------------------------------------------------------------------
# The connection goes to the checked address (DNS rebinding)
# --------------------------------------------------------------------------------------


def test_connection_goes_to_the_address_that_was_checked(monkeypatch, server):
    """The name answers 127.0.0.1 (allowed) the first time and 127.0.0.2 (refused) after,
    as a rebinding DNS server would: the request must reach 127.0.0.1, with the name as
    its Host header."""
    try:
        inside = LoopbackServer("127.0.0.2", port=server.port)  # the same port on the refused address
    except OSError as exc:  # pragma: no cover - platforms without 127/8 on lo
        pytest.skip(f"cannot bind 127.0.0.2:{server.port}: {exc}")
    try:
        server.routes["/x.jpg"] = image(JPEG)
        inside.routes["/x.jpg"] = image(PNG, "image/png")
        answers = []
        real = socket.getaddrinfo

        def rebinding(host, port, *args, **kwargs):
            if host != "rebind.test":
                return real(host, port, *args, **kwargs)
            address = "127.0.0.1" if not answers else "127.0.0.2"
            answers.append(address)
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        result = fetch(f"http://rebind.test:{server.port}/x.jpg", allow_networks=["127.0.0.1/32"], respect_robots_txt=False)
        assert result.ok is True, result
        assert result.body == JPEG
        assert answers == ["127.0.0.1"]  # resolved once: checked and connected to
        assert inside.requests == []
        assert [(p, h["Host"]) for p, _, h in server.requests] == [("/x.jpg", f"rebind.test:{server.port}")]
    finally:
        inside.close()


# --------------------------------------------------------------------------------------
# Locations and URLs that can never be fetched are permanent invalid_url
# --------------------------------------------------------------------------------------

NEVER_FETCHABLE = [
    "http://[::1",
    "http://exa mple.invalid/x.jpg",  # httpx sends 'exa%20mple.invalid' to DNS
    "http://a..b/x.jpg",
    "http:///x.jpg",  # httpx joins it as a path on the current host
    "http:x.jpg",
    "http:\\\\evil.invalid\\x.jpg",  # browsers read it as http://evil.invalid/x.jpg; httpx as a path
    f"http://{'a' * 64}.invalid/x.jpg",
    f"http://{'a' * 300}/x.jpg",
    "http://example.invalid:99999/x.jpg",
    "http://ex%41mple.invalid/x.jpg",
    "http://1.2.3.4.5/x.jpg",
    "http://256.0.0.1/x.jpg",
    "http://[fe80::1%25eth0]/x.jpg",
]


@pytest.mark.parametrize("location", NEVER_FETCHABLE)
def test_an_unparseable_location_is_permanent_invalid_url(server, location):
    server.routes["/hop.jpg"] = redirect(location)
    result = fetch(server.url("/hop.jpg"), retries=2)
    assert (result.ok, result.reason, result.transient) == (False, "invalid_url", False), result
    assert server.paths() == ["/robots.txt", "/hop.jpg"]  # no retry, no request anywhere else


@pytest.mark.parametrize("url", NEVER_FETCHABLE)
def test_an_unfetchable_url_is_permanent_invalid_url(url):
    result = fetch(url, retries=2, respect_robots_txt=False)
    assert (result.ok, result.reason, result.transient) == (False, "invalid_url", False), result


@pytest.mark.parametrize("location", ["x.jpg", "/img/x.jpg", "../img/x.jpg", "?v=2", "//127.0.0.1:{port}/img/x.jpg"])
def test_relative_locations_still_resolve(server, location):
    server.routes["/img/x.jpg"] = image()
    server.routes["/img/hop?v=2"] = image()
    server.routes["/img/hop"] = redirect(location.format(port=server.port))
    result = fetch(server.url("/img/hop"))
    assert result.ok is True, result
