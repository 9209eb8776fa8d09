"""Domain failures: named, with a message a person understands, turned into one error format."""

from cleanroom.metrics import count_refusal


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
        # Counted where the refusal is made, in whichever process makes it: every view, API
        # endpoint and worker raises its refusals as a DomainError (cleanroom/metrics.py).
        count_refusal(self.code)
