"""Tenant commands: ``python -m tenancy create|migrate|list|budget|storage`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import json
import sys

from jobcore.settings import mask_url
from tenancy.registry import (
    create_tenant,
    describe_error,
    get_tenant,
    list_tenants,
    migrate_tenant_database,
    set_storage,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tenancy", description="Manage tenants.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", help="register a tenant, create and migrate its database")
    p.add_argument("slug")
    p.add_argument("--name", required=True)
    p.add_argument("--product", required=True, choices=("escrow", "casemgmt"))
    p.add_argument("--database-url", help="default: tenant_<slug> on the control database's server")
    p.add_argument("--adopt-existing", action="store_true",
                   help="use the database even if it already exists (it must not belong to anything else)")
    p = sub.add_parser("migrate", help="upgrade every tenant database to its product's latest schema")
    p.add_argument("--include-inactive", action="store_true")
    p = sub.add_parser("list", help="list tenants")
    p.add_argument("--product", choices=("escrow", "casemgmt"))
    p.add_argument("--all", action="store_true", help="include inactive tenants")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("budget", help="tenant connection budget arithmetic for a deployment shape")
    p.add_argument("--processes", type=int, required=True, help="worker processes, all hosts together")
    p.add_argument("--threads", type=int, default=8, help="threads per worker process")
    p.add_argument("--tenants", type=int, help="default: the active tenants in the registry")
    p = sub.add_parser("storage", help="give a tenant its own S3 bucket / CloudFront URL (its own status check)")
    p.add_argument("tenant_id", type=int)
    p.add_argument("--s3-bucket")
    p.add_argument("--s3-endpoint-url")
    p.add_argument("--cloudfront-url")
    p.add_argument("--aws-region")
    p.add_argument("--clear", action="store_true", help="back to the platform's storage")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            t = create_tenant(args.slug, args.name, args.product, args.database_url,
                              adopt_existing=args.adopt_existing)
            print(f"created tenant {t.id} {t.slug} ({t.product}) on {mask_url(t.database_url)}")
        elif args.command == "budget":
            from jobcore.settings import get_settings
            from tenancy.budget import compute

            tenants = args.tenants if args.tenants is not None else len(list_tenants())
            budget = compute(get_settings(), processes=args.processes, threads=args.threads, tenants=tenants)
            print(budget.describe())
            return 0 if budget.fits else 1
        elif args.command == "storage":
            values = {k: getattr(args, k) for k in ("s3_bucket", "s3_endpoint_url", "cloudfront_url", "aws_region")
                      if getattr(args, k)}
            t = set_storage(get_tenant(args.tenant_id).id, None if args.clear else values)
            print(f"tenant {t.id} {t.slug}: " + (", ".join(f"{k}={v}" for k, v in t.storage) or "platform storage"))
        elif args.command == "migrate":
            failed = 0
            for t in list_tenants(active_only=not args.include_inactive):
                try:
                    migrate_tenant_database(t.database_url, t.product)
                    print(f"migrated {t.id} {t.slug}")
                except Exception as exc:  # one tenant's failure never stops the others
                    failed += 1
                    print(f"FAILED {t.id} {t.slug}: {describe_error(exc)}", file=sys.stderr)
            return 1 if failed else 0
        else:
            tenants = list_tenants(product=args.product, active_only=not args.all)
            rows = [{"id": t.id, "slug": t.slug, "name": t.name, "product": t.product, "active": t.active,
                     "status": t.status, "database": mask_url(t.database_url)} for t in tenants]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                from cli.jobctl import emit

                emit(rows, ("id", "slug", "name", "product", "active", "status", "database"), False)
        return 0
    except Exception as exc:  # an operator gets one masked line, never a traceback with a password in it
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
