"""Generated blocks in the docs: the numbers a page quotes are written from records, not typed.

A page (the README, a guide under ``docs/``, a method README under ``configs/``) quotes a
result only inside a marked block::

    <!-- evidence:NAME -->
    ...generated text...
    <!-- /evidence:NAME -->

whose text :func:`render` produces from a file under ``docs/`` (a study's report JSON, or
``docs/evidence/published_coco.json`` for the papers' own numbers, marked published).
:func:`update_file` rewrites every block of a page, :func:`check_file` lists the blocks whose
text differs from what the records give now (the test suite runs it on every page), and a
block whose name no generator knows is an error. ``tools/analysis/docs_blocks.py`` is the CLI.

Names: ``demo`` (what ``make demo`` prints, ``docs/evidence/demo.json``), ``published-KEY``
(a table of ``published_coco.json``), ``control-SETTING`` and
``control-sentence-SETTING`` (the plateau and the positive control of
``docs/evidence/SETTING.json``, see :mod:`.norm_sweep.control`), ``control-summary`` (one
sentence over the settings ``docs/evidence/kept_settings.json`` keeps), ``ranking-SETTING`` (that
study's table, :mod:`.norm_sweep.report`), ``cost-SETTING`` (what its runs cost here,
``docs/evidence/SETTING_cost.json``, :mod:`.norm_sweep.cost`).
"""
import json
import os.path as osp
import re
from typing import Dict, List, Tuple

__all__ = ['BLOCK', 'render', 'blocks', 'update_file', 'check_file', 'evidence_path',
           'kept_settings']

BLOCK = re.compile(r'<!-- evidence:([\w.-]+) -->\n(.*?)<!-- /evidence:\1 -->', re.S)


def evidence_path(root: str, setting: str) -> str:
    return osp.join(root, 'docs', 'evidence', f'{setting}.json')


def kept_settings(root: str) -> Dict:
    """``docs/evidence/kept_settings.json``: the proxy settings whose plateau and control the
    docs report (``settings``: the key of each one's records and a short label)."""
    with open(osp.join(root, 'docs', 'evidence', 'kept_settings.json')) as f:
        return json.load(f)


def _report(root: str, setting: str) -> Dict:
    from .norm_sweep.records import load_records
    path = evidence_path(root, setting)
    with open(path) as f:
        report = json.load(f)
    return dict(report, records=load_records(path))


def _published(root: str, key: str) -> str:
    with open(osp.join(root, 'docs', 'evidence', 'published_coco.json')) as f:
        table = json.load(f)['tables'][key]
    digits = table.get('digits', 1)  # as the source printed them (36.80 stays 36.80)
    cells = lambda row: ['–' if v is None else (f'{v:.{digits}f}'  # noqa: E731
                                                 if isinstance(v, float) else str(v))
                         for v in row]
    lines = ['| ' + ' | '.join(table['columns']) + ' |', '|' + '---|' * len(table['columns'])]
    lines += ['| ' + ' | '.join(cells(row)) + ' |' for row in table['rows']]
    lines += ['', f"Published, not reproduced here: {table['source']}."]
    return '\n'.join(lines)


def _control_parts(root: str, setting: str):
    from .norm_sweep.control import plateau, positive_control
    from .norm_sweep.records import arm_key
    report = _report(root, setting)
    reference = report['analysis'].get('reference') or 'BN@8'
    large = arm_key(reference)[1]
    records = report['records']
    batches = sorted({arm_key(r['arm'])[1] for r in records
                      if arm_key(r['arm'])[0] in ('BN', 'GN')} - {large})
    control = positive_control(records, small=batches, large=large)
    return control, plateau(records, [f'BN@{large}', f'GN@{large}']), report


def render(name: str, root: str) -> str:
    """The text of block ``name``, generated from the records under ``root/docs``."""
    from .norm_sweep.control import control_sentence, format_control
    from .norm_sweep.report import analyze, format_report
    kind, _, arg = name.partition('-')
    if name == 'demo':
        from .demo_record import summary
        with open(osp.join(root, 'docs', 'evidence', 'demo.json')) as f:
            return summary(json.load(f))
    if kind == 'published' and arg:
        return _published(root, arg)
    if name == 'control-summary':
        from .norm_sweep.control import control_summary
        return control_summary([(s['label'], *_control_parts(root, s['key'])[:2])
                                for s in kept_settings(root)['settings']])
    if kind == 'control' and arg.startswith('sentence-'):
        control, plateau_, _ = _control_parts(root, arg[len('sentence-'):])
        return control_sentence(control, plateau_)
    if kind == 'control' and arg:
        control, plateau_, _ = _control_parts(root, arg)
        return format_control(control, plateau_)
    if kind == 'cost' and arg:
        from .norm_sweep.cost import format_costs
        with open(osp.join(root, 'docs', 'evidence', f'{arg}_cost.json')) as f:
            saved = json.load(f)
        return format_costs(saved['costs'], saved.get('jobs', 1), saved.get('machine', ''))
    if kind == 'ranking' and arg:
        report = _report(root, arg)
        saved = report['analysis']
        return format_report(analyze(report['records'], saved['baseline'], saved['reference'],
                                     saved['metric'], saved.get('versus'),
                                     saved.get('margin', 0.01)), report.get('title', ''))
    raise KeyError(f'no generator for block {name!r} (demo, published-KEY, control-SETTING, '
                   'control-sentence-SETTING, control-summary, ranking-SETTING, cost-SETTING)')


def blocks(text: str) -> List[Tuple[str, str, Tuple[int, int]]]:
    """``(name, text, span of the text)`` of every generated block in ``text``."""
    return [(m.group(1), m.group(2), m.span(2)) for m in BLOCK.finditer(text)]


def _rewrite(text: str, root: str) -> str:
    out, last = [], 0
    for name, _, (start, end) in blocks(text):
        out += [text[last:start], render(name, root).strip() + '\n']
        last = end
    return ''.join(out) + text[last:]


def update_file(path: str, root: str) -> bool:
    """Rewrite every generated block of ``path``; True if anything changed."""
    with open(path) as f:
        text = f.read()
    new = _rewrite(text, root)
    if new != text:
        with open(path, 'w') as f:
            f.write(new)
    return new != text


def check_file(path: str, root: str) -> List[str]:
    """One line per block of ``path`` whose text is not what the records give."""
    with open(path) as f:
        text = f.read()
    problems = []
    for name, body, _ in blocks(text):
        try:
            want = render(name, root)
        except (KeyError, OSError, ValueError) as err:
            problems.append(f'{path}: block {name}: {err}')
            continue
        if body.strip() != want.strip():
            problems.append(f'{path}: block {name} differs from what its records give '
                            '(python tools/analysis/docs_blocks.py --write)')
    return problems
