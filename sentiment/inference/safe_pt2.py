"""What a `.pt2` file (a torch.export archive) may hold before torch.export.load sees it.

torch.export.load is not safe on a file one did not write: it unpickles (weights and constants flagged
`use_pickle` with weights_only=False, "opaque" constants with plain pickle.loads, sample inputs falling back
to weights_only=False), it evaluates each symbolic-shape expression with sympy.sympify (which calls eval), it
exec()s the program's `guards_code` as Python, and it resolves a node's target by any attribute path under
`torch`, `math` or `operator`. `sentiment export --format torch` writes none of that beyond tensors, plain
shape expressions, plain shape guards and aten / higher-order ops, so anything else is refused here, before
the loader runs: every nested archive (torch.save format) must load with torch's weights-only unpickler, a
bare pickle member is refused, and the graph's JSON must stay inside the grammar below.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from typing import Any

from sentiment.errors import SentimentError

# Where a node's target may point: ATen and higher-order ops (torch.ops.aten.*, torch.ops.higher_order.*),
# and the arithmetic of symbolic sizes. Anything else under torch (torch.load, torch.ops.load_library) is code.
_TARGET_PREFIXES = ("torch.ops.aten.", "torch.ops.higher_order.", "torch.ops.prims.")
_OPERATOR_TARGETS = {f"_operator.{name}" for name in (
    "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos", "abs", "pow", "eq", "ne", "lt", "le", "gt", "ge",
    "and_", "or_", "not_", "getitem")} | {f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")}
# Names a shape expression may call: sympy's and torch's symbolic-shape classes, as srepr writes them
_SYMPY_CALLS = {"Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Min", "Max", "Mod", "Abs",
                "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
                "Equality", "Unequality", "And", "Or", "Not", "FloorDiv", "ModularIndexing", "Where", "PythonMod",
                "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
                "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
                "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and",
                "BitwiseFn_bitwise_or"}
_SYMPY_NAMES = {"oo", "zoo", "nan", "true", "false", "S", "pi", "E"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(r"[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\Z")
# Guards are comparisons of input sizes: L['ids'].size()[0] == L['lengths'].size()[0], 2 <= L['ids'].size()[1]
_GUARD_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
_BINARY_OPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Div, ast.Pow)
_COMPARE_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def check_pt2_archive(data: bytes, name: str) -> None:
    """Refuse (one SentimentError line) a torch.export archive whose loading could run code."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError) as e:
        raise SentimentError(f"{name} is not a torch.export archive ({str(e).splitlines()[0] if str(e) else e})") from None
    if not any(m.endswith("archive_format") for m in members):
        raise SentimentError(f"{name} is not a torch.export archive of this torch's format (no archive_format): "
                             "export the run again with `sentiment export --format torch`")
    raw = _raw_payloads(members, name)
    for member, content in members.items():
        _check_member(member, content, name, raw=member in raw)


def _raw_payloads(members: dict[str, bytes], name: str) -> set[str]:
    """The members that the weights' and constants' tables list as raw tensor bytes (use_pickle false): torch reads
    them with frombuffer, never unpickles them, and their first byte is any float's (0x80 included)."""
    raw = set()
    for member, content in members.items():
        if not member.endswith("_config.json"):
            continue
        try:
            config = json.loads(content).get("config", {})
        except (ValueError, AttributeError):
            continue  # _check_member refuses it
        for entry in config.values() if isinstance(config, dict) else ():
            if isinstance(entry, dict) and entry.get("use_pickle") is False and isinstance(entry.get("path_name"), str):
                raw.add(f"{member.rsplit('/', 1)[0]}/{entry['path_name']}" if "/" in member else entry["path_name"])
    return raw


def _refuse(name: str, member: str, why: str) -> SentimentError:
    return SentimentError(f"{name}: archive member {member} {why}: refused to load it (loading it could run code); "
                          "use a file written by `sentiment export`")


def _check_member(member: str, content: bytes, name: str, raw: bool = False) -> None:
    if raw:  # raw tensor bytes, read with frombuffer: nothing in them is ever run
        return
    if member.endswith(".pkl") or content[:1] == b"\x80":
        raise _refuse(name, member, "is a pickle")
    if content[:2] == b"PK":  # a torch.save archive (sample inputs, pickled tensors): tensors only
        _check_weights_only(content, member, name)
    elif member.endswith(".json"):
        try:
            tree = json.loads(content)
        except ValueError:
            raise _refuse(name, member, "is not JSON") from None
        if member.endswith("_config.json"):
            _check_payload_config(tree, member, name)
        else:
            _check_program(tree, member, name)


