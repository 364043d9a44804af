"""Deprecated import paths kept for users and configs (each module re-exports its new home)."""
