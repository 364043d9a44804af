"""Write or check the generated blocks of the docs (``<!-- evidence:NAME -->``).

    python tools/analysis/docs_blocks.py            # rewrite every block from its records
    python tools/analysis/docs_blocks.py --check    # list blocks that differ, exit 1 if any

Pages: README.md, CONTRIBUTING.md, docs/*.md and configs/*/README.md. See
mmnorm_plugin.analysis.docs_blocks.
"""
import argparse
import glob
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmnorm_plugin.analysis.docs_blocks import check_file, update_file  # noqa: E402


def pages(root: str = ROOT):
    """Every page that may hold generated blocks."""
    return ([osp.join(root, 'README.md'), osp.join(root, 'CONTRIBUTING.md')]
            + sorted(glob.glob(osp.join(root, 'docs', '*.md')))
            + sorted(glob.glob(osp.join(root, 'configs', '*', 'README.md'))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true', help='only list what differs')
    args = parser.parse_args(argv)
    if args.check:
        problems = [p for page in pages() for p in check_file(page, ROOT)]
        print('\n'.join(problems) or 'every generated block is what its records give')
        return 1 if problems else 0
    changed = [page for page in pages() if update_file(page, ROOT)]
    print('rewritten: ' + (', '.join(osp.relpath(p, ROOT) for p in changed) or 'nothing'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
