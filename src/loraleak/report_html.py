"""report.html: one self-contained page per run, audit and grid, written from the files on disk.

It opens offline and anywhere: the style is inline, the figures are inline SVG drawn by matplotlib,
and there is no script, font, image or stylesheet to fetch (links to the run's own files load only
when clicked). `loraleak report DIR` writes it again from a directory's files, as a run does last.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import report
from .cache import RunFiles, atomic, read_cached, sha256_file
from .errors import UserError
from .results import RunResult

PAGE_FILE = "report.html"
AT_RISK = 10  # members listed as most exposed
HISTOGRAMS = 3  # strongest attacks whose member / non-member scores are drawn
SNIPPET_CHARS = 160


class ReportError(UserError, ValueError):
    """A directory holds nothing to report on."""


def regenerate(directory: Path) -> list[Path]:
    """`loraleak report DIR`: one run's or audit's page, or a grid's page and those of its cells."""
    if (directory / report.GRID_FILES[0]).is_file():
        cells = sorted(p.parent for p in (directory / "cells").glob("*/results.json"))
        return [*map(write_run_page, cells), write_grid_page(directory)]
    if RunFiles(directory).results.is_file():
        return [write_run_page(directory)]
    raise ReportError(
        f"{directory} holds neither results.json (a run or an audit) nor grid.csv (a grid): "
        "give the output directory of a finished `loraleak run` or `loraleak audit`"
    )


# --- a run or an audit -------------------------------------------------------------------------------


