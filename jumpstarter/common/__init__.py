"""Helpers shared by drivers and their tests, under upstream Jumpstarter's module names."""
