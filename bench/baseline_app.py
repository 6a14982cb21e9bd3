"""The do-it-yourself baseline: flask-jwt-extended the tutorial way, for bench/run.py.

HS256 with one secret, one hard-coded user, no database, no revocation, no rotation: /refresh
hands out a new access token and nothing else. Unlike the tutorial, /login verifies an argon2id
hash of the hard-coded password with the same cost as authsvc (AUTHSVC_ARGON2_*), so its login
is comparable; everything else is what a reader of the flask-jwt-extended docs would write.
"""

import os

from argon2 import PasswordHasher
from flask import Flask, jsonify, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    get_jwt_identity,
    jwt_required,
)

hasher = PasswordHasher(
    time_cost=int(os.environ.get("AUTHSVC_ARGON2_TIME_COST", "2")),
    memory_cost=int(os.environ.get("AUTHSVC_ARGON2_MEMORY_KIB", "19456")),
    parallelism=int(os.environ.get("AUTHSVC_ARGON2_PARALLELISM", "1")),
)
USERS = {"alice": hasher.hash(os.environ.get("BASELINE_PASSWORD", "baseline password 1"))}

app = Flask(__name__)
app.config["JWT_SECRET_KEY"] = os.environ.get("BASELINE_SECRET", "baseline-secret-0123456789abcdef")
jwt = JWTManager(app)


@app.post("/login")
def login():
    username, password = request.json.get("username"), request.json.get("password")
    try:
        hasher.verify(USERS[username], password)
    except Exception:
        return jsonify(msg="Bad username or password"), 401
    return jsonify(
        access_token=create_access_token(identity=username),
        refresh_token=create_refresh_token(identity=username),
    )


@app.post("/refresh")
@jwt_required(refresh=True)
def refresh():
    return jsonify(access_token=create_access_token(identity=get_jwt_identity()))


@app.get("/protected")
@jwt_required()
def protected():
    return jsonify(logged_in_as=get_jwt_identity())


@app.get("/healthz")
def healthz():
    return "ok"
