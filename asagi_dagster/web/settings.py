"""The web stage's settings (the profile's ``sources.web``): the WARC inbox, the limits on
what a page may hold, and the polite image downloader."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from asagi_dagster.settings import LocalPath, Strict


class DownloaderSettings(Strict):
    user_agent: str = "asagi-dagster/0.1 (+https://github.com/asagi-dagster)"
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(15.0, gt=0, description="Longest wait for the next bytes.")
    total_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Longest one image fetch may take, all of it: name lookup, connecting, TLS, "
            "headers, body, robots.txt, redirects, retries and waiting for the host's turn."
        ),
    )
    max_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_redirects: int = Field(5, ge=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    per_host_interval_s: float = Field(1.0, ge=0, description="Minimum gap between two requests to one host, for all downloaders together (see downloaders).")
    per_host_connections: int = Field(4, ge=1, description="Most requests in flight to one host at once, for all downloaders together.")
    downloaders: int = Field(
        1,
        ge=1,
        description="How many pair_images steps may download at once in the deployment: the limit of the Dagster pool the pair_images asset runs in. "
        "The per-host budgets above are shared out among them: each waits per_host_interval_s x downloaders between requests to a host and keeps "
        "per_host_connections // downloaders in flight, so the host sees the budget whatever machines or pods the steps run on.",
    )
    workers: int = Field(4, ge=1)
    allowed_content_types: list[str] = ["image/"]
    respect_robots_txt: bool = True
    # Private, loopback and link-local addresses are refused unless listed here
    # (tests and the embedded sample's image server on 127.0.0.1).
    allow_networks: list[str] = []

    @field_validator("allow_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for index, net in enumerate(value):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"entry {index} is not an IP network such as 10.0.0.0/8 or 127.0.0.1") from None  # not echoed: see _describe
        return value

    @model_validator(mode="after")
    def _connections_cover_downloaders(self) -> DownloaderSettings:
        if self.per_host_connections < self.downloaders:
            raise ValueError(
                f"per_host_connections ({self.per_host_connections}) is below downloaders ({self.downloaders}): every downloader needs "
                "one connection per host of its own; raise per_host_connections or lower the pool limit and downloaders"
            )
        return self


class HtmlSettings(Strict):
    max_images_per_page: int = Field(500, ge=1)
    max_alt_chars: int = Field(10_000, ge=1)
    max_context_chars: int = Field(1_000, ge=1, description="Cap on nearest text before/after an image.")


class WebSourceSettings(Strict):
    inbox: LocalPath = Field(description="Folder or s3:// prefix that receives .warc/.warc.gz shards.")
    resync_cron: str = "0 * * * *"
    sensor_interval_s: int = Field(60, ge=5)
    files_per_partition: int = Field(
        1,
        ge=1,
        description=(
            "Inbox files one partition holds (D111): new files of one inbox folder are batched in name order at "
            "registration, the batch keyed by its first file. Each file is still written, committed and reported on "
            "its own. 1 keeps one partition per file; a Common Crawl snapshot (90,000 files) wants about 100, as "
            "Dagster's backfills cost about 50 ms per partition."
        ),
    )
    shards_per_run: int = Field(
        8,
        ge=1,
        description=(
            "Partitions one backfill run takes, one after another, through each per-shard step (ingest, screening, "
            "filtering, reference texts, synthesis): each run has a fixed cost (process start, code load, queue; a GPU "
            "program's model load), paid once per batch."
        ),
    )
    scan_files_per_tick: int = Field(
        20_000,
        ge=1,
        description=(
            "Inbox files the sensor and the re-sync list per tick, each tick going on where the last stopped: a tick's "
            "listing stays bounded however large the inbox (on S3, this / 1,000 pages), and a new file is found within "
            "inbox size / this ticks."
        ),
    )
    max_html_bytes: int = Field(5 * 1024 * 1024, gt=0)
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    html: HtmlSettings = HtmlSettings()
    downloader: DownloaderSettings = DownloaderSettings()
