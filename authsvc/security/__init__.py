"""Secrets and the rules around them: passwords, usernames, signing keys, throttling."""
