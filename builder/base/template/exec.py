"""Executing a parsed Go template over JSON-shaped values, as ``text/template/exec.go`` does:
dot and variables, field chains, pipelines, function calls with Go's argument rules, if/with/
range (maps in key order) with break/continue, and Go's error text with the node's position.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from builder.base.errors import TemplateExecError
from builder.base.template import nodes as N
from builder.base.template.funcs import FuncError, Function, truth
from builder.base.template.values import (
    MISSING,
    ConstFloat,
    ConstInt,
    ConstStr,
    JsonNumber,
    NilMap,
    NilSlice,
    go_quote,
    go_type,
    sprint_value,
)
from builder.base.values import frozen

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any


@frozen  # (no dataclass made at import: every ``--format`` loads this)
class Options:
    """How the data looks to Go.

    ``missing_key``: ``"default"`` (a key a map lacks is ``<no value>``) or ``"error"`` (Go's
    ``missingkey=error``: ``map has no entry for key "X"``, what Docker's inspect fallback uses).
    ``struct_type``: the data is a Go struct of that type (the row of ``images``, ``ps``…): a
    field it lacks is ``can't evaluate field X in type T``. ``raw``: Docker's inspect fallback,
    over the JSON as Go decodes it (``values.json_view``): values are ``interface {}`` in errors
    and a null a pipeline ends on is ``<no value>``. ``fallback``: what Docker's inspect does
    when the template fails on its typed value: run it again that way. The name sets say what a
    field of that name holds in Docker's typed value: a map (a missing key is ``<no value>``;
    in ``string_maps`` ``index`` of one gives ``""``), a nil slice or map for a JSON null, and
    ``omitted``: (struct field, field) → the zero value a field its JSON leaves out has (``"map"``,
    ``"slice"``, None for a nil pointer, ``""``…).
    """

    missing_key: str = "default"
    struct_type: str = ""
    raw: bool = False
    maps: frozenset[str] = frozenset()
    string_maps: frozenset[str] = frozenset()
    nil_slices: frozenset[str] = frozenset()
    nil_maps: frozenset[str] = frozenset()
    omitted: Mapping[tuple[str, str], Any] = MappingProxyType({})
    structs: bool = False  # JSON objects not in ``maps`` are Go structs (printed ``{a b}``)
    typed_keys: frozenset[str] = frozenset()  # maps whose typed ``index`` fails (nat.Port keys)
    fallback: Options | None = None  # run again with these over the JSON view when this fails


class _NoFinal:
    pass


NO_FINAL: Any = _NoFinal()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Exec:
    """One execution: the output, the variable stack and what errors need to name a place."""

    def __init__(self, text: str, name: str, data: Any, options: Options, funcs: Mapping[str, Function],
                 templates: Mapping[str, tuple[N.Node, ...]] | None = None) -> None:
        self.text, self.name, self.opts, self.funcs = text, name, options, funcs
        self.parse_name = name  # where the text came from; ``name`` is the template running
        self.templates = templates or {}
        self.depth = 0
        self.root = data
        self.vars: list[list[Any]] = [["$", data]]
        self.out: list[str] = []
        self._bytes = text.encode("utf-8", "surrogateescape")

    # -- errors ----------------------------------------------------------------------------
    def error(self, node: Any, message: str) -> TemplateExecError:
        pos = getattr(node, "pos", 0)
        before = self._bytes[:pos]
        line = before.count(b"\n") + 1
        col = pos - (before.rfind(b"\n") + 1) if b"\n" in before else pos
        context = str(node)
        return TemplateExecError(f"template: {self.parse_name}:{line}:{col}: executing {go_quote(self.name)} at "
                                 f"<{context}>: {message}")

    def _type(self, v: Any) -> str:
        return "interface {}" if v is None else go_type(v, raw=self.opts.raw)

    # -- walking ---------------------------------------------------------------------------
    def walk(self, dot: Any, body: tuple[N.Node, ...]) -> None:
        for node in body:
            if isinstance(node, N.Text):
                self.out.append(node.text)
            elif isinstance(node, N.Action):
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decls:
                    self.out.append("<no value>" if value is MISSING else sprint_value(value))
            elif isinstance(node, N.If):
                mark = len(self.vars)
                value = self.pipeline(dot, node.pipe)
                if truth(value):
                    self.walk(value if node.is_with else dot, node.body)
                elif node.orelse:
                    self.walk(dot, node.orelse)
                del self.vars[mark:]
            elif isinstance(node, N.Range):
                self.range(dot, node)
            elif isinstance(node, N.Break):
                raise _Break
            elif isinstance(node, N.Continue):
                raise _Continue
            elif isinstance(node, N.TemplateCall):
                self.call_template(dot, node)

    def call_template(self, dot: Any, node: N.TemplateCall) -> None:
        """``{{template "name" pipeline}}``: its body with dot the pipeline's value and variables
        of its own; errors there name it (Go's ``executing "name"``)."""
        body = self.templates.get(node.name)
        if body is None:
            raise self.error(node, f"template {go_quote(node.name)} not defined")
        if self.depth >= _MAX_DEPTH:
            raise self.error(node, "exceeded maximum template depth (100000)")
        value = self.pipeline(dot, node.pipe) if node.pipe is not None else MISSING
        saved = self.vars, self.name
        self.vars, self.name = [["$", value]], node.name
        self.depth += 1
        try:
            self.walk(value, body)
        except RecursionError:
            raise self.error(node, "exceeded maximum template depth (100000)") from None
        finally:
            self.vars, self.name = saved
            self.depth -= 1

    def range(self, dot: Any, node: N.Range) -> None:
        mark = len(self.vars)
        value = self.pipeline(dot, node.pipe)
        inner = len(self.vars)
        decls = node.pipe.decls
        if isinstance(value, dict):
            items: list[tuple[Any, Any]] = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif value is MISSING or value is None:
            items = []
        else:
            raise self.error(node.pipe, f"range can't iterate over {sprint_value(value)}")
        try:
            for index, elem in items:
                if decls:
                    if node.pipe.is_assign:
                        self.set_var(node, decls[0], index if len(decls) > 1 else elem)
                        if len(decls) > 1:
                            self.set_var(node, decls[1], elem)
                    else:
                        self.vars[-1][1] = elem
                        if len(decls) > 1:
                            self.vars[-2][1] = index
                try:
                    self.walk(elem, node.body)
                except _Continue:
                    pass
                finally:
                    del self.vars[inner:]
            if not items and node.orelse:
                self.walk(dot, node.orelse)
        except _Break:
            pass
        finally:
            del self.vars[mark:]

    def set_var(self, node: Any, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise self.error(node, f"undefined variable: {name}")

    # -- pipelines and commands -------------------------------------------------------------
    def pipeline(self, dot: Any, pipe: N.Pipe) -> Any:
        value: Any = NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
            if value is None and self.opts.raw:
                value = MISSING  # a nil interface{} is no value once a command returns it
        for name in pipe.decls:
            if pipe.is_assign:
                self.set_var(pipe, name, value)
            else:
                self.vars.append([name, value])
        return value

    def command(self, dot: Any, cmd: N.Command, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, N.Field):
            return self.field_chain(dot, dot, first, first.names, cmd.args, final)
        if isinstance(first, N.Chain):
            return self.chain(dot, first, cmd.args, final)
        if isinstance(first, N.Identifier):
            return self.function(dot, first, cmd, cmd.args, final)
        if isinstance(first, N.Pipe):
            self.not_a_function(cmd.args, final)
            return self.pipeline(dot, first)
        if isinstance(first, N.Variable):
            return self.variable(dot, first, cmd.args, final)
        self.not_a_function(cmd.args, final)
        if isinstance(first, N.Bool):
            return first.value
        if isinstance(first, N.Dot):
            return dot
        if isinstance(first, N.Nil):
            raise self.error(first, "nil is not a command")
        if isinstance(first, N.Number):
            return self.ideal(first)
        assert isinstance(first, N.String)
        return ConstStr(first.value)

    def not_a_function(self, args: tuple[N.Arg, ...], final: Any) -> None:
        if len(args) > 1 or final is not NO_FINAL:
            raise self.error(args[0], f"can't give argument to non-function {args[0]}")

    def ideal(self, n: N.Number) -> Any:
        """Go's ``idealConstant``: a float when written as one, else an int."""
        if n.text.startswith("'"):
            return ConstInt(n.int_value or 0)
        hex_int = n.text.lstrip("+-")[:2].lower() == "0x" and "p" not in n.text.lower()
        if n.float_value is not None and not hex_int and any(c in n.text for c in ".eEpP"):
            return ConstFloat(n.float_value)
        if n.int_value is not None:
            return ConstInt(n.int_value)
        return ConstFloat(n.float_value or 0.0)

    def chain(self, dot: Any, node: N.Chain, args: tuple[N.Arg, ...] | None, final: Any) -> Any:
        if isinstance(node.node, N.Nil):
            raise self.error(node, f"indirection through explicit nil in {node}")
        receiver = self.arg(dot, "any", node.node)
        return self.field_chain(dot, receiver, node, node.names, args, final)

    def variable(self, dot: Any, node: N.Variable, args: tuple[N.Arg, ...] | None, final: Any) -> Any:
        name = node.names[0]
        for entry in reversed(self.vars):
            if entry[0] == name:
                value = entry[1]
                break
        else:
            raise self.error(node, f"undefined variable: {name}")
        if len(node.names) == 1:
            if args is not None:
                self.not_a_function(args, final)
            return value
        return self.field_chain(dot, value, node, node.names[1:], args, final)

    def field_chain(self, dot: Any, receiver: Any, node: Any, names: tuple[str, ...],
                    args: tuple[N.Arg, ...] | None, final: Any) -> Any:
        via = ""
        for name in names[:-1]:
            receiver = self.field(dot, name, node, None, NO_FINAL, receiver, via, last=False)
            via = name
        return self.field(dot, names[-1], node, args, final, receiver, via)

    def field(self, dot: Any, name: str, node: Any, args: tuple[N.Arg, ...] | None, final: Any,
              receiver: Any, via: str = "", *, last: bool = True) -> Any:
        """Field *name* of *receiver* (reached through field *via*, which may say it is a map)."""
        opts = self.opts
        if receiver is MISSING:
            if opts.missing_key == "error":
                raise self.error(node, f"nil data; no entry for key {go_quote(name)}")
            return MISSING
        if receiver is None:
            raise self.error(node, f"nil pointer evaluating interface {{}}.{name}")
        has_args = (args is not None and len(args) > 1) or final is not NO_FINAL
        if isinstance(receiver, dict):
            if name in receiver and callable(receiver[name]):
                return self.method(dot, receiver[name], name, node, args, final)
            is_struct = bool(opts.struct_type) and receiver is self.root
            if has_args:
                raise self.error(node, f"{name} has arguments but cannot be invoked as function" if is_struct
                                 else f"{name} is not a method but has arguments")
            if name in receiver:
                value = receiver[name]
                if value is None and name in opts.nil_slices:
                    return NilSlice()
                if value is None and name in opts.nil_maps:
                    return NilMap()
                return value
            if is_struct:
                raise self.error(node, f"can't evaluate field {name} in type {opts.struct_type}")
            if (via, name) in opts.omitted and (last or name in opts.maps):
                # a field of Docker's struct that its JSON omits when empty (a nil pointer:
                # going through it fails)
                zero = opts.omitted[via, name]
                return NilMap() if zero == "map" else NilSlice() if zero == "slice" else zero
            if via in opts.maps or opts.missing_key != "error":
                return MISSING
            raise self.error(node, f"map has no entry for key {go_quote(name)}")
        # Docker's inspect fallback holds JSON values as interface {}; constants keep their type
        typ = "interface {}" if opts.raw and not isinstance(receiver, (ConstInt, ConstFloat, ConstStr)) \
            else go_type(receiver)
        raise self.error(node, f"can't evaluate field {name} in type {typ}")

    def method(self, dot: Any, fn: Any, name: str, node: Any, args: tuple[N.Arg, ...] | None,
               final: Any) -> Any:
        """A value's method (a row's ``Label "k"``): its string arguments, then the call."""
        values = [self.arg(dot, "string", a) for a in (args or ())[1:]]
        if final is not NO_FINAL:
            values.append(self.validate(node, final, "string"))
        want = getattr(fn, "arity", 0)
        if len(values) != want:
            raise self.error(node, f"wrong number of args for {name}: want {want} got {len(values)}")
        return fn(*values)

    # -- functions ---------------------------------------------------------------------------
    def function(self, dot: Any, ident: N.Identifier, cmd: Any, args: tuple[N.Arg, ...], final: Any) -> Any:
        name = ident.name
        fn = self.funcs[name]
        argv = args[1:]
        count = len(argv) + (final is not NO_FINAL)
        if fn.variadic is not None:
            if count < len(fn.params):
                raise self.error(ident, f"wrong number of args for {name}: want at least {len(fn.params)} got {count}")
        elif count != len(fn.params):
            raise self.error(ident, f"wrong number of args for {name}: want {len(fn.params)} got {count}")
        if fn.lazy:
            value: Any = MISSING
            for a in argv:
                value = self.arg(dot, "value", a)
                if truth(value) == (name == "or"):
                    return value
            if final is not NO_FINAL:
                value = self.validate(cmd, final, "value")
            return value
        values = []
        for i, a in enumerate(argv):
            kind = fn.params[i] if i < len(fn.params) else fn.variadic
            assert kind is not None
            values.append(self.arg(dot, kind, a))
        if final is not NO_FINAL:
            last = fn.variadic if fn.variadic is not None else fn.params[len(fn.params) - 1]
            values.append(self.validate(cmd, final, last))
        if name == "index" and len(argv) > 1 and self._names(argv[0]) & self.opts.typed_keys:
            # a nat.Port key: Go's typed index refuses a string (Docker then runs the fallback)
            raise self.error(cmd, "error calling index: value has type string; should be nat.Port")
        try:
            result = fn.call(*values)
        except FuncError as e:
            raise self.error(cmd, f"error calling {name}: {e}") from None
        if name == "index" and argv and result is MISSING and self._string_map(argv[0]):
            return ""
        return result

    def _names(self, node: N.Arg) -> set[str]:
        names: tuple[str, ...] = getattr(node, "names", ())
        return set(names[-1:])

    def _string_map(self, node: N.Arg) -> bool:
        names: tuple[str, ...] = getattr(node, "names", ())
        return bool(names) and names[len(names) - 1] in self.opts.string_maps

    def arg(self, dot: Any, kind: str, node: N.Arg) -> Any:
        """An argument evaluated for a parameter of Go kind *kind* (see ``funcs.Function``)."""
        if isinstance(node, N.Dot):
            return self.validate(node, dot, kind)
        if isinstance(node, N.Nil):
            if kind in ("any", "value"):
                return None if kind == "any" else MISSING
            raise self.error(node, f"cannot assign nil to {_GO_KIND[kind]}")
        if isinstance(node, N.Field):
            return self.validate(node, self.field_chain(dot, dot, node, node.names, (node,), NO_FINAL), kind)
        if isinstance(node, N.Variable):
            return self.validate(node, self.variable(dot, node, None, NO_FINAL), kind)
        if isinstance(node, N.Pipe):
            return self.validate(node, self.pipeline(dot, node), kind)
        if isinstance(node, N.Identifier):
            return self.validate(node, self.function(dot, node, node, (node,), NO_FINAL), kind)
        if isinstance(node, N.Chain):
            return self.validate(node, self.chain(dot, node, None, NO_FINAL), kind)
        if kind in ("any", "value"):
            if isinstance(node, N.Bool):
                return node.value
            if isinstance(node, N.Number):
                return self.ideal(node)
            assert isinstance(node, N.String)
            return ConstStr(node.value)
        if kind == "string":
            if isinstance(node, N.String):
                return node.value
            raise self.error(node, f"expected string; found {node}")
        if kind == "int":
            if isinstance(node, N.Number) and node.int_value is not None:
                return node.int_value
            raise self.error(node, f"expected integer; found {node}")
        raise self.error(node, f"can't handle {node} for arg of type {_GO_KIND[kind]}")

    def validate(self, node: Any, value: Any, kind: str) -> Any:
        if value is MISSING or value is NO_FINAL:
            if kind == "any":
                return None
            raise self.error(node, f"invalid value; expected {_GO_KIND[kind]}")
        if kind in ("any", "value"):
            return value
        ok = {"string": isinstance(value, str) and not isinstance(value, JsonNumber),
              "int": isinstance(value, int) and not isinstance(value, bool),
              "strings": isinstance(value, list) and all(isinstance(x, str) and not isinstance(x, JsonNumber)
                                                          for x in value)}[kind]
        if not ok:
            raise self.error(node, f"wrong type for value; expected {_GO_KIND[kind]}; got {self._type(value)}")
        return value


#: Go stops at 100000 nested {{template}} calls; Python's stack ends well before
_MAX_DEPTH = 200

_GO_KIND = {"any": "interface {}", "value": "reflect.Value", "string": "string", "int": "int",
            "strings": "[]string"}

