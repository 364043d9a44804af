"""Checkpoint safety: scoped weights-only loading (:mod:`.loading`), atomic writes, checksums
and the resume walk-back (:mod:`.safety`), training-only keys (:mod:`.keys`)."""
