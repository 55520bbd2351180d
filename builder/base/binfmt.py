"""Foreign platforms through QEMU user emulation: Debian's ``qemu-user-static`` registered in
``binfmt_misc`` with the fix-binary flag (the kernel opens the emulator at registration, so it
works inside any sandbox's mount namespace), as BuildKit's ``binfmt`` installer does.

``ensure(platform)`` before a foreign RUN step or container; ``emulated()`` for ``info``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from builder.base.errors import SandboxError
from builder.base.syscalls import real
from registry.model import Platform

#: GOARCH → the kernel's (and QEMU's) machine name
QEMU_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386",
             "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
             "mips64le": "mips64el", "loong64": "loongarch64"}
_GOARCH = {v: k for k, v in QEMU_ARCH.items()}
_CONF_DIRS = ("/etc/binfmt.d", "/usr/lib/binfmt.d", "/usr/local/lib/binfmt.d")


class EmulatorMissing(SandboxError):
    """No emulator for a foreign platform: what to install is in the message."""


def _binfmt_dir() -> Path:
    # PYBUILD_BINFMT_MISC / PYBUILD_BINFMT_CONF: another binfmt_misc view and Debian's conf
    # dirs, so that a test can show a host without the emulator
    return Path(os.environ.get("PYBUILD_BINFMT_MISC", "/proc/sys/fs/binfmt_misc"))


def _conf_dirs() -> list[Path]:
    env = os.environ.get("PYBUILD_BINFMT_CONF")
    return [Path(p) for p in (env.split(":") if env is not None else _CONF_DIRS)]


def native(platform: Platform) -> bool:
    """The host runs *platform*'s binaries itself (amd64 also runs 386)."""
    host = Platform.host()
    if platform.os != host.os:
        return False
    if platform.architecture == host.architecture:
        return True
    return (host.architecture, platform.architecture) in {("amd64", "386"), ("arm64", "arm")} \
        and _enabled(_binfmt_dir() / f"qemu-{QEMU_ARCH[platform.architecture]}") is None


def _enabled(entry: Path) -> bool | None:
    """None: no such entry; else whether it is enabled."""
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (FileNotFoundError, IndexError):
        return None


def _mount(where: Path) -> None:
    if (where / "register").exists() or where != Path("/proc/sys/fs/binfmt_misc"):
        return
    with contextlib.suppress(OSError):  # mounted by another process meanwhile
        real().mount("binfmt_misc", str(where), "binfmt_misc")


def _rule(qarch: str) -> str | None:
    """Debian's registration line for *qarch* (``qemu-user-static``'s ``binfmt.d`` file), with
    the fix-binary flag; None when the package (or its emulator) is missing."""
    for d in _conf_dirs():
        conf = d / f"qemu-{qarch}.conf"
        try:
            line = next(ln for ln in conf.read_text().splitlines() if ln.startswith(":"))
        except (OSError, StopIteration):
            continue
        fields = line.split(":")
        if len(fields) != 8 or not Path(fields[6]).exists():
            continue
        if "F" not in fields[7]:
            fields[7] += "F"
        return ":".join(fields)
    return None


def ensure(platform: Platform) -> None:
    """Make binaries of *platform* runnable here: natively, or by registering the emulator."""
    if native(platform):
        return
    qarch = QEMU_ARCH.get(platform.architecture)
    if platform.os != "linux" or qarch is None:
        raise EmulatorMissing(f"platform {platform} cannot run on this host ({Platform.host()})")
    where = _binfmt_dir()
    _mount(where)
    entry = where / f"qemu-{qarch}"
    state = _enabled(entry)
    if state is not None and "F" not in _flags(entry):
        # registered without fix-binary (the emulator's path is looked up in the sandbox's
        # root, where it is not): registered again with it, as BuildKit's binfmt installer does
        with contextlib.suppress(OSError):
            entry.write_text("-1")
        state = None
    if state:
        return
    if state is False:
        entry.write_text("1")
        return
    rule = _rule(qarch)
    if rule is None:
        raise EmulatorMissing(
            f"no emulator for platform {platform}: install qemu-user-static "
            f"(apt-get install qemu-user-static) to run {platform} binaries on {Platform.host()}")
    try:
        (where / "register").write_text(rule)
    except FileExistsError:
        pass  # registered by another process meanwhile
    except OSError as e:
        raise EmulatorMissing(f"cannot register the {platform} emulator in {where}: "
                              f"{e.strerror}") from None


def _flags(entry: Path) -> str:
    try:
        text = entry.read_text()
    except OSError:
        return ""
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")


def emulated() -> list[Platform]:
    """Platforms the host runs through a registered, enabled emulator with the fix-binary flag."""
    where = _binfmt_dir()
    out = []
    with contextlib.suppress(OSError):
        for entry in sorted(where.glob("qemu-*")):
            arch = _GOARCH.get(entry.name.removeprefix("qemu-"))
            if arch and _enabled(entry) and "F" in _flags(entry):
                out.append(Platform("linux", arch, "v7" if arch == "arm" else None))
    return out


__all__ = ["EmulatorMissing", "QEMU_ARCH", "emulated", "ensure", "native"]
