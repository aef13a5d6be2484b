"""AWS status check against a moto S3 server (server mode, loopback) through boto3, a local
HTTP server for CloudFront and the dashboard API."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import dataclasses

import boto3
import pytest
import requests

from actors.escrow.aws_status import PROBE_PREFIX, StatusPostFailed, run_status_check
from jobcore.settings import Settings
from tests.support.escrow_services import (  # noqa: F401 - fixtures
    escrow_tenant_db,
    http_stub,
    moto_s3,
    run_concurrently,
    tenant,
)

pytestmark = pytest.mark.integration

BUCKET = "seedtrust-status-test"


@pytest.fixture()
def aws(moto_s3, http_stub):
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_s3)
    s3.create_bucket(Bucket=BUCKET)
    settings = dataclasses.replace(Settings(), s3_bucket=BUCKET, s3_endpoint_url=moto_s3,
                                   cloudfront_url=f"{http_stub.url}/cdn/health.html",
                                   internal_api_url=f"{http_stub.url}/internal/status",
                                   internal_api_key="int-key-123", http_timeout=5)
    return s3, settings


def _posts(stub):
    return [r for r in stub.requests if r["method"] == "POST"]


def test_status_check_probes_s3_and_cloudfront_and_posts_to_the_dashboard(tenant, aws, http_stub):
    from actors.escrow.aws_status import make_s3_client

    _, settings = aws
    with tenant.session() as s, requests.Session() as http:
        status = run_status_check(s, s3=make_s3_client(settings), http=http, settings=settings, tenant_id=7)
    assert status.s3_ok and status.cloudfront_ok and status.errors == {}
    assert {"method": "GET", "path": "/cdn/health.html"} in http_stub.requests
    (post,) = _posts(http_stub)
    assert post["path"] == "/internal/status"
    assert post["headers"]["X-Internal-Api-Key"] == "int-key-123"
    assert post["json"]["service"] == "aws" and post["json"]["s3_ok"] is True and post["json"]["tenant_id"] == 7
    # The probe object was written, read back and removed.
    s3, _ = aws
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=PROBE_PREFIX).get("KeyCount") == 0
    assert tenant.rows("SELECT s3_ok, cloudfront_ok, posted FROM status_checks") == [(True, True, True)]


def test_status_check_reports_a_missing_bucket_and_a_failing_cloudfront(tenant, aws, http_stub):
    from actors.escrow.aws_status import make_s3_client

    _, settings = aws
    settings = dataclasses.replace(settings, s3_bucket="no-such-bucket")
    http_stub.get_status = 503
    with tenant.session() as s, requests.Session() as http:
        status = run_status_check(s, s3=make_s3_client(settings), http=http, settings=settings)
    assert not status.s3_ok and not status.cloudfront_ok
    assert "404" in status.errors["s3"] and "503" in status.errors["cloudfront"]
    (post,) = _posts(http_stub)
    assert post["json"]["s3_ok"] is False and post["json"]["cloudfront_ok"] is False


def test_status_check_fails_the_run_when_the_dashboard_rejects_the_post(tenant, aws, http_stub):
    from actors.escrow.aws_status import make_s3_client

    _, settings = aws
    http_stub.post_status = 401
    with tenant.session() as s, requests.Session() as http, pytest.raises(StatusPostFailed, match="401"):
        run_status_check(s, s3=make_s3_client(settings), http=http, settings=settings)
    assert tenant.rows("SELECT s3_ok, posted FROM status_checks") == [(True, False)]


def test_status_check_twice_and_concurrently_leaves_no_probe_objects(tenant, aws, http_stub):
    """A status check has no lasting effect to duplicate: each run posts its own status and
    cleans up its own probe object, even when runs overlap."""
    from actors.escrow.aws_status import make_s3_client

    s3, settings = aws

    def run(_: int):
        with tenant.session() as s, requests.Session() as http:
            return run_status_check(s, s3=make_s3_client(settings), http=http, settings=settings)

    results = run_concurrently(2, run) + [run(0)]
    assert all(r.s3_ok and r.cloudfront_ok for r in results)
    assert len(_posts(http_stub)) == 3
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=PROBE_PREFIX).get("KeyCount") == 0
