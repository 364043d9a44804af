"""Checkpoint safety: weights-only loading one load at a time (:mod:`.loading`), old-format
objects rebuilt from validated data (:mod:`.legacy_objects`), saved config text read as
literals (:mod:`.config_text`), atomic writes, checksums and the resume walk-back
(:mod:`.safety`), training-only keys (:mod:`.keys`). See docs/checkpoint_safety.md."""
