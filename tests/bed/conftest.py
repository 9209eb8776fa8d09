"""The job tests' fixtures for the end-to-end runs across the bed: waiting on each committed
change to a job (PostgreSQL's LISTEN/NOTIFY), and the MPC parties' share inboxes."""

from tests.jobs.conftest import job_changes  # noqa: F401 - a fixture
from tests.jobs.mpc_support import share_inboxes  # noqa: F401 - a fixture
