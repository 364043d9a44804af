"""The package layout: each folder one concern, no import cycle between them, no module too long."""
import ast
import os.path as osp
import pkgutil


import mmnorm_plugin

PKG = osp.dirname(mmnorm_plugin.__file__)


def _subpackage_imports():
    """{subpackage: set of other subpackages it imports} (module level and inside functions)."""
    graph = {}
    for info in pkgutil.walk_packages([PKG], 'mmnorm_plugin.'):
        parts = info.name.split('.')
        if len(parts) < 2:
            continue
        path = osp.join(PKG, *parts[1:]) + ('/__init__.py' if info.ispkg else '.py')
        tree = ast.parse(open(path).read())
        package = parts[:-1] if not info.ispkg else parts
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    targets.append('.'.join(base + ([node.module] if node.module else [])))
                elif node.module:
                    targets.append(node.module)
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            for target in targets:
                t = target.split('.')
                if t[0] == 'mmnorm_plugin' and len(t) > 1 and t[1] != parts[1] \
                        and osp.isdir(osp.join(PKG, t[1])):
                    graph.setdefault(parts[1], set()).add(t[1])
    return graph


def test_no_import_cycle_between_subpackages():
    graph = _subpackage_imports()
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                raise AssertionError('import cycle: ' + ' -> '.join(path + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_module_over_700_lines():
    """A module a newcomer can read: none over 700 lines, and nothing named ``functional``
    (which would promise stateless maths) holds more than 350."""
    sizes = {}
    for info in pkgutil.walk_packages([PKG], 'mmnorm_plugin.'):
        parts = info.name.split('.')[1:]
        rel = '/'.join(parts) + ('/__init__.py' if info.ispkg else '.py')
        with open(osp.join(PKG, rel)) as f:
            sizes[rel] = sum(1 for _ in f)
    assert sorted(rel for rel, n in sizes.items() if n > 700) == []
    assert all(n <= 350 for rel, n in sizes.items() if rel.endswith('functional.py'))
