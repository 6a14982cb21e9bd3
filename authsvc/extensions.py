"""Extensions, created unbound here and bound to the app in :func:`authsvc.create_app`."""

from __future__ import annotations

from flask_cors import CORS
from flask_sqlalchemy import SQLAlchemy
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from .schemas import Problem
from .verified_tokens import CachingJWTManager

# Deterministic constraint names, so Alembic migrations can drop or alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Objects stay readable after commit: services commit, then views serialise what they return.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
jwt = CachingJWTManager()
cors = CORS()

# The OpenAPI document is generated from the pydantic models the views validate with; spectree
# only documents (skip_validation=True on each view) because the views validate bodies themselves
# (authsvc.api.body) to give problem+json errors for every malformed input.
openapi = SpecTree(
    "flask",
    title="authsvc",
    version="0.1.0",
    description="A token issuer: signup, login, rotating refresh tokens, JWKS.",
    mode="strict",
    annotations=False,
    # Bad input is a 400 problem (authsvc.api.common.parse_body), never spectree's 422.
    validation_error_status=400,
    validation_error_model=Problem,
    security_schemes=[
        SecurityScheme(
            name="bearer",
            data=SecuritySchemeData(type="http", scheme="bearer", bearer_format="JWT"),
        ),
        SecurityScheme(name="basic", data=SecuritySchemeData(type="http", scheme="basic")),
    ],
)
