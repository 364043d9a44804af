"""Every number the docs quote is bound to a record.

A result appears on a page only inside a generated block (``<!-- evidence:NAME -->``, or a
``norm_sweep`` table, tests/test_docs_records.py) whose text must be what the records under
docs/ give now; outside those blocks, no page and no docstring of the package types a result
by hand (an interval, a mean ± spread, an n, an mAP): it links to the table instead. The
papers' own numbers are quoted only on lines that say they are published.
"""
import ast
import glob
import json
import os.path as osp
import re

import pytest

from mmnorm_plugin.analysis import docs_blocks

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = ([osp.join(ROOT, 'README.md'), osp.join(ROOT, 'CONTRIBUTING.md')]
         + sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))
         + sorted(glob.glob(osp.join(ROOT, 'configs', '*', 'README.md'))))
# generated tables themselves (each is its own JSON's rendering, tests/test_docs_records.py)
GENERATED = re.compile(r'docs/norm_sweep[^/]*\.md$')
# what a typed result looks like: an interval, a mean ± spread, a sample size, an mAP value
QUOTED = [re.compile(r'[−+-]?\d+(?:\.\d+)?\s*\[\s*[−+-]?\d+(?:\.\d+)?\s*,\s*'
                     r'[−+-]?\d+(?:\.\d+)?\s*\]'),
          re.compile(r'\d+(?:\.\d+)?\s*±\s*\d'),
          re.compile(r'(?:mAP|AP|accuracy)[^|\n.;:]{0,25}?\b0?\.\d{2,3}\b'),
          re.compile(r'\bn\s*=\s*\d+\b')]
MARKED = re.compile(r'<!-- (evidence|norm_sweep):([\w.-]+) -->.*?<!-- /\1:\2 -->', re.S)


def _quoted(text):
    return [line.strip() for line in text.splitlines()
            if 'published' not in line.lower() and any(p.search(line) for p in QUOTED)]


@pytest.mark.parametrize('page', PAGES, ids=[osp.relpath(p, ROOT) for p in PAGES])
def test_generated_blocks_are_what_the_records_give(page):
    assert docs_blocks.check_file(page, ROOT) == []


@pytest.mark.parametrize('page', [p for p in PAGES if not GENERATED.search(p)],
                         ids=[osp.relpath(p, ROOT) for p in PAGES if not GENERATED.search(p)])
def test_no_page_types_a_result_outside_a_generated_block(page):
    with open(page) as f:
        text = MARKED.sub('', f.read())
    assert _quoted(text) == [], f'{osp.relpath(page, ROOT)}: quote a generated block or link'


def test_no_docstring_or_comment_of_the_package_types_a_result():
    found = []
    for path in sorted(glob.glob(osp.join(ROOT, 'mmnorm_plugin', '**', '*.py'),
                                 recursive=True)):
        with open(path) as f:
            source = f.read()
        texts = [ast.get_docstring(n) or '' for n in ast.walk(ast.parse(source))
                 if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                   ast.AsyncFunctionDef))]
        texts += [line.split('#', 1)[1] for line in source.splitlines() if '#' in line]
        # ``literals`` in a docstring show a format (``41.2 ± 1.3 (n=5)``), not a result
        texts = [re.sub(r'``.*?``', '', t, flags=re.S) for t in texts]
        found += [f'{osp.relpath(path, ROOT)}: {q}' for t in texts for q in _quoted(t)]
    assert found == []


