"""Writing WARC records with warcio, deterministically (fixed ids and dates), so a
generated shard is byte-identical from run to run."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

CRAWL_DATE = "2024-05-12T09:00:00Z"
_NAMESPACE = uuid.UUID("6f1c1a52-9d7e-4d0e-9a43-3f8a0b1c2d3e")


def record_id(*parts: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(_NAMESPACE, '|'.join(parts))}>"


class ShardWriter:
    """A WARC file being built in memory: warcinfo first, then request/response pairs."""

    def __init__(self, name: str, gzip: bool = True):
        self.name = name
        self.buffer = io.BytesIO()
        self.writer = WARCWriter(self.buffer, gzip=gzip, warc_version="1.1")
        info = self.writer.create_warcinfo_record(name, {"software": "asagi-dagster sample", "format": "WARC File Format 1.1"})
        info.rec_headers.replace_header("WARC-Record-ID", record_id(name, "warcinfo"))
        info.rec_headers.replace_header("WARC-Date", CRAWL_DATE)
        self.writer.write_record(info)

    def _headers(self, *key: str) -> dict:
        return {"WARC-Record-ID": record_id(self.name, *key), "WARC-Date": CRAWL_DATE}

    def request(self, url: str) -> None:
        host = url.split("/")[2]
        headers = StatusAndHeaders(f"GET /{url.split('/', 3)[-1]} HTTP/1.1", [("Host", host)], is_http_request=True)
        record = self.writer.create_warc_record(url, "request", http_headers=headers, warc_headers_dict=self._headers(url, "request"))
        self.writer.write_record(record)

    def response(
        self,
        url: str,
        body: bytes,
        content_type: str | None,
        status: str = "200 OK",
        extra_headers: Sequence[tuple[str, str]] = (),
        key: str = "response",
        warc_headers: dict | None = None,
    ) -> None:
        headers = [("Content-Type", content_type)] if content_type else []
        headers += list(extra_headers)
        http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
        record = self.writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(body),
            http_headers=http,
            warc_headers_dict={**self._headers(url, key), **(warc_headers or {})},
        )
        self.writer.write_record(record)

    def fetch(self, url: str, body: bytes, content_type: str | None, **kwargs) -> None:
        """A crawler's request record followed by its response."""
        self.request(url)
        self.response(url, body, content_type, **kwargs)

    def revisit(self, url: str) -> None:
        record = self.writer.create_revisit_record(url, digest="sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", refers_to_uri=url, refers_to_date=CRAWL_DATE)
        for name, value in self._headers(url, "revisit").items():
            record.rec_headers.replace_header(name, value)
        self.writer.write_record(record)

    def raw(self, data: bytes) -> None:
        """Bytes written as they are: for damaged records."""
        self.buffer.write(data)

    def getvalue(self) -> bytes:
        return self.buffer.getvalue()
