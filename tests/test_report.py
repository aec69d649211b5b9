"""``hf-gazecons report`` (hf_gazecons/report/): one self-contained HTML page of a score, train, demo or
sweep output, opened in a real browser (Debian's chromium through Playwright).

The browser test opens the report of a 1,000-image score output from a file URL and checks: no
console error, no request leaving the file, every image decoded, sorting by a column header, the
filter. Set ``HF_GAZECONS_SCREENSHOTS=docs`` to also write its screenshot to ``docs/report.png``.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from browser import launch, screenshot, sync_playwright
from console import in_process
from tiny import trained_shapes_model

from hf_gazecons.cli.main import main
from hf_gazecons.report import report_kind, write_report
from hf_gazecons.sweep import write_outputs

THOUSAND = "builtin:shapes?size=64&n_train=1&n_val=250&n_test=1&planted=0.05"  # 4 x 250 = 1,000 images
MAX_BYTES = 5 * 2**20


@pytest.fixture(scope="module")
def thousand(tmp_path_factory) -> Path:
    """``score`` of the trained test model on 1,000 planted-shapes images (writes report.html)."""
    out_dir = tmp_path_factory.mktemp("report") / "thousand"
    argv = ["score", "--model", trained_shapes_model(), "--dataset", THOUSAND, "--output-dir", out_dir]
    assert main([str(a) for a in argv]) == 0
    return out_dir


class _Links(HTMLParser):
    """Every URL-bearing attribute and every tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.urls += [(tag, name, value or "") for name, value in attrs if name in ("src", "href", "srcset", "action")]


def test_the_report_of_1000_images_is_one_small_self_contained_file(thousand):
    report = thousand / "report.html"
    size = report.stat().st_size
    print(f"report.html of 1,000 images: {size:,} bytes")
    assert size < MAX_BYTES
    page = report.read_text()
    links = _Links()
    links.feed(page)
    assert not links.tags & {"link", "iframe", "object", "embed"}
    assert all(value.startswith("data:image/") for tag, name, value in links.urls if tag == "img"), links.urls
    assert [url for url in links.urls if url[0] != "img"] == []  # no link of any other kind
    assert "http://" not in page and "https://" not in page
    rows = page.count("<tr><td")
    assert rows >= 1000  # the per-image table, every row
    for heading in ("Summary", "Planted images found", "Most and least consistent images per class",
                    "Deviations per class", "Per-image table"):  # fmt: skip
        assert f"<h3>{heading}</h3>" in page, heading


