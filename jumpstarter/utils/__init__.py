"""Helpers under upstream Jumpstarter's names (``jumpstarter.utils.env``)."""
