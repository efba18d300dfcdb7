"""The fetcher's total deadline and its cancel flag, against real loopback servers that
stall at each stage of a request: the TCP connect, the TLS handshake, the response
headers and the body. Also TLS to a pinned address keeps the name for SNI and the
certificate check. Nothing outside 127.0.0.0/8 is contacted; names are answered by a
replaced getaddrinfo (there is no DNS here)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from asagi_dagster.web.fetch import Fetcher
from tests.web.test_fetch import JPEG, LoopbackServer, image, settings, status

SLACK_S = 1.0  # the bound: a fetch ends within total_timeout_s plus a second


@pytest.fixture
def server():
    srv = LoopbackServer()
    srv.routes["/robots.txt"] = status(404)
    yield srv
    srv.close()


def timed_fetch(url: str, **overrides):
    started = time.monotonic()
    with Fetcher(settings(**overrides)) as fetcher:
        result = fetcher.fetch_image(url)
    return result, time.monotonic() - started


def drip(raw: bytes, interval: float, for_at_most: float):
    """A route that sends ``raw`` (status line, headers, body) one byte per ``interval``."""

    def route(h, n):
        end = time.monotonic() + for_at_most  # bounded: the server gives up on its own
        try:
            for byte in raw:
                if time.monotonic() > end:
                    break
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(interval)
        except OSError:
            pass  # the client hung up, as it should
        h.close_connection = True

    return route


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n" + JPEG[:8]


def test_headers_sent_one_byte_at_a_time_end_at_the_deadline(server):
    # Each byte comes well inside the read timeout, so only a deadline over the headers stops it.
    server.routes["/x.jpg"] = drip(RESPONSE, interval=0.2, for_at_most=8.0)
    result, elapsed = timed_fetch(server.url("/x.jpg"), total_timeout_s=1.5, read_timeout_s=5.0)
    assert (result.ok, result.reason, result.transient) == (False, "timeout", True)
    assert "total deadline of 1.5 s" in result.detail
    assert elapsed < 1.5 + SLACK_S, elapsed


def test_a_body_sent_one_byte_at_a_time_ends_at_the_deadline(server):
    body = b"z" * 100
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\n\r\n" + body
    header_len = len(raw) - len(body)

    def route(h, n):
        h.wfile.write(raw[:header_len])
        h.wfile.flush()
        drip(body, interval=0.2, for_at_most=8.0)(h, n)

    server.routes["/x.jpg"] = route
    result, elapsed = timed_fetch(server.url("/x.jpg"), total_timeout_s=1.5, read_timeout_s=5.0)
    assert (result.reason, result.transient) == ("timeout", True)
    assert elapsed < 1.5 + SLACK_S, elapsed


def test_a_server_that_accepts_and_says_nothing_ends_at_the_deadline(server):
    server.routes["/x.jpg"] = lambda h, n: time.sleep(6.0)  # bounded: then the handler returns
    result, elapsed = timed_fetch(server.url("/x.jpg"), total_timeout_s=1.0, read_timeout_s=5.0)
    assert (result.reason, result.transient) == ("timeout", True)
    assert elapsed < 1.0 + SLACK_S, elapsed


def test_a_slow_robots_txt_counts_against_the_deadline(server):
    server.routes["/robots.txt"] = drip(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nUser-agent", 0.2, 8.0)
    server.routes["/x.jpg"] = image()
    result, elapsed = timed_fetch(server.url("/x.jpg"), total_timeout_s=1.0, read_timeout_s=5.0)
    assert (result.reason, result.transient) == ("robots_unavailable", True)
    assert result.detail.startswith("timeout:")
    assert server.count("/x.jpg") == 0
    assert elapsed < 1.0 + SLACK_S, elapsed


def test_retries_stop_at_the_deadline(server):
    server.routes["/x.jpg"] = status(503)
    result, elapsed = timed_fetch(server.url("/x.jpg"), total_timeout_s=1.0, retries=10, backoff_s=0.2)
    assert (result.reason, result.detail, result.transient) == ("http_status", "503", True)
    assert elapsed < 1.0 + SLACK_S, elapsed
    # 0.2 s then 0.4 s of backoff fit, the next 0.8 s does not: the third answer comes at about
    # 0.6 s, well before the deadline even on a loaded machine (with 0.3 s it came at 0.9 s, and
    # a slow third request was cut by the deadline as a timeout).
    assert 2 <= server.count("/x.jpg") <= 3


def test_a_throttle_turn_after_the_deadline_is_not_waited_for(server):
    server.routes["/a.jpg"] = image()
    server.routes["/b.jpg"] = image()
    with Fetcher(settings(total_timeout_s=1.0, per_host_interval_s=5.0, respect_robots_txt=False)) as fetcher:
        assert fetcher.fetch_image(server.url("/a.jpg")).ok
        started = time.monotonic()
        result = fetcher.fetch_image(server.url("/b.jpg"))
        elapsed = time.monotonic() - started
    assert (result.reason, result.transient) == ("timeout", True)
    assert elapsed < 0.5, elapsed
    assert server.count("/b.jpg") == 0


@pytest.fixture
def backlog_full():
    """A port whose accept queue is full: the kernel drops further SYNs, so a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=2)  # takes the one slot
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(listener.getsockname())
        pytest.skip("this kernel does not leave a connect hanging on a full accept queue")
    except TimeoutError:
        pass
    finally:
        probe.close()
    yield listener.getsockname()[1]
    filler.close()
    listener.close()


