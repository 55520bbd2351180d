"""COPY and ADD planned (a mixin of the planner's stage walker): sources from the context
(globs, ``--parents``, ``.dockerignore``, content checksums), other stages, images, git
and URLs (``--checksum``), heredocs; the step's spec, cache inputs and history line."""

from __future__ import annotations

import json
import re

from builder.base.errors import ContextError, PlanError
from builder.imagebuild import dockerfile as df
from builder.imagebuild import sha
from builder.imagebuild.context import Tree, entry_fingerprint, has_glob, split_pivot
from builder.imagebuild.graph.ops import (
    CacheKey,
    CopySource,
    CopySpec,
    Location,
    StagePlan,
    Step,
    key_of,
)
from registry.values import replace

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Protocol

    from builder.imagebuild.dockerfile.instructions import Dockerfile, Instruction, Stage
    from builder.imagebuild.sources.git import GitSource
    from registry.store import Image

URL = re.compile(r"^https?://", re.I)
_DOLLAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")


if TYPE_CHECKING:  # a protocol for the type checker alone
    class PlannerView(Protocol):
        """What the stage walker uses of its ``Planner``."""

        context: Tree | None
        df: Dockerfile

        def _err(self, ins: Instruction | None, message: str) -> PlanError: ...

        def _expand(self, text: str, env: Mapping[str, str], ins: Instruction) -> str: ...

        def _plan(self, index: int, chain: tuple[int, ...] = ()) -> StagePlan: ...

        def find_stage(self, ref: str, before: int) -> Stage | None: ...


