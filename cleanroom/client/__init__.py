"""A Python client for the clean room's REST API, and the `cleanroom` command line on it.

It imports no Django and nothing of the apps (an import-linter contract holds it), so an
analyst's notebook needs only this package's dependencies (polars; cryptography to sign an
owner's decision; pandas for `.to_pandas()`).
Every operation it calls is declared in `operations.py` and checked against the live OpenAPI
schema by `tests/client/test_schema_contract.py`. The reference is README.md beside this file.
"""

from cleanroom.client.api import Client, Job, Query
from cleanroom.client.errors import ApiError, CannotConnect, RefusedToSign
from cleanroom.client.plan import Plan
from cleanroom.client.results import Extract
from cleanroom.client.review import Review

__all__ = [
    "ApiError",
    "CannotConnect",
    "Client",
    "Extract",
    "Job",
    "Plan",
    "Query",
    "RefusedToSign",
    "Review",
]
