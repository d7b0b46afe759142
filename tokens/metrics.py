"""The portal's Prometheus metrics: what is counted, and the text ``/metrics`` answers with.

Counting sits on the hot path, so each count is one ``inc()`` on a child looked up by a few short,
bounded label values. Under gunicorn the values live in prometheus-client's multiprocess files (the
folder is set up by ``gunicorn.conf.py``), so a scrape adds up every worker; elsewhere (``manage.py``,
tests) they stay in the process. Label values come from fixed vocabularies only: never a user, a token,
a path or an address, whose number has no bound.

The usage store's lag is read from the database when scraped (``UsageRecord.objects.lag``): what the
summaries do not hold yet does not depend on which process wrote it. This module imports no model, so the
models may count here too.
"""

import os
import time

from django.conf import settings
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from .constants import Method

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What happened to a credential check, one word each (docs/operations.md lists them).
ACCEPTED = "accepted"
OUTCOMES = (
    ACCEPTED,
    "malformed",  # refused by its shape or signature, with no query
    "unknown",  # no such token or key
    "revoked",
    "expired",
    "rotated",  # a rotated token's overlap has ended
    "deactivated",  # the owner's account is deactivated
    "insufficient_scope",  # read-only token writing, or a permission the token lacks
    "address",  # outside the token's address allow-list
    "level",  # the security level refuses legacy keys (sunset, brownout, bearer only)
    "limit",  # the client failed too often (429)
    "missing",  # no credential and no session
    "unavailable",  # the database did not answer (503)
)
# Where the check was asked for.
ENTRIES = ("api", "forward_auth", "introspection", "metrics")

_metrics = []


def _register(metric):
    _metrics.append(metric)
    return metric


API_REQUESTS = _register(
    Counter(
        "portal_api_requests",
        "Credential checks by where they were asked (entry), credential kind and outcome.",
        ["entry", "credential", "outcome"],
        registry=None,
    )
)
CHECK_SECONDS = _register(
    Histogram(
        "portal_credential_check_seconds",
        "Time to check a request's credential, from reading the header to the verdict.",
        ["entry"],
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        registry=None,
    )
)
LEGACY_KEY_USES = _register(
    Counter(
        "portal_legacy_key_uses",
        "Uses of legacy Rest-Api-Key keys by outcome (the traffic the sunset will cut).",
        ["outcome"],
        registry=None,
    )
)
SIGN_IN_FAILURES = _register(
    Counter(
        "portal_sign_in_failures",
        "Refused sign-ins: wrong username or password (invalid), or past the limit (throttled).",
        ["reason"],
        registry=None,
    )
)
SUMMARISER_RUNS = _register(
    Counter(
        "portal_usage_summariser_runs",
        "Summariser runs that folded usage records into the summaries.",
        registry=None,
    )
)
PRUNE_RUNS = _register(
    Counter("portal_usage_prune_runs", "Runs of manage.py prune_usage that finished.", registry=None)
)

# Children looked up once: a labelled metric's .labels() costs a dictionary lookup under a lock.
_api_children = {}
_check_children = {}


def count_check(entry, credential, outcome):
    """Count one credential check at *entry* (``api``…) of a *credential* kind with its *outcome*."""
    if not settings.METRICS_ENABLED:
        return
    key = (entry, credential, outcome)
    child = _api_children.get(key)
    if child is None:
        child = _api_children.setdefault(key, API_REQUESTS.labels(entry, credential, outcome))
    child.inc()
    if credential == Method.LEGACY_KEY:
        LEGACY_KEY_USES.labels(outcome).inc()


def count(metric, *labels):
    """Add one to *metric* (with *labels*, if it has any): a sign-in failure, a summariser run…"""
    if not settings.METRICS_ENABLED:
        return
    (metric.labels(*labels) if labels else metric).inc()


def observe_check(entry, started):
    """Observe the time a check took since *started* (``time.perf_counter()``)."""
    if not settings.METRICS_ENABLED:
        return
    child = _check_children.get(entry)
    if child is None:
        child = _check_children.setdefault(entry, CHECK_SECONDS.labels(entry))
    child.observe(time.perf_counter() - started)


class UsageStoreCollector:
    """Report the usage store's lag, read at scrape time by *lag()* (``UsageRecord.objects.lag``)."""

    def __init__(self, lag):
        self.lag = lag

    def collect(self):
        waiting, oldest_waiting, oldest = self.lag()
        now = timezone.now()
        records = GaugeMetricFamily(
            "portal_usage_unsummarised_records",
            "Usage records the summaries do not hold yet (counted up to a million).",
        )
        records.add_metric([], waiting)
        yield records
        behind = GaugeMetricFamily(
            "portal_usage_unsummarised_oldest_seconds",
            "Age of the oldest usage record the summaries do not hold yet (0: none waiting).",
        )
        behind.add_metric([], (now - oldest_waiting).total_seconds() if oldest_waiting else 0.0)
        yield behind
        kept = GaugeMetricFamily(
            "portal_usage_oldest_record_seconds",
            "Age of the oldest usage record kept (past the retention when prune_usage does not run).",
        )
        kept.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
        yield kept


def multiprocess():
    """Tell whether the values live in prometheus-client's multiprocess files (under gunicorn)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition(*, lag):
    """Return the text of every metric, all gunicorn workers added up, and the usage store's *lag*."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        MultiProcessCollector(registry)
    else:
        for metric in _metrics:
            registry.register(metric)
    registry.register(UsageStoreCollector(lag))
    return generate_latest(registry)