def _check_weights_only(content: bytes, member: str, name: str) -> None:
    import pickle

    import torch

    try:
        torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _refuse(name, member, "refers to Python code, not only tensors") from None
    except Exception as e:  # corrupt: torch.export.load would fail on it too, or fall back to plain unpickling
        raise _refuse(name, member, f"does not load as tensors ({str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__})") from None


def _check_payload_config(tree: Any, member: str, name: str) -> None:
    """Weights and constants: plain tensors (a custom or opaque object is unpickled by plain pickle)."""
    config = tree.get("config", {}) if isinstance(tree, dict) else None
    if not isinstance(config, dict):
        raise _refuse(name, member, "is not a payload table")
    for entry in config.values():
        if isinstance(entry, dict) and entry.get("use_pickle") is not False:  # torch would unpickle it
            raise _refuse(name, member, "lists a payload torch would unpickle (use_pickle)")
        path = entry.get("path_name", "") if isinstance(entry, dict) else ""
        if not isinstance(path, str) or not (path.startswith("weight_") or path.startswith("tensor_")):
            raise _refuse(name, member, f"lists a payload that is not a tensor ({str(path)[:60]!r})")


def _check_program(tree: Any, member: str, name: str) -> None:
    """The graph's JSON: node targets, shape expressions and guards inside what `sentiment export` writes."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "target" and isinstance(value, str):
                    if not (value.startswith(_TARGET_PREFIXES) or value in _OPERATOR_TARGETS):
                        raise _refuse(name, member, f"calls {value[:80]!r}")
                elif key == "expr_str" and isinstance(value, str):
                    _check_expression(value, _shape_node, member, name)
                elif key == "guards_code":
                    for guard in value if isinstance(value, list) else [value]:
                        _check_expression(guard if isinstance(guard, str) else "", _guard_node, member, name)
                else:
                    stack.append(value)
        elif isinstance(node, str) and "\r" in node:  # a carriage return ends a line of generated code
            raise _refuse(name, member, "holds a carriage return")


def _check_expression(text: str, allowed: Any, member: str, name: str) -> None:
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise _refuse(name, member, f"holds an expression that is not Python ({text[:80]!r})") from None
    for node in ast.walk(tree):
        if not allowed(node):
            raise _refuse(name, member, f"holds an expression outside shape arithmetic ({text[:80]!r})")


def _common_node(node: ast.AST) -> bool:
    return isinstance(node, (ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Not,
                             ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.Tuple, *_BINARY_OPS, *_COMPARE_OPS))


def _shape_node(node: ast.AST) -> bool:
    """sympy.sympify's input as srepr writes it: Mul(Integer(16), Symbol('s27', positive=True, integer=True))."""
    if _common_node(node):
        return True
    if isinstance(node, ast.Call):  # only sympy's classes; arguments are checked node by node
        return isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
    if isinstance(node, ast.keyword):
        return node.arg is not None and _IDENTIFIER.match(node.arg) is not None and "__" not in node.arg
    if isinstance(node, ast.Name):
        return node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES or (
            _IDENTIFIER.match(node.id) is not None and "__" not in node.id)
    if isinstance(node, ast.Constant):  # a string is parsed again by sympify: a symbol's name or a number only
        value = node.value
        if isinstance(value, str):
            return (_IDENTIFIER.match(value) is not None and "__" not in value) or _NUMBER.match(value) is not None
        return isinstance(value, (bool, int, float)) or value is None
    return False


def _guard_node(node: ast.AST) -> bool:
    """exec()'d by the loader: L['ids'].size()[0] == L['lengths'].size()[0] and the like."""
    if _common_node(node):
        return True
    if isinstance(node, ast.Name):
        return node.id == "L"
    if isinstance(node, ast.Subscript):
        return True  # its value and index are nodes, checked on their own
    if isinstance(node, ast.Attribute):
        return node.attr in _GUARD_METHODS
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Attribute) and node.func.attr in _GUARD_METHODS and not node.keywords
    if isinstance(node, ast.Constant):
        value = node.value
        return isinstance(value, (bool, int)) or (isinstance(value, str) and _IDENTIFIER.match(value) is not None)
    return False
