"""A config stored as text in a checkpoint (``meta['cfg']``), read as data and never executed.

mmengine's Runner saves ``cfg.pretty_text`` in every checkpoint. ``Config.fromstring`` would run
that text as Python (and import its ``custom_imports``, read its ``_base_`` files): a checkpoint
holding only strings and tensors could run code in whoever compares configs with it.
:func:`literal_assignments` reads the ``name = value`` statements whose value is a literal in
the form ``pretty_text`` writes (constants, signed numbers, tuples, lists, sets, dicts and
``dict(key=value, ...)`` calls) with :mod:`ast`, evaluating nothing; any other statement is
reported, not run.
"""
import ast
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = ['NotLiteral', 'literal_assignments']

_MAX_TEXT = 16 << 20  # characters; a saved config is a few tens of kB
_MAX_DEPTH = 100
_CONSTANTS = (str, bytes, int, float, complex, bool, type(None))


class NotLiteral(ValueError):
    """A value (or the text) that is not a plain literal; the message says where."""


def _value(node: ast.AST, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise NotLiteral(f'line {getattr(node, "lineno", "?")}: nested deeper than {_MAX_DEPTH}')
    if isinstance(node, ast.Constant) and type(node.value) in _CONSTANTS:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) in (int, float, complex):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_value(item, depth + 1) for item in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(items)
        if isinstance(node, ast.List):
            return items
        try:
            return set(items)
        except TypeError as err:
            raise NotLiteral(f'line {node.lineno}: {err}') from None
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise NotLiteral(f'line {node.lineno}: ** in a dict')
        try:
            return {_value(k, depth + 1): _value(v, depth + 1)
                    for k, v in zip(node.keys, node.values)}
        except TypeError as err:  # an unhashable key
            raise NotLiteral(f'line {node.lineno}: {err}') from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' \
            and not node.args and all(kw.arg is not None for kw in node.keywords):
        return {kw.arg: _value(kw.value, depth + 1) for kw in node.keywords}
    raise NotLiteral(f'line {getattr(node, "lineno", "?")}: {type(node).__name__} is not a '
                     'literal')


def literal_assignments(text: str, names: Optional[Iterable[str]] = None
                        ) -> Tuple[Dict[str, Any], List[str]]:
    """``({name: value}, [problems])`` for the literal ``name = value`` statements of ``text``.

    Args:
        text (str): config text (``Config.pretty_text``). Nothing in it is executed.
        names (iterable of str, optional): evaluate only these names (others are not looked
            at); a named assignment that is not a literal is a problem.

    Returns:
        The values, and one line per statement that was skipped (not a plain literal
        assignment). Raises :class:`NotLiteral` for text that does not parse.
    """
    if type(text) is not str:
        raise NotLiteral(f'a {type(text).__name__}, not text')
    if len(text) > _MAX_TEXT:
        raise NotLiteral(f'{len(text)} characters, more than {_MAX_TEXT}')
    try:
        tree = ast.parse(text, mode='exec')
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise NotLiteral(f'does not parse ({type(err).__name__}: '
                         f'{str(err).splitlines()[0] if str(err) else ""})') from None
    wanted = None if names is None else set(names)
    values: Dict[str, Any] = {}
    problems: List[str] = []
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            if wanted is None:
                problems.append(f'line {stmt.lineno}: {type(stmt).__name__} statement skipped')
            continue
        name = stmt.targets[0].id
        if wanted is not None and name not in wanted:
            continue
        try:
            values[name] = _value(stmt.value, 0)
        except NotLiteral as err:
            values.pop(name, None)  # a later non-literal assignment replaces an earlier value
            problems.append(f'{name}: {err}')
        except RecursionError:
            values.pop(name, None)
            problems.append(f'{name}: nested too deeply')
    return values, problems
