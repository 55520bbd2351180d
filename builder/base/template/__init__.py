"""Go's text/template, as Docker's ``--format``/``-f`` takes it: one engine for every command.

    tmpl = Template("{{range .Mounts}}{{.Source}}{{end}}")    # TemplateParseError, Go's text
    tmpl.execute(data, options=INSPECT)                       # TemplateExecError, Go's text
    tmpl.execute_header({"ID": "IMAGE ID"})                   # a table's header row

``lex`` (Go's lexer) feeds ``grammar/gotemplate.lark`` through ``parse`` (the Lark glue, loaded
on the first parse only; ``cache`` keeps parsed templates on disk, so a template used before
never loads Lark), which makes ``nodes``; ``exec`` runs them with ``funcs`` (Go's builtins
and Docker's) over JSON-shaped values printed as Go prints them (``values``); ``shapes`` says
what Docker's typed values look like where JSON alone cannot tell (maps, nil slices).
"""

from __future__ import annotations

from collections.abc import Mapping

from builder.base.errors import TemplateError, TemplateExecError
from builder.base.template import cache as disk
from builder.base.template.exec import Exec, Options
from builder.base.template.funcs import FUNCS, HEADER_FUNCS, NAMES
from builder.base.template.values import json_view, typed

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any


class Template:
    """A parsed template; *name* is Go's template name (``""`` for Docker's, ``"version"`` for
    ``docker version``'s), shown in errors."""

    def __init__(self, text: str, *, name: str = "", cache: bool = True) -> None:
        self.text, self.name = text, name
        found = disk.load(text, name) if cache else None
        if found is None:
            from builder.base.template.parse import parse

            found = parse(text, funcs=NAMES, name=name)
            if cache:
                disk.store(text, name, found)
        self.nodes, self.defs = found

    def execute(self, data: Any, *, options: Options | None = None) -> str:
        """The text of the template over *data*; with ``options.fallback`` (Docker's inspect),
        a failure runs it again over the JSON view, whose output or error is the answer."""
        options = options or Options()
        try:
            return self._run(data, options)
        except TemplateExecError:
            if options.fallback is None:
                raise
        return self._run(json_view(data), options.fallback)

    def _run(self, data: Any, options: Options) -> str:
        if options.structs:
            nils = {name: "[]" for name in options.nil_slices} | {name: "map" for name in options.nil_maps}
            data = typed(data, options.maps, nils)
        run = Exec(self.text, self.name, data, options, FUNCS, self.defs | {self.name: self.nodes})
        try:
            run.walk(data, self.nodes)
        except TemplateExecError as e:
            e.partial = "".join(run.out)
            raise
        return "".join(run.out)

    def execute_header(self, header: Mapping[str, str]) -> str:
        """Docker's table header: the template over the column titles with ``HEADER_FUNCS``;
        what an error leaves unwritten is left out, as Docker ignores that error."""
        run = Exec(self.text, self.name, dict(header), Options(), HEADER_FUNCS, self.defs | {self.name: self.nodes})
        try:
            run.walk(dict(header), self.nodes)
        except TemplateError:
            pass
        return "".join(run.out)


__all__ = ["Options", "Template"]
