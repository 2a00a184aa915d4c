"""Storage: the interface every store provides, and the filesystem store."""
