"""A polite, guarded image fetcher.

Honours robots.txt (RFC 9309, parsed by protego) for the URL and for every redirect
target, and ``X-Robots-Tag: noai`` / ``noimageai``; keeps a minimum gap between requests
to one host and caps the requests in flight to it (its share of budgets that every
downloader of the deployment spends together: ``host_throttle``), caps the body size, checks the content type, retries transient failures
with backoff, and refuses non-public addresses (private, loopback, link-local,
multicast, and IPv6 forms that carry such an IPv4 address), at every redirect hop,
unless the profile allow-lists them.

Every fetch runs against one deadline, ``total_timeout_s``, which covers name
resolution, connecting, TLS, the response headers, the body, redirects, retries and
throttle waits; and ``Fetcher.cancel()`` stops every fetch in flight within a fraction of
a second. Both hold because every blocking socket call is made here (a custom httpcore
network backend) in slices of at most ``_SLICE_S``, checking the deadline and the cancel
flag between slices. The same backend connects to the address the policy checked, never
to a second DNS answer.

``Fetcher.fetch_image`` never raises: whatever the URL string, every outcome is a
``FetchResult``, so one odd URL cannot abort a whole partition.
"""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import logging
import math
import os
import re
import select
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
from protego import Protego

from asagi_dagster.web.noai import has_noai
from asagi_dagster.web.settings import DownloaderSettings

log = logging.getLogger(__name__)

ROBOTS_MAX_BYTES = 512 * 1024
# Failures of a robots.txt fetch that are about the host rather than about robots.txt:
# they are reported as they are, not hidden behind "robots_unavailable".
_HOST_REASONS = frozenset({"blocked_address", "dns_error"})
# The longest one blocking socket call may last: how late a cancel or the deadline is seen.
_SLICE_S = 0.25


@dataclass(frozen=True, slots=True)
class FetchResult:
    url: str
    ok: bool
    content_type: str | None = None
    body: bytes | None = None
    reason: str | None = None
    detail: str | None = None
    transient: bool = False  # worth trying again on a later run


def refused(url: str, reason: str, detail: str | None = None, transient: bool = False) -> FetchResult:
    return FetchResult(url=url, ok=False, reason=reason, detail=detail, transient=transient)


class BlockedAddress(Exception):
    pass


class Unresolvable(Exception):
    pass


class InvalidURL(ValueError):
    """A URL (or a host in one) that can never be fetched; not ``httpx.InvalidURL``."""


class FetchCancelled(Exception):
    """``Fetcher.cancel()`` was called: the run is stopping."""


# --- URLs --------------------------------------------------------------------------------

# What getaddrinfo can look up: letters, digits, '-', '_' (in real DNS names), dot-separated.
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _parse_url(url: str, base: httpx.URL | None = None) -> httpx.URL:
    """``url``, resolved against ``base``, parsed the way httpx will request it, so that what
    is checked is what gets connected to. Raises InvalidURL unless it is http(s) with a
    host that DNS can take and a port in range. Credentials in it are dropped: they are
    never sent."""
    try:
        target = httpx.URL(url)
        # A reference that names a scheme must name a host too: 'http:///x' or 'http:\\h\x'
        # are not paths on the base's host (httpx would join them so; browsers do not).
        if base is not None and not target.scheme:
            target = base.join(url)
        host = target.raw_host.decode("ascii")
        host.encode("idna")  # getaddrinfo raises UnicodeError on empty labels and labels over 63 chars
    except (httpx.InvalidURL, ValueError, TypeError) as exc:  # UnicodeError is a ValueError
        raise InvalidURL(f"{exc}: {url!r:.200}") from None
    if target.scheme not in ("http", "https"):
        raise InvalidURL(f"not http(s): {url!r:.200}")
    if not host:
        raise InvalidURL(f"no host: {url!r:.200}")
    if problem := _host_problem(host):
        raise InvalidURL(f"{problem}: {url!r:.200}")
    if target.port is not None and not 0 < target.port < 65536:  # httpx takes any integer
        raise InvalidURL(f"port out of range: {url!r:.200}")
    if target.userinfo:
        target = target.copy_with(username=None, password=None)
    return target


