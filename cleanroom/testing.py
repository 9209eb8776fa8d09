"""`./manage.py test` runs the pytest suite (pytest-django), so there is one way to run tests."""

import sys


class PytestRunner:
    def __init__(
        self,
        verbosity: int = 1,
        failfast: bool = False,
        keepdb: bool = False,
        keyword: str | None = None,
        markers: str | None = None,
        **kwargs,
    ):
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb
        # Django's test command hands its options to the runner's constructor, not to run_tests.
        self.selection = {"-k": keyword, "-m": markers}

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
        for flag, value in self.selection.items():
            if value:
                argv += [flag, value]
        sys.stdout.flush()
        return pytest.main(argv)
