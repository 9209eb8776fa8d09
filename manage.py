#!/usr/bin/env python3
"""Django's command-line utility, which also sets up the project's virtual environment."""

import os
import sys


def main() -> None:
    from cleanroom.bootstrap import ensure_environment

    ensure_environment(sys.argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
