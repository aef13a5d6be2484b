"""The AWS status check runs once per tick, not once per escrow tenant (issue 14, item 9):
a real worker runs the production dispatcher of ``aws_status_check`` for one tick over
three escrow tenants, against a moto S3 server and a loopback HTTP stub (CloudFront and the
dashboard API). One platform probe and one POST, plus one for the tenant that has its own
storage (its own bucket and CloudFront URL)."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from dramatiq import Message

from tests.conftest import wait_for
from tests.support.escrow_services import http_stub, moto_s3  # noqa: F401 - fixtures
from tests.support.ledger import count, wait_status

pytestmark = pytest.mark.integration


def test_one_tick_over_three_tenants_probes_and_posts_once_plus_once_per_tenant_with_own_storage(
        broker, make_tenants, moto_s3, http_stub, start_worker):
    from actors.escrow.aws_status import PROBE_PREFIX
    from periodic.schedules import by_name
    from periodic.ticks import claim_tick
    from tenancy.registry import set_storage

    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_s3)
    for bucket in ("platform-status", "tenant-own-status"):  # versioned: each probe leaves a trace
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    plain, own, other = make_tenants(3)
    set_storage(own.id, {"s3_bucket": "tenant-own-status", "cloudfront_url": f"{http_stub.url}/cdn/own.html"})
    start_worker(env={"S3_ENDPOINT_URL": moto_s3, "S3_BUCKET": "platform-status",
                      "CLOUDFRONT_URL": f"{http_stub.url}/cdn/platform.html",
                      "INTERNAL_API_URL": f"{http_stub.url}/internal/status", "INTERNAL_API_KEY": "int-key"})

    schedule = by_name("aws_status_check")
    tick_at = datetime.now(UTC).replace(microsecond=0)
    tick_id = claim_tick(schedule.name, tick_at, "test")
    dispatcher = Message(queue_name="periodic", actor_name=schedule.dispatcher, args=(), kwargs={},
                         options={"scheduled_at": tick_at.isoformat(), "schedule_tick_id": tick_id})
    broker.enqueue(dispatcher)
    row = wait_status(dispatcher.message_id, "FINISHED", timeout=60)
    assert row["resolution"] == "COMPLETED" and row["result"]["tenants"] == 2, row

    def finished() -> int:
        return count("SELECT count(*) FROM job_runs j JOIN schedule_tick_runs r USING (message_id) "
                     "WHERE r.tick_id = :t AND r.role = 'tenant' AND j.resolution = 'COMPLETED'", t=tick_id)

    wait_for(lambda: finished() == 2, 60, what="the platform run and the own-storage tenant's run")
    posts = [r for r in http_stub.requests if r["method"] == "POST"]
    assert sorted((p["json"]["tenant_id"] or 0) for p in posts) == [0, own.id]  # not one per tenant
    assert all(p["json"]["s3_ok"] and p["json"]["cloudfront_ok"] for p in posts), posts
    gets = sorted(r["path"] for r in http_stub.requests if r["method"] == "GET")
    assert gets == ["/cdn/own.html", "/cdn/platform.html"]
    assert count("SELECT count(*) FROM job_runs WHERE actor_name = 'job_aws_status_check'") == 2
    for bucket in ("platform-status", "tenant-own-status"):  # each probed (and its probe object removed)
        assert s3.list_objects_v2(Bucket=bucket, Prefix=PROBE_PREFIX).get("KeyCount") == 0
    from sqlalchemy import text

    from tests.support.casemgmt_data import tenant_db_session

    for tenant, rows in ((own, 1), (plain, 0), (other, 0)):
        session = tenant_db_session(tenant.database_url)
        assert session.execute(text("SELECT count(*) FROM status_checks")).scalar_one() == rows, tenant.id
        session.close()


def test_a_tenants_own_storage_is_set_and_cleared_by_the_tenancy_command(make_tenants, capsys):
    from cli.main import main
    from tenancy.registry import list_tenants

    (tenant,) = make_tenants(1)
    storage = ["tenants", "storage", str(tenant.id)]
    assert main([*storage, "--s3-bucket", "agency-bucket", "--aws-region", "us-east-2"]) == 0
    assert "s3_bucket=agency-bucket" in capsys.readouterr().out
    [info] = list_tenants(product="escrow")
    assert info.has_own_storage and dict(info.storage) == {"s3_bucket": "agency-bucket", "aws_region": "us-east-2"}
    assert main([*storage, "--cloudfront-url", "https://cdn.example"]) == 1  # no bucket: refused
    assert "needs an s3_bucket" in capsys.readouterr().err
    assert main([*storage, "--clear"]) == 0
    assert not list_tenants(product="escrow")[0].has_own_storage