def test_a_hand_edited_block_or_an_unknown_block_fails(tmp_path):
    """The checks themselves: a number changed inside a block, a block no generator knows."""
    page = tmp_path / 'page.md'
    good = docs_blocks.render('published-cbn', ROOT)
    page.write_text(f'x\n<!-- evidence:published-cbn -->\n{good}\n'
                    '<!-- /evidence:published-cbn -->\n')
    assert docs_blocks.check_file(str(page), ROOT) == []
    page.write_text(page.read_text().replace('37.6', '39.6', 1))
    assert 'differs' in docs_blocks.check_file(str(page), ROOT)[0]
    assert docs_blocks.update_file(str(page), ROOT) and \
        docs_blocks.check_file(str(page), ROOT) == []
    page.write_text('<!-- evidence:nonsense -->\n<!-- /evidence:nonsense -->\n')
    assert 'no generator' in docs_blocks.check_file(str(page), ROOT)[0]
    assert _quoted('BN-1 12.4 ± 2.0, paired Δ −2.7 [−7.5, +2.1] (n = 5)')
    assert not _quoted('published: no norm 36.8, CBN 37.6')


def test_every_kept_setting_is_reported_and_the_readme_says_the_outcome():
    """Issue 29's "done when": per kept proxy setting, docs/evidence.md holds its plateau and
    control, its learning curves and its cost; the guide states its control sentence; and the
    README states the control's outcome over all of them in one sentence near the top."""
    settings = docs_blocks.kept_settings(ROOT)['settings']
    assert len(settings) >= 2  # the protocol reports the fine-tune and the scratch setting
    with open(osp.join(ROOT, 'docs', 'evidence.md')) as f:
        evidence = f.read()
    with open(osp.join(ROOT, 'docs', 'which_norm.md')) as f:
        guide = f.read()
    names = lambda text: {name for name, _, _ in docs_blocks.blocks(text)}  # noqa: E731
    for s in settings:
        key = s['key']
        assert {f'control-{key}', f'cost-{key}'} <= names(evidence), key
        assert f'](evidence/{key}_curves.png)' in evidence, key
        assert osp.isfile(osp.join(ROOT, 'docs', 'evidence', f'{key}_curves.png')), key
        assert f'control-sentence-{key}' in names(guide), key
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    top = readme[:readme.index('\n## ')]  # before the first section
    assert 'control-summary' in names(top) and 'control-summary' in names(guide)
    assert all(f"{s['label']}: " in docs_blocks.render('control-summary', ROOT)
               for s in settings)


def test_published_numbers_have_a_source():
    with open(osp.join(ROOT, 'docs', 'evidence', 'published_coco.json')) as f:
        tables = json.load(f)['tables']
    for key, table in tables.items():
        assert table['source'] and all(len(r) == len(table['columns']) for r in table['rows'])


def test_each_evidence_table_is_one_commit_of_a_clean_tree():
    """The protocol's "one table, one commit": a study's records all come from the same code,
    and that code is a commit (no uncommitted diff), taken when each run started."""
    from mmnorm_plugin.analysis.norm_sweep.records import load_records
    reports = [p for p in glob.glob(osp.join(ROOT, 'docs', 'evidence', '*.json'))
               if osp.basename(p) not in ('published_coco.json', 'demo.json',
                                          'kept_settings.json')
               and not p.endswith('_cost.json')]  # costs of a study's runs, not records
    assert reports
    for path in reports:
        records = load_records(path)
        assert {(r['commit'], r['dirty']) for r in records} == {(records[0]['commit'], False)}
        assert all(r.get('started') for r in records), path


def test_each_cost_table_belongs_to_its_study_records():
    """A ``SETTING_cost.json`` is written with ``SETTING.json`` from the same sweep: every run
    it prices is a record of that study, with the same final test time."""
    from mmnorm_plugin.analysis.norm_sweep.records import load_records
    for path in glob.glob(osp.join(ROOT, 'docs', 'evidence', '*_cost.json')):
        with open(path) as f:
            costs = json.load(f)['costs']
        records = {(r['arm'], r['seed']): r
                   for r in load_records(path[:-len('_cost.json')] + '.json')}
        assert costs and all((c['arm'], c['seed']) in records for c in costs), path
        assert all(c['test_seconds'] == records[c['arm'], c['seed']]['test_seconds']
                   for c in costs), path
