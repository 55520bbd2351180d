"""The planner on its own: cache keys from content, ARG/ENV scoping, config assembly, stage pruning.

No sandbox and no store writes: images are resolved from a store holding the busybox base.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from builder.imagebuild import dockerfile as df
from builder.imagebuild.context import HashMemo, Tree
from builder.imagebuild.graph import Graph, PlanError, PlanOptions, plan
from builder.imagebuild.pipeline import image_resolver
from registry.model import Platform


def make_plan(text: str, ctx: Path | None, store: Any = None, **opts: Any) -> Graph:
    from registry.store import Store

    st = store or Store(Path("/nonexistent-store"))
    tree = Tree(ctx, memo=HashMemo(None)) if ctx is not None else None
    return plan(df.load(text), context=tree, resolve_image=image_resolver(st, Platform.host()),
                options=PlanOptions(**opts))


def keys(g: Graph) -> list[str]:
    return [s.key for st in g.stages for s in st.steps if s.changes_fs]


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "a.txt").write_text("a\n")
    (c / "dir").mkdir()
    (c / "dir" / "b.txt").write_text("b\n")
    return c


SCRATCH = """\
FROM scratch
ARG V=1
COPY a.txt /a
ENV E=$V
COPY dir /d/
LABEL l=x
WORKDIR /w
"""


def test_keys_are_stable_and_content_derived(ctx: Path) -> None:
    k1 = keys(make_plan(SCRATCH, ctx))
    assert k1 == keys(make_plan(SCRATCH, ctx))
    os.utime(ctx / "a.txt", (5, 5))  # mtime is not content
    assert keys(make_plan(SCRATCH, ctx)) == k1
    (ctx / "dir" / "b.txt").write_text("changed\n")
    k2 = keys(make_plan(SCRATCH, ctx))
    assert k2[0] == k1[0] and k2[1] != k1[1] and k2[2] != k1[2]
    os.chmod(ctx / "a.txt", 0o600)  # mode is content
    assert keys(make_plan(SCRATCH, ctx))[0] != k2[0]


def test_unused_build_arg_changes_no_key_and_warns(ctx: Path) -> None:
    base = make_plan(SCRATCH, ctx)
    g = make_plan(SCRATCH, ctx, build_args={"NOPE": "1"})
    assert keys(g) == keys(base)
    assert any("NOPE" in w for w in g.warnings)
    # V feeds ENV, which feeds every later step's config but no COPY key: COPY ignores env
    g2 = make_plan(SCRATCH, ctx, build_args={"V": "2"})
    assert g2.stages[0].config["config"]["Env"][-1] == "E=2"


def test_meta_instructions_shape_the_config(ctx: Path) -> None:
    g = make_plan(SCRATCH + 'CMD ["x"]\nENTRYPOINT ["ep"]\nEXPOSE 80 53/udp\nUSER 1:2\n', ctx)
    c = g.stages[0].config["config"]
    assert c["Cmd"] == ["x"]  # CMD set in this stage survives a later ENTRYPOINT
    assert c["Entrypoint"] == ["ep"]
    assert c["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert c["WorkingDir"] == "/w" and c["User"] == "1:2"
    assert c["Labels"] == {"l": "x"}
    created = [s.created_by for s in g.stages[0].steps]
    assert created[:3] == ["ARG V=1", "COPY a.txt /a # buildkit", "ENV E=1"]
    assert 'CMD ["x"]' in created and "EXPOSE map[53/udp:{} 80/tcp:{}]" in created


def test_entrypoint_resets_inherited_cmd(busybox: Any, ctx: Path) -> None:
    g = make_plan("FROM busybox\nENTRYPOINT [\"echo\"]\n", ctx, store=busybox.store())
    assert "Cmd" not in g.stages[0].config["config"]
    g = make_plan("FROM busybox\nCMD echo hi\n", ctx, store=busybox.store())
    assert g.stages[0].config["config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]


def test_only_needed_stages_are_planned(busybox: Any, ctx: Path) -> None:
    text = ("FROM busybox AS a\nRUN echo a\n"
            "FROM not-in-store AS b\nRUN echo b\n"
            "FROM busybox AS c\nCOPY --from=a /etc/passwd /p\n")
    g = make_plan(text, ctx, store=busybox.store())
    assert [s.name for s in g.needed()] == ["a", "c"]  # b's missing base is never looked up
    assert g.stage(2).deps == frozenset({0})
    g = make_plan(text, ctx, store=busybox.store(), target="a")
    assert [s.name for s in g.needed()] == ["a"]


def test_stage_key_feeds_copy_from(busybox: Any, ctx: Path) -> None:
    text = "FROM busybox AS a\nRUN echo {}\nFROM busybox\nCOPY --from=a /x /x\n"
    k1 = keys(make_plan(text.format(1), ctx, store=busybox.store()))
    k2 = keys(make_plan(text.format(2), ctx, store=busybox.store()))
    assert k1[0] != k2[0] and k1[1] != k2[1]


def test_copy_link_key_ignores_the_parent(ctx: Path) -> None:
    a = make_plan("FROM scratch\nCOPY dir /d\nCOPY --link a.txt /a\n", ctx)
    b = make_plan("FROM scratch\nCOPY a.txt /other\nCOPY --link a.txt /a\n", ctx)
    sa, sb = a.stages[0].steps[1], b.stages[0].steps[1]
    assert sa.key == sb.key  # the cached layer is shared
    assert sa.after != sb.after  # but what follows still sees different filesystems


def test_global_args_and_platform_args(busybox: Any, ctx: Path) -> None:
    text = "ARG IMG=busybox\nFROM $IMG\nARG TARGETARCH\nRUN echo $TARGETARCH\n"
    g = make_plan(text, ctx, store=busybox.store())
    run = g.stages[0].steps[-1]
    assert f"TARGETARCH={Platform.host().architecture}" in run.payload.env  # type: ignore[union-attr]


def test_run_key_sees_used_args_env_and_mounts(busybox: Any, ctx: Path) -> None:
    base = "FROM busybox\nARG A=1\nRUN {}true\n"
    k = keys(make_plan(base.format(""), ctx, store=busybox.store()))
    assert keys(make_plan(base.format(""), ctx, store=busybox.store(), build_args={"A": "2"})) != k
    km = keys(make_plan(base.format("--mount=type=cache,target=/c "), ctx, store=busybox.store()))
    assert km != k
    # a secret's value is never part of the key (the planner does not even know it)
    ks = keys(make_plan(base.format("--mount=type=secret,id=s "), ctx, store=busybox.store()))
    assert ks == keys(make_plan(base.format("--mount=type=secret,id=s "), ctx, store=busybox.store()))


@pytest.mark.parametrize("text,message", [
    ("FROM scratch\nCOPY nope /x\n", "Dockerfile:2: COPY nope: not found in build context"),
    ("FROM scratch\nCOPY *.nomatch /x/\n", "Dockerfile:2: COPY *.nomatch: no source files were specified"),
    ("FROM scratch\nCOPY ../../etc/passwd /x\n", "Dockerfile:2: COPY ../../etc/passwd: forbidden path"),
    ("FROM scratch\nCOPY a.txt dir /x\n", "the destination must be a directory and end with a /"),
    ("FROM scratch\nCOPY --chmod=999 a.txt /x\n", "invalid chmod parameter"),
    ("FROM scratch AS a\nFROM scratch\nCOPY --from=zzz /a /a\n", "Dockerfile:3: zzz: not found locally"),
    ("FROM scratch\nENV X=${Y:?must be set}\n", "Dockerfile:2:"),
])
def test_plan_errors_are_located(ctx: Path, text: str, message: str) -> None:
    from builder.base.errors import BuildError

    with pytest.raises(BuildError) as e:
        make_plan(text, ctx)
    assert message in str(e.value)


def test_unknown_target() -> None:
    with pytest.raises(PlanError, match='target stage "x" could not be found'):
        make_plan("FROM scratch AS a\n", None, target="x")


def test_dockerignored_files_are_not_sources(ctx: Path) -> None:
    tree = Tree(ctx, excluded=lambda rel, is_dir: rel.endswith(".txt"), memo=HashMemo(None))
    with pytest.raises(PlanError, match="not found"):
        plan(df.load("FROM scratch\nCOPY a.txt /a\n"), context=tree,
             resolve_image=image_resolver(None, Platform.host()),  # type: ignore[arg-type]
             options=PlanOptions())


def test_hash_memo_serves_unchanged_files_without_reading(tmp_path: Path) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"x" * 1000)
    memo = HashMemo(tmp_path / "memo.json")
    h1 = memo.sha256(str(f), os.stat(f))
    memo.save()
    memo2 = HashMemo(tmp_path / "memo.json")
    os.chmod(f, 0)  # unreadable now: a memo hit must not open it
    assert memo2.sha256(str(f), os.stat(f)) == h1
    os.chmod(f, 0o644)
    f.write_bytes(b"y" * 1000)  # same size, new content: ctime/mtime change invalidates
    assert memo2.sha256(str(f), os.stat(f)) != h1


def test_expose_ranges_and_protocols(ctx: Path) -> None:
    g = make_plan("FROM scratch\nEXPOSE 8000-8002/udp 80\n", ctx)
    assert g.stages[0].config["config"]["ExposedPorts"] == {
        "8000/udp": {}, "8001/udp": {}, "8002/udp": {}, "80/tcp": {}}
    with pytest.raises(PlanError, match="invalid containerPort: 9-1"):
        make_plan("FROM scratch\nEXPOSE 9-1\n", ctx)


def test_proxy_args_reach_run_but_not_history_or_warnings(busybox: Any, ctx: Path) -> None:
    g = make_plan("FROM busybox\nRUN wget example.com\n", ctx, store=busybox.store(),
                  build_args={"HTTP_PROXY": "http://proxy:3128", "no_proxy": "local"})
    run = g.stages[0].steps[-1]
    assert "HTTP_PROXY=http://proxy:3128" in run.payload.env  # type: ignore[union-attr]
    assert "no_proxy=local" in run.payload.env  # type: ignore[union-attr]
    assert run.created_by == "RUN /bin/sh -c wget example.com # buildkit"
    assert g.warnings == ()


def test_ops_carry_key_and_execute_through_an_executor(ctx: Path) -> None:
    """Each filesystem op has a validated ``CacheKey`` and runs by calling back the executor
    it is given (RUN → ``run``, COPY → ``copy`` with a context ``Location``, WORKDIR → ``mkdir``);
    a metadata op has nothing to run."""
    from builder.imagebuild.graph import CacheKey, CopySpec, ExecSpec, Location, MkdirSpec, Step

    g = make_plan("FROM scratch\nWORKDIR /w\nCOPY a.txt .\nRUN --mount=type=bind,source=dir,target=/m true\n"
                  "ENV A=1\n", ctx)
    steps = g.stages[0].steps
    calls: list[tuple[str, Step, object]] = []

    class Recorder:
        def run(self, step: Step, spec: ExecSpec) -> None:
            calls.append(("run", step, spec))

        def copy(self, step: Step, spec: CopySpec) -> None:
            calls.append(("copy", step, spec))

        def mkdir(self, step: Step, spec: MkdirSpec) -> None:
            calls.append(("mkdir", step, spec))

    for s in steps:
        if s.changes_fs:
            assert isinstance(s.key, CacheKey)
            s.execute(Recorder())
        else:
            with pytest.raises(ValueError, match="changes no filesystem"):
                s.execute(Recorder())
    assert [c[0] for c in calls] == ["mkdir", "copy", "run"]
    copy = calls[1][2]
    assert isinstance(copy, CopySpec)
    assert copy.sources[0].location == Location("context", "a.txt")
    run = calls[2][2]
    assert isinstance(run, ExecSpec)
    assert run.mounts[0].source == Location("context", "dir")
    with pytest.raises(ValueError, match="not a cache key"):
        CacheKey("abc")
    with pytest.raises(ValueError):
        Location("stage", "/x")  # a stage location names its stage
    assert CacheKey("a" * 64) == "a" * 64


def test_history_dated_as_buildkit_exports_it() -> None:
    """Entries the build added: an empty one takes the time of the layer before it, those
    before the first new layer that layer's, none at all the build's time; inherited entries
    are left as they are; key order is the OCI History order."""
    from builder.imagebuild.assemble import dated

    base = {"created": "2020-01-01T00:00:00Z", "created_by": "base"}
    hist = [base, {"created_by": "ENV A=1", "comment": "c", "empty_layer": True},
            {"created_by": "RUN x", "comment": "c", "created": "2026-01-01T00:00:01Z"},
            {"created_by": "LABEL a=b", "comment": "c", "empty_layer": True},
            {"created_by": "COPY y", "comment": "c", "created": "2026-01-01T00:00:05Z"}]
    out = dated(hist, 1, "2026-01-01T00:09:00Z")
    assert [h["created"] for h in out] == ["2020-01-01T00:00:00Z", "2026-01-01T00:00:01Z",
                                          "2026-01-01T00:00:01Z", "2026-01-01T00:00:01Z",
                                          "2026-01-01T00:00:05Z"]
    assert list(out[1]) == ["created", "created_by", "comment", "empty_layer"]
    only_meta = dated([base, {"created_by": "ENV A=1", "empty_layer": True}], 1, "2026-01-01T00:09:00Z")
    assert only_meta[1]["created"] == "2026-01-01T00:09:00Z"
    assert only_meta[0] is not base and only_meta[0] == base
