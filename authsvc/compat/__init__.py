"""The only place a private API of a dependency is used: each module pinned, tested, and kept
only where bench/README.md shows it is worth it."""
