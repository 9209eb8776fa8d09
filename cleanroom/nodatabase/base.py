"""The database of a site process (CLEANROOM_ROLE=site): none. Every query, connection or
transaction is refused with a message that says why, so a site's code that reaches for the
ORM fails loudly instead of finding a database it must not have."""

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.dummy import base as dummy


class NoDatabase(ImproperlyConfigured):
    pass


def refuse(*args, **kwargs):
    raise NoDatabase(
        "This is a site process (CLEANROOM_ROLE=site): it has no database. A site asks the "
        "control plane through its site API (jobs/docs/site-api.md)."
    )


class DatabaseOperations(dummy.DatabaseOperations):
    quote_name = refuse


class DatabaseWrapper(dummy.DatabaseWrapper):
    vendor = "none"
    display_name = "no database (a site process)"
    _cursor = refuse
    ensure_connection = refuse
    _commit = refuse
    _savepoint_commit = refuse
    _set_autocommit = refuse
    ops_class = DatabaseOperations
