"""The image commands through the real CLI: Docker-shaped output, errors as one line with exit
status 1 and an unchanged store, rmi refusing images that containers use, prune, start-up cost."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Pybuild = Any  # the runner from tests/conftest.py
REPO = Path(__file__).resolve().parents[2]


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), -1 if p.is_dir() else p.lstat().st_size)
                  for p in root.rglob("*"))


def refused(p: Pybuild, *args: str, needle: str) -> str:
    before = listing(p.root / "store")
    r = p(*args, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert needle in lines[0], lines[0]
    assert listing(p.root / "store") == before
    return str(lines[0])


def test_images_table_quiet_digests_json(busybox: Pybuild) -> None:
    out = busybox("images").stdout.splitlines()
    assert re.fullmatch(r"REPOSITORY   TAG       IMAGE ID       CREATED {3,}SIZE", out[0])
    short = busybox.image_id[7:19]
    assert re.fullmatch(rf"busybox {{6}}latest {{4}}{short} {{3}}(Less than a second|\d+ seconds?) ago +\d[\d.]*MB", out[1])
    assert busybox("images", "-q").stdout == short + "\n"
    assert busybox("images", "-q", "--no-trunc").stdout == busybox.image_id + "\n"
    # an imported image was never pulled or pushed: no repo digest, as Docker
    dig = busybox("images", "--digests").stdout.splitlines()
    assert dig[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    assert dig[1].split()[2] == "<none>"
    row = json.loads(busybox("images", "--format", "json").stdout)
    assert row["Repository"] == "busybox" and row["Tag"] == "latest" and row["ID"] == short
    assert row["Digest"] == "<none>" and row["Size"].endswith("MB")
    assert busybox("images", "--format", "{{.Repository}}:{{.Tag}}").stdout == "busybox:latest\n"
    table = busybox("images", "--format", "table {{.Repository}}\t{{.ID}}").stdout.splitlines()
    assert table == ["REPOSITORY   IMAGE ID", f"busybox      {short}"]
    assert busybox("image", "ls", "busybox:latest", "-q").stdout == short + "\n"
    assert busybox("images", "nosuch").stdout.split() == out[0].split()


def test_empty_store_lists_only_the_header(pybuild: Pybuild) -> None:
    assert pybuild("images").stdout == "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"
    assert pybuild("images", "-q").stdout == ""


def test_tag_inspect_history(busybox: Pybuild) -> None:
    busybox("tag", "busybox", "localhost:5000/team/app:v1")
    busybox("image", "tag", busybox.image_id[7:15], "app")
    rows = busybox("images", "--format", "{{.Repository}} {{.Tag}}").stdout.split("\n")
    assert {"localhost:5000/team/app v1", "app latest", "busybox latest"} <= set(rows)
    data = json.loads(busybox("inspect", "app").stdout)
    assert len(data) == 1
    info = data[0]
    assert info["Id"] == busybox.image_id
    assert sorted(info["RepoTags"]) == ["app:latest", "busybox:latest", "localhost:5000/team/app:v1"]
    assert info["Config"]["Cmd"] == ["sh"] and info["Config"]["Env"] is None
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 1
    assert info["Os"] == "linux" and info["Comment"] == "Imported from -"
    assert busybox("inspect", "-f", "{{.Id}} {{json .Config.Cmd}} {{.Config.Cmd}}", "busybox").stdout \
        == f'{busybox.image_id} ["sh"] [sh]\n'
    assert busybox("image", "inspect", "--format", "{{.Os}}", "busybox").stdout == "linux\n"
    hist = busybox("history", "busybox").stdout.splitlines()
    assert hist[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert hist[1].startswith(busybox.image_id[7:19]) and hist[1].endswith("Imported from -")
    assert busybox("history", "-q", "busybox").stdout == busybox.image_id[7:19] + "\n"
    h = json.loads(busybox("history", "--format", "json", "busybox").stdout)
    assert h["Comment"] == "Imported from -" and h["Size"].endswith("MB")


def test_inspect_unknown_prints_found_ones_and_fails(busybox: Pybuild) -> None:
    r = busybox("inspect", "busybox", "nosuch", check=False)
    assert r.returncode == 1
    assert json.loads(r.stdout)[0]["Id"] == busybox.image_id
    assert r.stderr.strip() == "Error: No such object: nosuch"


@pytest.mark.parametrize("bad, needle", [
    ("UPPER/case", "must be lowercase"),
    ("a@sha256:short", "a@sha256:short"),
    ("a:bad:tag:", "invalid"),
    ("bad name", "invalid"),
])
def test_invalid_references_are_refused(busybox: Pybuild, bad: str, needle: str) -> None:
    line = refused(busybox, "tag", "busybox", bad, needle=needle)
    assert bad in line
    refused(busybox, "rmi", bad, needle=bad)


def test_rmi_unknown_image(busybox: Pybuild) -> None:
    refused(busybox, "rmi", "nosuch", needle="No such image: nosuch:latest")
    refused(busybox, "rmi", "busybox:old", needle="No such image: busybox:old")
    refused(busybox, "tag", "nosuch", "x", needle="No such image: nosuch:latest")
    refused(busybox, "history", "nosuch", needle="No such image")
    refused(busybox, "save", "-o", str(busybox.root.parent / "x.tar"), "nosuch", needle="nosuch")
    assert not (busybox.root.parent / "x.tar").exists()


def test_rmi_untags_then_deletes_and_collects_blobs(busybox: Pybuild) -> None:
    busybox("tag", "busybox", "other:1")
    blobs = busybox.root / "store" / "blobs" / "sha256"
    count = len(list(blobs.iterdir()))
    assert busybox("rmi", "other:1").stdout == "Untagged: other:1\n"
    assert len(list(blobs.iterdir())) == count
    r = busybox("rmi", "busybox")
    assert r.stdout == f"Untagged: busybox:latest\nDeleted: {busybox.image_id}\n"
    assert list(blobs.iterdir()) == []
    assert busybox("images", "-q").stdout == ""


def test_rmi_by_id_with_several_tags_needs_force(busybox: Pybuild) -> None:
    busybox("tag", "busybox", "other:1")
    refused(busybox, "rmi", busybox.image_id[7:19], needle="must be forced")
    out = busybox("rmi", "-f", busybox.image_id[7:19]).stdout.splitlines()
    assert sorted(out[:2]) == ["Untagged: busybox:latest", "Untagged: other:1"]
    assert out[2] == f"Deleted: {busybox.image_id}"


def _container(p: Pybuild, image_id: str, cid: str = "c0ffee" * 10 + "abcd",
               state: dict[str, Any] | None = None) -> None:
    d = p.root / "containers" / cid
    d.mkdir(parents=True)
    (d / "container.json").write_text(json.dumps({"Id": cid, "Name": "/web", "ImageID": image_id}))
    (d / "state.json").write_text(json.dumps(state or {"status": "exited"}))


def test_rmi_never_deletes_an_image_a_running_container_uses(busybox: Pybuild) -> None:
    _container(busybox, busybox.image_id, "feed" * 16, {"status": "running", "pid": 1})
    refused(busybox, "rmi", "-f", busybox.image_id[7:19],
            needle="(cannot be forced) - image is being used by running container feedfeedfeed")


def test_rmi_refuses_an_image_a_container_uses(busybox: Pybuild) -> None:
    _container(busybox, busybox.image_id)
    line = refused(busybox, "rmi", "busybox", needle="container c0ffeec0ffee is using")
    assert "must force" in line
    refused(busybox, "rmi", busybox.image_id, needle="being used by stopped container c0ffeec0ffee")
    busybox("tag", "busybox", "second:1")
    assert busybox("rmi", "second:1").stdout == "Untagged: second:1\n"  # not the last name
    assert busybox("rmi", "-f", "busybox").stdout == "Untagged: busybox:latest\n"
    # kept for the container, as a dangling image whose blobs survive prune
    assert busybox("images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}").stdout == \
        f"<none> <none> {busybox.image_id[7:19]}\n"
    assert busybox("image", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    assert busybox.store().resolve(busybox.image_id).id.encoded == busybox.image_id[7:]


def test_image_prune_removes_dangling_images_and_blobs(busybox: Pybuild, busybox_tar: Path) -> None:
    busybox("import", str(busybox_tar), "-c", "CMD [\"true\"]")  # untagged
    busybox("import", str(busybox_tar), "keep:1", "-c", "USER app")
    assert busybox("images", "--filter", "dangling=true", "-q").stdout.count("\n") == 1
    r = busybox("image", "prune", "-f")
    lines = r.stdout.splitlines()
    assert lines[0] == "Deleted Images:" and lines[1].startswith("deleted: sha256:")
    assert lines[-1].startswith("Total reclaimed space: ") and lines[-1].endswith("B")
    assert busybox("images", "--filter", "dangling=true", "-q").stdout == ""
    assert set(busybox("images", "--format", "{{.Repository}}").stdout.split()) == {"busybox", "keep"}
    r = busybox("image", "prune", "-a", "-f")
    assert "untagged: busybox:latest" in r.stdout and re.search(r"^Total reclaimed space: 2\.1\d*MB$", r.stdout, re.M)
    assert busybox("images", "-q").stdout == ""
    assert list((busybox.root / "store" / "blobs" / "sha256").iterdir()) == []


def test_import_from_stdin_and_with_changes(pybuild: Pybuild, busybox_tar: Path) -> None:
    out = pybuild("import", "-", "web:1", "-c", "ENV PATH=/bin:/usr/bin", "--change",
                  "EXPOSE 8080", "-c", "WORKDIR /srv", "-m", "base layer",
                  input=busybox_tar.read_bytes(), text=False).stdout.decode().strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", out)
    info = json.loads(pybuild("inspect", "web:1").stdout)[0]
    assert info["Id"] == out
    assert info["Config"]["Env"] == ["PATH=/bin:/usr/bin"]
    assert info["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert info["Config"]["WorkingDir"] == "/srv"
    assert info["Comment"] == "base layer"


def test_import_refuses_bad_changes_and_bad_input(busybox: Pybuild, busybox_tar: Path,
                                                  tmp_path: Path) -> None:
    refused(busybox, "import", str(busybox_tar), "x:1", "-c", "RUN echo hi",
            needle="RUN is not a valid change command")
    refused(busybox, "import", str(busybox_tar), "x:1", "-c", "FROBNICATE 1",
            needle="unknown instruction: FROBNICATE")
    refused(busybox, "import", str(busybox_tar), "x:1", "-c", "EXPOSE 99999", needle="invalid port")
    refused(busybox, "import", str(busybox_tar), "x:1", "-c", "STOPSIGNAL SIGFOO",
            needle="invalid signal")
    refused(busybox, "import", str(busybox_tar), "UPPER/case", needle="must be lowercase")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(10000))
    refused(busybox, "import", str(junk), "x:1", needle="not a valid tar archive")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(busybox_tar.read_bytes()[:700000])
    refused(busybox, "import", str(cut), "x:1", needle="cut.tar" if False else "tar")
    refused(busybox, "import", str(tmp_path / "absent.tar"), "x:1", needle="absent.tar")


def test_load_and_save_errors(busybox: Pybuild, tmp_path: Path) -> None:
    refused(busybox, "load", "-i", str(tmp_path / "absent.tar"), needle="absent.tar")
    refused(busybox, "save", "--format", "oci-archive", "-o", str(tmp_path), "busybox",
            needle="is a directory")


def test_demo_script_prints_the_busybox_image(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "pybuild"
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "demo")}
    try:
        r = subprocess.run(["bash", str(REPO / "testdata" / "demo.sh"), str(exe)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert re.search(r"^busybox +latest +[0-9a-f]{12} ", r.stdout, re.M), r.stdout
        r2 = subprocess.run(["bash", str(REPO / "testdata" / "demo.sh"), str(exe)], env=env,
                            capture_output=True, text=True, timeout=300)
        assert r2.returncode == 0, r2.stderr  # re-runnable on the same root
        assert len(re.findall(r"^busybox +latest", r2.stdout, re.M)) == 1
    finally:
        # the demo's `run` used the default bridge, which stays up between containers (docker0)
        from builder import network
        from builder.base.state import StateRoot

        if (tmp_path / "demo" / "networks").is_dir():
            network.reset(StateRoot.open(tmp_path / "demo"))


def test_images_start_up_stays_lean(busybox: Pybuild) -> None:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c",
                        "import sys; from builder.cli import main; main()",
                        "--root", str(busybox.root), "images"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "busybox" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    for heavy in ("requests", "lark", "cryptography", "tqdm", "zstandard", "isal", "urllib3",
                  "registry.archive", "registry.client"):
        assert heavy not in imported, f"`pybuild images` imports {heavy}"


def test_concurrent_tags_from_many_processes(busybox: Pybuild) -> None:
    procs = [subprocess.Popen([*busybox.command, "--root", str(busybox.root), "tag", "busybox",
                               f"many:{i}"]) for i in range(8)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 8
    tags = busybox("images", "--format", "{{.Tag}}", "many").stdout.split()
    assert sorted(tags) == sorted(str(i) for i in range(8))


def test_human_helpers() -> None:
    from builder.cli.format import human_duration, human_size, table

    assert [human_size(n) for n in (0, 999, 1000, 4261550, 1_500_000_000)] == \
        ["0B", "999B", "1kB", "4.26MB", "1.5GB"]
    assert human_size(123456789, 4) == "123.5MB"
    assert [human_duration(s) for s in (0.5, 1, 59, 60, 3599, 3600, 86400 * 3, 86400 * 20,
                                        86400 * 100, 86400 * 800)] == \
        ["Less than a second", "1 second", "59 seconds", "About a minute", "59 minutes",
         "About an hour", "3 days", "2 weeks", "3 months", "2 years"]
    assert table(["A", "LONGER HEADER"], [["x", "y"]]) == "A         LONGER HEADER\nx         y"


def test_image_group_lists_docker_aliases(pybuild: Pybuild) -> None:
    out = pybuild("image", "--help").stdout
    for name in ("ls", "list", "rm", "remove", "prune", "inspect", "tag", "history", "import",
                 "save", "load"):
        assert re.search(rf"^\s+{name}\b", out, re.M), name


Factory = Callable[[], Pybuild]


def test_images_filters_and_history_flags(busybox: Pybuild) -> None:
    busybox("tag", "busybox", "tools/box:1")
    out = busybox("images", "--filter", "reference=tools/*", "--format", "{{.Repository}}:{{.Tag}}")
    assert out.stdout == "tools/box:1\n"
    refused(busybox, "images", "--filter", "bogus=1", needle="Invalid filter 'bogus'")  # Docker's words
    raw = busybox("history", "-H", "false", "--no-trunc", "--format", "{{.ID}} {{.Size}} {{.CreatedSince}}",
                  "busybox").stdout.split()
    assert raw[0] == busybox.image_id and raw[1].isdigit() and raw[2].endswith("Z")
