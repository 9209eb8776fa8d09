"""Domain failures: named, with a message a person understands, turned into one error format."""


class DomainError(Exception):
    code = "refused"
    # A refusal because of the object's current state (already answered, already ran): HTTP 409.
    conflict = False

    def __init__(self, message: str, *, code: str | None = None, conflict: bool | None = None):
        super().__init__(message)
        if code:
            self.code = code
        if conflict is not None:
            self.conflict = conflict
