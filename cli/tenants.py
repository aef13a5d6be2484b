"""``jobctl tenants [list] | create | migrate | budget``: the tenant registry."""

from __future__ import annotations

import click

from cli.main import json_option
from cli.output import emit, track
from jobcore.settings import mask_url

PRODUCTS = click.Choice(["escrow", "casemgmt"])
COLUMNS = ("id", "slug", "name", "product", "active", "status", "database")


def _list(product: str | None, include_all: bool, as_json: bool) -> None:
    from tenancy.registry import list_tenants

    rows = [{"id": t.id, "slug": t.slug, "name": t.name, "product": t.product, "active": t.active,
             "status": t.status, "database": mask_url(t.database_url)}
            for t in list_tenants(product=product, active_only=not include_all)]
    emit(rows, COLUMNS, as_json)


@click.group(invoke_without_command=True)
@click.option("--product", type=PRODUCTS)
@click.option("--all", "include_all", is_flag=True, help="include inactive and provisioning tenants")
@json_option
@click.pass_context
def tenants(ctx: click.Context, product: str | None, include_all: bool, as_json: bool) -> None:
    """The tenant registry (jobctl tenants alone lists them)."""
    if ctx.invoked_subcommand is None:
        _list(product, include_all, as_json)


@tenants.command("list")
@click.option("--product", type=PRODUCTS)
@click.option("--all", "include_all", is_flag=True, help="include inactive and provisioning tenants")
@json_option
def list_command(product: str | None, include_all: bool, as_json: bool) -> None:
    """List tenants (active and ready ones unless --all)."""
    _list(product, include_all, as_json)


@tenants.command()
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--product", type=PRODUCTS, required=True)
@click.option("--database-url", help="default: tenant_<slug> on the control database's server")
@click.option("--adopt-existing", is_flag=True,
              help="use the database even if it already exists (it must not belong to anything else)")
def create(slug: str, name: str, product: str, database_url: str | None, adopt_existing: bool) -> None:
    """Register a tenant, create and migrate its database (a failed run resumes)."""
    from tenancy.registry import create_tenant

    t = create_tenant(slug, name, product, database_url, adopt_existing=adopt_existing)
    click.echo(f"created tenant {t.id} {t.slug} ({t.product}) on {mask_url(t.database_url)}")


@tenants.command()
@click.option("--include-inactive", is_flag=True)
def migrate(include_inactive: bool) -> None:
    """Upgrade every tenant database to its product's latest schema (one failure never
    stops the others)."""
    from tenancy.registry import describe_error, list_tenants, migrate_tenant_database

    failed = 0
    found = list_tenants(active_only=not include_inactive)
    for t in track(found, f"migrating {len(found)} tenant databases", len(found)):
        try:
            migrate_tenant_database(t.database_url, t.product)
            click.echo(f"migrated {t.id} {t.slug}")
        except Exception as exc:  # one tenant's failure never stops the others
            failed += 1
            click.echo(f"FAILED {t.id} {t.slug}: {describe_error(exc)}", err=True)
    if failed:
        raise click.exceptions.Exit(1)


@tenants.command()
@click.option("--processes", type=int, required=True, help="worker processes, all hosts together")
@click.option("--threads", type=int, default=8, show_default=True, help="threads per worker process")
@click.option("--tenants", "tenant_count", type=int, help="default: the active tenants in the registry")
def budget(processes: int, threads: int, tenant_count: int | None) -> None:
    """Tenant connection budget arithmetic for a deployment shape (exit 1 if over budget)."""
    from jobcore.settings import get_settings
    from tenancy.budget import compute
    from tenancy.registry import list_tenants

    count = tenant_count if tenant_count is not None else len(list_tenants())
    result = compute(get_settings(), processes=processes, threads=threads, tenants=count)
    click.echo(result.describe())
    if not result.fits:
        raise click.exceptions.Exit(1)


@tenants.command()
@click.argument("tenant_id", type=int)
@click.option("--s3-bucket")
@click.option("--s3-endpoint-url")
@click.option("--cloudfront-url")
@click.option("--aws-region")
@click.option("--clear", is_flag=True, help="back to the platform's storage")
def storage(tenant_id: int, s3_bucket: str | None, s3_endpoint_url: str | None, cloudfront_url: str | None,
            aws_region: str | None, clear: bool) -> None:
    """Give a tenant its own S3 bucket / CloudFront URL (and so its own status check)."""
    from tenancy.registry import get_tenant, set_storage

    values = {k: v for k, v in (("s3_bucket", s3_bucket), ("s3_endpoint_url", s3_endpoint_url),
                                ("cloudfront_url", cloudfront_url), ("aws_region", aws_region)) if v}
    t = set_storage(get_tenant(tenant_id).id, None if clear else values)
    click.echo(f"tenant {t.id} {t.slug}: " + (", ".join(f"{k}={v}" for k, v in t.storage) or "platform storage"))


def register(group: click.Group) -> None:
    group.add_command(tenants)
