"""Every vendored file is the one its table pins (by SHA-256) and has its licence beside it:
`cleanroom/static/vendor/README.md` is the list, and nothing is served from that folder that
the list does not name. And the site's icon is served, so no page asks for one in vain."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parent.parent / "cleanroom" / "static" / "vendor"
README = (VENDOR / "README.md").read_text()
# | Library | Version | File | From | SHA-256 |
PINNED = re.findall(
    r"^\| [^|]+ \| [^|]+ \| `([^`]+)` \| [^|]+ \| `([0-9a-f]{64})` \|$", README, re.M
)
# What is not served as code: the list itself, each library's licences, CodeMirror's build entry.
NOT_ASSETS = re.compile(r"README\.md|.*/LICENSE|.*/licenses/.*\.LICENSE|codemirror-[^/]+/entry\.js")


def test_the_table_pins_every_vendored_file():
    files = {
        str(path.relative_to(VENDOR))
        for path in VENDOR.rglob("*")
        if path.is_file() and not NOT_ASSETS.fullmatch(str(path.relative_to(VENDOR)))
    }
    assert len(PINNED) == 4
    assert files == {name for name, _ in PINNED}


@pytest.mark.parametrize(("name", "sha256"), PINNED)
def test_each_vendored_file_is_the_pinned_one_with_its_licence(name, sha256):
    path = VENDOR / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    folder = VENDOR / Path(name).parts[0]
    assert re.fullmatch(r"[a-z0-9]+-\d+\.\d+\.\d+", folder.name), "a <library>-<version> folder"
    licences = [folder / "LICENSE", *(folder / "licenses").glob("*.LICENSE")]
    assert any(licence.is_file() and licence.stat().st_size > 0 for licence in licences)


def test_every_package_bundled_into_codemirror_has_its_licence():
    pins = re.search(r"\| Package \| Version \| Package \| Version \|\n(.*?)\n\n", README, re.S)
    packages = re.findall(r"\| (@?[\w/.-]+) \| \d+\.\d+\.\d+", pins.group(1))
    bundled = [package for package in packages if package != "esbuild"]  # build only
    assert len(bundled) == 14
    licences = VENDOR / "codemirror-6.44.2" / "licenses"
    for package in bundled:
        name = package.replace("@", "").replace("/", "-")
        assert (licences / f"{name}.LICENSE").is_file(), package


def test_the_test_only_axe_core_has_its_licences():
    folder = Path(__file__).resolve().parent / "browser" / "vendor" / "axe-core-4.14.1"
    assert {path.name for path in folder.iterdir()} == {
        "axe.min.js",
        "LICENSE",
        "LICENSE-3RD-PARTY.txt",
    }


@pytest.mark.django_db
def test_pages_link_the_icon_and_favicon_ico_leads_to_it(client):
    icon = "/static/img/favicon.svg"
    assert f'<link rel="icon" href="{icon}" type="image/svg+xml">' in client.get("/login/").text
    redirect = client.get("/favicon.ico")
    assert (redirect.status_code, redirect["Location"]) == (301, icon)
    served = client.get(icon)
    assert served.status_code == 200 and served["Content-Type"] == "image/svg+xml"
    assert b"<title>Clean room</title>" in b"".join(served.streaming_content)
