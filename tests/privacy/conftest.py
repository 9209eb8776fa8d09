"""The MPC parties' share inboxes, for the privacy tests that run input steps."""

from tests.jobs.mpc_support import share_inboxes  # noqa: F401 - a fixture
