"""The seccomp program cache (``seccomp.program``) keyed without the profile parsed: the default
profile is a ``ProfileFile`` (its path, size, mtime), so a start whose program is cached parses
no profile and loads no libseccomp; a changed profile file, capability set, machine, kernel or
libseccomp file makes (and keeps) another program.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.base.errors import SandboxError
from builder.core.sandbox import seccomp
from builder.core.sandbox.spec import DEFAULT_CAPS, capabilities

REPO = Path(__file__).resolve().parents[2]


def programs(cache: Path) -> set[str]:
    return {p.name for p in cache.glob("*.bpf")}


def copy_of_default(tmp_path: Path) -> Path:
    path = tmp_path / "profile.json"
    shutil.copyfile(seccomp.DEFAULT_PROFILE, path)
    return path


def test_a_cached_program_is_found_without_parsing_or_libseccomp(tmp_path: Path) -> None:
    """What a start does (``seccomp.default()``, then ``program``), in a fresh interpreter,
    once with an empty cache and once with it filled: the second parses nothing and maps no
    libseccomp, and gets the same program."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from builder.core.sandbox import seccomp\n"
        "from builder.core.sandbox.spec import DEFAULT_CAPS\n"
        "prog = seccomp.program(seccomp.default(), DEFAULT_CAPS, cache_dir=Path(sys.argv[1]))\n"
        "maps = Path('/proc/self/maps').read_text()\n"
        "print(json.dumps({'prog': prog.hex(), 'parsed': seccomp._parse_file.cache_info().misses,\n"
        "                  'lib': 'libseccomp' in maps, 'loaded': seccomp._lib.cache_info().currsize}))\n"
    )
    cache = tmp_path / "cache"

    def start() -> dict[str, object]:
        r = subprocess.run([sys.executable, "-c", script, str(cache)], cwd=REPO, capture_output=True,
                           text=True, timeout=60, check=True)
        out: dict[str, object] = json.loads(r.stdout)
        return out

    miss = start()
    assert miss["parsed"] == 1 and miss["lib"] and miss["loaded"] == 1
    assert len(programs(cache)) == 1
    hit = start()
    assert hit == {"prog": miss["prog"], "parsed": 0, "lib": False, "loaded": 0}
    assert bytes.fromhex(str(hit["prog"])) == seccomp.compile_bpf(seccomp.parse(
        seccomp.DEFAULT_PROFILE.read_bytes(), source="default"), DEFAULT_CAPS)


def test_the_default_profile_is_its_file_parsed_on_use() -> None:
    f = seccomp.default()
    st = seccomp.DEFAULT_PROFILE.stat()
    assert f == seccomp.ProfileFile(str(seccomp.DEFAULT_PROFILE), st.st_size, st.st_mtime_ns, "default")
    assert seccomp.parsed(f) == seccomp.parse(seccomp.DEFAULT_PROFILE.read_bytes(), source="default")
    assert seccomp.parsed(f) is seccomp.parsed(seccomp.default())  # parsed once per identity
    assert seccomp.to_oci(f, DEFAULT_CAPS) == seccomp.to_oci(seccomp.parsed(f), DEFAULT_CAPS)
    assert seccomp.resolve(f, DEFAULT_CAPS) == seccomp.resolve(seccomp.parsed(f), DEFAULT_CAPS)


