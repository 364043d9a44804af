"""Multi-GPU: mmengine's ``sync_bn`` conversion turned into the plugin's synced variants
(:mod:`.sync_bn`)."""
