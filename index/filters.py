"""Catalog filters: a small expression language, parsed with :mod:`ast` and evaluated on numpy arrays.

The text a user types (``--where``, the page's Filter box, the HTTP API) is data, never code: it is
parsed into a tree whose every node is checked against the grammar below, and that tree is evaluated
here on the catalog's columns. Nothing reaches Python's ``eval``, pandas' ``eval`` or any scope.

Grammar (pandas/TOPCAT style)::

    condition  := value | condition (and | or | & | |) condition | (not | ~) condition
    value      := column | literal | value (+ | - | * | /) value | -value
                | value (== | != | < | <= | > | >=) value ...        (comparisons may be chained)
                | value [not] in [literal, ...]
                | function(value)                                    (abs log10 sqrt isnull notnull)
    column     := a catalog column name, bare, or back-quoted (`my column`) when it is not an identifier
    literal    := number | 'text' | "text" | True | False

``&`` and ``|`` bind as loosely as ``and``/``or`` (as in pandas), so ``mag < 20 & z > 0.1`` needs no
parentheses. Missing values compare as false (``!=`` as true); ``isnull(z)`` finds them. Filters are at
most :data:`MAX_LENGTH` characters, :data:`MAX_NODES` terms and :data:`MAX_DEPTH` levels deep.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from galsearch.embedder.errors import GalsearchError

if TYPE_CHECKING:
    import pyarrow as pa

    from galsearch.embedder.collection import Collection

MAX_LENGTH = 10_000  # characters
MAX_NODES = 5_000  # syntax-tree nodes (a list of 1,000 ids is about 1,000)
MAX_DEPTH = 64  # nesting levels
BATCH_ROWS = 2**20  # catalog rows read and evaluated at a time

GRAMMAR = (
    "A filter compares catalog columns with numbers, 'text' or True/False, e.g. "
    "\"mag < 20 and class_name != 'hdf'\", \"0.1 < z < 0.3\", \"class_name in ['ring', 'merger']\", "
    '"notnull(z) & (abs(dec) > 30)"; it combines conditions with and/or/not (or &, |, ~), computes with '
    "+ - * /, calls abs, log10, sqrt, isnull and notnull, and back-quotes column names that are not "
    "identifiers (`my column`)."
)

_ARITHMETIC: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARISONS: dict[type, Callable] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_NUMERIC_FUNCTIONS: dict[str, Callable] = {"abs": np.abs, "log10": np.log10, "sqrt": np.sqrt}
FUNCTIONS = (*_NUMERIC_FUNCTIONS, "isnull", "notnull")
_REFUSED = {  # what a user will recognise, for constructs outside the grammar
    ast.Attribute: "attribute access",
    ast.Subscript: "a subscript",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.JoinedStr: "an f-string",
    ast.NamedExpr: "an assignment (:=)",
    ast.IfExp: "an if/else expression",
    ast.Starred: "* unpacking",
    ast.Dict: "a dictionary",
    ast.Is: "'is' (compare with == or use isnull)",
    ast.IsNot: "'is not' (compare with != or use notnull)",
}


class FilterError(GalsearchError):
    """A filter that is not in the grammar, names an unknown column or does not give true/false per row."""


@dataclass(frozen=True)
class Filter:
    """A parsed, checked filter: its text, its syntax tree and the catalog columns it reads."""

    text: str
    tree: ast.Expression
    columns: frozenset[str]
    names: Mapping[str, str]  # identifier in the tree -> catalog column (back-quoted names differ)

    def mask(self, values: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Which of ``n`` rows satisfy the filter, given the values of :attr:`columns` (see
        :func:`column_values`)."""
        with np.errstate(all="ignore"):  # log10(0), x / 0 ... follow IEEE rules: -inf, inf, nan
            result = _Evaluator(self, values).value(self.tree.body)
        if _kind(result) != "bool":
            raise self.error(f"it gives {_describe(result)} per galaxy, not true/false")
        return np.broadcast_to(np.asarray(result, dtype=bool), (n,))

    def error(self, problem: str) -> FilterError:
        """A FilterError that quotes the filter, says what is wrong and shows the grammar."""
        return _error(self.text, problem)


