"""The op registry (model/fsstate/ops.py): one entry per op, read by the log format, the
model, the crash rules, the generators and (as a JSON table) the guest driver."""

from __future__ import annotations

import pytest

from harness.workload import driver as drv
from model.fsstate import ops
from model.fsstate.namespace import FsModel
from model.fsstate.oplog import OP_ARGS, LogError, Op, parse_op


def test_every_op_has_model_semantics() -> None:
    for spec in ops.REGISTRY.values():
        assert callable(spec.model) or callable(getattr(FsModel, spec.method(), None)), spec.name


def test_the_subvolume_ops_apply_to_btrfs_only() -> None:
    subvol_ops = {"subvol_create", "snapshot", "subvol_delete"}
    assert {s.name for s in ops.ops_for("btrfs")} - {s.name for s in ops.ops_for("ext4")} == (
        subvol_ops
    )


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (ops.OpSpec("bad name", (), ""), "identifier"),
        (ops.OpSpec("x", (ops.Arg("p", "nosuchkind"),), ""), "unknown kind"),
        (ops.OpSpec("x", (ops.Arg("p", ops.FILE), ops.Arg("p", ops.FILE)), ""), "twice"),
        (ops.OpSpec("x", (ops.Arg("off", ops.OFFSET),), ""), "needs of="),
        (ops.OpSpec("x", (ops.Arg("m", ops.MODE),), ""), "needs choices"),
        (
            ops.OpSpec("x", (ops.Arg("p", ops.NEW),), "", effects=ops.Effects(makes="q")),
            "no argument",
        ),
        (
            ops.OpSpec("x", (ops.Arg("p", ops.NEW),), "", effects=ops.Effects(makes="p")),
            "made=",
        ),
        (ops.OpSpec("creat", (), ""), "registered already"),
    ],
)
def test_an_entry_that_does_not_hold_together_is_refused(spec: ops.OpSpec, why: str) -> None:
    with pytest.raises(ops.RegistryError, match=why):
        ops.register(spec)
    assert ops.REGISTRY["creat"].keys == ("path", "mode")


def test_an_op_registered_for_a_while_reads_in_the_log_and_then_does_not() -> None:
    toy = ops.OpSpec("toy", (ops.Arg("path", ops.FILE),), "nothing", weight=0)
    with ops.registered(toy):
        assert OP_ARGS["toy"] == ("path",)
        assert parse_op("p0 0 toy path=a -> 0").args == {"path": "a"}
        with pytest.raises(LogError, match="lacks path"):
            parse_op("p0 0 toy -> 0")
    assert "toy" not in OP_ARGS
    with pytest.raises(LogError, match="unknown op"):
        parse_op("p0 0 toy path=a -> 0")


def test_the_model_dispatches_to_a_semantics_function() -> None:
    seen: list[str] = []

    def touch(model: FsModel, op: Op) -> str:
        seen.append(op.arg("path"))
        return "7"

    toy = ops.OpSpec("toy", (ops.Arg("path", ops.FILE),), "nothing", weight=0, model=touch)
    with ops.registered(toy):
        assert FsModel("ext4").apply(Op(0, 0, "toy", {"path": "a"})).result == "7"
    assert seen == ["a"]


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_the_seeded_generator_draws_every_argument_the_registry_declares(fs: str) -> None:
    """Every op it draws is one of the registry's for ``fs`` (by weight: every op with a
    weight shows in 3000 draws), with exactly the registry's keys in line order; numbers
    are decimal, modes and fallocate modes among the declared choices. The results fed
    back are the model's."""
    gen = drv.Generator(0, 11, fs)
    model = FsModel(fs)
    name, args = gen.first()
    assert model.apply(Op(0, 0, name, args)).result == "0"
    gen.view[gen.top] = "s" if fs == "btrfs" else "d"
    names = set()
    for seq in range(1, 3000):
        name, args = gen.next()
        spec = ops.REGISTRY[name]
        assert spec.applies_to(fs)
        assert tuple(args) == spec.keys
        for a in spec.args:
            v = args[a.key]
            if a.kind in (ops.OFFSET, ops.LENGTH, ops.SIZE, ops.SEED):
                assert v.isdigit(), (name, a.key, v)
            elif a.kind in (ops.MODE, ops.FALLOC):
                assert v in a.choices
            elif a.kind == ops.IOV:
                assert all(x.isdigit() for x in v.split(","))
            elif a.kind in ops.PATH_KINDS:
                assert v == gen.top or v.startswith(gen.top + "/"), (name, a.key, v)
        names.add(name)
        gen.update(name, args, model.apply(Op(0, seq, name, args)).result)
    assert names == {s.name for s in ops.ops_for(fs) if s.weight > 0}
