#!/usr/bin/env python3
"""Django's command-line utility, which also sets up the project's virtual environment."""

import importlib.util
import os
import sys
from pathlib import Path


def ensure_environment() -> None:
    """Run cleanroom/bootstrap.py (standard library only) without importing the `cleanroom`
    package, which needs the dependencies the bootstrap installs."""
    path = Path(__file__).resolve().parent / "cleanroom" / "bootstrap.py"
    spec = importlib.util.spec_from_file_location("cleanroom_bootstrap", path)
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    bootstrap.ensure_environment(sys.argv)


def main() -> None:
    ensure_environment()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