def test_the_summary_shows_chance_and_ceiling_where_the_results_have_them(thousand, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(thousand, copy)
    scores = json.loads((copy / "consistency.json").read_text())
    scores["localization"]["energy_pointing_game_chance"] = 0.0612
    scores["localization"].update(pointing_game=0.5, pointing_game_chance=0.0333, pointing_game_perfect=0.9876)
    (copy / "consistency.json").write_text(json.dumps(scores))
    page = write_report(copy).read_text()
    assert re.search(r"energy pointing game</td><td class=\"n\">[\d.]+</td><td class=\"n\">0.0612</td>", page)
    assert '<td class="n">0.5000</td><td class="n">0.0333</td><td class="n">0.9876</td>' in page
    own = json.loads((thousand / "consistency.json").read_text())["localization"]  # score writes them
    chance = f'<td class="n">{own["energy_pointing_game_chance"]:.4f}</td>'
    assert chance in write_report(thousand, tmp_path / "own.html").read_text()
    scores["localization"] = {k: v for k, v in own.items() if not k.endswith(("_chance", "_perfect"))}
    (copy / "consistency.json").write_text(json.dumps(scores))
    plain = write_report(copy, tmp_path / "plain.html").read_text()
    assert "carry no chance level or ceiling" in plain


def test_report_command_and_its_errors(thousand, tmp_path, capsys):
    rc, out, err = in_process(capsys, "report", thousand, "--output", tmp_path / "again.html")
    assert rc == 0, err
    assert re.fullmatch(rf"wrote {re.escape(str(tmp_path / 'again.html'))} \([\d,]+ bytes\)\n", out)
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        rc, out, err = in_process(capsys, "report", folder)
        assert rc == 2 and out == ""
        assert err.startswith("error: ") and err.count("\n") == 1 and "score, train, demo or sweep output" in err
    assert report_kind(thousand) == "score"


def test_a_sweep_report_has_the_finals_the_class_means_and_the_planted_table(thousand, tmp_path):
    """A sweep folder made of two copies of a train-like run (runs/<backbone>/lambda_<v>/seed_<n>/)."""
    sweep = tmp_path / "sweep"
    model = trained_shapes_model()
    for seed in (0, 1):
        run = sweep / "runs" / "test_resnet" / "lambda_0" / f"seed_{seed}"
        shutil.copytree(model, run)
        for name in ("samples.parquet", "class_maps.safetensors"):
            shutil.copy(thousand / name, run / name)
        scores = json.loads((thousand / "consistency.json").read_text())
        final = {"eval_accuracy": scores["accuracy"], "eval_gaze_consistency": scores["gaze_consistency"]}
        record = {"config": {"model": "test_resnet", "lambda_max": 0.0, "seed": seed}, "final": final,
                  "history": [{"epoch": 1, **final}]}  # fmt: skip
        (run / "results.json").write_text(json.dumps(record))
    write_outputs(sweep)
    page = write_report(sweep).read_text()
    assert report_kind(sweep) == "sweep"
    assert "Class-mean Grad-CAM per backbone and lambda" in page
    frame = pd.read_parquet(thousand / "samples.parquet")
    k = int(frame["planted"].sum())
    assert f'<td class="n">{2 * k}</td>' in page  # planted images over both seeds
    assert 'href="runs/test_resnet/lambda_0/seed_0/report.html"' in page


# ---------------------------------------------------------------------------------------------
# in a real browser
# ---------------------------------------------------------------------------------------------
def test_the_report_in_a_real_browser(thousand):
    url = (thousand / "report.html").resolve().as_uri()
    frame = pd.read_parquet(thousand / "samples.parquet")
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems, requests = [], []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            assert problems == []
            assert [r for r in requests if r != url and not r.startswith("data:")] == []

            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert len(images) > 10 and all(complete and width > 0 for complete, width in images), images

            def column(name: str) -> list[str]:
                return page.eval_on_selector_all(
                    "#table-run tbody tr",
                    f"""rows => rows.filter(r => !r.hidden).map(r => {{
                        const c = r.cells[[...document.querySelectorAll('#table-run thead th')]
                            .findIndex(h => h.dataset.column === '{name}')];
                        return c.dataset.k || c.textContent; }})""",
                )

            assert len(column("index")) == len(frame) == 1000
            page.click("#table-run th[data-column='deviation_paper']")
            shown = [float(v) for v in column("deviation_paper")]
            assert shown == sorted(shown) and len(shown) == 1000
            page.click("#table-run th[data-column='deviation_paper']")
            shown = [float(v) for v in column("deviation_paper")]
            assert shown == sorted(shown, reverse=True)
            assert shown[0] == pytest.approx(frame["deviation_paper"].max(), rel=1e-6)

            page.fill("input.table-filter", "planted:yes")
            assert len(column("index")) == int(frame["planted"].sum()) > 0
            assert sorted(int(i) for i in column("index")) == sorted(frame.loc[frame["planted"], "index"])
            assert page.inner_text(".filter-count") == f"{int(frame['planted'].sum())} of 1000 rows"
            page.fill("input.table-filter", "no-such-text")
            assert column("index") == []
            page.fill("input.table-filter", "")
            assert len(column("index")) == 1000
            assert problems == [] and [r for r in requests if r != url and not r.startswith("data:")] == []
            page.fill("input.table-filter", "planted:yes")
            page.click("#table-run th[data-column='deviation_paper']")
            page.click("#table-run th[data-column='deviation_paper']")  # the planted rows, least consistent first
            page.evaluate(
                "[...document.querySelectorAll('h3')].find(h => h.textContent === 'Deviations per class')"
                ".scrollIntoView()"
            )
            screenshot(page, "report.png", full_page=False)
        finally:
            browser.close()


def test_report_takes_its_folder_once(thousand, tmp_path, capsys):
    rc, out, err = in_process(capsys, "report", "--output-dir", thousand, "--output", tmp_path / "again.html")
    assert rc == 0 and (tmp_path / "again.html").is_file(), err
    for argv in ([], [thousand, "--output-dir", thousand]):
        rc, out, err = in_process(capsys, "report", *argv)
        assert rc == 2 and err == "error: name the output folder once: `hf-gazecons report OUTPUT_DIR`\n"


def test_a_large_table_shows_its_least_consistent_rows(thousand, tmp_path, monkeypatch):
    import hf_gazecons.report.run as run

    monkeypatch.setattr(run, "MAX_TABLE_ROWS", 10)
    page = write_report(thousand, tmp_path / "capped.html").read_text()
    frame = pd.read_parquet(thousand / "samples.parquet")
    expected = frame.nlargest(10, "deviation_paper").sort_index()["index"].tolist()
    body = page.split('id="table-run"')[1].split("</tbody>")[0]
    assert [int(i) for i in re.findall(r"<tr><td>(\d+)</td>", body)] == expected
    assert "the 10 least consistent of 1,000 rows" in page