def parse_filter(text: str, columns: Iterable[str]) -> Filter:
    """Parse and check ``text`` against the grammar and the catalog ``columns``; FilterError if it fails."""
    columns = [str(c) for c in columns]
    if len(text) > MAX_LENGTH:
        problem = f"it is {len(text):,} characters long; the limit is {MAX_LENGTH:,}"
        raise _error(f"{text[:40]}...", problem, columns)
    if "@" in _outside_strings(text):
        problem = "'@' (a variable of the caller's, in pandas) is not part of the filter language"
        raise _error(text, problem, columns)
    source, quoted = _python_source(text, columns)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise _error(text, f"it is not a valid expression ({exc.msg})", columns) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise _error(text, f"it cannot be parsed ({type(exc).__name__}: {exc})", columns) from None
    names = _check(text, tree, columns, quoted)
    return Filter(text, tree, frozenset(names.values()), names)


@dataclass(frozen=True)
class TextCodes:
    """A text column as codes into its distinct values (-1: missing), so that a comparison or list
    lookup is made once per distinct value rather than once per galaxy."""

    codes: np.ndarray
    distinct: np.ndarray  # objects

    def spread(self, per_value: np.ndarray, missing: bool) -> np.ndarray:
        """Per galaxy, the answer ``per_value`` gives for its value (``missing`` where it has none)."""
        return np.append(np.asarray(per_value, dtype=bool), missing)[self.codes]

    def objects(self) -> np.ndarray:
        """Per galaxy, its text (None where missing)."""
        return np.append(self.distinct, None)[self.codes]


def column_values(column: pd.Series) -> np.ndarray | TextCodes:
    """A catalog column as the evaluator takes it: float (NaN for missing), bool, or text codes."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.fillna(False).to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(column.dtype, pd.CategoricalDtype):  # as a collection's text columns are read
        return TextCodes(column.cat.codes.to_numpy(), np.asarray(column.cat.categories, dtype=object))
    codes, distinct = pd.factorize(column)
    return TextCodes(codes, np.asarray(distinct, dtype=object))


def arrow_values(array: pa.Array) -> np.ndarray | TextCodes:
    """An Arrow column as :func:`column_values` gives it from the column in pandas: dictionary-encoded
    text as text codes, numbers as float (NaN for missing), bool without missing values as bool."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind) and kind.value_type in (pa.string(), pa.large_string()):
        codes = array.indices.fill_null(-1) if array.null_count else array.indices
        return TextCodes(codes.to_numpy(), np.asarray(array.dictionary.to_pylist(), dtype=object))
    if pa.types.is_boolean(kind) and not array.null_count:
        return array.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        numbers = pc.cast(array, pa.float64())
        return (numbers.fill_null(np.nan) if numbers.null_count else numbers).to_numpy()
    return column_values(array.to_pandas())


def filter_rows(catalog: pd.DataFrame | Collection, where: str) -> np.ndarray:
    """Sorted catalog rows satisfying the filter ``where`` (see the module's grammar).

    Of a collection, only the columns that the filter names are read, :data:`BATCH_ROWS` rows at a time.
    """
    parsed = parse_filter(where, catalog.columns)
    names = sorted(parsed.columns)
    if isinstance(catalog, pd.DataFrame):
        rows = np.flatnonzero(
            parsed.mask({name: column_values(catalog[name]) for name in names}, len(catalog))
        )
    else:
        rows = _collection_rows(parsed, catalog)
    if not len(rows):
        raise FilterError(f"no galaxy satisfies the filter {where!r}")
    return rows


