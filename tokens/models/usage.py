"""The usage store's models: every API request's record, the summaries kept from them, and their watermark.

What the store does with them (the one write, the summariser, the exact reads, pruning) is in the
``tokens.usage`` package, which imports these models; nothing here imports it.
"""

import contextvars
import re
from datetime import UTC, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..constants import PATH_MAX_LENGTH, USER_AGENT_MAX_LENGTH
from .fields import credential_keys, per_credential

# C0 controls, DEL and C1 controls (U+0080-U+009F): every character Unicode calls a control (Cc).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def storable(text, limit):
    """Return *text* (a client's path or user agent) safe to store and to show, cut to *limit* characters.

    The one place where what a client sends about its request is made harmless, so that everything that
    reads it later (pages, the admin, mails, ``send_alerts`` on a console, ``export_events``) shows it
    as it is stored:

    * control characters are written as visible escapes (ESC as ``\\x1b``, the C1 CSI as ``\\x9b``):
      raw, ESC, BEL or CSI would drive the terminal of an operator who reads a mail on a console or an
      export in a shell, and a newline would forge a line;
    * so is NUL (PostgreSQL refuses it in text: a refused INSERT would leave the use of a revoked token
      unrecorded), and a lone surrogate (``\\udXXX``), which neither database takes;
    * a backslash is doubled, so that no stored text can pose as an escape.
    """
    text = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text.replace("\\", "\\\\"))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


# Where UsageRecord.objects.lag() stops counting.
LAG_COUNT_LIMIT = 1_000_000

# Set by ``tokens.usage.read.read_exactly``: the watermark every reader inside uses, read once.
pinned_watermark = contextvars.ContextVar("pinned_watermark", default=None)


class UsageRecordQuerySet(models.QuerySet):
    def older_than(self, moment):
        return self.filter(at__lt=moment)

    def summarised(self):
        """The records the summaries already hold (at or below the watermark)."""
        return self.filter(pk__lte=self.summarised_through())

    def unsummarised(self, **lookups):
        """The records the summaries do not hold yet: an index range on the newest ids.

        The watermark is read first (one primary-key lookup) and goes into the query as a number: as a
        subquery its value is unknown when the query is planned, and PostgreSQL then guesses that a
        third of the table qualifies and scans every partition.

        *lookups* (``token=…``, ``legacy_key__isnull=False``, ``at__gte=…``) narrow the tail. Give them
        here rather than filtering the result: each is applied to COALESCE(column, column), which no
        index holds, so the database can only find the tail by the primary-key range. Filtered on the
        column itself, SQLite (without statistics) and PostgreSQL (with old ones) walk the
        credential's (token, at) index through its whole history to find a few new records: on a
        token with a million, its page was five times slower (docs/performance.md, session 4).
        """
        tail = self.filter(pk__gt=self.tail_start())
        for lookup, value in lookups.items():
            name, _, condition = lookup.partition("__")
            column = self.model._meta.get_field(name).attname
            alias = f"unindexed_{column}"
            tail = tail.alias(**{alias: Coalesce(column, column)}).filter(
                **{f"{alias}__{condition or 'exact'}": getattr(value, "pk", value)}
            )
        return tail

    def summarised_through(self):
        """The watermark: the highest record id the summaries hold."""
        state = UsageSummaryState.objects.using(self.db).filter(pk=1).first()
        return state.summarised_through if state else 0

    def tail_start(self):
        """The watermark the unsummarised tail starts above: the one ``read_exactly`` pinned, or now's."""
        pinned = pinned_watermark.get()
        return pinned if pinned is not None else self.summarised_through()

    def lag(self):
        """Return how far the cron jobs are behind, for /metrics: ``(waiting, oldest waiting, oldest)``.

        *waiting*: records above the watermark (the summariser's backlog), counted up to LAG_COUNT_LIMIT:
        past it the summariser is badly behind, and an exact number would only make /metrics slow;
        *oldest waiting*: the time of the first of them (None: none); *oldest*: the time of the oldest
        record kept (past the retention when prune_usage does not run). Index reads only.
        """
        tail = self.filter(pk__gt=self.summarised_through())
        # Unordered: with the records' default order (newest first) SQLite counted the slice by walking
        # the whole (at) index, every record ever kept, instead of the primary-key range above the mark.
        waiting = tail.order_by()[:LAG_COUNT_LIMIT].count()
        oldest_waiting = tail.order_by("pk").values_list("at", flat=True).first() if waiting else None
        oldest = self.aggregate(at=Min("at"))["at"]
        return waiting, oldest_waiting, oldest

    def address_is_new(self, *, ip, token_id=None, legacy_key_id=None, before_id=None):
        """Tell whether *ip* was never seen for this credential: the watermark, then two index probes.

        Seen means a row of the summaries' unique (credential, ip) index, or a record of the
        unsummarised tail from that ip; *before_id* (the id of the request being handled) leaves that
        request and any later one out. Meant for new-address alerts (docs/scaling.md).
        """
        field, credential_id = ("token", token_id) if token_id is not None else ("legacy_key", legacy_key_id)
        tail = self.unsummarised(**{f"{field}_id": credential_id}).filter(ip=ip)
        if before_id is not None:
            tail = tail.filter(pk__lt=before_id)
        seen = ClientAddress.objects.filter(**{f"{field}_id": credential_id}, ip=ip)
        either = models.Q(models.Exists(seen)) | models.Q(models.Exists(tail))
        return not UsageSummaryState.objects.filter(either).exists()


