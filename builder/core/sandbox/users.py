"""``USER`` resolution the way Docker does it, from the image's ``/etc/passwd`` and ``/etc/group``.

Pure functions over the files' text, so that the child (inside the root) and the OCI bundle
writer (over the layer stack) resolve alike.
"""

from __future__ import annotations

from builder.base.errors import SandboxError
from builder.base.values import frozen


@frozen
class User:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups (with the primary one as ``docker run`` has it)
    home: str


def _parse(text: str | None, width: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= width:
            rows.append(parts)
    return rows


def _int(s: str) -> int | None:
    return int(s) if s.isdigit() else None


def resolve_user(spec: str, passwd: str | None, group: str | None, *,
                 primary_in_groups: bool = True, add_groups: tuple[str, ...] = ()) -> User:
    """``""``/``name``/``uid``/``uid:gid``/``name:group`` → ids, as ``docker run -u`` does.

    A numeric uid absent from passwd runs with gid 0 and home ``/``; a name that is absent,
    or a group name that is absent, is an error naming it. The supplementary groups are the
    primary group then the groups listing the user as a member (``docker run``, the classic
    builder); without *primary_in_groups* only the latter, as BuildKit's RUN steps have them
    (``id`` there prints ``uid=0(root) gid=0(root)`` and no ``groups=``). *add_groups*
    (``--group-add``: names from the group file, or numbers) come after them, as in runc.
    """
    user, _, grp = (spec or "0").partition(":")
    users = _parse(passwd, 7)
    groups = _parse(group, 4)
    uid_n = _int(user)
    entry = None
    for row in users:
        if (uid_n is None and row[0] == user) or (uid_n is not None and _int(row[2]) == uid_n):
            entry = row
            break
    if entry is None and uid_n is None:
        raise SandboxError(f"unable to find user {user}: no matching entries in passwd file")
    uid = uid_n if uid_n is not None else int(entry[2])  # type: ignore[index]
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    name = entry[0] if entry is not None else None
    home = entry[5] if entry is not None and entry[5] else "/"
    if grp:
        g = _int(grp)
        if g is None:
            for row in groups:
                if row[0] == grp:
                    g = _int(row[2])
                    break
            if g is None:
                raise SandboxError(f"unable to find group {grp}: no matching entries in group file")
        gid = g
    extra: list[int] = [gid] if primary_in_groups else []
    if name is not None and not grp:
        for row in groups:
            members = [m for m in row[3].split(",") if m]
            g = _int(row[2])
            if g is not None and name in members and g not in extra:
                extra.append(g)
    for a in add_groups:
        g = _int(a)
        if g is None:
            g = next((_int(row[2]) for row in groups if row[0] == a), None)
            if g is None:
                raise SandboxError(f"Unable to find group {a}: no matching entries in group file")
        if g not in extra:
            extra.append(g)
    return User(uid=uid, gid=gid, groups=tuple(extra), home=home)
