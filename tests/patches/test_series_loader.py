"""The series loader (harness/series.py) and its JSON Schema (patches/series.schema.json): the
schema accepts every real series.yaml, a malformed one stops with one line naming the file and
the field (exit status 2 under the CLI), and what the report and the seed table read is what
the files say.

Expected values come from the series.yaml files, read here with PyYAML (and validated here
with jsonschema directly), and from the seed's table as the skinny-bg-tree RFC prints it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from harness.cli import main
from harness.series import SeriesError, all_series, load_series, series_names

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "patches"
SCHEMA = PATCHES / "series.schema.json"
FOLDERS = sorted(p.parent.name for p in PATCHES.glob("*/series.yaml"))


def raw(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((PATCHES / name / "series.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


# --------------------------------------------------------------------------- the schema


def test_schema_accepts_every_series() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert len(FOLDERS) == 6
    for name in FOLDERS:
        jsonschema.validate(raw(name), schema, cls=jsonschema.Draft202012Validator)
        first = (PATCHES / name / "series.yaml").read_text().split("\n", 1)[0]
        assert first == "# yaml-language-server: $schema=../series.schema.json", name
    assert [s.name for s in all_series(PATCHES)] == FOLDERS == series_names(PATCHES)


# --------------------------------------------------------------------------- malformed files


def _copy(tmp: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """patches/NAME copied under tmp with its series.yaml changed; the copied folder."""
    root = tmp / "patches"
    shutil.copytree(PATCHES / name, root / name)
    doc = raw(name)
    change(doc)
    (root / name / "series.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root / name


def _del(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]

    return change


def _set(value: Any, *path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return change


# (series, change, the field the message names, what it says)
MALFORMED = [
    ("hot-data", _del("status"), "", "missing top-level field 'status'"),
    (
        "skinny-bg-tree",
        _del("claims", 1, "unit"),
        "claims[1] (blocks-bg-tree)",
        "missing field 'unit'",
    ),
    (
        "block-group-tree",
        _set("680", "claims", 0, "seed"),
        "claims[0] (bg-items-per-leaf).seed",
        "'680' is not a mapping",
    ),
    (
        "block-group-tree",
        _set("two", "experiments", "bg680", "seconds"),
        "experiments.bg680.seconds",
        "'two' is not a number",
    ),
    ("extent-tree-v2", _set("blue", "colour"), "", "unknown top-level field 'colour'"),
    ("hot-data", _set("merged", "status"), "status", "'merged' is not one of"),
    ("extent-tree-v2", _set(["BTRFS_DEBUG=y"], "config"), "config[0]", "'BTRFS_DEBUG=y'"),
    (
        "block-group-tree",
        _set("no-such", "claims", 0, "measure", 0, "experiment"),
        "claims[0] (bg-items-per-leaf).measure[0].experiment",
        "no experiment 'no-such'",
    ),
    (
        "skinny-bg-tree",
        _set({"nodes": 1}, "claims", 0, "seed"),
        "claims[0] (blocks-extent-tree).measure[0].values.leaves",
        "the claim's seed does not state it",
    ),
    ("hot-data", _set("other-name", "name"), "name", "is not the folder's name 'hot-data'"),
]


@pytest.mark.parametrize(
    "series,change,field,says", MALFORMED, ids=[f"{m[0]}:{m[3]}" for m in MALFORMED]
)
def test_malformed_file_is_one_line_naming_file_and_field(
    tmp_path: Path, series: str, change: Callable[[dict[str, Any]], None], field: str, says: str
) -> None:
    folder = _copy(tmp_path, series, change)
    with pytest.raises(SeriesError) as ei:
        load_series(folder)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{folder / 'series.yaml'}: {field}"), msg
    assert says in msg, msg
    assert ei.value.exit_status == 2


def test_cli_stops_with_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(tmp_path, "skinny-bg-tree", _del("claims", 3, "quote"))
    monkeypatch.setenv("FSORACLE_PATCHES", str(folder.parent))
    rc = main(["report", "skinny-bg-tree", "--out", str(tmp_path / "out"), "--no-run"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (
        f"fsoracle: {folder / 'series.yaml'}: claims[3] (skinny-half-of-bg-tree): "
        "missing field 'quote'\n"
    )


def test_missing_patch_file_not_yaml_and_no_series(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "skinny-bg-tree", lambda doc: None)
    (folder / "0003-btrfs-read-skinny-block-group-items-at-mount.patch").unlink()
    with pytest.raises(SeriesError, match=r"series\.yaml: patches\[3\]: 0003-.* is not in "):
        load_series(folder)
    (folder / "series.yaml").write_text("name: [skinny\n")
    with pytest.raises(SeriesError, match=r"series\.yaml: not YAML: ") as ei:
        load_series(folder / "series.yaml")
    assert "\n" not in str(ei.value)
    with pytest.raises(SeriesError, match=r"no series 'nope' in .*\(have: skinny-bg-tree\)"):
        load_series(folder.parent / "nope")


# --------------------------------------------------------------------------- what consumers read


@pytest.mark.parametrize("name", FOLDERS)
def test_records_hold_what_the_file_says(name: str) -> None:
    """Every field of the records the report reads, against the YAML document."""
    doc = raw(name)
    s = load_series(PATCHES / name)
    assert (s.name, s.title, s.status, s.base) == (
        doc["name"],
        doc["title"],
        doc["status"],
        doc["base"],
    )
    assert (s.patches, s.config, s.gaps) == (doc["patches"], doc["config"], doc["gaps"])
    assert [(u.subject, u.message_id, u.commit, u.author, u.date) for u in s.upstream] == [
        (u["subject"], u.get("message-id"), u.get("commit"), u.get("author"), u.get("date"))
        for u in doc["upstream"]
    ]
    assert [(m.module, m.state, m.functions) for m in s.model] == [
        (m["module"], m["state"], m.get("functions", [])) for m in doc["model"]
    ]
    assert (s.seed.file, s.seed.configuration) == (
        doc["seed"]["file"],
        doc["seed"].get("configuration", {}),
    )
    assert list(s.experiments) == list(doc["experiments"])
    for eid, e in doc["experiments"].items():
        x = s.experiments[eid]
        run = e.get("run", [])
        steps = run if run and isinstance(run[0], list) else [run] if run else []
        assert (x.about, x.cost, x.seconds, x.steps, x.pytest, x.output) == (
            e["about"],
            e["cost"],
            e.get("seconds", 0),
            steps,
            e.get("pytest", []),
            e.get("output"),
        ), eid
    assert [c.id for c in s.claims] == [c["id"] for c in doc["claims"]]
    for c, d in zip(s.claims, doc["claims"], strict=True):
        assert (c.text, c.quote, c.seed, c.unit, c.measured_by) == (
            d["text"],
            d["quote"],
            d["seed"],
            d["unit"],
            d["measured_by"],
        )
        assert (c.seed_text, c.model, c.tests) == (
            d.get("seed_text", {}),
            d.get("model", []),
            d.get("tests", []),
        )
        assert c.notes == d.get("notes", "").strip()
        assert c.not_measurable == d.get("not_measurable")
        assert [(m.experiment, m.values, m.show, m.bound) for m in c.measures] == [
            (m["experiment"], m["values"], m.get("show", {}), m.get("bound"))
            for m in d.get("measure", [])
        ]
        for m, dm in zip(c.measures, d.get("measure", []), strict=True):
            tol = dm.get("tolerance", {})
            assert (m.label, m.note) == (dm.get("label", "model"), dm.get("note", ""))
            assert (m.tolerance_rel, m.tolerance_abs, m.tolerance_why) == (
                tol.get("rel", 0),
                tol.get("abs", 0),
                tol.get("why", ""),
            )
    assert [(i.text, i.model, i.tests, i.experiment) for i in s.invariants] == [
        (i["text"], i.get("model", []), i.get("tests", []), i.get("experiment"))
        for i in doc["invariants"]
    ]


def test_skinny_format_fields() -> None:
    doc = raw("skinny-bg-tree")
    s = load_series(PATCHES / "skinny-bg-tree")
    assert (s.incompat_bit, s.key_type) == (24, 193) == (doc["incompat_bit"], doc["key_type"])
    assert s.requires == {"compat_ro": ["BLOCK_GROUP_TREE"], "conflicts": ["EXTENT_TREE_V2"]}
    assert s.tested == doc["tested"] and set(s.tested) == {
        "compile",
        "checkpatch",
        "sparse",
        "runtime",
    }
    assert load_series(PATCHES / "hot-data").incompat_bit is None


def test_seed_table_reads_the_rfc_numbers() -> None:
    """`fsoracle btrfs seed-table` and the mount bench read the seed's numbers from the
    skinny-bg-tree claims: the RFC's table (nodes / leaves / total per layout) and times."""
    from harness.mount.experiment import seed_claims
    from harness.mount.seedtable import SEED_LAYOUTS, load_seed_claims

    doc = {c["id"]: c for c in raw("skinny-bg-tree")["claims"]}
    claims = load_seed_claims()
    table = {"extent-tree": (55, 1025, 1080), "bg-tree": (1, 13, 14), "skinny-bg-tree": (1, 7, 8)}
    for layout in SEED_LAYOUTS:
        seed = claims[f"blocks-{layout}"].seed
        assert seed == doc[f"blocks-{layout}"]["seed"]
        assert (seed["nodes"], seed["leaves"], seed["total"]) == table[layout]
    bench = seed_claims()
    assert bench["blocks"]["extent-tree"] == {"nodes": 55, "leaves": 1025, "total": 1080}
    assert bench["read_block_groups_ms"] == {"before_ms": 805.85, "after_ms": 63.40}
    assert bench["open_ctree_ms"] == doc["open-ctree-time"]["seed"]
