"""The generated reference pages are current, and the README stays a newcomer's page whose links work."""

import re
from pathlib import Path

from loraleak.docs import PAGES

ROOT = Path(__file__).parent.parent


def test_generated_docs_are_current():
    for name, render in PAGES.items():
        assert (ROOT / "docs" / name).read_text() == render(), f"docs/{name} is stale: run python -m loraleak.docs"


def test_every_preset_says_what_it_is():
    from loraleak.attacks import PRESETS
    from loraleak.docs import PRESET_HELP

    assert set(PRESET_HELP) == set(PRESETS)


def test_readme_is_short_and_every_relative_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
