"""Generated reference pages: docs/attacks.md from the attack registry, docs/configuration.md from the
config declarations. `python -m loraleak.docs` rewrites both; a test fails when either is stale."""

from __future__ import annotations

import sys
from pathlib import Path

from .attacks import ATTACKS, PRESETS
from .config import render_markdown

PRESET_HELP = {
    "all": "everything registered (shadow adapters and sampling included)",
    "fast": "every attack that needs logits only and trains no further adapter",
    "loraleak-15": "LoRA-Leak's suite: ten published attacks and five calibrated by the pre-trained model",
    "one-pass": "the logit attacks that read only one forward pass per model (the demo's)",
    "strongest": "the leaders of results/attacks-beyond.md, cheapest first (one reference adapter, k shadows)",
}


def attacks_markdown() -> str:
    out = [
        "# Attacks",
        "",
        "Generated from the attack registry (`src/loraleak/attacks/`, `python -m loraleak.docs`); do not edit.",
        "`loraleak attacks` prints the same. Higher score = more likely a member, always. x is the scored text",
        "(the response by default, `scoring.tokens`). Hyperparameters go in `attack_params:` of a config",
        "(an entry for NAME also sets NAME-pt); unknown names or hyperparameters are refused. How the",
        "attacks share passes, the shadow pool and how each is tested: [attacks-guide.md](attacks-guide.md).",
        "",
        "## Presets",
        "",
        "| preset | what | attacks |",
        "|---|---|---|",
    ]
    out += [
        f"| `{name}` | {PRESET_HELP.get(name, '')} | {', '.join(f'`{a}`' for a in members())} |"
        for name, members in PRESETS.items()
    ]
    out += [
        "",
        "## Every attack",
        "",
        "| name | family | access | score | defaults | extra passes / adapters | citation "
        "| departures from the paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in ATTACKS.values():
        defaults = ", ".join(f"{k}={v!r}" for k, v in a.defaults.items()) or "-"
        extra = ", ".join([*a.variants, *(f"adapter {r}" for r in a.roles if r not in ("target", "pretrained"))])
        out.append(
            f"| `{a.name}` | {a.family} | {', '.join(a.access)} | {_cell(a.score)} | {_cell(defaults)} | "
            f"{extra or '-'} | {_cell(a.citation)} | {_cell(a.note) or '-'} |"
        )
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


PAGES = {"attacks.md": attacks_markdown, "configuration.md": render_markdown}


def main(docs: Path = Path("docs")) -> None:
    for name, render in PAGES.items():
        (docs / name).write_text(render())
        print(f"wrote {docs / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
