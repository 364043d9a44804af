"""Analysis functions (used by tools/analysis/)."""
