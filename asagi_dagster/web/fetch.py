"""A polite, guarded image fetcher.

Honours robots.txt (RFC 9309) and ``X-Robots-Tag: noai`` / ``noimageai``, keeps a
minimum gap between requests to one host, times out, caps the body size, checks the
content type, retries transient failures with backoff, and refuses private, loopback
and link-local addresses, at every redirect hop, unless the profile allow-lists them.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from asagi_dagster.config import DownloaderSettings

ROBOTS_MAX_BYTES = 512 * 1024
_NOAI_TOKENS = frozenset({"noai", "noimageai"})


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


def has_noai(x_robots_tag: str | None) -> bool:
    """True when an X-Robots-Tag value forbids AI use (``noai``, ``noimageai``, maybe per agent)."""
    for part in (x_robots_tag or "").lower().split(","):
        token = part.split(":")[-1].strip()
        if token in _NOAI_TOKENS:
            return True
    return False


class BlockedAddress(Exception):
    pass


class Unresolvable(Exception):
    pass


class AddressPolicy:
    """Refuses hosts that resolve to non-public addresses, unless allow-listed."""

    def __init__(self, allow_networks: list[str]):
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in allow_networks]

    def check(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise Unresolvable(f"cannot resolve {host}: {exc}") from None
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
            follow_redirects=False,
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            headers={"User-Agent": settings.user_agent},
            trust_env=False,
        )
        self._robots: dict[str, RobotFileParser | FetchResult] = {}
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
        verdict = self._robots_verdict(url)
        if verdict is not None:
            return verdict
        result = self._get(url, self.settings.max_bytes)
        if not result.ok:
            return result
        if not any(result.content_type.startswith(p) for p in self.settings.allowed_content_types):
            return refused(url, "bad_content_type", result.content_type)
        if not result.body:
            return refused(url, "empty_body")
        return result

    # --- robots.txt ------------------------------------------------------------
    def _robots_verdict(self, url: str) -> FetchResult | None:
        if not self.settings.respect_robots_txt:
            return None
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._robots_guard:
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:  # one robots.txt fetch per origin, however many threads ask
            if origin not in self._robots:
                self._robots[origin] = self._load_robots(origin)
        rules = self._robots[origin]
        if isinstance(rules, FetchResult):
            return refused(url, rules.reason, rules.detail, rules.transient)
        if not rules.can_fetch(self.settings.user_agent, url):
            return refused(url, "robots_disallowed", f"{origin}/robots.txt")
        return None

    def _load_robots(self, origin: str) -> RobotFileParser | FetchResult:
        result = self._get(f"{origin}/robots.txt", ROBOTS_MAX_BYTES, record_status=True)
        parser = RobotFileParser()
        if result.ok:
            parser.parse(result.body.decode("utf-8", "replace").splitlines())
            return parser
        if result.reason == "http_status" and result.detail.startswith("4"):
            parser.parse([])  # RFC 9309: a 4xx robots.txt means no rules
            return parser
        if result.reason == "blocked_address":
            return result
        # RFC 9309: an unreachable robots.txt (5xx, network) means full disallow for now.
        return refused(origin, "robots_unavailable", f"{result.reason}: {result.detail}", transient=True)

    # --- HTTP --------------------------------------------------------------------
    def _get(self, url: str, max_bytes: int, record_status: bool = False) -> FetchResult:
        attempt = 0
        while True:
            result, retry_after = self._get_once(url, max_bytes)
            if result.ok or not result.transient or attempt >= self.settings.retries:
                return result
            attempt += 1
            time.sleep(min(retry_after or self.settings.backoff_s * 2 ** (attempt - 1), 30.0))

    def _get_once(self, url: str, max_bytes: int) -> tuple[FetchResult, float | None]:
        current = url
        for _ in range(self.settings.max_redirects + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return refused(url, "invalid_url", current), None
            try:
                self.policy.check(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
            except BlockedAddress as exc:
                return refused(url, "blocked_address", str(exc)), None
            except Unresolvable as exc:
                return refused(url, "dns_error", str(exc), transient=True), None
            self.throttle.wait(parts.netloc)
            try:
                with self.client.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("Location")
                        if not location:
                            return refused(url, "http_status", f"{response.status_code} without Location"), None
                        current = urljoin(current, location)
                        continue
                    return self._read(url, response, max_bytes)
            except httpx.TimeoutException as exc:
                return refused(url, "timeout", type(exc).__name__, transient=True), None
            except httpx.HTTPError as exc:
                return refused(url, "connection_error", f"{type(exc).__name__}: {exc}", transient=True), None
        return refused(url, "too_many_redirects", f"more than {self.settings.max_redirects}"), None

    def _read(self, url: str, response: httpx.Response, max_bytes: int) -> tuple[FetchResult, float | None]:
        status = response.status_code
        if status != 200:
            transient = status == 429 or status >= 500
            retry_after = _retry_after(response.headers.get("Retry-After"))
            return refused(url, "http_status", str(status), transient=transient), retry_after
        if has_noai(response.headers.get("X-Robots-Tag")):
            return refused(url, "x_robots_noai", response.headers.get("X-Robots-Tag")), None
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            return refused(url, "too_large", f"Content-Length {declared} > {max_bytes}"), None
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                return refused(url, "too_large", f"body over {max_bytes} bytes"), None
            chunks.append(chunk)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return FetchResult(url=url, ok=True, content_type=content_type, body=b"".join(chunks)), None


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
