"""Config validation: every ``norm_cfg`` checked with the config path and the fix
(:mod:`.norm_cfg`)."""
