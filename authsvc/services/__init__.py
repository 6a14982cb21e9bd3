"""Use cases, one module per area: plain arguments in, domain errors out; each owns its
transaction, and none touches ``request``. Password hashing always happens outside a
transaction, so a database connection (and SQLite's write lock) is never held for the length of
an argon2 run."""