def write_run_page(root: Path) -> Path:
    """report.html of a run or audit directory, from its results.json, scores.csv, records.csv, roc.csv."""
    files = RunFiles(root)
    try:
        result = RunResult.from_dict(read_cached(files.results, _json), read_cached(files.scores, pd.read_csv))
    except (TypeError, KeyError) as e:  # fields added or renamed since that version
        raise ReportError(
            f"{files.results} was written by another loraleak version ({type(e).__name__}: {e}): "
            "re-run it with this one (its cached work is reused where the keys still match)"
        ) from None
    records = (
        read_cached(files.records, pd.read_csv)
        if files.records.is_file()
        else report.records_frame(result.scores, list(result.attacks))  # a run from before records.csv
    )
    roc = read_cached(files.roc_csv, pd.read_csv)
    weights = files.adapter() / "adapter_model.safetensors"
    own_adapter = sha256_file(weights) if result.audit is None and weights.is_file() else None
    page = run_page(result, records, roc, _written(files.results), own_adapter)
    with atomic(files.html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return files.html


def run_page(
    result: RunResult, records: pd.DataFrame, roc: pd.DataFrame, written: str, adapter_sha256: str | None = None
) -> str:
    """The page of one run or audit: verdict first, then the evidence for it."""
    cfg = result.config
    kind = "audit" if result.audit else "run"
    title = f"loraleak {kind}: {cfg.model.name} on {_data_name(result)}"
    return _page(
        title,
        [
            f"<header><h1>{escape(title)}</h1><p class=meta>{escape(_setting(result))} · written {written} · "
            f"loraleak {escape(result.loraleak_version)}</p></header>",
            _verdict(result),
            _measured(result, adapter_sha256),
            _attack_table(result),
            _figures(result, roc),
            _trust(result),
            _records_at_risk(result, records),
            _utility(result),
            _environment(result),
        ],
    )


def _data_name(result: RunResult) -> str:
    a = result.audit
    return f"{Path(a['members_file']).name} / {Path(a['nonmembers_file']).name}" if a else result.config.task.name


def _setting(result: RunResult) -> str:
    s = result.split
    return f"{s.members} members vs {s.nonmembers} non-members, {len(result.attacks)} attacks"


def _verdict(result: RunResult) -> str:
    out = f'<section id="verdict" class="verdict"><p>{escape(report.verdict(result))}</p></section>'
    blind = result.blind_baseline
    if blind and blind["shifted"]:
        warning = report.blind_line(blind).split("\n", 1)[1]
        out = f'<section id="shift-warning" class="warning" role="alert"><p>{escape(warning)}</p></section>' + out
    return out


def _attack_table(result: RunResult) -> str:
    """Every attack, grouped by family, the strongest (by AUC) highlighted; TPRs that the number of
    non-members cannot resolve shown as n/a with the number needed."""
    from .attacks import ATTACKS

    m, n = result.attacks, result.split.nonmembers
    best = max(m, key=lambda name: m[name]["auc"])
    head = ["attack", "needs", "AUC", "95% CI", "TPR@1%FPR", "TPR@0.1%FPR", "time"]
    rows = []
    for family in dict.fromkeys(v["family"] for v in m.values()):
        rows.append(f'<tr class="family"><th colspan="{len(head)}">{escape(family)}</th></tr>')
        for name, v in m.items():
            if v["family"] != family:
                continue
            ci = v.get("ci", {})
            cells = [
                f'<td title="{escape(v.get("citation", ""))}">{escape(name)}</td>',
                f"<td>{escape(', '.join(ATTACKS[name].access)) if name in ATTACKS else '?'}</td>",
                f"<td class=num>{v['auc']:.3f}</td>",
                f"<td class=num>{_interval(ci.get('auc'))}</td>",
                f"<td class=num>{_rate(v, ci, 0.01, n)}</td>",
                f"<td class=num>{_rate(v, ci, 0.001, n)}</td>",
                f"<td class=num>{v.get('time_s', float('nan')):.1f} s</td>",
            ]
            rows.append(f"<tr{' class=best' if name == best else ''}>{''.join(cells)}</tr>")
    return _section(
        "attacks",
        "Attacks",
        _table(head, rows, "attack-table"),
        f"Best by AUC highlighted ({escape(best)}). CIs: {m[best].get('ci_level', 0.95):.0%} bootstrap. "
        "Hover an attack for its paper. An attack's time includes the forward passes it was the first to need.",
    )


def _rate(v: dict, ci: dict, fpr: float, nonmembers: int) -> str:
    key = f"tpr@{fpr:g}fpr"
    if not report.resolvable(fpr, nonmembers):
        return f"n/a (needs {report.min_nonmembers_for(fpr)} non-members)"
    return f"{v[key]:.3f} {_interval(ci.get(key))}"


def _interval(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _figures(result: RunResult, roc: pd.DataFrame) -> str:
    """Log-log ROC of the strongest attack of each family; member vs non-member scores of the strongest."""
    m = result.attacks
    ranked = sorted(m, key=lambda name: -m[name]["auc"])
    per_family = list({m[name]["family"]: name for name in reversed(ranked)}.values())
    roc_svg = _svg(report.roc_figure(roc, m, per_family), "roc")
    hist_svg = _svg(_histograms(result.scores, ranked[:HISTOGRAMS], m), "histograms")
    return _section(
        "figures",
        "Figures",
        '<div class="figures">'
        + _figure("fig-roc", roc_svg, "ROC, log-log: the strongest attack of each family (roc.csv has all).")
        + _figure(
            "fig-scores",
            hist_svg,
            "Scores of members and non-members under the strongest attacks (the "
            "middle 98% of scores): the further apart, the more the adapter leaks.",
        )
        + "</div>",
    )


def _histograms(scores: pd.DataFrame, names: list[str], metrics: dict[str, dict]):
    plt = report.pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(4.6, 1.55 * len(names) + 0.4), squeeze=False)
    member = (scores["split"] == "member").to_numpy()
    for ax, name in zip(axes[:, 0], names, strict=True):
        values = scores[name].to_numpy(float)
        finite = np.isfinite(values)
        low, high = np.quantile(values[finite], [0.01, 0.99]) if finite.any() else (0.0, 1.0)
        bins = np.linspace(low, max(high, low + 1e-9), 31)  # the middle 98%: outliers would squash the rest
        for mask, label, color in ((member, "members", "C3"), (~member, "non-members", "C0")):
            ax.hist(values[mask & finite].clip(bins[0], bins[-1]), bins=bins, alpha=0.55, color=color, label=label)
        ax.set_yticks([])
        ax.set_title(f"{name} (AUC {metrics[name]['auc']:.3f})", fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("attack score (higher: more likely a member)", fontsize=8)
    fig.tight_layout()
    return fig


def _trust(result: RunResult) -> str:
    """Can the number be trusted: are members and non-members alike (shift check, blind baseline)?"""
    blind = result.blind_baseline
    body = ""
    if blind:
        verdict = (
            "<strong>above chance: the split itself tells members apart</strong>"
            if blind["shifted"]
            else "at chance: the split does not give membership away"
        )
        body += (
            f"<p id=blind-baseline>Blind baseline (no model): AUC {blind['auc']:.3f} {_interval(blind.get('auc_ci'))}"
            f", {verdict}.</p><p class=small>{escape(blind['method'])}; features: {escape(blind['features'])}.</p>"
        )
    rows = [
        f"<tr><td>{escape(k.replace('_', ' '))}</td><td class=num>{v:.3f}</td></tr>"
        for k, v in result.split.shift_check.items()
    ]
    body += _table(["shift check", "value"], rows, "shift-check")
    return _section("trust", "Can the number be trusted?", body)


def _records_at_risk(result: RunResult, records: pd.DataFrame) -> str:
    """The members the strongest attack singles out: smallest p-value against the non-members first."""
    m = result.attacks
    best = max(m, key=lambda name: m[name]["auc"])
    members = records[records["split"] == "member"].copy()
    members["flagged"] = sum((members[f"{a}_p"] <= 0.01).astype(int) for a in m)
    top = members.sort_values([f"{best}_p", best], ascending=[True, False]).head(AT_RISK)
    hidden = "(redacted)" if result.config.audit.redact else "(not in records.csv)" if "text" not in records else ""
    rows = []
    for _, r in top.iterrows():
        text = hidden or escape(report.shortened(str(r["text"]), SNIPPET_CHARS))
        rows.append(
            f"<tr><td>{escape(str(r['id']))}</td><td class=num>{r[f'{best}_p']:.3f}</td>"
            f"<td class=num>{r[best]:.3f}</td><td class=num>{r['flagged']} of {len(m)}</td><td>{text}</td></tr>"
        )
    return _section(
        "records",
        "Records at risk",
        _table(["member", f"p-value ({best})", "score", "attacks at p ≤ 0.01", "text"], rows, "records-table"),
        "p-value: the share of non-members scoring at least as high as the member. records.csv has every "
        "record, attack and p-value.",
    )


def _utility(result: RunResult) -> str:
    u = result.utility
    if not u:
        return _section("utility", "Utility", "<p>Not measured (eval.utility: false, or an audit).</p>")
    rows = [
        f"<tr><td>{escape(k.replace('_', '-'))}</td><td class=num>{v:.3f}</td>"
        f"<td class=num>{u['pretrained'][k]:.3f}</td></tr>"
        for k, v in u["target"].items()
    ]
    return _section(
        "utility",
        "Utility",
        _table(["metric", "fine-tuned", "pre-trained"], rows, "utility-table"),
        f"On {u['held_out']} held-out examples of the task ({escape(u['kind'])}).",
    )


def _measured(result: RunResult, adapter_sha256: str | None) -> str:
    """What was measured: model, adapter (or merged weights), data, sizes, training, the whole config."""
    import yaml

    cfg, s = result.config, result.split
    items = [("model", f"{cfg.model.name} ({cfg.model.dtype})")]
    items += _audited(result.audit) if result.audit else _trained(result, adapter_sha256)
    sizes = f"{s.members} members, {s.nonmembers} non-members, {s.population} population"
    items.append(("sizes", f"{sizes}; {s.duplicates_dropped} duplicates dropped; {s.targets_truncated} truncated"))
    config = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    body = _definitions(items) + f"<details><summary>config</summary><pre>{escape(config)}</pre></details>"
    return _section("measured", "What was measured", body)


def _audited(a: dict[str, Any]) -> list[tuple[str, str]]:
    files = ", ".join(f"{k}: {a[f'{k}_file']}" for k in ("members", "nonmembers", "population") if a[f"{k}_file"])
    base = [("model identity", a["model_identity"])] if a.get("model_identity") else []
    if a.get("finetuned"):
        audited = [
            ("fine-tuned model", f"{a['finetuned']} (merged weights)"),
            ("weights sha256", a["finetuned_sha256"]),
        ]
    else:
        named = a["adapter_base_model"] or "not named in its config"
        audited = [
            ("adapter", f"{a['adapter']} ({a['adapter_variant']}, base: {named})"),
            ("adapter sha256", a["adapter_sha256"]),
        ]
    return [*base, *audited, ("records", files)]


def _trained(result: RunResult, adapter_sha256: str | None) -> list[tuple[str, str]]:
    cfg, lora, t = result.config, result.config.lora, result.training
    items = [
        ("adapter", f"adapter/ (LoRA r={lora.r}, alpha {lora.alpha}, on {', '.join(lora.target_modules)})"),
        ("adapter sha256", adapter_sha256 or "(adapter not on disk)"),
        ("task", f"{cfg.task.name} ({result.task.kind}), split seed {cfg.split.seed}"),
        (
            "training",
            f"{cfg.train.epochs} epochs, {t.steps} steps, loss {_num(t.first_loss)} → {_num(t.final_loss)}, "
            f"{t.trainable_parameters:,} trainable parameters",
        ),
    ]
    if result.privacy:
        items.append(("DP-SGD", f"epsilon {result.privacy['epsilon']:.2f} at delta {cfg.dp.delta:g}"))
    return items


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _environment(result: RunResult) -> str:
    env = [(k, str(v)) for k, v in result.environment.items()]
    times = [(k, f"{v:.1f} s") for k, v in result.timings_s.items()]
    passes = [
        f"<tr><td>{escape(p['pass'])}</td><td class=num>{p['samples']}</td><td class=num>{p['tokens']}</td>"
        f"<td class=num>{p['seconds']:.1f}</td><td class=num>{p['tokens'] / max(p['seconds'], 1e-9):.0f}</td></tr>"
        for p in result.forward_passes
    ]
    body = (
        _definitions(env)
        + "<h3>Time per stage</h3>"
        + _definitions(times)
        + _table(["forward pass", "samples", "tokens", "seconds", "tokens/s"], passes, "passes")
    )
    files = [p.name for p in RunFiles(".").report if p.name != PAGE_FILE]
    links = " · ".join(f'<a href="{name}">{name}</a>' for name in files)
    return _section("environment", "Environment and timings", body, f"Files: {links}.")


# --- a grid ------------------------------------------------------------------------------------------------


def write_grid_page(root: Path) -> Path:
    """report.html of a grid's root, from grid.csv: per-cell table, privacy-utility figure, cell links."""
    frame = read_cached(root / report.GRID_FILES[0], pd.read_csv)
    pages = {cell: (root / "cells" / cell / PAGE_FILE).is_file() for cell in frame["cell"]}
    page = grid_page(frame, pages, _written(root / report.GRID_FILES[0]))
    with atomic(root / PAGE_FILE) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return root / PAGE_FILE


def grid_page(frame: pd.DataFrame, has_page: dict[str, bool], written: str) -> str:
    """A grid's page: one row per cell (linked to its page), the privacy-utility figure, every AUC."""
    attacks = [c.split(":", 1)[1] for c in frame.columns if c.startswith("auc:")]
    settings = list(frame.columns[1 : frame.columns.get_loc("epsilon")])
    metric = frame["utility_metric"].iloc[0] if "utility_metric" in frame else None
    head = ["cell", *settings, "epsilon", "best attack", "AUC", "TPR@1%FPR"]
    head += [f"{metric} fine-tuned / pre-trained"] if metric else []
    rows = []
    worst = frame["best_auc"].idxmax()
    for i, r in frame.iterrows():
        cell = escape(str(r["cell"]))
        link = f'<a href="cells/{cell}/{PAGE_FILE}">{cell}</a>' if has_page.get(r["cell"]) else cell
        cells = [link, *(escape(str(r[k])) for k in settings)]
        cells += ["-" if np.isinf(r["epsilon"]) else f"{r['epsilon']:.2f}", escape(str(r["best_attack"]))]
        cells += [f"{r['best_auc']:.3f}", report.tpr_cell(r["best_tpr@1%fpr"], 0.01, int(r["nonmembers"]))]
        cells += [f"{r['utility']:.3f} / {r['utility_pretrained']:.3f}"] if metric else []
        rows.append(f"<tr{' class=best' if i == worst else ''}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    per_attack = [
        f"<tr><td>{escape(str(r['cell']))}</td>"
        + "".join(f"<td class=num>{r[f'auc:{a}']:.3f}</td>" for a in attacks)
        + "</tr>"
        for _, r in frame.iterrows()
    ]
    figure = _figure(
        "fig-privacy-utility",
        _svg(report.privacy_utility_figure(frame), "privacy-utility"),
        "Privacy against utility, one point per cell.",
    )
    title = f"loraleak grid: {len(frame)} cells"
    return _page(
        title,
        [
            f"<header><h1>{escape(title)}</h1><p class=meta>written {written}</p></header>",
            f'<section id="verdict" class="verdict"><p>{escape(grid_verdict(frame))}</p></section>',
            _section(
                "cells",
                "Cells",
                _table(head, rows, "grid-table"),
                "The most leaking cell highlighted; each cell's name links to its own report.",
            ),
            *([_seeds_section(frame)] if "group" in frame else []),
            _section("figures", "Privacy and utility", figure),
            _section("per-attack", "AUC of every attack", _table(["cell", *attacks], per_attack, "auc-table")),
        ],
    )


def _seeds_section(frame: pd.DataFrame) -> str:
    """A grid run with `seeds:`: each cell's mean ± sd [95% t-interval] over its seeds."""
    seeds = report.seed_frame(frame)
    lead = list(seeds.columns)[: list(seeds.columns).index("seeds") + 1]
    figures = ["best_auc", "best_tpr@1%fpr", *(["utility"] if "utility" in seeds else [])]
    rows = [
        "<tr>"
        + "".join(f"<td>{escape(str(r[c]))}</td>" for c in [*lead, "best_attack"])
        + "".join(f"<td class=num>{escape(report.spread(r, c))}</td>" for c in figures)
        + "</tr>"
        for _, r in seeds.iterrows()
    ]
    head = [*lead, "best attack (highest mean AUC)", "best AUC", "best TPR@1%FPR"] + ["utility"] * ("utility" in seeds)
    note = "Mean ± sd [95% t-interval] over seeds; the best AUC and TPR are each run's best attack's, averaged."
    return _section("seeds", "Over seeds", _table(head, rows, "seeds-table"), note)


def grid_verdict(frame: pd.DataFrame) -> str:
    """The grid in one sentence: the cells that leak most and least, by their best attack's AUC."""
    auc = frame["best_auc"].to_numpy()
    most, least = frame.iloc[int(auc.argmax())], frame.iloc[int(auc.argmin())]

    def cell(r: pd.Series) -> str:
        utility = f", {r['utility_metric'].replace('_', '-')} {r['utility']:.3f}" if "utility_metric" in r else ""
        return f"{r['cell']} (AUC {r['best_auc']:.3f} by {r['best_attack']}{utility})"

    return f"Verdict: of {len(frame)} cells, {cell(most)} leaks most and {cell(least)} least."


# --- HTML pieces ----------------------------------------------------------------------------------------


def _written(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _svg(fig: Any, salt: str) -> str:
    """A matplotlib figure as inline SVG: text kept as text, ids salted per figure so that two figures
    on one page never share an id, no date, so the same data gives the same bytes."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    report.pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(ident: str, svg: str, caption: str) -> str:
    width = re.search(r'<svg[^>]*\swidth="([\d.]+pt)"', svg)  # the caption wraps at the figure's width
    style = f' style="max-width:{width.group(1)}"' if width else ""
    return f'<figure id="{ident}"{style}>{svg}<figcaption>{escape(caption)}</figcaption></figure>'


def _section(ident: str, title: str, body: str, note: str = "") -> str:
    tail = f"<p class=small>{note}</p>" if note else ""
    return f'<section id="{ident}"><h2>{escape(title)}</h2>{body}{tail}</section>'


def _table(head: Sequence[str], rows: Iterable[str], ident: str) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f'<table id="{ident}"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _definitions(items: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl>"


STYLE = """
body{font:15px/1.45 system-ui,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:20px 28px 48px;background:#fff}
h1{font-size:1.5em;margin:.2em 0}
h2{font-size:1.15em;border-bottom:1px solid #dde1e6;padding-bottom:4px;margin-top:1.6em}
h3{font-size:1em}
.meta,.small{color:#5b6573;font-size:.87em}
.verdict{background:#eef5ff;border-left:5px solid #2f6fde;padding:10px 16px;font-size:1.05em}
.warning{margin-bottom:10px;background:#fff1f0;border-left:5px solid #d93025;padding:10px 16px;font-weight:600}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{padding:4px 10px;text-align:left;border-bottom:1px solid #edf0f3;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.family th{background:#f3f5f8;color:#39424e;font-weight:600}
tr.best td{background:#fff6d6;font-weight:600}
.figures{display:flex;flex-wrap:wrap;gap:12px 28px;align-items:flex-start}
figure{margin:16px 0}
figure svg{max-width:100%;height:auto}
figcaption{color:#5b6573;font-size:.87em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:.92em}
dt{color:#5b6573}
dd{margin:0;word-break:break-all}
pre{background:#f6f7f9;padding:8px;font-size:.8em;overflow:auto}
a{color:#2f6fde}
"""


def _page(title: str, parts: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # nothing may load from elsewhere: the page must open offline, and a report never phones home
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )
