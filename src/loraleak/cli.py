"""Command line: `loraleak run`, `loraleak attacks`, `loraleak models`, `loraleak config`."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="loraleak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="fine-tune, score, attack and report, as a config says")
    p_run.add_argument("--config", help="YAML config file (default: the embedded default config)")
    p_run.add_argument("--output", help="output directory (overrides output_dir)")
    p_run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value, e.g. --set train.epochs=5 (repeatable)")
    p_run.add_argument("--attacks", help="comma-separated attack names or presets (overrides attacks)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub.add_parser("attacks", help="list the registered attacks and presets")
    sub.add_parser("models", help="list the bundled model aliases")
    sub.add_parser("config", help="print the embedded default config")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Exception as e:  # a known bad input: one clear line, no traceback
        from .config import ConfigError
        from .data import TaskError
        from .models import ModelError
        from .scoring import EvidenceError
        if isinstance(e, (ConfigError, TaskError, ModelError, EvidenceError, KeyError, FloatingPointError)):
            msg = e.args[0] if isinstance(e, KeyError) else str(e)
            print(f"loraleak: error: {msg}", file=sys.stderr)
            return 2
        raise


def cmd_run(args) -> int:
    from .config import load_config
    from .experiment import run
    from .report import table

    overrides = list(args.set)
    if args.output:
        overrides.append(f"output_dir={args.output}")
    if args.attacks:
        overrides.append(f"attacks=[{args.attacks}]")
    cfg = load_config(args.config, overrides)
    results = run(cfg, progress=not args.no_progress)
    s, t = results["split"], results["timings_s"]
    print(f"\n{cfg.model.name} on {cfg.task.name}: {s['members']} members vs {s['nonmembers']} non-members "
          f"({cfg.model.dtype}, LoRA r={cfg.lora.r} on {','.join(cfg.lora.target_modules)}, "
          f"{cfg.train.epochs} epochs; final train loss {results['training']['final_loss']:.3f})")
    print(table(results["attacks"]))
    print(f"\nwrote {cfg.output_dir}/ (results.json, scores.csv, roc.csv, roc.png, adapter/, manifest.jsonl) "
          f"in {sum(t.values()):.0f} s")
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
    from .models import ALIASES
    for a in ALIASES.values():
        print(f"{a.name:<14} {a.architecture:<8} {a.description}")
    return 0


def cmd_config(args) -> int:
    from .config import default_config_text
    print(default_config_text(), end="")
    return 0


COMMANDS = {"run": cmd_run, "attacks": cmd_attacks, "models": cmd_models, "config": cmd_config}

if __name__ == "__main__":
    sys.exit(main())
