"""Test helpers: a transcript-style driver for the engine and fakes for the doors."""
