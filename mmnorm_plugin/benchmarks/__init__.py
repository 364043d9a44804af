"""Measurement harnesses behind tools/benchmarks and the GPU check: per-layer timings against BN
(:mod:`.layer_benchmark`), detector iterations (:mod:`.detector_benchmark`), host-sync counting
(:mod:`.sync_count`)."""
