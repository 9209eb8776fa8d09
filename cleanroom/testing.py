"""`./manage.py test` runs the pytest suite (pytest-django), so there is one way to run tests."""

import sys


class PytestRunner:
    def __init__(self, verbosity: int = 1, failfast: bool = False, keepdb: bool = False, **kwargs):
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--keepdb", action="store_true", help="Keep the test database.")
        parser.add_argument("-k", dest="keyword", help="Only run tests matching this expression.")
        parser.add_argument("-m", dest="markers", help="Only run tests with these markers.")

    def run_tests(self, test_labels: list[str], **kwargs) -> int:
        import pytest

        argv = list(test_labels)
        if self.verbosity == 0:
            argv.append("--quiet")
        elif self.verbosity > 1:
            argv.append("--verbose")
        if self.failfast:
            argv.append("--exitfirst")
        if self.keepdb:
            argv.append("--reuse-db")
        for flag, key in (("-k", "keyword"), ("-m", "markers")):
            if kwargs.get(key):
                argv += [flag, kwargs[key]]
        sys.stdout.flush()
        return pytest.main(argv)
