"""SCIM filters (``userName eq "…"``, ``externalId eq "…"``) as SQL, through django-scim2's filter parser.

Kept apart from the adapters: django-scim2 reads the filter classes while its adapter module loads.
The parser turns a filter into a WHERE clause over the columns named here and placeholders for the values;
nothing from the request reaches the SQL text but through a placeholder.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django_scim.filters import FilterQuery
from scim2_filter_parser.queries.sql import SQLQuery

from ..models import ProvisionedGroup, ProvisionedUser


def _q(name):
    return connection.ops.quote_name(name)


class _Filter(FilterQuery):
    model = None
    record = None  # the provisioning model joined for externalId
    record_key = None
    hidden = ""  # SQL: records SCIM no longer shows

    @classmethod
    def model_getter(cls):
        return cls.model

    @classmethod
    def search(cls, filter_query, request=None):
        """Return the visible resources matching *filter_query* in id order; raise when it cannot be read."""
        table, records = cls.model._meta.db_table, cls.record._meta.db_table
        query = SQLQuery(filter_query, table, cls.attr_map)
        if query.where_sql is None:
            return cls.model.objects.none()
        where = query.where_sql.format(**dict.fromkeys(query.params_dict, "%s"))
        sql = (
            f"SELECT DISTINCT {_q(table)}.* FROM {_q(table)} LEFT JOIN {_q(records)} "
            f"ON {_q(records)}.{_q(cls.record_key)} = {_q(table)}.{_q('id')} "
            f"WHERE ({where}){cls.hidden} ORDER BY {_q(table)}.{_q('id')}"
        )
        return cls.model.objects.raw(sql, query.params)


class UserFilter(_Filter):
    model = get_user_model()
    record = ProvisionedUser
    record_key = "user_id"
    hidden = f" AND {_q(ProvisionedUser._meta.db_table)}.{_q('deleted_at')} IS NULL"
    attr_map = {
        ("userName", None, None): f"{_q(model._meta.db_table)}.{_q('username')}",
        ("externalId", None, None): f"{_q(ProvisionedUser._meta.db_table)}.{_q('external_id')}",
        ("name", "givenName", None): f"{_q(model._meta.db_table)}.{_q('first_name')}",
        ("name", "familyName", None): f"{_q(model._meta.db_table)}.{_q('last_name')}",
        ("active", None, None): f"{_q(model._meta.db_table)}.{_q('is_active')}",
        ("emails", "value", None): f"{_q(model._meta.db_table)}.{_q('email')}",
        ("emails", None, None): f"{_q(model._meta.db_table)}.{_q('email')}",
    }


class GroupFilter(_Filter):
    model = Group
    record = ProvisionedGroup
    record_key = "group_id"
    attr_map = {
        ("displayName", None, None): f"{_q(Group._meta.db_table)}.{_q('name')}",
        ("externalId", None, None): f"{_q(ProvisionedGroup._meta.db_table)}.{_q('external_id')}",
    }
