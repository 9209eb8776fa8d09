"""The planner's report as the client shows it: what each check said, what the query charges
each dataset and what is left, each output cell's accuracy, and where every step runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Plan:
    """The report of `POST /api/rooms/<room>/queries/plan/` (or a submitted query's frozen one).
    `report` is the API's JSON as it came; the properties read the parts people ask about."""

    report: dict[str, Any]

    def __repr__(self) -> str:
        # The report runs to pages; a notebook echoing a query or a plan shows its gist, and
        # print(plan) the whole of it.
        return f"Plan(ok={self.ok}, mechanism={self.mechanism!r}, epsilon={self.epsilon!r})"

    @property
    def ok(self) -> bool:
        """Every check passed: the query may be submitted."""
        return bool(self.report["ok"])

    @property
    def mechanism(self) -> str | None:
        return self.report["mechanism"]["chosen"]

    @property
    def checks(self) -> list[dict[str, Any]]:
        return self.report["checks"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [check for check in self.checks if not check["ok"]]

    @property
    def epsilon(self) -> dict[str, str]:
        """Per dataset read (`org.dataset`), the ε the query charges it."""
        return {dataset["name"]: dataset["epsilon"] for dataset in self.report["datasets"]}

    @property
    def accuracy(self) -> dict[str, float]:
        """Per output column, the half-width of its 95 % interval (for an average, a bound)."""
        return {cell["alias"]: cell["accuracy95"] for cell in self.report["cells"]}

    @property
    def approvers(self) -> list[str]:
        return list(self.report["required_approvers"])

    def __str__(self) -> str:
        report = self.report
        verdict = "passes every check" if self.ok else f"{len(self.failed)} check(s) failed"
        lines = [f"Plan: {verdict}", f"Mechanism: {report['mechanism']['reason']}"]
        if report["error"]:
            error = report["error"]
            lines.append(f"SQL refused at line {error['line']}, column {error['column']}")
        lines.append("Checks:")
        lines += [
            f"  {'✓' if check['ok'] else '✗'} {check['name']}: {check['message']}"
            for check in self.checks
        ]
        if report["datasets"]:
            lines.append("Privacy budget, per dataset:")
            for dataset in report["datasets"]:
                fits = "fits" if dataset["fits"] else "does NOT fit"
                lines.append(
                    f"  {dataset['name']} ({dataset['jurisdiction']}, owner "
                    f"{dataset['owner']['slug']}): charges ε {dataset['epsilon']}"
                    f"{_delta(dataset['delta'])}; {dataset['remaining_epsilon']} of "
                    f"{dataset['total_epsilon']} left; {fits}"
                )
        if report["cells"]:
            lines.append("Accuracy (95 % interval half-width):")
            lines += [
                f"  {cell['alias']} ({cell['kind']}, {cell['mechanism']}): ± {cell['accuracy95']:g}"
                for cell in report["cells"]
            ]
        if report["steps"]:
            lines.append("Residency, step by step:")
            for step in report["steps"]:
                where = f" at {step['site']} ({step['jurisdiction']})" if step["site"] else ""
                refused = [d["reason"] for d in step["decisions"] if not d["allowed"]]
                verdict = "refused: " + " ".join(refused) if refused else "allowed"
                lines.append(f"  {step['step']}{where}: {verdict}")
        if self.approvers:
            lines.append(f"Approvals needed from: {', '.join(self.approvers)}")
        return "\n".join(lines)


def _delta(delta: str) -> str:
    return "" if float(delta) == 0 else f", δ {delta}"
