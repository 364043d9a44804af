"""One look for the study plots: every arm distinguishable, the shipped defaults on top.

An arm named ``'<method>'`` is the method as shipped; ``'<method> (<change>)'`` or
``'<method>, <change>'`` is a variant of it (``'CBN (official grad)'``,
``'CBN-1, official running stats'``). A method and its variants share a colour and a marker, so
they read as one family; a default is drawn solid, filled and above everything else, each
variant with its own dash pattern (bars: hatch), hollow markers and below. Colour alone never
has to tell two arms apart.
"""
from typing import Dict, List, Sequence

__all__ = ['base_method', 'arm_styles']

MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*', 'h', '<', '>', 'p')
VARIANT_LINESTYLES = ('--', ':', '-.', (0, (5, 1, 1, 1)))
VARIANT_HATCHES = ('//', '..', 'xx', '\\\\')
DEFAULT_ZORDER, VARIANT_ZORDER = 3, 2


def base_method(name: str) -> str:
    """``'CBN (official grad)'`` -> ``'CBN'``; ``'CBN-1, official stats'`` -> ``'CBN-1'``."""
    cuts = [i for i in (name.find(' ('), name.find(',')) if i > 0]
    return name[:min(cuts)] if cuts else name


def arm_styles(names: Sequence[str]) -> Dict[str, Dict]:
    """name -> ``color``, ``marker``, ``linestyle``, ``hatch`` (None for a default),
    ``filled``, ``zorder`` and ``default`` (True for the method as shipped)."""
    import matplotlib
    bases: List[str] = list(dict.fromkeys(base_method(n) for n in names))
    palette = matplotlib.colormaps['tab10' if len(bases) <= 10 else 'tab20'].colors
    variants_seen: Dict[str, int] = {}
    styles = {}
    for name in names:
        base = base_method(name)
        i = bases.index(base)
        style = dict(color=palette[i % len(palette)], marker=MARKERS[i % len(MARKERS)])
        if name == base:
            style.update(linestyle='-', hatch=None, filled=True, zorder=DEFAULT_ZORDER,
                         default=True)
        else:
            k = variants_seen.get(base, 0)
            variants_seen[base] = k + 1
            style.update(linestyle=VARIANT_LINESTYLES[k % len(VARIANT_LINESTYLES)],
                         hatch=VARIANT_HATCHES[k % len(VARIANT_HATCHES)], filled=False,
                         zorder=VARIANT_ZORDER, default=False)
        styles[name] = style
    return styles