class CopyPlanning:
    """COPY/ADD of the stage walker (``planner._StageBuilder``), which holds this state."""

    p: PlannerView
    stage: df.Stage
    chain: tuple[int, ...]
    deps: set[int]
    key: CacheKey
    steps: list[Step]

    if TYPE_CHECKING:
        def _x(self, text: str, ins: df.Instruction) -> str: ...

        def _abs(self, path: str) -> str: ...

        def _cwd(self) -> str: ...

        def _vars(self) -> dict[str, str]: ...

        def _image(self, ref: str, ins: df.Instruction) -> Image: ...

        def _fs(self, ins: df.Instruction, kind: str, payload: Any, created_by: str,
                inputs: dict[str, str], *, files: dict[str, str] | None = None,
                comment_buildkit: bool = True, parent: str | None = None) -> None: ...

    # -- COPY / ADD ----------------------------------------------------------------------------
    def _context_checksum(self, patterns: list[str], ins: df.Instruction, *,
                          excludes: tuple[str, ...] = (), parents: bool = False,
                          keyword: str = "COPY") -> tuple[str, dict[str, str]]:
        ctx = self.p.context
        h = sha.sha256()
        files: dict[str, str] = {}
        for pat in patterns:
            if ctx is None or ctx.root is None:
                raise self.p._err(ins, f"{keyword} {pat}: no build context (it was given as -)")
            try:
                # --parents: a ``/./`` pivot and ``**`` (any depth), as the Dockerfile reference
                matches = ctx.match(split_pivot(pat)[1], doublestar=True) if parents else ctx.match(pat)
            except ContextError as e:
                raise self.p._err(ins, f"{keyword} {pat}: {e}") from None
            if not matches:
                what = "no source files were specified" if has_glob(pat) else "not found"
                raise self.p._err(ins, f"{keyword} {pat}: {what} in build context "
                                  "(or excluded by .dockerignore)")
            for m in matches:
                h.update(f"match\0{m}\n".encode())
                for ent in ctx.walk(m, excludes=list(excludes)):
                    line = entry_fingerprint(ctx, ent)
                    h.update(line.encode())
                    files[f"{m}/{ent.dest}" if ent.dest else m] = sha.sha256(line.encode()).hexdigest()[:16]
        return h.hexdigest(), files

    def _copy(self, ins: df.Copy) -> None:
        is_add = isinstance(ins, df.Add)
        keyword = "ADD" if is_add else "COPY"
        # each source and the destination is one word, never split (BuildKit's ProcessWord):
        # ``COPY ["c.md", "/dst/json form/"]`` and ``COPY $F /d/`` with F="a b" keep the space
        srcs = [s if URL.match(s) else self._x(s, ins) for s in ins.sources]
        dest_word = self._x(ins.dest, ins)
        dest = self._abs(dest_word)
        if dest_word.endswith("/") and not dest.endswith("/"):
            dest += "/"
        chown = self._x(ins.chown, ins) if ins.chown else None
        chmod = None
        if ins.chmod:
            text = self._x(ins.chmod, ins)
            try:
                chmod = int(text, 8)
                if chmod > 0o7777:
                    raise ValueError
            except ValueError:
                raise self.p._err(ins, f"invalid chmod parameter {text!r}: octal modes only") from None
        excludes = tuple(self._x(e, ins) for e in ins.excludes)
        if getattr(ins, "checksum", None):
            self._checksum_applies(srcs, ins)
        sources: list[CopySource] = []
        inputs: dict[str, str] = {}
        files: dict[str, str] = {}
        from_ = self._x(ins.from_, ins) if ins.from_ else None
        if from_:
            ref = self.p.find_stage(from_, self.stage.index)
            if ref is None and self.p.df.stage(from_) is not None:
                raise self.p._err(ins, f"{keyword} --from={from_}: stage {from_} is not defined before this one")
            if ref is not None:
                dep = self.p._plan(ref.index, self.chain)
                self.deps.add(ref.index)
                sources = [CopySource(s, "stage", Location("stage", s, stage=ref.index)) for s in srcs]
                inputs["from"] = dep.key
            else:
                if from_.isdigit():
                    raise self.p._err(ins, f"{keyword} --from={from_}: no stage with index {from_}")
                img = self._image(from_, ins)
                sources = [CopySource(s, "image", Location("image", s, image=img)) for s in srcs]
                inputs["from"] = str(img.id)
            inputs["sources"] = json.dumps(srcs)
        else:
            local = []
            for s in srcs:
                git = self._git_source(s, ins) if is_add else None
                if git is not None:
                    sources.append(CopySource(s, "git", git=git))
                elif URL.match(s):
                    if not is_add:
                        raise self.p._err(ins, f"COPY {s}: source can't be a URL for COPY")
                    sources.append(CopySource(s, "url", checksum=self._checksum(s, ins)))
                else:
                    local.append(s)
                    sources.append(CopySource(s, "context", Location("context", s)))
            if local:
                csum, files = self._context_checksum(local, ins, excludes=excludes,
                                                     parents=ins.parents, keyword=keyword)
                inputs["files"] = csum
            inputs["sources"] = json.dumps(srcs)
            gits = [s.git.key() for s in sources if s.git is not None]
            if gits:
                inputs["git"] = json.dumps(gits)
            urls = [s for s in sources if s.origin == "url"]
            if urls:
                inputs["urls"] = json.dumps([[u.path, u.checksum or self._url_version(u.path, ins)]
                                             for u in urls])
        for h in ins.heredocs:
            content = self._x_heredoc(h, ins) if h.expand else h.content
            sources.append(CopySource(h.name, "heredoc", content=content))
            inputs.setdefault("heredocs", "")
            inputs["heredocs"] += sha.sha256(f"{h.name}\0{content}".encode()).hexdigest()
        if not sources:
            raise self.p._err(ins, f"{keyword}: no source files were specified")
        multi = len(sources) > 1 or any(has_glob(s.path) for s in sources if s.origin != "heredoc")
        if multi and not dest.endswith("/") and len(sources) > 1:
            raise self.p._err(ins, f"When using {keyword} with more than one source file, "
                              "the destination must be a directory and end with a /")
        spec = CopySpec(tuple(sources), dest, chown, chmod, ins.link, ins.parents, excludes,
                        is_add and ins.unpack is not False, self._cwd())
        inputs.update({
            "instruction": f"{keyword} " + json.dumps([srcs, dest]),
            "chown": chown or "", "chmod": "" if chmod is None else oct(chmod),
            "opts": json.dumps([ins.link, ins.parents, list(excludes), spec.add]),
        })
        # BuildKit's history line: the expanded sources and destination as written, no flags
        shown = [*srcs, *(f"<<{h.name}" for h in ins.heredocs)]
        created_by = f"{keyword} {' '.join(shown)} {dest_word}"
        # --link: the layer (and its cache key) does not depend on what is below it; the
        # stage's filesystem after it still does.
        parent = key_of("linked") if ins.link else None
        below = self.key
        self._fs(ins, "copy", spec, created_by, inputs, files=files, parent=parent)
        if ins.link:
            self.key = key_of("rebase", below, self.key)
            self.steps[-1] = replace(self.steps[-1], fs_key=self.key)

    def _git_source(self, text: str, ins: df.Copy | df.Add) -> GitSource | None:
        """*text* as a git source with its ref resolved to a commit (the cache key), or None."""
        from builder.imagebuild.sources.git import parse as parse_git
        from builder.imagebuild.sources.git import resolve as resolve_git

        try:
            git = parse_git(text, keep_git_dir=getattr(ins, "keep_git_dir", False))
            if git is None:
                return None
            git = resolve_git(git)
        except ContextError as e:
            raise self.p._err(ins, str(e)) from None
        wanted = getattr(ins, "checksum", None)
        checksum = self._x(wanted, ins) if wanted else ""
        if checksum and not git.commit.startswith(checksum.removeprefix("sha1:")):
            raise self.p._err(ins, f"ADD {git.shown}: expected checksum {checksum}, "
                              f"the ref is at commit {git.commit}")
        return git

    def _checksum_applies(self, srcs: list[str], ins: df.Copy | df.Add) -> None:
        """``ADD --checksum`` takes one URL or git source (BuildKit's words otherwise)."""
        from builder.imagebuild.sources.git import parse as parse_git

        if len(srcs) + len(ins.heredocs) != 1:
            raise self.p._err(ins, "checksum can't be specified for multiple sources")
        try:
            remote = not ins.from_ and (URL.match(srcs[0]) or parse_git(srcs[0]) is not None) if srcs else False
        except ContextError as e:
            raise self.p._err(ins, str(e)) from None
        if not remote:
            raise self.p._err(ins, "checksum requires HTTP(S) or Git sources")

    def _checksum(self, url: str, ins: df.Copy | df.Add) -> str | None:
        text = getattr(ins, "checksum", None)
        if not text:
            return None
        from builder.imagebuild.sources.url import check_checksum

        try:
            return check_checksum(url, self._x(text, ins))
        except ContextError as e:
            raise self.p._err(ins, str(e)) from None

    def _url_version(self, url: str, ins: df.Instruction) -> str:
        """What the server says about *url* (ETag, Last-Modified, length): a changed remote
        file changes the key even without ``--checksum``."""
        import requests

        from builder.imagebuild.sources.url import request_error, status_error

        try:
            r = requests.head(url, allow_redirects=True, timeout=30)
        except requests.RequestException as e:
            raise self.p._err(ins, str(request_error(url, e))) from None
        if r.status_code >= 400:
            raise self.p._err(ins, str(status_error(url, r.status_code, r.reason)))
        return "|".join(r.headers.get(h, "") for h in ("ETag", "Last-Modified", "Content-Length"))

    def _x_heredoc(self, h: df.Heredoc, ins: df.Instruction) -> str:
        # Only the $-expressions are expanded: quotes and backslashes of the file body stay.
        vars_ = self._vars()

        def one(m: re.Match[str]) -> str:
            return self.p._expand(m.group(0), vars_, ins)

        return _DOLLAR.sub(one, h.content)