def _collection_rows(parsed: Filter, collection: Collection) -> np.ndarray:
    """Rows of a collection satisfying ``parsed``, read from its catalog files and evaluated a batch at a
    time (whole columns of millions of rows would cost more to allocate than to evaluate)."""
    names = sorted(parsed.columns)
    if not names:
        return np.flatnonzero(parsed.mask({}, len(collection)))
    rows, first = [np.empty(0, dtype=np.int64)], 0
    for batch in collection.catalog_batches(names, BATCH_ROWS):
        values = {name: arrow_values(batch.column(name)) for name in names}
        rows.append(np.flatnonzero(parsed.mask(values, batch.num_rows)) + first)
        first += batch.num_rows
    return np.concatenate(rows)


# ---- parsing ---------------------------------------------------------------------------------------


def _error(text: str, problem: str, columns: Iterable[str] | None = None) -> FilterError:
    shown = text if len(text) <= 200 else text[:200] + "..."
    listed = f" The catalog columns are: {', '.join(columns)}." if columns is not None else ""
    return FilterError(f"cannot filter with {shown!r}: {problem}. {GRAMMAR}{listed}")


def _scan(text: str) -> Iterable[tuple[str, bool]]:
    """The characters of ``text`` with whether each lies inside a quoted string ('...' or "...")."""
    quote, escaped = None, False
    for char in text:
        if quote is None:
            if char in "'\"":
                quote = char
            yield char, quote is not None
        else:
            yield char, True
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None


def _outside_strings(text: str) -> str:
    return "".join(char for char, quoted in _scan(text) if not quoted)


def _python_source(text: str, columns: list[str]) -> tuple[str, dict[str, str]]:
    """``text`` as one line of Python source: `back-quoted` names become identifiers (returned with their
    column names), and ``&``/``|`` become ``and``/``or`` so that they bind as loosely as in pandas."""
    prefix = "_q"
    while prefix in text:
        prefix += "_"
    out: list[str] = []
    quoted: dict[str, str] = {}
    name: list[str] | None = None
    for char, in_string in _scan(text):
        if name is not None:
            if char == "`":
                identifier = f"{prefix}{len(quoted)}"
                quoted[identifier] = "".join(name)
                out.append(f" {identifier} ")
                name = None
            else:
                name.append(char)
        elif in_string:
            out.append(char)
        elif char == "`":
            name = []
        else:
            out.append({"&": " and ", "|": " or ", "\n": " ", "\r": " ", "\t": " "}.get(char, char))
    if name is not None:
        raise _error(text, "a back-quoted column name is not closed with `", columns)
    return "".join(out).strip(), quoted


def _check(text: str, tree: ast.Expression, columns: list[str], quoted: dict[str, str]) -> dict[str, str]:
    """Check every node of ``tree`` against the grammar (iteratively: no recursion limit to hit);
    returns the identifiers used, mapped to catalog columns."""
    known = set(columns)
    names: dict[str, str] = {}
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            limit = f"{MAX_NODES:,} terms" if count > MAX_NODES else f"{MAX_DEPTH} levels of nesting"
            raise _error(text, f"it is too large (more than {limit})", columns)
        problem = _problem(node)
        if problem is not None:
            raise _error(text, _restore(problem, quoted), columns)
        if isinstance(node, ast.Name):
            column = quoted.get(node.id, node.id)
            if column not in known:
                shown = f"`{column}`" if node.id in quoted else repr(column)
                raise _error(text, f"{shown} is not a catalog column", columns)
            names[node.id] = column
        stack.extend((child, depth + 1) for child in _operands(node))
    return names


def _operands(node: ast.AST) -> list[ast.AST]:
    """The sub-expressions of an allowed node (a literal list after 'in' contributes its elements)."""
    if isinstance(node, ast.Call):
        return [node.args[0]]
    if isinstance(node, ast.Compare):
        operands = [node.left]
        for op, right in zip(node.ops, node.comparators, strict=True):
            operands += right.elts if isinstance(op, ast.In | ast.NotIn) else [right]
        return operands
    return [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]


