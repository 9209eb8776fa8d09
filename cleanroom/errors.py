"""Domain failures: named, with a message a person understands, turned into one error format."""


class DomainError(Exception):
    code = "refused"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code
