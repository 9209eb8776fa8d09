"""A production deployment that names no owner's key service would have its TEE hosts decide
releases in their own process over the platform's key folder: check --deploy refuses it."""

from __future__ import annotations

from django.core.checks import run_checks


def test_a_deployment_naming_no_key_service_fails_the_deploy_check(settings):
    settings.KEY_SERVICES = {}
    assert "cleanroom.E003" in {m.id for m in run_checks(include_deployment_checks=True)}
    settings.KEY_SERVICES = {"charite": "https://keys.charite.example:8443"}
    assert "cleanroom.E003" not in {m.id for m in run_checks(include_deployment_checks=True)}
