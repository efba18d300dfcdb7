"""A polite, guarded image fetcher.

Honours robots.txt (RFC 9309, parsed by protego) for the URL and for every redirect
target, and ``X-Robots-Tag: noai`` / ``noimageai``; keeps a minimum gap between requests
to one host, times out, caps the body size, checks the content type, retries transient
failures with backoff, and refuses private, loopback and link-local addresses, at every
redirect hop, unless the profile allow-lists them.

``Fetcher.fetch_image`` never raises: whatever the URL string, every outcome is a
``FetchResult``, so one odd URL cannot abort a whole partition.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass

import httpx
from protego import Protego

from asagi_dagster.config import DownloaderSettings
from asagi_dagster.web.noai import has_noai

log = logging.getLogger(__name__)

ROBOTS_MAX_BYTES = 512 * 1024
# Failures of a robots.txt fetch that are about the host rather than about robots.txt:
# they are reported as they are, not hidden behind "robots_unavailable".
_HOST_REASONS = frozenset({"blocked_address", "dns_error"})


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


def _parse_url(url: str, base: httpx.URL | None = None) -> httpx.URL:
    """``url``, resolved against ``base``, parsed the way httpx will request it, so that what
    is checked is what gets connected to. Raises InvalidURL unless it is http(s) with a
    host that DNS can take and a port in range."""
    try:
        target = httpx.URL(url) if base is None else base.join(url)
        # getaddrinfo would raise UnicodeError on empty labels ('a..b') and labels over 63 chars
        target.raw_host.decode("ascii").encode("idna")
    except (httpx.InvalidURL, ValueError, TypeError) as exc:  # UnicodeError is a ValueError
        raise InvalidURL(f"{exc}: {url!r:.200}") from None
    if target.scheme not in ("http", "https"):
        raise InvalidURL(f"not http(s): {url!r:.200}")
    if not target.host:
        raise InvalidURL(f"no host: {url!r:.200}")
    if target.port is not None and not 0 < target.port < 65536:  # httpx takes any integer
        raise InvalidURL(f"port out of range: {url!r:.200}")
    return target


class AddressPolicy:
    """Refuses hosts that resolve to non-public addresses, unless allow-listed."""

    def __init__(self, allow_networks: list[str]):
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in allow_networks]

    def check(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise Unresolvable(f"cannot resolve {host}: {exc}") from None
        except (ValueError, OverflowError) as exc:  # the idna codec's UnicodeError, a port out of range
            raise InvalidURL(f"malformed host or port {host!r:.200}:{port}: {exc}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if address.is_global or any(address in net for net in self.allowed):
                continue
            raise BlockedAddress(f"{host} resolves to non-public address {address}")


class HostThrottle:
    """At most one request per host every ``interval`` seconds, across threads."""

    def __init__(self, interval: float):
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            time.sleep(start - now)


class Fetcher:
    def __init__(self, settings: DownloaderSettings):
        self.settings = settings
        self.policy = AddressPolicy(settings.allow_networks)
        self.throttle = HostThrottle(settings.per_host_interval_s)
        self.client = httpx.Client(
            follow_redirects=False,  # every hop is checked here first
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            headers={"User-Agent": settings.user_agent},
            trust_env=False,
            event_hooks={"response": [_check_location]},
        )
        self._robots: dict[str, Protego | FetchResult] = {}
        self._robots_locks: dict[str, threading.Lock] = {}
        self._robots_guard = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- public --------------------------------------------------------------
    def fetch_image(self, url: str) -> FetchResult:
        """The image at ``url``, or a refusal saying why; never raises."""
        try:
            result = self._get(url, self.settings.max_bytes, obey_robots=self.settings.respect_robots_txt)
        except Exception as exc:  # a bug, or a failure nobody foresaw: it must not abort the partition
            log.exception("unexpected error fetching %r", url)
            # transient: says nothing final about the URL, so it is not cached and is tried again
            return refused(url, "unexpected_error", f"{type(exc).__name__}: {exc}"[:500], transient=True)
        if not result.ok:
            return result
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
            return refused(url, rules.reason, rules.detail, rules.transient)
        if not rules.can_fetch(str(target), self.settings.user_agent):
            return refused(url, "robots_disallowed", f"{origin}/robots.txt")
        return None

    def _load_robots(self, origin: str) -> Protego | FetchResult:
        result = self._get(f"{origin}/robots.txt", ROBOTS_MAX_BYTES, obey_robots=False)
        if result.ok:
            return Protego.parse(result.body.decode("utf-8", "replace"))
        # RFC 9309: a 4xx robots.txt means no rules; but a 429 (the only transient 4xx)
        # asks us to slow down, so it counts as unreachable.
        if result.reason == "http_status" and result.detail.startswith("4") and not result.transient:
            return Protego.parse("")
        if result.reason in _HOST_REASONS:
            return result
        # RFC 9309: an unreachable robots.txt (5xx, network) means full disallow for now.
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
        """One hop, retried with backoff while it fails transiently: a result, or the Location
        it redirects to."""
        attempt = 0
        while True:
            outcome, retry_after = self._request_once(url, target, max_bytes, robots_txt)
            if isinstance(outcome, str) or not outcome.transient or attempt >= self.settings.retries:
                return outcome
            attempt += 1
            time.sleep(min(retry_after or self.settings.backoff_s * 2 ** (attempt - 1), 30.0))

    def _request_once(self, url: str, target: httpx.URL, max_bytes: int, robots_txt: bool) -> tuple[FetchResult | str, float | None]:
        host = target.raw_host.decode("ascii")  # the name httpx will resolve and connect to
        try:
            self.policy.check(host, target.port or (443 if target.scheme == "https" else 80))
        except BlockedAddress as exc:
            return refused(url, "blocked_address", str(exc)), None
        except Unresolvable as exc:
            return refused(url, "dns_error", str(exc), transient=True), None
        except InvalidURL as exc:
            return refused(url, "invalid_url", str(exc)), None
        self.throttle.wait(host)
        try:
            with self.client.stream("GET", target) as response:
                if response.is_redirect:
                    location = response.headers.get("Location")
                    if not location:
                        return refused(url, "http_status", f"{response.status_code} without Location"), None
                    return location, None
                return self._read(url, response, max_bytes, robots_txt)
        except InvalidURL as exc:  # from _check_location
            return refused(url, "invalid_url", str(exc)), None
        except httpx.TimeoutException as exc:
            return refused(url, "timeout", type(exc).__name__, transient=True), None
        except httpx.HTTPError as exc:
            return refused(url, "connection_error", f"{type(exc).__name__}: {exc}", transient=True), None

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
        # The read timeout is per chunk: a server dripping bytes needs an overall deadline.
        deadline = time.monotonic() + self.settings.total_timeout_s
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                if robots_txt:
                    chunks.append(chunk[: len(chunk) - (size - max_bytes)])
                    break
                return refused(url, "too_large", f"body over {max_bytes} bytes"), None
            chunks.append(chunk)
            if time.monotonic() > deadline:
                return refused(url, "timeout", f"body not complete after {self.settings.total_timeout_s} s", transient=True), None
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return FetchResult(url=url, ok=True, content_type=content_type, body=b"".join(chunks)), None


def _check_location(response: httpx.Response) -> None:
    """httpx parses a redirect's Location even when not following it, and raises
    RemoteProtocolError (a transient connection_error here) on one it cannot parse: parse
    it first, so that a bad Location is the permanent invalid_url it is."""
    if response.has_redirect_location:
        _parse_url(response.headers["Location"], base=response.request.url)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; None for an HTTP date or a value time.sleep cannot take."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None  # NaN fails >= too
