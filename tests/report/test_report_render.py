"""``fsoracle report``: every series renders from recorded results (tests/report/data, given
with ``--from``), every seed number in a report is the series' number read from the seed,
every measured number is the value at the results file the report names, experiments the
report runs write their JSON first, and the HTML opens in headless Chromium with its plots
decoded and drawn.

Expected verdicts are computed here from the recorded inputs and the seeds' numbers."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.report import extract as X
from harness.report import seedtext as S
from harness.report import verdict as V
from harness.report.runner import CANNOT, FAILED, RAN, SKIPPED, Runner
from harness.series import ROOT, Experiment, load_series, series_names
from tests.tools import require_tool

DATA = Path(__file__).parent / "data"
SYNTHETIC = Path(__file__).parent / "data-synthetic"
SERIES = series_names(ROOT / "patches")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("reports")
    rc = main(["report", "all", "--out", str(d), "--from", str(DATA), "--no-run"])
    assert rc == 0, "a report found problems in its inputs (see stderr)"
    return d


def sections(md: str) -> dict[str, str]:
    """Claim id -> its section of the Markdown report."""
    parts = re.split(r'^### <a id="claim-([\w-]+)"></a>', md, flags=re.M)
    out = {}
    for cid, body in zip(parts[1::2], parts[2::2], strict=True):
        out[cid] = body.split("\n## ", 1)[0]
    return out


def table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| measurement"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def unquote(cell: str) -> str:
    return cell.strip("`")


def resolve(path: str, out: Path) -> Path:
    p = Path(path)
    for base in (out, ROOT):
        if (base / p).exists():
            return base / p
    return p


def test_every_series_renders(out: Path) -> None:
    assert len(SERIES) >= 6
    for name in SERIES:
        md = (out / f"{name}.md").read_text()
        page = (out / f"{name}.html").read_text()
        s = load_series(ROOT / "patches" / name)
        got = sections(md)
        assert list(got) == [c.id for c in s.claims]
        assert '## <a id="invariants"></a>' in md and '## <a id="gaps"></a>' in md
        for g in s.gaps:
            assert g in md
        assert page.startswith("<!DOCTYPE html>") and page.count("<h3") == len(s.claims)
    index = (out / "index.md").read_text()
    assert all(f"`{n}`" in index for n in SERIES)


def test_seed_numbers_are_the_seeds(out: Path) -> None:
    """The seed cell of every compared value is series.yaml's number, and the quote shown
    above it (which series.yaml's number is read from) is verbatim in the seed file."""
    checked = 0
    for name in SERIES:
        s = load_series(ROOT / "patches" / name)
        md = (out / f"{name}.md").read_text()
        secs = sections(md)
        seed_text = (S.seeds_dir() / s.seed.file).read_text() if S.seeds_dir().exists() else None
        for c in s.claims:
            sec = secs[c.id]
            quote = "\n".join(
                ln[2:] if ln.startswith("> ") else ln[1:]
                for ln in sec.splitlines()
                if ln.startswith(">")
            )
            assert S.normalise(quote) == S.normalise(c.quote)
            if seed_text is not None:
                assert S.quote_in_seed(quote, seed_text), c.id
            for row in table_rows(sec):
                key, seed = row[1], row[2]
                if seed in ("", "—"):
                    continue
                want = c.seed[key]
                assert seed == V.fmt_value(want, exact=True), (name, c.id, key)
                checked += 1
    assert checked >= 40


def test_measured_numbers_come_from_the_named_files(out: Path) -> None:
    """Re-read every measured cell from the results file named in its row."""
    checked = 0
    for name in SERIES:
        s = load_series(ROOT / "patches" / name)
        secs = sections((out / f"{name}.md").read_text())
        for c in s.claims:
            rows = table_rows(secs[c.id])
            for m in c.measures:
                for row in (r for r in rows if r[0] == m.label):
                    key, measured, results = row[1], row[3], unquote(row[6])
                    if measured == "—":
                        continue
                    spec = m.values.get(key, m.show.get(key))
                    data = json.loads(resolve(results, out).read_text())
                    assert measured == V.fmt_value(X.extract(spec, data)), (name, c.id, key)
                    assert results.startswith(f"tests/report/data/{name}/results/")
                    checked += 1
    assert checked >= 60


def _row(out: Path, series: str, claim: str, label: str, key: str) -> list[str]:
    sec = sections((out / f"{series}.md").read_text())[claim]
    return next(r for r in table_rows(sec) if r[0] == label and r[1] == key)


def test_verdicts_by_hand(out: Path) -> None:
    seed_table = json.loads((DATA / "skinny-bg-tree/results/seed-table.json").read_text())
    ours = {r["layout"]: r["ours"] for r in seed_table["rows"]}
    # extent tree: seed total 1080 (the RFC's table)
    d = ours["extent-tree"]["visited"] - 1080
    row = _row(out, "skinny-bg-tree", "blocks-extent-tree", "model", "total")
    assert row[3] == str(ours["extent-tree"]["visited"])
    assert row[4] == f"**differs** (+{d} (+{100 * d / 1080:.1f} %))"
    row = _row(out, "skinny-bg-tree", "blocks-skinny-bg-tree", "model", "total")
    assert ours["skinny-bg-tree"]["visited"] == 8 and row[4] == "**holds**"
    # "less than 1%": skinny / extent tree blocks
    pct = 100 * ours["skinny-bg-tree"]["visited"] / ours["extent-tree"]["visited"]
    row = _row(out, "skinny-bg-tree", "skinny-share-of-extent-tree", "model", "max_percent")
    assert row[3] == V.fmt_value(round(pct, 3)) and "holds" in row[4]

    cow = json.loads((DATA / "block-group-tree/results/cow-cost.json").read_text())
    hist = cow["layouts"]["extent-tree"]["cowed_histogram"]
    mode = int(max(hist, key=lambda k: hist[k]))
    row = _row(out, "block-group-tree", "cow-two-adjacent-bgs-extent-tree", "model (most pairs)",
               "cowed_blocks")  # fmt: skip
    assert row[3] == str(mode) and (mode == 5) == ("holds" in row[4])

    hot = json.loads((DATA / "hot-data/results/hot-sim.json").read_text())
    sp = {x["key"]: x["speedup"] for x in hot["scenarios"]}
    for label, key in (
        ("model, files moved by the model's ranking", "files"),
        ("model, ideal placement", "ideal"),
    ):
        row = _row(out, "hot-data", "random-read-speedup", label, "speedup")
        within = abs(sp[key] - 5) <= 0.1 * 5  # "about 5x", 10 %
        assert ("holds" in row[4]) == within, (label, sp[key])

    # 6.12's rules: [0, 4K) uncompressed, [8K, 128K) compressed, as the seed says
    pred = json.loads((DATA / "delayed-compression/results/predict-6.12.json").read_text())
    plain = [[e["offset"], e["offset"] + e["num_bytes"]] for e in pred["extents"]
             if e["compression"] == "none"]  # fmt: skip
    assert plain == [[0, 4096]]
    row = _row(out, "delayed-compression", "example-extents", "model, 6.12 rules", "uncompressed")
    assert row[4] == "**holds**"


def test_html_is_self_contained_with_decodable_plots(out: Path) -> None:
    for name in SERIES:
        page = (out / f"{name}.html").read_text()
        srcs = re.findall(r'src="([^"]*)"', page)
        assert all(s.startswith("data:image/png;base64,") for s in srcs)
        assert "<link" not in page and "http://" not in page and "https://" not in page
        pngs = sorted(p.name for p in (out / name / "plots").glob("*.png"))
        assert len(srcs) == len(pngs), name
        if (DATA / name).exists():  # recorded results: numbers to plot
            assert pngs, name
        for s in srcs:
            raw = base64.b64decode(s.split(",", 1)[1])
            assert raw[:8] == b"\x89PNG\r\n\x1a\n"
            w, h = struct.unpack(">II", raw[16:24])  # IHDR width, height
            assert w > 100 and h > 100


# --------------------------------------------------------------------------- running


def test_report_runs_what_it_lacks_and_names_the_file(tmp_path: Path) -> None:
    """leaf-capacity is missing from the --from directory: the report runs it (about a
    second), writes its JSON under the report's results first, and names that file."""
    src = tmp_path / "from"
    shutil.copytree(DATA / "block-group-tree", src / "block-group-tree")
    (src / "block-group-tree/results/leaf-capacity.json").unlink()
    rep = tmp_path / "out"
    rc = main(["report", "block-group-tree", "--out", str(rep), "--from", str(src)])
    assert rc == 0
    res = rep / "block-group-tree/results/leaf-capacity.json"
    meta = json.loads((rep / "block-group-tree/results/leaf-capacity.meta.json").read_text())
    assert (
        meta["exit"] == 0 and meta["command"] == "fsoracle etv2 leaf-capacity --nodesize 16K --json"
    )
    assert json.loads(res.read_text())["rows"][0][1] == (16384 - 101) // (25 + 24)
    row = _row(rep, "block-group-tree", "bg-items-per-leaf", "model", "items")
    assert unquote(row[6]) == "block-group-tree/results/leaf-capacity.json"
    assert row[3] == "332"
    # the others were reused from --from, named where they are
    row = _row(rep, "block-group-tree", "bg-tree-blocks-for-680", "model (writer's image)", "total")
    assert unquote(row[6]) == str((src / "block-group-tree/results/bg680.json").resolve())


def _exp(eid: str, cost: str, *steps: list[str]) -> Experiment:
    return Experiment(eid, "test", cost, 1.0, steps=[list(s) for s in steps])


def test_runner_gates_and_failures(tmp_path: Path) -> None:
    r = Runner("t", tmp_path / "res", kernel="debian:6.1")
    o = r.get(_exp("vm", "vm", ["fsoracle", "etv2", "leaf-capacity", "--json"]))
    assert o.status == SKIPPED and "boots a VM" in o.reason and "--run-vm" in o.reason
    o = r.get(_exp("slow", "slow", ["fsoracle", "etv2", "leaf-capacity", "--json"]))
    assert o.status == SKIPPED and "needs `fsoracle etv2 leaf-capacity --json`" in o.reason
    o = r.get(_exp("absent", "fast", ["fsoracle", "nosuch", "cmd", "--kernel", "{kernel}"]))
    assert o.status == CANNOT and "`fsoracle nosuch` is not in this checkout" in o.reason
    assert "--kernel debian:6.1" in o.reason
    o = r.get(_exp("notjson", "fast", ["python", "-c", "print('hello')"]))
    assert o.status == FAILED and "is not JSON" in o.reason and o.data is None
    o = r.get(
        _exp("exit1", "fast", ["python", "-c", "import sys; print('{\"a\": 1}'); sys.exit(1)"])
    )
    assert o.status == RAN and o.data == {"a": 1} and "exit status 1" in o.reason
    o = r.get(
        _exp(
            "step",
            "fast",
            ["python", "-c", "import sys; sys.exit(4)"],
            ["python", "-c", "print(1)"],
        )
    )
    assert o.status == FAILED and "step 1 exited 4" in o.reason
    o = r.get(
        _exp("two", "fast", ["python", "-c", "open('{tmp}/x', 'w').write('[3]')"],
             ["python", "-c", "print(open('{tmp}/x').read())"])
    )  # fmt: skip
    assert o.status == RAN and o.data == [3]
    assert (tmp_path / "res/two.json").read_text().strip() == "[3]"
    assert json.loads((tmp_path / "res/two.meta.json").read_text())["exit"] == 0


def test_vm_results_are_read_when_given(tmp_path: Path) -> None:
    """A mount bench result.json (hand-made, tests/report/data-synthetic) given with --from:
    medians over the ok virtio samples; the skinny layout was refused, so it has none."""
    rc = main(["report", "skinny-bg-tree", "--out", str(tmp_path), "--no-run", "--no-plots",
               "--from", str(SYNTHETIC), "--from", str(DATA)])  # fmt: skip
    assert rc == 0
    row = _row(tmp_path, "skinny-bg-tree", "read-block-groups-time", "kernel (VM)", "before_ms")
    assert row[3] == "800"  # median(800000, 820000, 790000) us; the nvme sample is left out
    assert row[4] == f"**differs** (-{805.85 - 800:.2f} (-{100 * 5.85 / 805.85:.1f} %))"
    row = _row(tmp_path, "skinny-bg-tree", "read-block-groups-share", "stock kernel (VM)",
               "percent")  # fmt: skip
    assert row[3] == V.fmt_value(round(100 * 800000 / 910000, 1))
    row = _row(tmp_path, "skinny-bg-tree", "blocks-extent-tree", "stock kernel (VM)", "total")
    assert row[3] == "1091" and "differs" in row[4]  # 1090 first read inside + the root
    md = (tmp_path / "skinny-bg-tree.md").read_text()
    sec = sections(md)["read-block-groups-time"]
    assert "not measured" in sec and "no values" in sec  # after_ms: the refused layout


# --------------------------------------------------------------------------- the browser

HOOK = """<script>
window.addEventListener('load', () => {
  const out = [];
  for (const img of document.images) {
    const r = img.getBoundingClientRect();
    out.push({plot: img.dataset.plot, w: img.naturalWidth, h: img.naturalHeight,
              ok: img.complete, x: r.left + scrollX, y: r.top + scrollY,
              cw: r.width, ch: r.height});
  }
  const pre = document.createElement('pre');
  pre.id = 'fso-images';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    if shutil.which("chromium") is None and os.geteuid() == 0:
        subprocess.run(
            ["sh", str(ROOT / "harness/install-debian-deps.sh"), "--report"],
            check=False,
            timeout=1800,
        )
    return require_tool("chromium")


def run_chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--force-device-scale-factor=1", "--hide-scrollbars",
            f"--user-data-dir={tmp / 'chromium-profile'}", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_html_opens_in_chromium_with_its_plots(out: Path, tmp_path: Path) -> None:
    exe = chromium()
    import matplotlib.image

    name = "skinny-bg-tree"
    page = out / f"{name}.html"
    hooked = tmp_path / "hooked.html"
    hooked.write_text(page.read_text().replace("</body>", HOOK + "</body>"))
    dom = run_chromium(exe, tmp_path, "--virtual-time-budget=10000", "--window-size=1280,1024",
                       "--dump-dom", hooked.as_uri())  # fmt: skip
    m = re.search(r'<pre id="fso-images">(.*?)</pre>', dom.stdout, re.S)
    assert m, f"no image report in the DOM; chromium said:\n{dom.stderr[-2000:]}"
    images: list[dict[str, Any]] = json.loads(m.group(1).replace("&quot;", '"'))
    plots = sorted(p.name for p in (out / name / "plots").glob("*.png"))
    assert sorted(i["plot"] for i in images) == plots
    for i in images:
        assert i["ok"] and i["w"] > 100 and i["h"] > 100, i
        assert i["cw"] > 100 and i["ch"] > 100, i  # laid out, not collapsed
    # a screenshot down to the bottom of the summary plot: its region is drawn, not blank
    summary = next(i for i in images if i["plot"] == "summary.png")
    height = int(summary["y"] + summary["ch"]) + 50
    shot = tmp_path / "shot.png"
    r = run_chromium(exe, tmp_path, f"--window-size=1280,{height}", f"--screenshot={shot}",
                     page.as_uri())  # fmt: skip
    assert shot.exists(), r.stderr[-2000:]
    px = matplotlib.image.imread(str(shot))[..., :3]
    assert px.shape[0] == height
    y0, x0 = int(summary["y"]), int(summary["x"])
    region = px[y0 : y0 + int(summary["ch"]), x0 : x0 + int(summary["cw"])]
    ink = (region.min(axis=2) < 0.8).mean()  # share of pixels darker than light grey
    colour = (region.max(axis=2) - region.min(axis=2) > 0.3).mean()  # the markers
    assert ink > 0.01, f"the summary plot region is blank ({ink:.4f} ink)"
    assert colour > 0.0005, f"no coloured markers in the summary plot ({colour:.5f})"
    # the page's top, above the plots, is text on white: the check can tell the difference
    top = px[: max(1, min(y0, 20)), :]
    assert (top.max(axis=2) - top.min(axis=2) > 0.3).mean() < colour


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "no-such-series", "--out", str(tmp_path)]) == 2
    assert "no series 'no-such-series'" in capsys.readouterr().err
    assert main(["report", "hot-data", "--out", str(tmp_path), "--from", str(tmp_path / "x")]) == 2
    assert "--from" in capsys.readouterr().err


def test_module_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0 and "--run-vm" in r.stdout and "--from" in r.stdout
