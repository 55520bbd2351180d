"""``--security-opt`` (Docker's ``HostConfig.SecurityOpt``): its values checked at create
(a ``seccomp=FILE`` read, compiled and kept inline as its JSON, so that a later start does not
depend on the file) and read at start into what the sandbox applies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from builder.base.errors import ContainerError, SandboxError
from builder.base.values import frozen

SECURITY_OPT_KEYS = ("seccomp", "no-new-privileges", "apparmor", "label", "systempaths")
#: accepted and kept in the record, but without effect: pybuild applies no LSM (as Docker on a
#: host without AppArmor/SELinux)
IGNORED_SECURITY_OPTS = ("apparmor", "label")


@frozen
class SecurityOpts:
    """What ``--security-opt`` values ask of the sandbox (Docker's ``HostConfig.SecurityOpt``).

    ``seccomp``: ``""`` or ``builtin`` (the default profile), ``unconfined``, or a profile's JSON.
    """

    seccomp: str = ""
    no_new_privileges: bool = False
    systempaths_unconfined: bool = False
    ignored: tuple[str, ...] = ()


def _split_security_opt(opt: str) -> tuple[str, str | None]:
    if opt == "no-new-privileges":
        return opt, None
    sep = "=" if "=" in opt else ":" if ":" in opt else ""
    if not sep:
        raise ContainerError.invalid(f'invalid --security-opt "{opt}": expected KEY=VALUE '
                             f"(one of {', '.join(SECURITY_OPT_KEYS)}) or no-new-privileges")
    key, _, value = opt.partition(sep)
    if key not in SECURITY_OPT_KEYS:
        raise ContainerError.invalid(f'invalid --security-opt "{opt}": unknown option "{key}" '
                             f"(one of {', '.join(SECURITY_OPT_KEYS)})")
    return key, value


def security_opts(values: Iterable[str]) -> SecurityOpts:
    """The recorded ``SecurityOpt`` list, read (``seccomp=`` holds a profile's JSON, not a path:
    ``security_opts_for_record`` put it there)."""
    seccomp = ""
    nnp = False
    systempaths = False
    ignored: list[str] = []
    for opt in values:
        key, value = _split_security_opt(opt)
        if key == "no-new-privileges":
            if value is None:
                nnp = True
            elif value.lower() in ("true", "1", "t"):
                nnp = True
            elif value.lower() in ("false", "0", "f"):
                nnp = False
            else:
                raise ContainerError.invalid(f'invalid --security-opt "{opt}": no-new-privileges takes true or false')
        elif key == "seccomp":
            if not value:
                raise ContainerError.invalid(f'invalid --security-opt "{opt}": seccomp takes unconfined, builtin or a profile file')
            seccomp = value
        elif key == "systempaths":
            if value != "unconfined":
                raise ContainerError.invalid(f'invalid --security-opt "{opt}": systempaths takes only unconfined')
            systempaths = True
        else:
            ignored.append(opt)
    return SecurityOpts(seccomp=seccomp, no_new_privileges=nnp, systempaths_unconfined=systempaths,
                        ignored=tuple(ignored))


def security_opts_for_record(values: Iterable[str], *, caps: tuple[str, ...] | None = None,
                             cache_dir: Path | None = None) -> list[str]:
    """``--security-opt`` values as the record keeps them, validated: a ``seccomp=FILE`` is read
    and checked now and kept as its compact JSON (as Docker's CLI sends it), so that a later start
    does not depend on the file (a value starting with ``{`` is taken as the profile itself).
    With *caps* (the process's capabilities) the profile is compiled too, into *cache_dir*, so
    that what only libseccomp or the kernel would refuse is said now, naming the file. One-line ``ContainerError`` naming the option or file otherwise."""
    out: list[str] = []
    for opt in values:
        key, value = _split_security_opt(opt)
        if key == "seccomp" and value not in ("unconfined", "builtin", "", None):
            assert value is not None
            source = value
            if value.lstrip().startswith("{"):  # the profile itself, as the Engine API carries it
                text, source = value.encode(), "given inline"
            else:
                try:
                    text = Path(value).read_bytes()
                except OSError as e:
                    raise ContainerError(f"opening seccomp profile ({value}) failed: {e.strerror}") from None
            from builder.core.sandbox import seccomp

            try:
                profile = seccomp.parse(text, source=source)
                if caps is not None:
                    seccomp.program(profile, caps, cache_dir=cache_dir)
                doc = json.loads(text)
            except SandboxError as e:
                raise ContainerError(str(e)) from None
            opt = "seccomp=" + json.dumps(doc, separators=(",", ":"))
        out.append(opt)
    security_opts(out)  # every other value checked the same way a start reads it
    return out
