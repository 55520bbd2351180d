"""The bottom modules every command loads stay off ``typing`` and ``copy`` (issue 15).

``run --rm``, ``run -d``, ``rm -f``, ``ps``, ``images``, ``inspect`` and ``version`` all load the
modules in ``HOT``: a frozen value made, a reference parsed, a state root opened. ``typing``
(~5 ms: annotations-only names sit under ``TYPE_CHECKING = False``) and ``copy`` (with
``weakref``) would stay loaded on every one of those paths if any of these modules imported
them, so a fresh interpreter imports them all, uses them as a run does, and reads ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from builder.base.state import StateRoot
from registry.reference import Reference
from registry.store import empty_config

ROOT = Path(__file__).resolve().parents[2]

HOT = ("registry", "registry.lazy", "registry.values", "registry.kinds", "registry.errors",
       "registry.leases", "registry.config", "registry.digest", "registry.mediatypes",
       "registry.model", "registry.reference", "registry.records", "registry.lookup",
       "registry.store", "builder.base", "builder.base.values", "builder.base.errors",
       "builder.base.state", "builder.base.events", "builder.base.filters", "builder.base.units",
       "builder.base.paths")
BARRED = {"typing", "copy", "weakref", "dataclasses", "inspect"}

WORK = r"""
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
from builder.base.errors import BuildError
from builder.base.events import emit, history
from builder.base.state import StateRoot
from registry.config import ContainerConfig
from registry.digest import Digest
from registry.model import Descriptor, ImageConfig, Platform
from registry.reference import Reference
from registry.values import replace

state = StateRoot.open(sys.argv[2])
with state.lock("hot"):
    pass
emit(state, "image", "tag", "sha256:" + "a" * 64, {"name": "busybox:latest"})
assert history(state)[0]["Action"] == "tag"
ref = Reference.parse("busybox").with_tag("1")
assert str(Reference.parse("localhost:5000/a/b:c@" + str(Digest.of(b"x")))).startswith("localhost")
config = ContainerConfig.from_json({"Env": ["A=1"], "Labels": {"a": "b"}, "Healthcheck": {"Test": ["NONE"]}})
assert config.with_(cmd=["sh"]).to_json()["Labels"] == {"a": "b"}
desc = Descriptor.from_dict({"mediaType": "x", "digest": str(Digest.of(b"y")), "size": 1,
                             "platform": Platform.host().to_dict()})
assert replace(desc, size=2).size == 2 and ImageConfig.build({"config": config.to_json()}).container_config
store = state.image_store()
image = store.resolve("busybox")
assert image.reference == Reference.parse("busybox") and image.config.container_config.env == ("A=1",)
assert [str(r.reference) for r in store.images()] == ["docker.io/library/busybox:latest"]
assert store.lookup(image.id.hex[:12]).descriptor.digest == image.descriptor.digest
assert BuildError.invalid("x").kind
print(json.dumps(sorted(sys.modules)))
"""


def test_hot_modules_load_no_typing_nor_copy(tmp_path: Path) -> None:
    state = StateRoot.open(tmp_path / "root")  # an image to resolve, stored by this process
    store = state.image_store()
    image = store.build_image({**empty_config(), "config": {"Env": ["A=1"]}}, [])
    store.add(image.descriptor, Reference.parse("busybox"))
    done = subprocess.run([sys.executable, "-c", WORK, json.dumps(HOT), str(state.path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    mods = set(json.loads(done.stdout))
    assert set(HOT) <= mods
    assert not mods & BARRED, f"loaded {sorted(mods & BARRED)}: a hot module imports it at run time"


def test_the_probe_sees_an_import_of_typing(tmp_path: Path) -> None:
    """The check above fails for a module that imports ``typing`` at its top."""
    (tmp_path / "hot_probe.py").write_text("from typing import Any\n")
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import hot_probe;"
                          " print('typing' in sys.modules)", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


FROZEN_MISUSE = textwrap.dedent("""\
    from __future__ import annotations

    from registry.values import field, frozen


    @frozen
    class Point:
        name: str
        n: int = 0
        tags: tuple[str, ...] = field(default_factory=tuple)


    Point(name=3)
    Point("a", n="x")
    p = Point("a")
    p.n = 2
    Point("a", 1, ("x",), 4)
    ok: Point = Point("a", 1, ("x",))
""")


def test_mypy_still_sees_frozen_values_as_dataclasses(tmp_path: Path) -> None:
    """``dataclass_transform`` is an identity at run time (no ``typing``); mypy still types a
    ``@frozen`` class's constructor and refuses an assignment to its field."""
    snippet = tmp_path / "frozen_misuse.py"
    snippet.write_text(FROZEN_MISUSE)
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), str(snippet)],
                          cwd=ROOT, capture_output=True, text=True, env={"MYPYPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    errors = sorted(int(line.split(":")[1]) for line in done.stdout.splitlines() if ": error:" in line)
    assert errors == [13, 14, 16, 17], done.stdout