def test_a_connect_that_hangs_ends_at_the_deadline(backlog_full):
    url = f"http://127.0.0.1:{backlog_full}/x.jpg"
    result, elapsed = timed_fetch(url, total_timeout_s=1.0, connect_timeout_s=5.0, respect_robots_txt=False)
    assert (result.reason, result.transient) == ("timeout", True)
    assert "connecting to 127.0.0.1" in result.detail
    assert elapsed < 1.0 + SLACK_S, elapsed


def test_the_connect_timeout_still_applies_inside_the_deadline(backlog_full):
    url = f"http://127.0.0.1:{backlog_full}/x.jpg"
    result, elapsed = timed_fetch(url, total_timeout_s=10.0, connect_timeout_s=0.5, respect_robots_txt=False)
    assert (result.reason, result.transient) == ("timeout", True)
    assert "0.5 s passed" in result.detail
    assert elapsed < 1.5, elapsed


@pytest.fixture
def silent_tcp():
    """Accepts connections and never sends a byte: a TLS handshake that never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_tls_handshake_that_stalls_ends_at_the_deadline(silent_tcp):
    result, elapsed = timed_fetch(f"https://127.0.0.1:{silent_tcp}/x.jpg", total_timeout_s=1.0, connect_timeout_s=5.0, respect_robots_txt=False)
    assert (result.reason, result.transient) == ("timeout", True)
    assert "TLS handshake" in result.detail
    assert elapsed < 1.0 + SLACK_S, elapsed


def test_a_name_lookup_that_hangs_ends_at_the_deadline(monkeypatch):
    real = socket.getaddrinfo

    def slow_dns(host, *args, **kwargs):
        if host == "slow-dns.test":
            time.sleep(4.0)  # bounded; a resolver timing out does this for 5-30 s
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    result, elapsed = timed_fetch("http://slow-dns.test/x.jpg", total_timeout_s=1.0, respect_robots_txt=False)
    assert (result.reason, result.transient) == ("timeout", True)
    assert "resolving slow-dns.test" in result.detail
    assert elapsed < 1.0 + SLACK_S, elapsed


# --------------------------------------------------------------------------------------
# Cancel
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stall", ["headers", "silence", "connect"])
def test_cancel_stops_fetches_in_flight_at_once(server, backlog_full, stall):
    server.routes["/drip.jpg"] = drip(RESPONSE, interval=0.5, for_at_most=20.0)
    server.routes["/silent.jpg"] = lambda h, n: time.sleep(20.0)
    url = {"headers": server.url("/drip.jpg"), "silence": server.url("/silent.jpg"), "connect": f"http://127.0.0.1:{backlog_full}/x.jpg"}[stall]
    fetcher = Fetcher(settings(total_timeout_s=60.0, read_timeout_s=30.0, connect_timeout_s=30.0, respect_robots_txt=False))
    results = []
    workers = [threading.Thread(target=lambda: results.append(fetcher.fetch_image(url))) for _ in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # all three are blocked in the stalled stage
    assert results == []
    stopped = cancel_and_join(fetcher, workers)
    assert not any(worker.is_alive() for worker in workers)
    assert stopped < 1.0, stopped
    assert [(r.reason, r.transient) for r in results] == [("cancelled", True)] * 3
    # and a fetch asked for afterwards does not start
    assert fetcher.fetch_image(server.url("/drip.jpg")).reason == "cancelled"


def cancel_and_join(fetcher, workers) -> float:
    """Cancel ``fetcher``, wait (boundedly) for its worker threads, close it; returns the
    seconds from the cancel to the last worker's end."""
    cancelled_at = time.monotonic()
    fetcher.cancel()
    for worker in workers:
        worker.join(timeout=5.0)
    stopped = time.monotonic() - cancelled_at
    fetcher.close()
    return stopped


