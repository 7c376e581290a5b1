"""Run `loraleak run` for every bundled model x task pair and tabulate privacy, utility and wall time.

    python bench/models_x_tasks.py [--out runs/models_x_tasks] [--set KEY=VALUE ...] [--models A,B] [--tasks X,Y]

Each pair is a separate `loraleak run` (a fresh process, so every wall time includes loading the model
from its safetensors cache); the same sizes and recipe for all pairs (SIZES below, --set to change).
Writes OUT/table.md and prints it. Runs one pair at a time: two PyTorch jobs on 2 cores slow each other
10-20x, so nothing else should run beside it.
The measured table, with the date, machine and config that produced it: docs/results/models_x_tasks.md.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODELS = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"]
TASKS = ["spam", "subject", "docstring"]
SIZES = ["split.members=100", "split.nonmembers=100", "split.population=100", "train.epochs=3"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/models_x_tasks")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    out = Path(args.out)
    loraleak = str(Path(sys.executable).with_name("loraleak"))
    for model in args.models.split(","):
        for task in args.tasks.split(","):
            where = out / f"{model}_{task}"
            sets = [f"model.name={model}", f"task.name={task}", *SIZES, *args.set]
            t0 = time.perf_counter()
            proc = subprocess.run(
                [loraleak, "run", "--no-progress", "--output", str(where), *[x for s in sets for x in ("--set", s)]],
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t0
            where.mkdir(parents=True, exist_ok=True)
            (where / "wall_s.txt").write_text(f"{wall:.1f}\n")
            (where / "log.txt").write_text(proc.stdout + proc.stderr)
            print(f"{model} x {task}: exit {proc.returncode} in {wall:.0f} s", flush=True)
    table = render(out, args.models.split(","), args.tasks.split(","))
    (out / "table.md").write_text(table)
    print(table)


def render(out: Path, models, tasks) -> str:
    rows = [
        "| model | task | members/non-members | loss AUC | loss-pt AUC | best attack (AUC) | TPR@1%FPR of best "
        "| utility fine-tuned | utility pre-trained | wall time |",
        "|" + "---|" * 10,
    ]
    for model in models:
        for task in tasks:
            where = out / f"{model}_{task}"
            if not (where / "results.json").is_file():
                rows.append(f"| {model} | {task} | failed: see {where}/log.txt |" + " |" * 7)
                continue
            r = json.loads((where / "results.json").read_text())
            a = r["attacks"]
            best = max(a, key=lambda k: a[k]["auc"])
            u = r["utility"]

            def fmt(m):
                return ", ".join(f"{k.replace('_', '-')} {v:.3f}" for k, v in m.items())

            wall = float((where / "wall_s.txt").read_text())
            rows.append(
                f"| {model} | {task} | {r['split']['members']}/{r['split']['nonmembers']} | "
                f"{a['loss']['auc']:.3f} | {a['loss-pt']['auc']:.3f} | {best} ({a[best]['auc']:.3f}) | "
                f"{a[best]['tpr@0.01fpr']:.3f} | {fmt(u['target'])} | {fmt(u['pretrained'])} | "
                f"{wall / 60:.1f} min |"
            )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
