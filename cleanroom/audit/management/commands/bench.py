"""`manage.py bench [NAME]`: run the benchmarks in tests/benchmarks/bench_<name>.py.

Each module exposes `run() -> None`, which prints lines `name: value unit`. Benchmarks make
their own scratch database; they are never run by the test suite.
"""

import importlib
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

PACKAGE = "tests.benchmarks"


def available() -> list[str]:
    folder = Path(settings.BASE_DIR) / "tests" / "benchmarks"
    return sorted(p.stem.removeprefix("bench_") for p in folder.glob("bench_*.py"))


class Command(BaseCommand):
    help = "Run the benchmarks (tests/benchmarks/bench_<name>.py), or the named one."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help=f"one of: {', '.join(available())}")

    def handle(self, *args, name: str | None, **options):
        names = available()
        if name is not None:
            if name not in names:
                raise CommandError(f"No benchmark {name!r}; there are: {', '.join(names)}.")
            names = [name]
        for benchmark in names:
            self.stdout.write(f"# bench_{benchmark}")
            self.stdout.flush()
            importlib.import_module(f"{PACKAGE}.bench_{benchmark}").run()
