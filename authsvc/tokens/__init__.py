"""Our tokens: issuing (issue.py), verifying (verify.py), the verified-token cache (cache.py)
and the flask-jwt-extended glue (flask.py)."""
