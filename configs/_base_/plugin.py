# Imported while the config is parsed: registers CBN/MABN/BGN/BKN/CenConv2d and the XBN
# backbones and the runner hooks (it does not change torch.load: our tools scope that).
custom_imports = dict(imports=['mmnorm_plugin'], allow_failed_imports=False)
