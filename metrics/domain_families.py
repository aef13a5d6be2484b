"""Metric families built from a :class:`metrics.domain.DomainSnapshot`.

Every readable tenant gets each of its product's series zero-filled (so an alert never
waits for a series to appear); a tenant whose database could not be read gets none
(zeros would look healthy) and is counted in ``jobs_exporter_tenant_failures``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from metrics.domain import (
    BATCH_NON_FINAL,
    HEALTH_CHECK_NAMES,
    ITEM_FAILED_KINDS,
    ITEM_NON_FINAL,
    NOTIFICATION_STATES,
    REPORT_OPEN,
    DomainSnapshot,
)

LBL = ["tenant_id"]


def domain_metrics(s: DomainSnapshot) -> Iterator[Metric]:
    """All domain families of one scrape."""
    yield from _reports(s)
    yield from _huntington(s)
    yield from _escrow_checks(s)
    yield from _casemgmt(s)
    failed = GaugeMetricFamily("jobs_exporter_tenant_failures", "Tenant databases that could not be read")
    failed.add_metric([], float(len(s.failed_tenants)))
    yield failed


def _escrow_tenants(s: DomainSnapshot) -> list[int]:
    return [t for t in s.tenants if t not in s.failed_tenants]


def _reports(s: DomainSnapshot) -> Iterator[Metric]:
    rep = GaugeMetricFamily("jobs_report_requests", "Report requests waiting (pending), being generated "
                            "(in_progress), or failed for good (failed: status 4, until an operator requeues them)",
                            labels=[*LBL, "state"])
    rep_age = GaugeMetricFamily("jobs_report_oldest_age_seconds", "Age of the oldest report request in the state",
                                labels=[*LBL, "state"])
    for tenant in _escrow_tenants(s):
        for state in REPORT_OPEN.values():
            n, age = s.reports.get((tenant, state), (0, 0.0))
            rep.add_metric([str(tenant), state], float(n))
            rep_age.add_metric([str(tenant), state], age)
    yield from (rep, rep_age)


def _huntington(s: DomainSnapshot) -> Iterator[Metric]:
    bat = GaugeMetricFamily("jobs_huntington_batches_open", "Huntington batches in a non-final state",
                            labels=[*LBL, "status"])
    bat_age = GaugeMetricFamily("jobs_huntington_batch_oldest_age_seconds", "Age (since start, else creation) of "
                                "the oldest Huntington batch in the non-final state", labels=[*LBL, "status"])
    item = GaugeMetricFamily("jobs_huntington_items_open", "Huntington batch items in a non-final state",
                             labels=[*LBL, "status"])
    item_age = GaugeMetricFamily("jobs_huntington_item_oldest_age_seconds", "Time since the oldest non-final "
                                 "Huntington item last changed", labels=[*LBL, "status"])
    failed = GaugeMetricFamily("jobs_huntington_items_failed", "FAILED Huntington items: not_sent (never committed "
                               "at the bank: re-send them) or rejected (refused by the bank)", labels=[*LBL, "kind"])
    failed_age = GaugeMetricFamily("jobs_huntington_item_failed_oldest_age_seconds", "Time since the oldest FAILED "
                                   "Huntington item of the kind failed", labels=[*LBL, "kind"])
    bfailed = GaugeMetricFamily("jobs_huntington_batches_failed", "Huntington batches in status FAILED (some items "
                                "not disbursed)", labels=LBL)
    bfailed_age = GaugeMetricFamily("jobs_huntington_batch_failed_oldest_age_seconds", "Time since the oldest "
                                    "FAILED Huntington batch finished", labels=LBL)
    for tenant in _escrow_tenants(s):
        t = str(tenant)
        for status in BATCH_NON_FINAL:
            n, age = s.batches.get((tenant, status), (0, 0.0))
            bat.add_metric([t, status], float(n))
            bat_age.add_metric([t, status], age)
        for status in ITEM_NON_FINAL:
            n, age = s.items.get((tenant, status), (0, 0.0))
            item.add_metric([t, status], float(n))
            item_age.add_metric([t, status], age)
        for kind in ITEM_FAILED_KINDS:
            n, age = s.items_failed.get((tenant, kind), (0, 0.0))
            failed.add_metric([t, kind], float(n))
            failed_age.add_metric([t, kind], age)
        n, age = s.batches_failed.get(tenant, (0, 0.0))
        bfailed.add_metric([t], float(n))
        bfailed_age.add_metric([t], age)
    yield from (bat, bat_age, item, item_age, failed, failed_age, bfailed, bfailed_age)


def _escrow_checks(s: DomainSnapshot) -> Iterator[Metric]:
    below = GaugeMetricFamily("jobs_escrow_cases_below_minimum", "Active cases found below their minimum balance "
                              "by the latest weekly balance check and still below it", labels=LBL)
    overdue = GaugeMetricFamily("jobs_dr_auto_approval_overdue", "PENDING disbursement requests already due at the "
                                "latest scheduled auto-approval run that is at least DR_OVERDUE_GRACE_S (2 h) old",
                                labels=LBL)
    overdue_age = GaugeMetricFamily("jobs_dr_auto_approval_overdue_oldest_seconds", "Time since the auto-authorize "
                                    "window of the oldest overdue PENDING request expired (0 if none)", labels=LBL)
    notes = GaugeMetricFamily("jobs_escrow_notifications", "Outbox notifications the SMTP server refused: retrying "
                              "(refused at least once, backing off) or failed (refused on every attempt: never "
                              "sent until an operator requeues them)", labels=[*LBL, "state"])
    missed = GaugeMetricFamily("jobs_escrow_close_reminders_missed", "Active cases closing on the day of the latest "
                               "close-reminder run (at least DR_OVERDUE_GRACE_S old) without a reminder for that day",
                               labels=LBL)
    for tenant in _escrow_tenants(s):
        t = str(tenant)
        missed.add_metric([t], float(s.close_reminders_missed.get(tenant, 0)))
        for state in NOTIFICATION_STATES:
            notes.add_metric([t, state], float(s.escrow_notifications.get((tenant, state), 0)))
        below.add_metric([t], float(s.below_minimum.get(tenant, 0)))
        n, age = s.dr_overdue.get(tenant, (0, 0.0))
        overdue.add_metric([t], float(n))
        overdue_age.add_metric([t], age if n else 0.0)
    yield from (below, overdue, overdue_age, notes, missed)


def _casemgmt(s: DomainSnapshot) -> Iterator[Metric]:
    health = GaugeMetricFamily("jobs_casemgmt_health_checks_failing", "Rows failing each data-integrity check in "
                               "the agency's latest finished health-check run (0 = passing)", labels=[*LBL, "check"])
    failing = GaugeMetricFamily("jobs_casemgmt_mailbox_sync_failing", "1 while the connected mailbox's latest sync "
                                "failed (expired password, server refusing it), else 0",
                                labels=[*LBL, "mailbox_id"])
    failing_s = GaugeMetricFamily("jobs_casemgmt_mailbox_sync_failing_seconds", "Time since the connected "
                                  "mailbox's current streak of failed syncs began (0 when its latest sync worked)",
                                  labels=[*LBL, "mailbox_id"])
    notes = GaugeMetricFamily("jobs_casemgmt_notifications", "Unsent agency notifications the SMTP server refused: "
                              "retrying (backing off) or failed (every attempt used: never sent until an operator "
                              "requeues them)", labels=[*LBL, "state"])
    unmatched = GaugeMetricFamily("jobs_casemgmt_unmatched_emails", "Synced emails no matching run has processed yet",
                                  labels=LBL)
    unmatched_age = GaugeMetricFamily("jobs_casemgmt_unmatched_emails_oldest_seconds", "Time since the oldest synced "
                                      "email still waiting for matching was synced (0 if none)", labels=LBL)
    for tenant in s.casemgmt_tenants:
        if tenant in s.failed_tenants:
            continue
        n, age = s.unmatched_emails.get(tenant, (0, 0.0))
        unmatched.add_metric([str(tenant)], float(n))
        unmatched_age.add_metric([str(tenant)], age if n else 0.0)
        for state in NOTIFICATION_STATES:
            notes.add_metric([str(tenant), state], float(s.casemgmt_notifications.get((tenant, state), 0)))
        for check in sorted(set(HEALTH_CHECK_NAMES) | {c for t, c in s.health if t == tenant}):
            health.add_metric([str(tenant), check], float(s.health.get((tenant, check), 0)))
    for (tenant, mailbox_id), since in sorted(s.mailboxes.items()):
        if tenant in s.failed_tenants:
            continue
        failing.add_metric([str(tenant), str(mailbox_id)], 0.0 if since is None else 1.0)
        failing_s.add_metric([str(tenant), str(mailbox_id)], 0.0 if since is None else since)
    yield from (health, failing, failing_s, notes, unmatched, unmatched_age)
