"""The committed evidence is self-consistent: every table under ``docs/norm_sweep*.md`` is what its
JSON's records give when analysed again, and every ``norm_sweep`` table in the README is one of
those files verbatim. A number edited by hand, or records replaced without regenerating the
tables, fails here (the README's numbers must come from a record in docs/ by a command). The
marker blocks may live in the README or in any page under docs/ (the study pages)."""
import glob
import json
import os.path as osp
import re

import pytest

from mmnorm_plugin.analysis.norm_sweep import analyze, format_report

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
REPORTS = sorted(glob.glob(osp.join(ROOT, 'docs', 'norm_sweep*.json')))


def _markdown(json_path):
    with open(json_path[:-len('.json')] + '.md') as f:
        return f.read().strip()


@pytest.mark.parametrize('json_path', REPORTS, ids=[osp.basename(p) for p in REPORTS])
def test_docs_table_is_what_its_records_give(json_path):
    with open(json_path) as f:
        report = json.load(f)
    saved = report['analysis']
    analysis = analyze(report['records'], saved['baseline'], saved['reference'], saved['metric'],
                       saved.get('versus'))  # older reports predate --versus
    assert format_report(analysis, report['title']).strip() == _markdown(json_path)


def _pages():
    """The README and every page under docs/ except the generated tables themselves."""
    generated = {p[:-len('.json')] + '.md' for p in REPORTS}
    pages = [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))
    return [p for p in pages if p not in generated]


def test_readme_tables_are_docs_tables():
    assert REPORTS, 'no norm_sweep report under docs/'
    tables = {_markdown(p): osp.basename(p) for p in REPORTS}
    blocks = []
    for page in _pages():
        with open(page) as f:
            text = f.read()
        blocks += [(osp.relpath(page, ROOT), section, body) for section, body in re.findall(
            r'<!-- norm_sweep:([\w.-]+) -->\n(.*?)\n<!-- /norm_sweep:\1 -->', text, re.S)]
    assert len(blocks) >= len(REPORTS)
    assert len({section for _, section, _ in blocks}) == len(blocks), 'a section appears twice'
    for page, section, text in blocks:
        assert text.strip() in tables, (
            f'{page} block {section!r} is not any docs/norm_sweep*.md verbatim: regenerate it '
            f'(tools/analysis/norm_sweep_defaults.sh report, make norm-sweep-report)')
