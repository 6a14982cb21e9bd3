"""Mail (DESIGN §9): the outbox sender, its SMTP and console backends, and the templates."""