def test_cancel_stops_fetches_waiting_for_the_host_or_the_resolver(server, monkeypatch):
    real = socket.getaddrinfo

    def slow_dns(host, *args, **kwargs):
        if host == "slow-dns.test":
            time.sleep(5.0)  # bounded
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    server.routes["/x.jpg"] = image()
    fetcher = Fetcher(settings(total_timeout_s=60.0, per_host_interval_s=20.0, respect_robots_txt=False))
    assert fetcher.fetch_image(server.url("/x.jpg")).ok  # takes the host's turn: the next is 20 s away
    urls = [server.url("/x.jpg"), server.url("/x.jpg"), "http://slow-dns.test/x.jpg"]
    results = {}
    workers = [threading.Thread(target=lambda i=i, u=u: results.__setitem__(i, fetcher.fetch_image(u))) for i, u in enumerate(urls)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    stopped = cancel_and_join(fetcher, workers)
    assert stopped < 1.0, stopped
    assert [(results[i].reason, results[i].transient) for i in range(3)] == [("cancelled", True)] * 3
    assert server.count("/x.jpg") == 1


# --------------------------------------------------------------------------------------
# TLS to the pinned address: the name still goes into SNI and the certificate check
# --------------------------------------------------------------------------------------


def _certificate(name: str, directory):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path):
    cert_path, key_path = _certificate("img.test", tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    seen_sni = []
    context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    srv = LoopbackServer(tls=context)
    srv.seen_sni = seen_sni
    srv.client_context = ssl.create_default_context(cafile=str(cert_path))
    yield srv
    srv.close()


def resolve_to_loopback(monkeypatch, name: str) -> list[str]:
    lookups = []
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return lookups


def test_tls_to_the_pinned_address_sends_the_name_as_sni_and_checks_it(monkeypatch, tls_server):
    lookups = resolve_to_loopback(monkeypatch, "img.test")
    tls_server.routes["/x.jpg"] = image()
    with Fetcher(settings(), ssl_context=tls_server.client_context) as fetcher:
        result = fetcher.fetch_image(f"https://img.test:{tls_server.port}/x.jpg")
    assert result.ok is True, result
    assert result.body == JPEG
    assert "img.test" in tls_server.seen_sni
    assert [(p, h["Host"]) for p, _, h in tls_server.requests] == [("/robots.txt", f"img.test:{tls_server.port}"), ("/x.jpg", f"img.test:{tls_server.port}")]
    assert lookups == ["img.test", "img.test"]  # one lookup per request, none by the connection


def test_tls_with_a_certificate_for_another_name_is_a_connection_error(monkeypatch, tls_server):
    resolve_to_loopback(monkeypatch, "other.test")
    tls_server.routes["/x.jpg"] = image()
    with Fetcher(settings(respect_robots_txt=False), ssl_context=tls_server.client_context) as fetcher:
        result = fetcher.fetch_image(f"https://other.test:{tls_server.port}/x.jpg")
    assert (result.ok, result.reason, result.transient) == (False, "connection_error", True)
    assert "certificate" in result.detail.lower() or "hostname" in result.detail.lower(), result.detail
    assert tls_server.requests == []
