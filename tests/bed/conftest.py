"""The job tests' fixture that waits on each committed change to a job (PostgreSQL's
LISTEN/NOTIFY), for the end-to-end runs across the bed."""

from tests.jobs.conftest import job_changes  # noqa: F401 - a fixture
