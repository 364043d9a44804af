"""Checkpoint converters (used by tools/model_converters/)."""