def _problem(node: ast.AST) -> str | None:
    """Why ``node`` is outside the grammar, naming the offending token; None when it is allowed."""
    if isinstance(node, ast.Name | ast.BoolOp):
        return None
    if isinstance(node, ast.Constant):
        return _literal_problem(node.value)
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not | ast.Invert | ast.USub | ast.UAdd):
            return None
        return "unknown unary operator"
    if isinstance(node, ast.BinOp):
        if type(node.op) in _ARITHMETIC:
            return None
        return f"the operator {_operator_text(node)!r} is not allowed (only + - * /)"
    if isinstance(node, ast.Compare):
        for op, right in zip(node.ops, node.comparators, strict=True):
            if type(op) in _REFUSED:
                return f"{_snippet(node)!r} uses {_REFUSED[type(op)]}, which filters do not have"
            if isinstance(op, ast.In | ast.NotIn) and not _is_literal_list(right):
                return f"'in' takes a list of literals such as ['ring', 'merger'], not {_snippet(right)}"
        return None
    if isinstance(node, ast.Call):
        function = node.func.id if isinstance(node.func, ast.Name) else None
        if function not in FUNCTIONS:
            return f"calling {_snippet(node.func)} is not allowed (functions: {', '.join(FUNCTIONS)})"
        if len(node.args) != 1 or node.keywords:
            return f"{function}() takes exactly one argument"
        return None
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return f"a list is only allowed after 'in', not in {_snippet(node)}"
    what = _REFUSED.get(type(node), f"a Python {type(node).__name__} expression")
    return f"{_snippet(node)!r} uses {what}, which filters do not have"


def _literal_problem(value: Any) -> str | None:
    if value is None:
        return "None is not a value here (find missing values with isnull(column))"
    if isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return "a number is too large"
        return None
    if isinstance(value, float):
        return None
    return f"the literal {value!r:.40} is not a number, text or True/False"


def _is_literal_list(node: ast.AST) -> bool:
    if not isinstance(node, ast.List | ast.Tuple | ast.Set):
        return False
    return all(
        isinstance(e, ast.Constant)
        or (isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub) and isinstance(e.operand, ast.Constant))
        for e in node.elts
    )


