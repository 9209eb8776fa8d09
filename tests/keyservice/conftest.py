"""A running TEE job whose keys are asked for, as in the key release tests."""

from tests.jobs.test_key_release import enclave_key, job, start  # noqa: F401