def _host_problem(host: str) -> str | None:
    """Why ``host`` (as httpx gives it: IDNA-encoded, IPv6 without brackets) can never be
    looked up, or None. These would otherwise be retried every run as DNS errors."""
    if ":" in host:  # an IPv6 literal; httpx has checked its syntax
        return "zone id in an IPv6 host" if "%" in host else None
    if not _HOST_NAME.fullmatch(host):  # '%20' from 'exa mple', '%41', ...
        return "host has characters no DNS name has"
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", last):  # numeric: an IPv4 address or nothing
        try:
            socket.inet_aton(host)  # the forms getaddrinfo takes too: 127.1, 0x7f.0.0.1, 2130706433
        except OSError:
            return "not an IPv4 address"
    return None


# --- addresses ---------------------------------------------------------------------------

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
# IPv6 ranges refused outright. Python's is_global calls the first three global (3.11).
_REFUSED_V6 = [
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64 prefix (RFC 8215)"),
    (ipaddress.ip_network("::/96"), "IPv4-compatible address (deprecated, RFC 4291)"),
    (ipaddress.ip_network("fec0::/10"), "site-local address (deprecated, RFC 3879)"),
    (ipaddress.ip_network("2001::/32"), "Teredo address"),
]


def non_public_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` is not a public unicast address, or None if it is.

    IPv6 forms that carry an IPv4 address a packet ends up at (IPv4-mapped, NAT64's
    well-known prefix, 6to4) are judged by that IPv4 address: a DNS64 resolver gives
    public sites such addresses, so refusing them all would cut off IPv6-only clusters.
    """
    if address.is_multicast:
        return "multicast"
    if address.version == 6:
        for network, label in _REFUSED_V6:
            if address in network:
                return label
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = non_public_reason(embedded)
            return f"carries {embedded}, {inner}" if inner else None
    return None if address.is_global else "not global"


class AddressPolicy:
    """Refuses hosts that resolve to non-public addresses, unless allow-listed."""

    def __init__(self, allow_networks: list[str]):
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in allow_networks]

    def check(self, host: str, port: int) -> list[tuple[int, tuple]]:
        """Resolve ``host`` once; the (family, sockaddr) of each address, all checked, to
        connect to. Raises if any address is refused: a name that also points inside
        is not fetched at all."""
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise Unresolvable(f"cannot resolve {host}: {exc}") from None
        except (ValueError, OverflowError) as exc:  # the idna codec's UnicodeError, a port out of range
            raise InvalidURL(f"malformed host or port {host!r:.200}:{port}: {exc}") from None
        checked: list[tuple[int, tuple]] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])  # an IPv4 or IPv6 address: a str
            if not any(address in net for net in self.allowed) and (why := non_public_reason(address)):
                raise BlockedAddress(f"{host} resolves to non-public address {address} ({why})")
            if (family, sockaddr) not in checked:
                checked.append((family, sockaddr))
        if not checked:
            raise Unresolvable(f"cannot resolve {host}: no IPv4 or IPv6 address")
        return checked


# --- one fetch's deadline and cancel flag --------------------------------------------------


@dataclass
class _Budget:
    deadline: float  # time.monotonic() by which the whole fetch ends
    total_s: float
    cancelled: threading.Event
    # (host, port) -> the checked addresses the next connection to it must use
    pinned: dict[tuple[str, int], list[tuple[int, tuple]]] = field(default_factory=dict)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise FetchCancelled("the fetcher was cancelled")

    def slice(self, timeout: float | None, started: float, timeout_error: type[Exception], what: str) -> float:
        """Seconds the next blocking call may take: at most ``_SLICE_S``, ending by ``started +
        timeout`` and by the deadline. Raises FetchCancelled, or ``timeout_error`` once either
        bound has passed."""
        self.check()
        now = time.monotonic()
        own = math.inf if timeout is None else started + timeout
        left = min(own, self.deadline) - now
        if left <= 0:
            bound = f"the total deadline of {self.total_s} s" if self.deadline <= own else f"{timeout} s"
            raise timeout_error(f"{what}: {bound} passed")
        return min(left, _SLICE_S)

    def sleep(self, seconds: float) -> bool:
        """Sleep, unless that would pass the deadline: then False at once. Raises FetchCancelled."""
        if time.monotonic() + seconds > self.deadline:
            return False
        if self.cancelled.wait(seconds):
            self.check()
        return True


_NO_BUDGET = _Budget(deadline=math.inf, total_s=math.inf, cancelled=threading.Event())
_current_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("fetch_budget", default=_NO_BUDGET)


def _resolve_within(policy: AddressPolicy, host: str, port: int, budget: _Budget) -> list[tuple[int, tuple]]:
    """``policy.check``, bounded by the deadline and the cancel flag. getaddrinfo cannot be
    interrupted, so a name is looked up on a daemon thread that is abandoned if it hangs."""
    if _is_ip_literal(host):
        return policy.check(host, port)  # no lookup, nothing to wait for
    outcome: dict[str, Any] = {}  # "addresses" or "error"
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome["addresses"] = policy.check(host, port)
        except Exception as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host[:40]}", daemon=True).start()
    started = time.monotonic()
    while not done.wait(budget.slice(None, started, httpcore.ConnectTimeout, f"resolving {host}")):
        pass
    if "error" in outcome:
        raise outcome["error"]
    return outcome["addresses"]


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- sockets: every blocking call sliced ---------------------------------------------------


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects to the addresses the policy checked for this request (resolving and
    checking itself if none were pinned), with the fetch's deadline and cancel flag."""

    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options=None) -> httpcore.NetworkStream:
        budget = _current_budget.get()
        started = time.monotonic()
        addresses = budget.pinned.get((host, port)) or _resolve_within(self.policy, host, port, budget)
        errors = []
        for family, sockaddr in addresses:
            try:
                sock = _connect(family, sockaddr, local_address, budget, timeout, started)
            except OSError as exc:
                errors.append(f"{sockaddr[0]}: {exc}")
                continue
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _GuardedStream(sock)
        raise httpcore.ConnectError(f"cannot connect to {host}: {'; '.join(errors)}")

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("no unix sockets: image URLs name hosts")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _connect(family: int, sockaddr: tuple, local_address: str | None, budget: _Budget, timeout: float | None, started: float) -> socket.socket:
    """A non-blocking connect, waited for in slices."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if local_address is not None:
            sock.bind((local_address, 0))
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
        if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_WRITE)
                while not selector.select(budget.slice(timeout, started, httpcore.ConnectTimeout, f"connecting to {sockaddr[0]}")):
                    pass
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        sock.setblocking(True)
        return sock
    except BaseException:
        sock.close()
        raise


class _GuardedStream(httpcore.NetworkStream):
    """What httpcore's SyncStream does, with every read, write and TLS handshake step
    sliced, so that the fetch's deadline and cancel flag are seen within ``_SLICE_S``."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget, started = _current_budget.get(), time.monotonic()
        while True:
            wait = budget.slice(timeout, started, httpcore.ReadTimeout, "waiting for the server")
            try:
                self._sock.settimeout(wait)
                return self._sock.recv(max_bytes)
            except TimeoutError:  # socket.timeout; nothing was read, the socket is intact
                continue
            except OSError as exc:
                raise _stream_error(exc, httpcore.ReadError) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        budget, started = _current_budget.get(), time.monotonic()
        view = memoryview(buffer)
        while view:
            wait = budget.slice(timeout, started, httpcore.WriteTimeout, "sending the request")
            try:
                self._sock.settimeout(wait)
                view = view[self._sock.send(view) :]
            except TimeoutError:  # nothing sent; TLS retries the same bytes, as it must
                continue
            except OSError as exc:
                raise _stream_error(exc, httpcore.WriteError) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        budget, started = _current_budget.get(), time.monotonic()
        try:
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        except BaseException:
            self._sock.close()
            raise
        try:
            while True:
                tls.settimeout(budget.slice(timeout, started, httpcore.ConnectTimeout, "TLS handshake"))
                try:
                    tls.do_handshake()
                    return _GuardedStream(tls)
                except TimeoutError:  # the handshake resumes where it stopped
                    continue
        except OSError as exc:  # ssl.SSLError included: a bad certificate is a connection error
            tls.close()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            tls.close()
            raise

    def get_extra_info(self, info: str):
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # an idle pooled connection the server closed (EOF) reads as readable
            return _readable_now(self._sock)
        return None


def _stream_error(exc: OSError, error: type[Exception]) -> Exception:
    """A bad descriptor means this process closed the socket under the call: httpcore's
    pool (1.0.9) closes a connection it judges idle without taking the connection's lock,
    so one just handed to a request can be closed as the request starts (seen with 64
    workers). ConnectionNotAvailable makes the pool send the request on another
    connection; anything else is the network's doing."""
    if exc.errno == errno.EBADF:
        return httpcore.ConnectionNotAvailable(f"the connection was closed under the request: {exc}")
    return error(str(exc))


def _readable_now(sock: socket.socket) -> bool:
    if sock.fileno() < 0:
        return True
    if hasattr(select, "poll"):  # select() cannot take descriptors over 1023
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, policy: AddressPolicy, ssl_context: ssl.SSLContext | None = None):
        super().__init__(trust_env=False)
        # httpx has no public way to give its pool an httpcore network backend yet
        # (encode/httpx#3180): replace the pool it built with the same pool and ours.
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError(f"httpx {httpx.__version__} keeps its pool elsewhere: the fetcher cannot pin addresses")
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(policy),
        )


class HostThrottle:
    """Per host, across threads: at most one request start every ``interval`` seconds, and
    at most ``connections`` requests in flight."""

    def __init__(self, interval: float, connections: int | None = None):
        self.interval = interval
        self.connections = connections
        self._next: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)

    def wait(self, host: str, deadline: float = math.inf, cancelled: threading.Event | None = None) -> bool:
        """Wait for the host's turn; False, without taking a turn, if it comes after
        ``deadline``, and False if ``cancelled`` is set while waiting."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            if start > deadline:
                return False
            self._next[host] = start + self.interval
        if start <= now:
            return True
        if cancelled is None:
            time.sleep(start - now)
            return True
        return not cancelled.wait(start - now)

    def acquire(self, host: str, deadline: float = math.inf, cancelled: threading.Event | None = None) -> bool:
        """A connection slot for ``host``, then its turn; False if either comes after
        ``deadline`` or ``cancelled`` is set, holding nothing. The slot comes first: a turn
        taken before a wait for a slot could be used late, closer than ``interval`` to
        the next request's turn. Pair every True with ``release``."""
        if self.connections is not None:
            with self._freed:
                while self._busy.get(host, 0) >= self.connections:
                    left = deadline - time.monotonic()
                    if left <= 0 or (cancelled is not None and cancelled.is_set()):
                        return False
                    self._freed.wait(min(left, _SLICE_S))  # sliced: a cancel is seen in time
                self._busy[host] = self._busy.get(host, 0) + 1
        if self.wait(host, deadline, cancelled):
            return True
        self.release(host)
        return False

    def release(self, host: str) -> None:
        if self.connections is None:
            return
        with self._freed:
            left = self._busy[host] - 1
            if left:
                self._busy[host] = left
            else:
                del self._busy[host]
            self._freed.notify_all()

    def in_flight(self, host: str) -> int:
        with self._lock:
            return self._busy.get(host, 0)


def host_throttle(settings: DownloaderSettings) -> HostThrottle:
    """This downloader's share of the per-host budgets, which ``settings.downloaders``
    downloaders (the Dagster pool's limit) spend together: none of them knows how many of
    the others are running, so each keeps to its fixed share, and the host never sees more
    than the whole budget however many machines or pods the downloaders run on."""
    return HostThrottle(settings.per_host_interval_s * settings.downloaders, settings.per_host_connections // settings.downloaders)


class Fetcher:
    def __init__(self, settings: DownloaderSettings, ssl_context: ssl.SSLContext | None = None):
        self.settings = settings
        self.policy = AddressPolicy(settings.allow_networks)
        self.throttle = host_throttle(settings)
        self.transport = _GuardedTransport(self.policy, ssl_context)
        self._headers = {"User-Agent": settings.user_agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        self._timeouts = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s).as_dict()
        self._cancelled = threading.Event()
        self._robots: dict[str, Protego | FetchResult] = {}
        self._robots_locks: dict[str, threading.Lock] = {}
        self._robots_guard = threading.Lock()

    def cancel(self) -> None:
        """Stop every fetch in flight, from any thread: each returns a transient
        ``cancelled`` refusal within about ``_SLICE_S``, and so does every later call."""
        self._cancelled.set()

    def close(self) -> None:
        self.cancel()
        self.transport.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- public --------------------------------------------------------------
    def fetch_image(self, url: str) -> FetchResult:
        """The image at ``url``, or a refusal saying why; never raises."""
        total = self.settings.total_timeout_s
        token = _current_budget.set(_Budget(time.monotonic() + total, total, self._cancelled))
        try:
            _current_budget.get().check()
            result = self._get(url, self.settings.max_bytes, obey_robots=self.settings.respect_robots_txt)
        except FetchCancelled:
            return refused(url, "cancelled", "the run is stopping", transient=True)
        except Exception as exc:  # a bug, or a failure nobody foresaw: it must not abort the partition
            log.exception("unexpected error fetching %r", url)
            # transient: says nothing final about the URL, so it is not cached and is tried again
            return refused(url, "unexpected_error", f"{type(exc).__name__}: {exc}"[:500], transient=True)
        finally:
            _current_budget.reset(token)
        if not result.ok:
            return result
        assert result.content_type is not None  # an ok result has one ("" when the server sent none)
        if not any(result.content_type.startswith(p) for p in self.settings.allowed_content_types):
            return refused(url, "bad_content_type", result.content_type)
        if not result.body:
            return refused(url, "empty_body")
        return result

    # --- robots.txt ------------------------------------------------------------
    def _robots_refusal(self, url: str, target: httpx.URL) -> FetchResult | None:
        origin = f"{target.scheme}://{target.netloc.decode('ascii')}"
        with self._robots_guard:
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:  # one robots.txt fetch per origin, however many threads ask
            if origin not in self._robots:
                self._robots[origin] = self._load_robots(origin)
        rules = self._robots[origin]
        if isinstance(rules, FetchResult):
            assert rules.reason is not None  # a refusal has its reason
            return refused(url, rules.reason, rules.detail, rules.transient)
        if not rules.can_fetch(str(target), self.settings.user_agent):
            return refused(url, "robots_disallowed", f"{origin}/robots.txt")
        return None

    def _load_robots(self, origin: str) -> Protego | FetchResult:
        result = self._get(f"{origin}/robots.txt", ROBOTS_MAX_BYTES, obey_robots=False)
        if result.ok:
            assert result.body is not None  # an ok result has its body
            return Protego.parse(result.body.decode("utf-8", "replace"))
        # RFC 9309: a 4xx robots.txt means no rules; but a 429 (the only transient 4xx)
        # asks us to slow down, so it counts as unreachable.
        assert result.detail is not None  # every refusal _get returns says what went wrong
        if result.reason == "http_status" and result.detail.startswith("4") and not result.transient:
            return Protego.parse("")
        if result.reason in _HOST_REASONS:
            return result
        # RFC 9309: an unreachable robots.txt (5xx, network, our deadline) means full disallow for now.
        return refused(origin, "robots_unavailable", f"{result.reason}: {result.detail}", transient=True)

    # --- HTTP --------------------------------------------------------------------
    def _get(self, url: str, max_bytes: int, obey_robots: bool) -> FetchResult:
        """GET ``url``, following redirects: each hop's target is validated, and checked against
        its robots.txt when ``obey_robots``, before a request is sent to it."""
        target, location = None, url
        for _ in range(self.settings.max_redirects + 1):
            try:
                target = _parse_url(location, base=target)
            except InvalidURL as exc:
                return refused(url, "invalid_url", str(exc))
            if obey_robots and (refusal := self._robots_refusal(url, target)) is not None:
                return refusal
            outcome = self._request(url, target, max_bytes, robots_txt=not obey_robots)
            if isinstance(outcome, FetchResult):
                return outcome
            location = outcome
        return refused(url, "too_many_redirects", f"more than {self.settings.max_redirects}")

    def _request(self, url: str, target: httpx.URL, max_bytes: int, robots_txt: bool) -> FetchResult | str:
        """One hop, retried with backoff while it fails transiently and the deadline allows:
        a result, or the Location it redirects to."""
        attempt = 0
        while True:
            outcome, retry_after = self._request_once(url, target, max_bytes, robots_txt)
            if isinstance(outcome, str) or not outcome.transient or attempt >= self.settings.retries:
                return outcome
            attempt += 1
            if not _current_budget.get().sleep(min(retry_after or self.settings.backoff_s * 2 ** (attempt - 1), 30.0)):
                return outcome  # the next try would start after the deadline

    def _request_once(self, url: str, target: httpx.URL, max_bytes: int, robots_txt: bool) -> tuple[FetchResult | str, float | None]:
        budget = _current_budget.get()
        host = target.raw_host.decode("ascii")  # the name httpx hands the network backend
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            # Resolved and checked once, before the throttle; the connection goes to exactly these.
            budget.pinned = {(host, port): _resolve_within(self.policy, host, port, budget)}
        except BlockedAddress as exc:
            return refused(url, "blocked_address", str(exc)), None
        except Unresolvable as exc:
            return refused(url, "dns_error", str(exc), transient=True), None
        except InvalidURL as exc:
            return refused(url, "invalid_url", str(exc)), None
        except httpcore.TimeoutException as exc:
            return refused(url, "timeout", str(exc), transient=True), None
        if not self.throttle.acquire(host, budget.deadline, budget.cancelled):
            budget.pinned = {}
            budget.check()
            return refused(url, "timeout", f"the host's turn comes after the total deadline of {budget.total_s} s", transient=True), None
        request = httpx.Request("GET", target, headers=self._headers, extensions={"timeout": self._timeouts})
        try:
            response = self.transport.handle_request(request)
            response.request = request
            try:
                return self._respond(url, response, max_bytes, robots_txt)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            return refused(url, "timeout", f"{type(exc).__name__}: {exc}", transient=True), None
        except (httpx.HTTPError, httpcore.ConnectionNotAvailable) as exc:  # the latter: closed under a body being read
            return refused(url, "connection_error", f"{type(exc).__name__}: {exc}", transient=True), None
        finally:
            budget.pinned = {}
            self.throttle.release(host)  # the body is read (or abandoned) by now: the connection is free

    def _respond(self, url: str, response: httpx.Response, max_bytes: int, robots_txt: bool) -> tuple[FetchResult | str, float | None]:
        if response.is_redirect:  # its Location is parsed by _get, as the next hop
            location = response.headers.get("Location")
            if not location:
                return refused(url, "http_status", f"{response.status_code} without Location"), None
            return location, None
        return self._read(url, response, max_bytes, robots_txt)

    def _read(self, url: str, response: httpx.Response, max_bytes: int, robots_txt: bool) -> tuple[FetchResult, float | None]:
        """The body of a 200 response. A robots.txt is cut at ``max_bytes`` (RFC 9309 asks
        to parse at least 500 KiB) and is not an image, so noai does not apply to it."""
        status = response.status_code
        if status != 200:
            transient = status == 429 or status >= 500
            retry_after = _retry_after(response.headers.get("Retry-After"))
            return refused(url, "http_status", str(status), transient=transient), retry_after
        if not robots_txt and has_noai(response.headers.get("X-Robots-Tag")):
            return refused(url, "x_robots_noai", response.headers.get("X-Robots-Tag")), None
        declared = response.headers.get("Content-Length")
        if not robots_txt and declared and declared.isdigit() and int(declared) > max_bytes:
            return refused(url, "too_large", f"Content-Length {declared} > {max_bytes}"), None
        chunks, size = [], 0
        for chunk in response.iter_bytes():  # each read bounded by the deadline, in the backend
            size += len(chunk)
            if size > max_bytes:
                if robots_txt:
                    chunks.append(chunk[: len(chunk) - (size - max_bytes)])
                    break
                return refused(url, "too_large", f"body over {max_bytes} bytes"), None
            chunks.append(chunk)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return FetchResult(url=url, ok=True, content_type=content_type, body=b"".join(chunks)), None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; None for an HTTP date or a value time.sleep cannot take."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None  # NaN fails >= too
