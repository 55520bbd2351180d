#!/usr/bin/env python3
"""Make a busybox root filesystem offline, from Debian's ``busybox-static`` (no registry needed).

    python3 testdata/mkbusybox.py DIR            # a directory tree
    python3 testdata/mkbusybox.py --tar OUT.tar  # the same tree as a deterministic tarball

Used by the tests and ``make demo`` as the base image: ``pybuild import OUT.tar busybox:latest``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
tty:x:5:
www-data:x:33:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
"""

DIRS = {
    "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "etc": 0o755, "root": 0o700, "tmp": 0o1777, "var": 0o755, "var/www": 0o755,
    "home": 0o755, "home/app": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755,
}


def applets() -> list[str]:
    """Paths (relative to /) of every applet link, as ``busybox --list-full`` gives them."""
    out = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True)
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def make_rootfs(dest: Path) -> Path:
    """Write a busybox root filesystem into *dest* (created); returns *dest*."""
    if not BUSYBOX.exists():
        raise SystemExit(f"{BUSYBOX} is missing: apt-get install busybox-static")
    dest.mkdir(parents=True, exist_ok=True)
    for d, mode in DIRS.items():
        (dest / d).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / d, mode)
    os.chown(dest / "home/app", 1000, 1000)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    for rel in applets():
        if rel == "bin/busybox":
            continue
        link = dest / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        # Relative links computed from the image's own layout, never from the host's (merged /usr).
        target = os.path.relpath("bin/busybox", os.path.dirname(rel))
        if not link.is_symlink() and not link.exists():
            os.symlink(target, link)
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    (dest / "etc/hostname").write_text("localhost\n")
    return dest


def make_tar(out: Path | io.BufferedIOBase) -> None:
    """Write the rootfs as a deterministic tar (sorted entries, mtime 0) to a path or stream."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_rootfs(Path(tmp) / "rootfs")
        entries = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))

        def normalise(ti: tarfile.TarInfo) -> tarfile.TarInfo:
            ti.mtime = 0
            ti.uname = ti.gname = ""
            return ti

        if isinstance(out, Path):
            tf = tarfile.open(out, "w", format=tarfile.PAX_FORMAT)
        else:
            tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        with tf:
            for rel in entries:
                tf.add(root / rel, arcname=rel, recursive=False, filter=normalise)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", nargs="?", help="directory to fill")
    ap.add_argument("--tar", help="write a tarball instead ('-' for stdout)")
    args = ap.parse_args()
    if args.tar:
        make_tar(sys.stdout.buffer if args.tar == "-" else Path(args.tar))  # type: ignore[arg-type]
    elif args.dest:
        make_rootfs(Path(args.dest))
    else:
        ap.error("give DIR or --tar OUT")


if __name__ == "__main__":
    main()
