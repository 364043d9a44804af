"""The user pages hold together: every relative link and ``#anchor`` of README.md, CONTRIBUTING.md,
docs/*.md and configs/*/README.md resolves (the file exists; the anchor is a heading of the
target, slugged as GitHub slugs it), every ``make`` target and repository path named in a shell
block exists, and every ```py block compiles with imports that exist. Together with
tests/test_tools/test_readme_snippets.py (every ```python block builds) and
tests/test_tools/test_your_own_config.py (example files shown verbatim), no block of the docs is
unchecked. Pages moved or headings renamed without updating their links fail here."""
import ast
import glob
import importlib
import os.path as osp
import re
import unicodedata

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = sorted([osp.join(ROOT, 'README.md'), osp.join(ROOT, 'CONTRIBUTING.md')] +
               glob.glob(osp.join(ROOT, 'docs', '*.md')) +
               glob.glob(osp.join(ROOT, 'configs', '*', 'README.md')))
IDS = [osp.relpath(p, ROOT) for p in PAGES]
FENCE = re.compile(r'^(```+|~~~+)(\w*)[^\n]*\n(.*?)^\1[ \t]*$', re.M | re.S)
LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)')


def _read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def _prose(text):
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    text = FENCE.sub('', text)
    return re.sub(r'(`+)(?:(?!\1).)+?\1', '', text, flags=re.S)


def slug(heading):
    """GitHub's anchor for a heading: lower case, inline markup dropped, every character that is
    not a letter, mark, digit, connector, space or hyphen removed, spaces to hyphens."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip())  # [text](url) -> text
    text = text.lower()
    kept = ''.join(ch for ch in text if ch in ' -' or unicodedata.category(ch)[0] in 'LMN'
                   or unicodedata.category(ch) == 'Pc')
    return kept.replace(' ', '-')


def anchors(path):
    """Every anchor the page defines, duplicates numbered as GitHub numbers them."""
    seen, result = {}, set()
    for line in FENCE.sub('', _read(path)).splitlines():
        match = re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f'{base}-{count}')
    return result


def test_slug_is_githubs():
    assert slug('Compare norms on your own detector: `norm_sweep` (paired seeds, 95 % intervals)'
                ) == 'compare-norms-on-your-own-detector-norm_sweep-paired-seeds-95--intervals'
    assert slug("Synced variants: statistics over every GPU's images") == \
        'synced-variants-statistics-over-every-gpus-images'
    assert slug('Which norm should I use?') == 'which-norm-should-i-use'


def test_pages_are_found():
    names = set(IDS)
    assert {'README.md', 'docs/README.md', 'docs/your_own_config.md', 'docs/distributed.md',
            'docs/which_norm.md', 'configs/cbn/README.md'} <= names


@pytest.mark.parametrize('page', PAGES, ids=IDS)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in LINK.findall(_prose(_read(page))):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition('#')
        resolved = osp.normpath(osp.join(osp.dirname(page), path)) if path else page
        if not osp.exists(resolved):
            broken.append(f'{target}: {osp.relpath(resolved, ROOT)} does not exist')
        elif anchor and resolved.endswith('.md') and anchor not in anchors(resolved):
            broken.append(f'{target}: no heading of {osp.relpath(resolved, ROOT)} has the '
                          f'anchor #{anchor}')
    assert not broken, '\n'.join(broken)


def test_an_unresolved_link_is_caught(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Title\n\n[ok](#title) [bad](#nope) [gone](missing.md) `[code](x.md)`\n')
    with pytest.raises(AssertionError) as failure:
        test_relative_links_and_anchors_resolve(str(page))
    assert '#nope' in str(failure.value) and 'missing.md' in str(failure.value)
    assert 'x.md' not in str(failure.value)


def _make_targets():
    targets = set()
    for line in _read(osp.join(ROOT, 'Makefile')).splitlines():
        match = re.match(r'^([\w.-]+(?:\s+[\w.-]+)*)\s*:(?!=)', line)
        if match and not line.startswith(('\t', '.PHONY')):
            targets.update(match.group(1).split())
    return targets


def _blocks(page, languages):
    return [body for _, lang, body in FENCE.findall(_read(page)) if lang in languages]


@pytest.mark.parametrize('page', PAGES, ids=IDS)
def test_shell_blocks_name_existing_targets_and_paths(page):
    targets, missing = _make_targets(), []
    for block in _blocks(page, ('shell', 'bash', 'sh')):
        for line in block.splitlines():
            words = line.split('#', 1)[0].split()
            for i, word in enumerate(words):
                if word == 'make' and i + 1 < len(words) and not words[i + 1].startswith('-'):
                    if words[i + 1] not in targets:
                        missing.append(f'make target {words[i + 1]!r}')
                path = word.split('=', 1)[-1].strip('\'"')
                if (path.startswith(('tools/', 'configs/')) and
                        not re.search(r'[{}<>*$\[\]]|^configs/<', path) and
                        not osp.exists(osp.join(ROOT, path))):
                    missing.append(path)
    assert not missing, f'{osp.relpath(page, ROOT)} names what does not exist: {missing}'


@pytest.mark.parametrize('page', PAGES, ids=IDS)
def test_py_blocks_compile_and_their_imports_exist(page):
    for block in _blocks(page, ('py',)):
        tree = ast.parse(block)  # a SyntaxError names the line
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f'{node.module}.{alias.name}'
