"""AWS status check (every 5 minutes): S3 connectivity (head bucket, write and read back
a small object) and a CloudFront fetch, posted to the internal dashboard API.

S3, CloudFront and the dashboard are the platform's, so the check runs once per tick
(a run without a tenant), plus once for each escrow tenant that has its own storage
(``tenants.storage``), which probes that tenant's bucket and URL instead."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
from sqlalchemy import text
from sqlalchemy.orm import Session

from jobcore.errors import ExternalServiceError
from jobcore.http import DeadlineSession
from jobcore.settings import Settings, get_settings

log = logging.getLogger(__name__)

PROBE_PREFIX = "status-probe/"


class StatusPostFailed(ExternalServiceError):
    """The dashboard API did not accept the status report."""


@dataclass
class AwsStatus:
    s3_ok: bool
    cloudfront_ok: bool
    checked_at: str
    errors: dict[str, str] = field(default_factory=dict)
    tenant_id: int | None = None


def make_s3_client(settings: Settings | None = None) -> Any:
    """A boto3 S3 client; S3_ENDPOINT_URL (if set) points it at another endpoint. Time-outs
    and attempts are explicit (AWS_CONNECT_TIMEOUT, AWS_READ_TIMEOUT, AWS_MAX_ATTEMPTS):
    botocore's defaults (60 s each, plus retries) would hold a 5-minute check for minutes."""
    import boto3
    from botocore.config import Config

    s = settings or get_settings()
    config = Config(connect_timeout=s.aws_connect_timeout, read_timeout=s.aws_read_timeout,
                    retries={"total_max_attempts": s.aws_max_attempts, "mode": "standard"})
    return boto3.client("s3", region_name=s.aws_region, endpoint_url=s.s3_endpoint_url or None, config=config)


def make_http_session(settings: Settings | None = None) -> requests.Session:
    """The HTTP session of a status check: every call bounded by HTTP_DEADLINE overall."""
    return DeadlineSession((settings or get_settings()).http_deadline)


def check_s3(s3: Any, bucket: str) -> None:
    """Head the bucket, put a small object, read it back and compare, then delete it."""
    s3.head_bucket(Bucket=bucket)
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}.txt"
    body = f"status probe {dt.datetime.now(dt.UTC).isoformat()}".encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    try:
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if got != body:
            raise ExternalServiceError(f"S3 read-back mismatch for {key}")
    finally:
        s3.delete_object(Bucket=bucket, Key=key)


def check_cloudfront(http: requests.Session, url: str, timeout: float) -> None:
    """GET the CloudFront URL; any non-2xx status is a failure."""
    if not url:
        raise ExternalServiceError("CLOUDFRONT_URL is not configured")
    resp = http.get(url, timeout=timeout)
    if not resp.ok:
        raise ExternalServiceError(f"CloudFront {url} answered {resp.status_code}")


def storage_settings(base: Settings, storage: dict[str, str]) -> Settings:
    """``base`` with a tenant's own storage (s3_bucket, s3_endpoint_url, cloudfront_url,
    aws_region) in place of the platform's."""
    allowed = ("s3_bucket", "s3_endpoint_url", "cloudfront_url", "aws_region")  # all str fields
    unknown = sorted(set(storage) - set(allowed))
    if unknown:
        raise ValueError(f"not storage settings: {unknown}")
    values: dict[str, Any] = {k: str(v) for k, v in storage.items()}
    return dataclasses.replace(base, **values)


def run_status_check(session: Session | None, *, s3: Any, http: requests.Session, settings: Settings | None = None,
                     tenant_id: int | None = None) -> AwsStatus:
    """Probe S3 and CloudFront, POST the result to INTERNAL_API_URL with INTERNAL_API_KEY,
    and keep a ``status_checks`` row in the tenant database (``session``; the platform run
    has none: its record is the post and its ledger run). A failed probe is reported, not
    raised (the dashboard is where outages show); a failed POST raises, so the run is an ERROR."""
    s = settings or get_settings()
    errors: dict[str, str] = {}
    try:
        check_s3(s3, s.s3_bucket)
    except Exception as exc:  # any boto/network error is an S3 outage to report
        errors["s3"] = f"{type(exc).__name__}: {exc}"
    try:
        check_cloudfront(http, s.cloudfront_url, s.http_timeout)
    except Exception as exc:
        errors["cloudfront"] = f"{type(exc).__name__}: {exc}"
    status = AwsStatus(s3_ok="s3" not in errors, cloudfront_ok="cloudfront" not in errors,
                       checked_at=dt.datetime.now(dt.UTC).isoformat(), errors=errors, tenant_id=tenant_id)
    posted, post_error = False, ""
    try:
        resp = http.post(s.internal_api_url, json={"service": "aws", **asdict(status)}, timeout=s.http_timeout,
                         headers={"X-Internal-Api-Key": s.internal_api_key})
        posted = resp.ok
        if not resp.ok:
            post_error = f"dashboard answered {resp.status_code}"
    except requests.RequestException as exc:
        post_error = f"{type(exc).__name__}: {exc}"
    if session is not None:
        session.execute(text("INSERT INTO status_checks (s3_ok, cloudfront_ok, posted, detail) "
                             "VALUES (:s, :c, :p, :d)"),
                        {"s": status.s3_ok, "c": status.cloudfront_ok, "p": posted,
                         "d": json.dumps({"errors": errors, "post_error": post_error})})
        session.commit()
    if not posted:
        raise StatusPostFailed(f"status not posted to {s.internal_api_url}: {post_error}")
    log.info("AWS status: s3_ok=%s cloudfront_ok=%s", status.s3_ok, status.cloudfront_ok)
    return status
