# Imported while the config is parsed: registers CBN/MABN/BGN/BKN/CenConv2d and the XBN
# backbones, and makes Runner checkpoints loadable under torch's weights-only unpickler.
custom_imports = dict(imports=['mmnorm_plugin'], allow_failed_imports=False)
