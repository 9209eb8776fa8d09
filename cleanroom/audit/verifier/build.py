"""The verifier as one runnable file: ``verify.pyz``, a zipapp of this package that each bundle
ships, and that anyone can build from a checkout alone:

    python3 -m cleanroom.audit.verifier.build verify.pyz

The same code gives the same bytes (fixed order, timestamps and permissions, no compression),
so a bundle's manifest can list the file's SHA-256 and anyone can rebuild it to compare.
``zipapp.create_archive`` would stamp each file's modification time, hence zipfile here; the
result is what it makes: a shebang line, then a zip with ``__main__.py`` at its root.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "verifier"  # the package's name inside the zipapp; its modules import relatively
SHEBANG = b"#!/usr/bin/env python3\n"
_MAIN = b"import sys\n\nfrom verifier.__main__ import main\n\nsys.exit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def sources() -> dict[str, bytes]:
    """The package's modules, by name, as the zipapp holds them: all but this builder."""
    here = Path(__file__).parent
    return {
        path.name: path.read_bytes()
        for path in sorted(here.glob("*.py"))
        if path.name != Path(__file__).name
    }


def build_zipapp() -> bytes:
    """The bytes of ``verify.pyz``."""
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    entries = {"__main__.py": _MAIN}
    entries.update({f"{PACKAGE}/{name}": content for name, content in sources().items()})
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # Unix, whatever system builds it
            info.external_attr = 0o644 << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python3 -m cleanroom.audit.verifier.build OUTPUT.pyz", file=sys.stderr)
        return 2
    content = build_zipapp()
    Path(args[0]).write_bytes(content)
    print(f"{args[0]}: sha256 {hashlib.sha256(content).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