class UsageRecord(models.Model):
    """One API request made with a token or legacy key (accepted, or refused with a well-formed one).

    Inserting a row is the whole write path of a request, append-only. ``summarise`` later adds it to
    the credential's counters and last use, the per-day summary and the client addresses, which
    survive pruning; until then the readers add it themselves (summary + tail), so counts are exact
    as soon as the response has been received. On PostgreSQL the table is partitioned by day on
    ``at`` (migration 0010, ``prune_usage``).
    """

    # No database foreign keys (db_constraint=False): their check would cost every INSERT about 25 µs and
    # take FOR KEY SHARE on the owner's row, making requests wait for the owner's writes (docs/security.md,
    # "Lock order"). Integrity is kept by Django instead: deleting a
    # user, token or key deletes its records (on_delete=CASCADE runs in the ORM), and the summariser
    # skips a record whose credential is gone (a request that raced the deletion).
    token, legacy_key = credential_keys(related_name="usage_records", db_index=False, db_constraint=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    at = models.DateTimeField(verbose_name=_("time"), default=timezone.now)
    accepted = models.BooleanField(verbose_name=_("accepted"), default=True)
    method = models.CharField(verbose_name=_("method"), max_length=10)
    path = models.CharField(verbose_name=_("path"), max_length=PATH_MAX_LENGTH)
    status = models.PositiveSmallIntegerField(verbose_name=_("status"))
    ip = models.GenericIPAddressField(verbose_name=_("client IP"), null=True, blank=True)
    user_agent = models.CharField(verbose_name=_("user agent"), max_length=USER_AGENT_MAX_LENGTH, blank=True)
    duration_ms = models.FloatField(verbose_name=_("duration (ms)"))
    # The cutover rehearsal: served, but the rehearsed security level would have refused it. Counted
    # from these rows directly (the overview's window, by "at"), not by the summaries.
    would_refuse = models.BooleanField(verbose_name=_("would be refused"), default=False, db_default=False)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")
        ordering = ("-at", "-id")
        # /metrics: the operators' view of all usage, for a monitoring system's token (docs/operations.md).
        permissions = (("view_metrics", _("Can read the portal's metrics")),)
        indexes = [
            # Partial: a record has a token or a legacy key, so each INSERT writes one of these two
            # indexes, not both (one page less to write per API request). In the pages' exact order
            # (newest first, id breaking ties), so a page of requests is a short walk of the index.
            *per_credential(models.Index, ["-at", "-id"], names=("usage_token_at", "usage_legacy_at")),
            models.Index(fields=["user", "-at"], name="usage_user_at"),
            models.Index(fields=["at"], name="usage_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(token__isnull=False) | Q(legacy_key__isnull=False), name="usage_has_credential"
            ),
        ]

    def __str__(self):
        return f"{self.method} {self.path} {self.status}"


class DailyUsageQuerySet(models.QuerySet):
    def series(self, days=30, today=None, *, tail=None):
        """Return [(date, accepted, refused)] for the last *days* UTC days, zeros included, oldest first.

        Rows of several credentials in the queryset are summed per day. *tail*, the records of the same
        credentials not summarised yet (``UsageRecord.objects.unsummarised(token=…)``), is added, so the
        numbers are exact: one more query, an index range above the watermark.
        """
        today = today or timezone.now().date()
        start = today - timedelta(days=days - 1)
        rows = {
            row["day"]: (row["a"], row["r"])
            for row in self.filter(day__gte=start, day__lte=today)
            .values("day")
            .annotate(a=Sum("accepted"), r=Sum("refused"))
        }
        if tail is not None:
            # No range on "at" here: with one, the (token, at) index would serve it, through every
            # record of the 30 days instead of the few ids above the watermark. The tail is short and
            # new; its days outside the window are dropped below.
            tail = (
                tail.annotate(day=TruncDate("at", tzinfo=UTC))
                .values("day")
                .annotate(a=Count("pk", filter=Q(accepted=True)), r=Count("pk", filter=Q(accepted=False)))
                .order_by()
            )
            for row in tail:
                if not start <= row["day"] <= today:
                    continue
                accepted, refused = rows.get(row["day"], (0, 0))
                rows[row["day"]] = (accepted + row["a"], refused + row["r"])
        return [
            (start + timedelta(days=i), *rows.get(start + timedelta(days=i), (0, 0))) for i in range(days)
        ]


class DailyUsage(models.Model):
    """Requests per UTC day per credential, kept by ``summarise``; survives pruning of UsageRecord."""

    token, legacy_key = credential_keys(related_name="daily_usage", labelled=False, db_index=False)
    day = models.DateField(verbose_name=_("day"))
    accepted = models.PositiveBigIntegerField(verbose_name=_("accepted requests"), default=0)
    refused = models.PositiveBigIntegerField(verbose_name=_("refused requests"), default=0)

    objects = DailyUsageQuerySet.as_manager()

    class Meta:
        verbose_name = _("daily usage")
        verbose_name_plural = _("daily usage")
        constraints = per_credential(
            models.UniqueConstraint, ["day"], names=("daily_token_day", "daily_legacy_day")
        )
        indexes = [models.Index(fields=["day"], name="daily_day")]

    def __str__(self):
        return f"{self.day}: {self.accepted} accepted, {self.refused} refused"


class ClientAddress(models.Model):
    """Each client IP a credential was used from, kept by ``summarise``; survives pruning."""

    token, legacy_key = credential_keys(related_name="client_addresses", labelled=False, db_index=False)
    ip = models.GenericIPAddressField(verbose_name=_("client IP"))
    first_seen = models.DateTimeField(verbose_name=_("first seen"))
    last_seen = models.DateTimeField(verbose_name=_("last seen"))
    last_user_agent = models.CharField(
        verbose_name=_("last user agent"), max_length=USER_AGENT_MAX_LENGTH, blank=True
    )
    requests = models.PositiveBigIntegerField(verbose_name=_("requests"), default=0)

    class Meta:
        verbose_name = _("client address")
        verbose_name_plural = _("client addresses")
        ordering = ("-last_seen",)
        constraints = per_credential(
            models.UniqueConstraint, ["ip"], names=("client_token_ip", "client_legacy_ip")
        )

    def __str__(self):
        return str(self.ip)


class UsageSummaryState(models.Model):
    """The summaries' watermark: every record with an id at or below it is in the summaries.

    One row (pk=1). The summariser locks it for the length of a batch, which is what lets several
    processes and nodes run it at once without folding a record in twice.
    """

    summarised_through = models.BigIntegerField(verbose_name=_("summarised through record id"), default=0)
    updated_at = models.DateTimeField(verbose_name=_("updated at"), null=True, blank=True)

    class Meta:
        verbose_name = _("usage summary state")
        verbose_name_plural = _("usage summary state")
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="usage_summary_state_single_row")]

    def __str__(self):
        return f"summarised through record {self.summarised_through}"
