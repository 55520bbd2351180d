"""Seccomp profiles in Docker's JSON format: parsed into frozen values, resolved against a
capability set, compiled to a BPF program through libseccomp, or written as OCI ``linux.seccomp``.

libseccomp (``libseccomp.so.2``) is reached through ctypes here and only here, before anything
is confined (by the process that starts a sandbox, before it forks; by the caller of an
``exec``); the program is bytes, loaded with one ``prctl`` (``builder.base.syscalls``). Our
default profile is data: ``seccomp_default.json`` beside this file, named by a ``ProfileFile``
(its path, size and mtime) and parsed only when a program must be compiled: a start whose
program is cached parses no profile and loads no libseccomp.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import sys
from pathlib import Path

from builder.base.errors import SandboxError
from builder.base.values import frozen
from registry.digest import Digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Docker/OCI action names → libseccomp action values (ERRNO and TRACE take a 16-bit data)
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
#: argument comparisons (``enum scmp_compare``)
OPS: dict[str, int] = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}
ARCHES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_RISCV64",
)
#: ``uname -m`` → the Go name Docker profiles use in ``includes.arches``
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386", "armv7l": "arm",
            "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
#: ``uname -m`` → the libseccomp native architecture
_NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "i686": "SCMP_ARCH_X86",
           "i386": "SCMP_ARCH_X86", "armv7l": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE",
           "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64"}

DEFAULT_PROFILE = Path(__file__).with_name("seccomp_default.json")


@frozen
class Arg:
    """One argument comparison; for ``SCMP_CMP_MASKED_EQ`` *value* is the mask, *value_two* the
    result. A frozen value (not a NamedTuple: its field ``index`` would hide ``tuple.index``)."""

    index: int
    value: int
    value_two: int
    op: str


@frozen
class Rule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[Arg, ...] = ()
    includes_caps: tuple[str, ...] = ()
    excludes_caps: tuple[str, ...] = ()
    includes_arches: tuple[str, ...] = ()
    excludes_arches: tuple[str, ...] = ()
    min_kernel: str = ""


@frozen
class Profile:
    """A Docker-format profile; *source* names it in error messages (a file, or ``default``)."""

    default_action: str
    rules: tuple[Rule, ...]
    default_errno: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    source: str = "default"


# -- parsing -----------------------------------------------------------------------------------
def parse(text: str | bytes, *, source: str) -> Profile:
    """A Docker-format JSON profile; ``SandboxError`` naming *source* and the bad field otherwise."""

    def bad(msg: str) -> SandboxError:
        return SandboxError(f"seccomp profile {source}: {msg}")

    try:
        doc = json.loads(text)
    except ValueError as e:
        raise bad(f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    default_action = doc.get("defaultAction")
    if not isinstance(default_action, str) or not default_action:
        raise bad('"defaultAction" is missing')
    _check_action(default_action, bad, "defaultAction")
    default_errno = _opt_int(doc.get("defaultErrnoRet"), bad, "defaultErrnoRet")
    arches = _str_list(doc.get("architectures"), bad, "architectures")
    for a in arches:
        if a not in ARCHES:
            raise bad(f"architectures: unknown architecture {a!r}")
    arch_map: list[tuple[str, tuple[str, ...]]] = []
    for i, m in enumerate(_list(doc.get("archMap"), bad, "archMap")):
        if not isinstance(m, dict):
            raise bad(f"archMap[{i}]: not an object")
        main = m.get("architecture")
        subs = _str_list(m.get("subArchitectures"), bad, f"archMap[{i}].subArchitectures")
        for arch in (main, *subs):
            if arch not in ARCHES:
                raise bad(f"archMap[{i}]: unknown architecture {arch!r}")
        arch_map.append((str(main), tuple(subs)))
    rules: list[Rule] = []
    for i, s in enumerate(_list(doc.get("syscalls"), bad, "syscalls")):
        where = f"syscalls[{i}]"
        if not isinstance(s, dict):
            raise bad(f"{where}: not an object")
        names = _str_list(s.get("names"), bad, f"{where}.names")
        if isinstance(s.get("name"), str) and s["name"]:
            names = [s["name"], *names]
        if not names:
            raise bad(f"{where}: no syscall names")
        action = s.get("action")
        if not isinstance(action, str) or not action:
            raise bad(f"{where}: \"action\" is missing")
        _check_action(action, bad, where)
        args: list[Arg] = []
        for j, a in enumerate(_list(s.get("args"), bad, f"{where}.args")):
            aw = f"{where}.args[{j}]"
            if not isinstance(a, dict):
                raise bad(f"{aw}: not an object")
            index = _opt_int(a.get("index"), bad, f"{aw}.index")
            if index is None or not 0 <= index <= 5:
                raise bad(f"{aw}: index must be 0 to 5")
            op = a.get("op")
            if op not in OPS:
                raise bad(f"{aw}: unknown op {op!r}")
            value = _opt_int(a.get("value"), bad, f"{aw}.value") or 0
            two = _opt_int(a.get("valueTwo"), bad, f"{aw}.valueTwo") or 0
            args.append(Arg(index, value, two, str(op)))
        inc = s.get("includes") or {}
        exc = s.get("excludes") or {}
        if not isinstance(inc, dict) or not isinstance(exc, dict):
            raise bad(f"{where}: includes/excludes must be objects")
        min_kernel = inc.get("minKernel") or ""
        if min_kernel and not (isinstance(min_kernel, str) and re.fullmatch(r"\d+\.\d+(\.\d+)?", min_kernel)):
            raise bad(f"{where}: bad minKernel {min_kernel!r}")
        rules.append(Rule(
            names=tuple(names), action=action, errno_ret=_opt_int(s.get("errnoRet"), bad, f"{where}.errnoRet"),
            args=tuple(args),
            includes_caps=tuple(_caps(_str_list(inc.get("caps"), bad, f"{where}.includes.caps"))),
            excludes_caps=tuple(_caps(_str_list(exc.get("caps"), bad, f"{where}.excludes.caps"))),
            includes_arches=tuple(_str_list(inc.get("arches"), bad, f"{where}.includes.arches")),
            excludes_arches=tuple(_str_list(exc.get("arches"), bad, f"{where}.excludes.arches")),
            min_kernel=min_kernel,
        ))
    return Profile(default_action=default_action, rules=tuple(rules), default_errno=default_errno,
                   architectures=tuple(arches), arch_map=tuple(arch_map), source=source)


def _check_action(action: str, bad: Any, where: str) -> None:
    if action == "SCMP_ACT_NOTIFY":
        raise bad(f"{where}: SCMP_ACT_NOTIFY is not supported")
    if action not in ACTIONS:
        raise bad(f"{where}: unknown action {action!r}")


def _list(v: Any, bad: Any, where: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise bad(f"{where}: not a list")
    return v


def _str_list(v: Any, bad: Any, where: str) -> list[str]:
    items = _list(v, bad, where)
    if not all(isinstance(x, str) for x in items):
        raise bad(f"{where}: not a list of strings")
    return items


def _opt_int(v: Any, bad: Any, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise bad(f"{where}: not a non-negative integer")
    return v


def _caps(names: list[str]) -> list[str]:
    return [n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper() for n in names]


@frozen
class ProfileFile:
    """A profile in a file, named by its identity (path, size, mtime in ns), parsed on first use
    (``parsed``): a cached program is found by this identity (``program``), not by the rules."""

    path: str
    size: int
    mtime_ns: int
    source: str = "default"

    @classmethod
    def of(cls, path: Path | str, *, source: str) -> ProfileFile:
        try:
            st = os.stat(path)
        except OSError as e:
            raise SandboxError(f"seccomp profile {source}: {path}: {e.strerror}") from None
        return cls(str(path), st.st_size, st.st_mtime_ns, source)


def parsed(profile: Profile | ProfileFile) -> Profile:
    """The profile itself: a ``ProfileFile`` read and parsed (once per identity)."""
    return _parse_file(profile) if isinstance(profile, ProfileFile) else profile


@functools.lru_cache(maxsize=4)
def _parse_file(f: ProfileFile) -> Profile:
    try:
        with open(f.path, "rb") as file:
            st = os.fstat(file.fileno())
            text = file.read()
    except OSError as e:
        raise SandboxError(f"seccomp profile {f.source}: {f.path}: {e.strerror}") from None
    if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):  # a program kept under f's identity must be f's
        raise SandboxError(f"seccomp profile {f.source}: {f.path} changed while it was read")
    return parse(text, source=f.source)


def default() -> Profile | ProfileFile:
    """pybuild's default profile (Docker's semantics, our own list): its file (a ``ProfileFile``),
    parsed when a program must be compiled from it; typed as either profile, as a caller holds it."""
    return ProfileFile.of(DEFAULT_PROFILE, source="default")


# -- resolving against the sandbox -------------------------------------------------------------
def _kernel() -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    return tuple(int(x or 0) for x in m.groups()) if m else (0, 0, 0)


def resolve(profile: Profile | ProfileFile, caps: tuple[str, ...], *, machine: str | None = None,
            kernel: tuple[int, ...] | None = None) -> tuple[tuple[str, ...], tuple[Rule, ...]]:
    """(architectures, rules that apply) for a process with capability set *caps*: Docker's
    ``includes``/``excludes`` (caps, arches, minKernel) decided here, once."""
    profile = parsed(profile)
    machine = machine or os.uname().machine
    kernel = kernel or _kernel()
    go_arch = _GO_ARCH.get(machine, machine)
    native = _NATIVE.get(machine, "")
    arches = list(profile.architectures)
    for main, subs in profile.arch_map:
        if main == native:
            arches += [main, *subs]
    have = set(caps)
    out: list[Rule] = []
    for r in profile.rules:
        if r.includes_caps and not all(c in have for c in r.includes_caps):
            continue
        if r.excludes_caps and any(c in have for c in r.excludes_caps):
            continue
        if r.includes_arches and go_arch not in r.includes_arches:
            continue
        if r.excludes_arches and go_arch in r.excludes_arches:
            continue
        if r.min_kernel and kernel < tuple(int(x) for x in r.min_kernel.split(".")):
            continue
        out.append(r)
    return tuple(dict.fromkeys(arches)), tuple(out)


def to_oci(profile: Profile | ProfileFile, caps: tuple[str, ...]) -> dict[str, Any]:
    """The OCI runtime-spec ``linux.seccomp`` object (conditions already resolved for *caps*)."""
    profile = parsed(profile)
    arches, rules = resolve(profile, caps)
    out: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.default_errno is not None:
        out["defaultErrnoRet"] = profile.default_errno
    if arches:
        out["architectures"] = list(arches)
    calls = []
    for r in rules:
        d: dict[str, Any] = {"names": list(r.names), "action": r.action}
        if r.errno_ret is not None:
            d["errnoRet"] = r.errno_ret
        if r.args:
            d["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}
                         for a in r.args]
        calls.append(d)
    out["syscalls"] = calls
    return out


# -- compiling through libseccomp --------------------------------------------------------------
class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_SCMP_FLTATR_CTL_NNP = 3
BPF_MAXINSNS = 4096  # the kernel's limit on one classic-BPF program
_NR_SCMP_ERROR = -1


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError as e:
        raise SandboxError(f"seccomp: cannot load libseccomp.so.2 ({e}); install libseccomp2, "
                           "or run with --security-opt seccomp=unconfined") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _action_value(action: str, errno_ret: int | None) -> int:
    v = ACTIONS[action]
    if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        v |= (errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF
    return v


def _arg_sets(args: tuple[Arg, ...]) -> list[tuple[Arg, ...]]:
    """runc's reading of a rule's args: ANDed, unless one argument is compared more than once
    (libseccomp cannot AND those), then each comparison is a rule of its own (ORed)."""
    indexes = [a.index for a in args]
    if len(set(indexes)) == len(indexes):
        return [args]
    return [(a,) for a in args]


@functools.lru_cache(maxsize=16)
def compile_bpf(profile: Profile | ProfileFile, caps: tuple[str, ...]) -> bytes:
    """The classic-BPF program of *profile* for a process holding *caps* (``struct sock_filter``
    array, ready for ``PR_SET_SECCOMP``). Syscall names unknown to libseccomp are skipped, as
    Docker does; no_new_privs is left to the caller."""
    lib = _lib()
    profile = parsed(profile)
    arches, rules = resolve(profile, caps)
    default_value = _action_value(profile.default_action, profile.default_errno)
    ctx = lib.seccomp_init(default_value)
    if not ctx:
        raise SandboxError(f"seccomp profile {profile.source}: libseccomp refused the default action")
    try:
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0)
        for a in arches:
            token = lib.seccomp_arch_resolve_name(a.removeprefix("SCMP_ARCH_").lower().encode())
            rc = lib.seccomp_arch_add(ctx, token) if token else -errno.EINVAL
            if rc < 0 and rc != -errno.EEXIST:
                raise SandboxError(f"seccomp profile {profile.source}: architecture {a}: {os.strerror(-rc)}")
        for r in rules:
            value = _action_value(r.action, r.errno_ret)
            if value == default_value:
                continue  # libseccomp refuses rules that repeat the default action
            for name in r.names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == _NR_SCMP_ERROR:
                    continue
                for argset in _arg_sets(r.args):
                    arr = (_ArgCmp * max(len(argset), 1))(
                        *(_ArgCmp(a.index, OPS[a.op], a.value, a.value_two) for a in argset))
                    rc = lib.seccomp_rule_add_array(ctx, value, nr, len(argset), arr)
                    if rc < 0:
                        raise SandboxError(
                            f"seccomp profile {profile.source}: rule for {name}: {os.strerror(-rc)}")
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SandboxError(f"seccomp profile {profile.source}: export: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            prog = b"".join(chunks)
        finally:
            os.close(fd)
        if len(prog) // 8 > BPF_MAXINSNS:
            raise SandboxError(f"seccomp profile {profile.source}: its filter has {len(prog) // 8} "
                               f"instructions, the kernel takes at most {BPF_MAXINSNS}")
        return prog
    finally:
        lib.seccomp_release(ctx)


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


#: where the dynamic loader looks for a library when LD_LIBRARY_PATH does not say (the usual
#: order of ld.so.conf's directories, then the default ones)
_LIB_DIRS = ("/usr/local/lib/{ma}", "/usr/local/lib", "/lib/{ma}", "/usr/lib/{ma}", "/lib64", "/usr/lib64",
             "/lib", "/usr/lib")


def _lib_identity() -> list[object]:
    """libseccomp as a program's cache key holds it, without loading it: the file the loader
    finds (the first ``libseccomp.so.2`` in LD_LIBRARY_PATH's directories, then ``_LIB_DIRS``)
    by the identity of what it links to (path, inode, size, mtime), so that an upgraded
    libseccomp (which may know more syscalls) makes a new program; its version otherwise."""
    ma = getattr(sys.implementation, "_multiarch", "")
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for d in (*dirs, *(d.format(ma=ma) for d in _LIB_DIRS if ma or "{ma}" not in d)):
        path = os.path.join(d, "libseccomp.so.2")
        try:
            st = os.stat(path)
        except OSError:
            continue
        return [path, st.st_ino, st.st_size, st.st_mtime_ns]
    lib = _lib()
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return [f"{v.major}.{v.minor}.{v.micro}"]


def _made_of(profile: Profile | ProfileFile, caps: tuple[str, ...]) -> list[object]:
    """What a program is made of, its cache key's words: a profile file by its identity, the
    capabilities and the kernel (a rule's ``minKernel``), so that a cached program is found
    without the profile parsed; another profile by its rules resolved for *caps*; the machine
    and libseccomp either way."""
    if isinstance(profile, ProfileFile):
        what: object = ["file", profile.path, profile.size, profile.mtime_ns, sorted(set(caps)),
                        os.uname().release]
    else:
        what = to_oci(profile, caps)
    return [what, os.uname().machine, _lib_identity()]


def program(profile: Profile | ProfileFile, caps: tuple[str, ...], *, cache_dir: Path | None = None) -> bytes:
    """``compile_bpf`` with the result kept in *cache_dir* (``<root>/cache/seccomp``): a
    multi-architecture filter costs libseccomp ~20 ms to build, reading it back ~0.1 ms.
    The key is what the program is made of (``_made_of``): a start whose program is cached
    parses no profile file and loads no libseccomp."""
    if cache_dir is None:
        return compile_bpf(profile, caps)
    key = Digest.of(json.dumps(  # CPython's own SHA-256: no OpenSSL (hashlib) loaded for a key
        _made_of(profile, caps), sort_keys=True).encode()).encoded
    path = cache_dir / f"{key}.bpf"
    try:
        data = path.read_bytes()
        if data and len(data) % 8 == 0 and len(data) // 8 <= BPF_MAXINSNS:
            return data
    except OSError:
        pass
    data = compile_bpf(profile, caps)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{key}.{os.urandom(6).hex()}.tmp"  # (a sandbox's process is pid 1 of its own)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full state root: the program is still good, just not kept
    return data