def _operator_text(node: ast.BinOp) -> str:
    symbols = {ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<"}
    symbols |= {ast.RShift: ">>", ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|"}
    return symbols.get(type(node.op), type(node.op).__name__)


def _snippet(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


def _restore(message: str, quoted: dict[str, str]) -> str:
    """Put back-quoted names back into a message made from the rewritten source (longest first: _q1
    is part of _q10)."""
    for identifier in sorted(quoted, key=len, reverse=True):
        message = message.replace(identifier, f"`{quoted[identifier]}`")
    return message


# ---- evaluation ------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """'bool', 'number' or 'text' for an evaluated array or scalar."""
    if isinstance(value, TextCodes):
        return "text"
    if isinstance(value, np.ndarray):
        return {"b": "bool", "O": "text"}.get(value.dtype.kind, "number")
    if isinstance(value, bool | np.bool_):
        return "bool"
    return "text" if isinstance(value, str) else "number"


def _describe(value: Any) -> str:
    return {"bool": "true/false", "number": "a number", "text": "text"}[_kind(value)]


class _Evaluator:
    """Evaluates a checked tree on column arrays; raises the filter's error for mismatched types."""

    def __init__(self, parsed: Filter, values: Mapping[str, np.ndarray]):
        self.parsed = parsed
        self.values = values

    def fail(self, node: ast.AST, problem: str) -> FilterError:
        quoted = {k: v for k, v in self.parsed.names.items() if k != v}
        return self.parsed.error(_restore(f"in {_snippet(node)}: {problem}", quoted))

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return self.values[self.parsed.names[node.id]]
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, bool | str) else float(node.value)
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v, node) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return combine.reduce(np.broadcast_arrays(*parts)) if len(parts) > 1 else parts[0]
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not | ast.Invert):
                return np.logical_not(self.condition(node.operand, node))
            number = self.number(node.operand, node)
            return -number if isinstance(node.op, ast.USub) else number
        if isinstance(node, ast.BinOp):
            return _ARITHMETIC[type(node.op)](self.number(node.left, node), self.number(node.right, node))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        return self.call(node)

    def condition(self, node: ast.AST, parent: ast.AST) -> Any:
        result = self.value(node)
        if _kind(result) != "bool":
            raise self.fail(parent, f"{_snippet(node)} is {_describe(result)}, not a true/false condition")
        return result

    def number(self, node: ast.AST, parent: ast.AST) -> Any:
        result = self.value(node)
        if _kind(result) != "number":
            raise self.fail(parent, f"{_snippet(node)} is {_describe(result)}, not a number")
        return result

    def compare(self, node: ast.Compare) -> Any:
        result: Any = True
        left = self.value(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                found = self.member(node, left, right_node)
                part = np.logical_not(found) if isinstance(op, ast.NotIn) else found
            else:
                right = self.value(right_node)
                part = self.ordered(node, op, left, right)
                left = right
            result = np.logical_and(result, part)
        return result

    def ordered(self, node: ast.Compare, op: ast.cmpop, left: Any, right: Any) -> Any:
        kinds = {_kind(left), _kind(right)}
        if len(kinds) > 1 and kinds != {"bool", "number"}:
            raise self.fail(node, f"cannot compare {_describe(left)} with {_describe(right)}")
        compare = _COMPARISONS[type(op)]
        if isinstance(left, TextCodes) and isinstance(right, str):  # once per distinct value
            return left.spread(self.ordered(node, op, left.distinct, right), isinstance(op, ast.NotEq))
        if isinstance(right, TextCodes) and isinstance(left, str):
            return right.spread(self.ordered(node, op, left, right.distinct), isinstance(op, ast.NotEq))
        left, right = (v.objects() if isinstance(v, TextCodes) else v for v in (left, right))
        if kinds != {"text"} or isinstance(op, ast.Eq | ast.NotEq):
            return compare(left, right)
        left, right = np.broadcast_arrays(np.asarray(left, dtype=object), np.asarray(right, dtype=object))
        present = pd.notna(left) & pd.notna(right)  # missing text is neither before nor after anything
        result = np.zeros(left.shape, dtype=bool)
        result[present] = compare(left[present], right[present]).astype(bool)
        return result

    def member(self, node: ast.Compare, left: Any, listed: ast.List | ast.Tuple | ast.Set) -> Any:
        options = [self.value(element) for element in listed.elts]
        if any(_kind(o) != _kind(left) and {_kind(o), _kind(left)} != {"bool", "number"} for o in options):
            raise self.fail(node, f"the list holds values of another type than {_describe(left)}")
        if isinstance(left, TextCodes):  # once per distinct value
            return left.spread(self.member(node, left.distinct, listed), False)
        if _kind(left) == "text":  # a hash lookup: numpy's isin sorts, which text with None cannot
            found = pd.Index(np.atleast_1d(left), dtype=object).isin(options)
            return found.reshape(np.shape(left))
        return np.isin(left, np.asarray(options, dtype=float))

    def call(self, node: ast.Call) -> Any:
        function, argument = node.func.id, self.value(node.args[0])
        if function in ("isnull", "notnull"):
            if isinstance(argument, TextCodes):
                missing = argument.codes < 0
            elif _kind(argument) != "bool":
                missing = pd.isna(argument)
            else:
                missing = np.zeros(np.shape(argument), bool)
            return np.logical_not(missing) if function == "notnull" else np.asarray(missing)
        if _kind(argument) != "number":
            raise self.fail(node, f"{function}() takes a number, not {_describe(argument)}")
        return _NUMERIC_FUNCTIONS[function](argument)
