"""anyio byte-stream helpers under upstream Jumpstarter's module names, for drivers and clients written for it."""
