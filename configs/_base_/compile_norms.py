# mmengine's `compile` option with the plugin norms: CompileNormsHook taps the convolutions and,
# for CBN and BKN, runs the first training iteration eager, so that torch.compile traces the norms
# instead of breaking the graph around them (mmnorm_plugin/engine/compile_norms.py). A no-op in
# runs without `compile`. Our tools/train.py adds the hook to every config; configs run by
# mmpretrain's or mmseg's own tools inherit this file (after plugin.py). A config that sets its
# own `custom_hooks` replaces this list: add dict(type='CompileNormsHook') to it.
custom_hooks = [dict(type='CompileNormsHook')]
