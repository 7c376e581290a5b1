"""report.html of a run, an audit and a grid: what it shows, that it loads nothing, that `loraleak report`
writes it again byte for byte, and that it renders in a real browser with the network off."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from browser import chromium, png_size, render
from helpers import tiny_config, toy_examples

from loraleak.cli import main
from loraleak.config import load_grid
from loraleak.experiment import audit, run, run_grid

ATTACKS = ["loss", "loss-pt", "zlib", "min-k", "min-k++"]
needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="no chromium: install Debian's chromium (apt-get install chromium) to test HTML reports in a browser",
)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A tiny run (with utility), a shifted and redacted audit of its adapter, and a two-cell grid."""
    tmp = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORALEAK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        cfg = tiny_config(tmp, attacks=ATTACKS)
        ran = run(cfg, progress=False, echo=lambda _: None)
        pool = toy_examples(60)
        _jsonl(tmp / "short.jsonl", pool[:30])  # members short, non-members six times longer: a shifted split
        _jsonl(tmp / "long.jsonl", [ex.__class__(ex.id, ex.prompt, ex.response * 6) for ex in pool[30:]])
        audit_cfg = tiny_config(
            tmp, attacks=["loss", "loss-pt"], eval={"bootstrap": 20, "utility": False}, output_dir=str(tmp / "audit")
        )
        audited = {"adapter": f"{cfg.output_dir}/adapter", "members": str(tmp / "short.jsonl")}
        audited |= {"nonmembers": str(tmp / "long.jsonl"), "redact": True}
        audit(audit_cfg, progress=False, echo=lambda _: None, audit=audited)
        grid = tiny_config(tmp, attacks=["loss", "loss-pt"], eval={"bootstrap": 20}, output_dir=str(tmp / "grid"))
        run_grid(load_grid(grid, sweep={"lora.r": [2, 4]}), progress=False, echo=lambda _: None)
    return {"run": tmp / "run", "audit": tmp / "audit", "grid": tmp / "grid", "result": ran, "pool": pool}


def _jsonl(path, examples):
    path.write_text(
        "".join(json.dumps({"id": e.id, "prompt": e.prompt, "response": e.response}) + "\n" for e in examples)
    )


def _section(page: str, ident: str) -> str:
    return re.search(rf'<section id="{ident}".*?</section>', page, re.S).group(0)


def _nothing_to_fetch(page: str) -> None:
    """No attribute or style that loads anything: the only links are to the run's own files."""
    assert not re.search(r"\bsrc=|url\((?!#)|@import|<script|<link\b|<iframe|<object|<embed", page)
    assert all(not h.startswith(("http:", "https:", "//")) for h in re.findall(r'href="([^"]*)"', page))
    assert "Content-Security-Policy" in page


def test_a_run_page_shows_the_verdict_and_its_evidence(reports):
    page = (reports["run"] / "report.html").read_text()
    result = reports["result"]
    best = max(result.attacks, key=lambda a: result.attacks[a]["auc"])
    assert "Verdict: the strongest attack, " + best in _section(page, "verdict")
    table = _section(page, "attacks")
    families = re.findall(r'<tr class="family"><th[^>]*>([^<]+)</th>', table)
    assert families == ["reference-free", "pretrained-reference"]
    assert re.findall(r"<tr class=best><td[^>]*>([^<]+)</td>", table) == [best]  # one row highlighted, the best
    for name in ATTACKS:
        assert f"{result.attacks[name]['auc']:.3f}" in table
    assert "n/a (needs 100 non-members)" in table and "n/a (needs 1000 non-members)" in table  # 16 non-members
    figures = re.findall(r"<figure.*?</figure>", _section(page, "figures"), re.S)
    assert len(figures) == 2 and all("<svg" in f and "<path" in f for f in figures)
    assert "fine-tuned" in _section(page, "utility") and "rouge-l" in _section(page, "utility")
    assert "Blind baseline (no model): AUC" in _section(page, "trust") and "shift-warning" not in page
    at_risk = _section(page, "records")
    records = pd.read_csv(reports["run"] / "records.csv")
    member_texts = records.loc[records["split"] == "member", "text"]
    assert sum(text in at_risk for text in member_texts) == 10  # the ten most exposed members, with their text
    sha = re.search(r"<dt>adapter sha256</dt><dd>([0-9a-f]{64})</dd>", page)
    assert sha and "torch_threads" in _section(page, "environment")
    _nothing_to_fetch(page)