def test_a_changed_profile_file_makes_another_program(tmp_path: Path) -> None:
    path = copy_of_default(tmp_path)
    cache = tmp_path / "cache"
    first = seccomp.ProfileFile.of(path, source=str(path))
    prog = seccomp.program(first, DEFAULT_CAPS, cache_dir=cache)
    (cached,) = cache.glob("*.bpf")
    cached.write_bytes(b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # what is in the cache is what is loaded
    assert seccomp.program(seccomp.ProfileFile.of(path, source=str(path)), DEFAULT_CAPS,
                           cache_dir=cache) == cached.read_bytes()
    # an edit (ENOSYS for what is refused, not EPERM) under the same name: a new identity, a new program
    doc = json.loads(path.read_text())
    assert doc["defaultErrnoRet"] == 1
    doc["defaultErrnoRet"] = 38
    path.write_text(json.dumps(doc))
    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    edited = seccomp.ProfileFile.of(path, source=str(path))
    assert edited != first
    new = seccomp.program(edited, DEFAULT_CAPS, cache_dir=cache)
    assert new not in (prog, cached.read_bytes()) and len(programs(cache)) == 2
    assert new == seccomp.compile_bpf(seccomp.parse(path.read_bytes(), source="x"), DEFAULT_CAPS)
    # the same bytes with another mtime: compiled again (the identity is what is compared)
    os.utime(path, ns=(first.mtime_ns + 2 * 10**9, first.mtime_ns + 2 * 10**9))
    assert seccomp.program(seccomp.ProfileFile.of(path, source=str(path)), DEFAULT_CAPS, cache_dir=cache) == new
    assert len(programs(cache)) == 3


def test_caps_machine_kernel_and_libseccomp_each_make_another_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    f = seccomp.default()
    base = seccomp.program(f, DEFAULT_CAPS, cache_dir=cache)
    assert seccomp.program(f, tuple(reversed(DEFAULT_CAPS)), cache_dir=cache) == base  # a set: its order is no matter
    assert len(programs(cache)) == 1
    admin = seccomp.program(f, capabilities(add=("SYS_ADMIN",)), cache_dir=cache)
    assert admin != base and len(programs(cache)) == 2

    real_uname = os.uname
    real = real_uname()

    def uname(machine: str = real.machine, release: str = real.release) -> os.uname_result:
        return os.uname_result((real.sysname, real.nodename, release, real.version, machine))

    seccomp.compile_bpf.cache_clear()  # (its memo is per process: one machine, one kernel)
    monkeypatch.setattr(os, "uname", lambda: uname(release="4.4.0"))  # no ptrace rule before 4.8
    old_kernel = seccomp.program(f, DEFAULT_CAPS, cache_dir=cache)
    assert old_kernel != base and len(programs(cache)) == 3
    other = "aarch64" if real.machine != "aarch64" else "x86_64"
    seccomp.compile_bpf.cache_clear()
    monkeypatch.setattr(os, "uname", lambda: uname(machine=other))
    other_arch = seccomp.program(f, DEFAULT_CAPS, cache_dir=cache)
    assert other_arch not in (base, old_kernel) and len(programs(cache)) == 4
    monkeypatch.setattr(os, "uname", real_uname)
    seccomp.compile_bpf.cache_clear()

    # another libseccomp file (first in LD_LIBRARY_PATH): the same program, kept under a new key
    assert seccomp._lib_identity()[0] != str(tmp_path / "lib" / "libseccomp.so.2")
    (tmp_path / "lib").mkdir()
    shutil.copyfile(os.path.realpath(str(seccomp._lib_identity()[0])), tmp_path / "lib" / "libseccomp.so.2")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/nonexistent:{tmp_path / 'lib'}")
    assert seccomp._lib_identity()[0] == str(tmp_path / "lib" / "libseccomp.so.2")
    assert seccomp.program(f, DEFAULT_CAPS, cache_dir=cache) == base and len(programs(cache)) == 5
    # none found where the loader looks by default: libseccomp's version call
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    monkeypatch.setattr(seccomp, "_LIB_DIRS", ())
    (version,) = seccomp._lib_identity()
    assert isinstance(version, str) and version.count(".") == 2
    assert seccomp.program(f, DEFAULT_CAPS, cache_dir=cache) == base and len(programs(cache)) == 6


def test_an_inline_profile_is_still_keyed_by_its_rules(tmp_path: Path) -> None:
    """A parsed profile (a container's ``seccomp=FILE``, kept inline in its record): the key is
    its rules resolved, so the same rules from another text share the program."""
    cache = tmp_path / "cache"
    text = seccomp.DEFAULT_PROFILE.read_text()
    one = seccomp.program(seccomp.parse(text, source="a"), DEFAULT_CAPS, cache_dir=cache)
    two = seccomp.program(seccomp.parse(json.dumps(json.loads(text)), source="b"), DEFAULT_CAPS, cache_dir=cache)
    assert one == two and len(programs(cache)) == 1


def test_a_profile_file_that_changes_or_goes_is_an_error(tmp_path: Path) -> None:
    path = copy_of_default(tmp_path)
    f = seccomp.ProfileFile.of(path, source="mine")
    with path.open("a") as out:
        out.write(" ")  # grew between its stat and its read: its identity's program is not made
    with pytest.raises(SandboxError, match=f"^seccomp profile mine: {path} changed while it was read$"):
        seccomp.program(f, DEFAULT_CAPS, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    path.unlink()
    with pytest.raises(SandboxError, match=f"^seccomp profile mine: {path}: No such file or directory$"):
        seccomp.ProfileFile.of(path, source="mine")
