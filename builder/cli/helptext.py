"""``pybuild X --help`` in Docker's layout: the usage line, the description, the options
(``-a, --all``, ``    --filter list``, each with its type word and default), a group's commands and
the line that says where to go next. Imported only when help is shown. It reads the command
tree of ``builder.cli.flags`` by its attributes (``is_option``, ``is_group``) and imports nothing of
it, which loads this module: no cycle.
"""

from __future__ import annotations

from typing import Any


def _type_word(p: Any) -> str:
    if p.metavar:
        return str(p.metavar)
    if p.is_flag:
        return ""
    return "list" if p.multiple else p.type.name


def _default(p: Any) -> str:
    text = p.help or ""
    value: Any = p.default
    if p.show_default is False or "(default" in text:
        return ""
    if p.show_default is None and (value in (None, False, "", ()) or p.is_flag):
        return ""
    if isinstance(value, bool):
        value = str(value).lower()
    return f" (default {value!r})" if isinstance(value, str) and p.type.name == "string" else f" (default {value})"


def _options(ctx: Any) -> list[tuple[str, str]]:
    rows = []
    for p in ctx.command.params:
        if not p.is_option or p.hidden:
            continue
        shorts = [o for o in p.opts if not o.startswith("--")]
        longs = [o for o in p.opts if o.startswith("--")] + p.secondary_opts
        left = (f"{shorts[0]}, " if shorts else "    ") + ", ".join(longs or shorts[1:])
        word = _type_word(p)
        rows.append((f"{left} {word}" if word else left, (p.help or "") + _default(p)))
    return rows


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(a) for a, _ in rows), default=0) + 3
    return [f"  {a.ljust(width)}{b}".rstrip() for a, b in rows]


def render(ctx: Any) -> str:
    cmd = ctx.command
    path = ctx.command_path
    options = _options(ctx)
    if cmd.is_group:
        usage = f"{path}{' [OPTIONS]' if options else ''} COMMAND"
    else:
        args = " ".join(p.human() for p in cmd.params if not p.is_option)
        usage = f"{path} [OPTIONS]{' ' + args if args else ''}"
    out = [f"Usage: {usage}", ""]
    text = _clean(cmd.help or "")
    if text:
        out += [text, ""]
    if options:
        out += ["Options:", *_table(options), ""]
    if cmd.is_group:
        rows = []
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                rows.append((name, sub.short_help))
        out += ["Commands:", *_table(rows), "",
                f"Run '{path} COMMAND --help' for more information on a command."]
    return "\n".join(out).rstrip("\n")


def _clean(doc: str) -> str:
    """A docstring without its indentation (``inspect.cleandoc``'s rule)."""
    lines = doc.expandtabs().strip().splitlines()
    if not lines:
        return ""
    indents = [len(ln) - len(ln.lstrip()) for ln in lines[1:] if ln.strip()]
    cut = min(indents, default=0)
    return "\n".join([lines[0].strip(), *(ln[cut:].rstrip() for ln in lines[1:])])