def test_a_shifted_redacted_audit_page_warns_first_and_shows_no_text(reports):
    page = (reports["audit"] / "report.html").read_text()
    assert page.index('id="shift-warning"') < page.index('id="verdict"')
    assert "the attacks may measure the split, not the adapter" in _section(page, "shift-warning")
    assert "records.csv" in page and "(redacted)" in _section(page, "records")
    records = pd.read_csv(reports["audit"] / "records.csv")
    assert "text" not in records.columns
    assert not any(ex.response.strip() in page for ex in reports["pool"])  # no record's text anywhere
    assert "Not measured" in _section(page, "utility")
    _nothing_to_fetch(page)


def test_a_grid_page_has_every_cell_linked_and_the_privacy_utility_figure(reports):
    root = reports["grid"]
    page = (root / "report.html").read_text()
    frame = pd.read_csv(root / "grid.csv")
    links = re.findall(r'<a href="(cells/[^"]+/report.html)">', page)
    assert len(links) == len(frame) == 2 and all((root / link).is_file() for link in links)
    assert "Verdict: of 2 cells" in _section(page, "verdict")
    assert "<svg" in _section(page, "figures") and "n/a (needs 100)" in _section(page, "cells")
    assert "n/a (needs 100)" in (root / "grid.md").read_text()  # the markdown table says so too
    _nothing_to_fetch(page)


def test_loraleak_report_writes_the_same_pages_again(reports, capsys):
    for name in ("run", "audit"):
        page = reports[name] / "report.html"
        before = page.read_bytes()
        page.unlink()
        assert main(["report", str(reports[name])]) == 0
        assert page.read_bytes() == before, name
    root = reports["grid"]
    pages = sorted(root.glob("**/report.html"))
    before = [p.read_bytes() for p in pages]
    for p in pages:
        p.unlink()
    assert main(["report", str(root)]) == 0
    assert "and 2 cell reports" in capsys.readouterr().out
    assert [p.read_bytes() for p in pages] == before


def test_a_directory_without_results_or_with_old_ones_is_named_with_what_to_do(reports, tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "neither results.json" in err and "finished `loraleak run`" in err
    old = tmp_path / "old"
    shutil.copytree(reports["run"], old, ignore=shutil.ignore_patterns("adapter", "stats", "utility"))
    (old / "records.csv").unlink()  # a run from before records.csv: its p-values are computed again
    assert main(["report", str(old)]) == 0 and "Records at risk" in (old / "report.html").read_text()
    results = json.loads((old / "results.json").read_text())
    del results["split"]["shift_check"]  # as a version without the field wrote it
    (old / "results.json").write_text(json.dumps(results))
    assert main(["report", str(old)]) == 2
    err = capsys.readouterr().err
    assert f"{old}/results.json was written by another loraleak version" in err and "re-run it" in err


@needs_chromium
@pytest.mark.parametrize("name", ["run", "audit", "grid"])
def test_a_report_renders_in_chromium_offline(reports, name, tmp_path):
    shot = render(reports[name] / "report.html", tmp_path, width=1280, height=2400)
    assert shot.requests == []  # nothing left the page
    assert png_size(shot.screenshot) == (1280, 2400) and shot.screenshot.stat().st_size > 20_000
    dom = shot.dom
    assert re.search(r'<section id="verdict"[^>]*><p>Verdict: ', dom)
    assert re.search(r"<table id=\"(attack|grid)-table\">.*?<tbody><tr", dom, re.S)
    figures = re.findall(r"<figure.*?</figure>", dom, re.S)
    assert len(figures) == (1 if name == "grid" else 2)
    assert all(re.search(r"<svg[^>]*>.*<path", f, re.S) for f in figures)


def test_score_histograms_survive_constant_and_missing_scores():
    from loraleak.report_html import _histograms, _svg

    scores = pd.DataFrame({"split": ["member"] * 5 + ["nonmember"] * 5, "flat": [1.0] * 10, "none": [np.nan] * 10})
    svg = _svg(_histograms(scores, ["flat", "none"], {"flat": {"auc": 0.5}, "none": {"auc": 0.5}}), "t")
    assert svg.startswith("<svg") and "flat (AUC 0.500)" in svg
