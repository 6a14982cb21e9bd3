"""The messages' text and HTML, from Jinja2 templates: ``<name>.subject.txt``, ``<name>.txt``
and ``<name>.html`` in ``authsvc/mail/templates``, each overridable by a file of the same name
in ``AUTHSVC_MAIL_TEMPLATES``."""

from __future__ import annotations

import uuid
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

BUILT_IN = Path(__file__).resolve().parent / "templates"
TEMPLATES = (
    "verify_email",
    "reset_password",
    "change_email",
    "password_changed",
    "email_changed",
    "mfa_changed",
    "recovery_code_used",
)


class MailRenderer:
    def __init__(self, mail_from: str, overrides: str | None) -> None:
        loaders = [FileSystemLoader(overrides)] if overrides else []
        loaders.append(FileSystemLoader(str(BUILT_IN)))
        self._environment = Environment(
            loader=ChoiceLoader(loaders),
            # The HTML part escapes every value (a username is user input); the text parts
            # are plain text and stay as they are.
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.mail_from = mail_from

    def render(
        self,
        template: str,
        recipient: str,
        context: dict[str, Any],
        message_id: uuid.UUID | None = None,
    ) -> EmailMessage:
        """The message; ``message_id`` (the outbox row's) makes its Message-ID the same on every
        attempt, so a copy that a retry sends again is recognisably the same message."""
        if template not in TEMPLATES:  # a request row is never rendered
            raise ValueError(f"no mail template {template!r}")
        environment = self._environment
        subject = environment.get_template(f"{template}.subject.txt").render(context)
        message = EmailMessage()
        message["Subject"] = " ".join(subject.split())
        message["From"] = self.mail_from
        message["To"] = Address(addr_spec=recipient)
        message["Date"] = formatdate(localtime=False)
        domain = self.mail_from.rpartition("@")[2].strip("> ")
        message["Message-ID"] = (
            f"<{message_id}@{domain}>" if message_id else make_msgid(domain=domain)
        )
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(environment.get_template(f"{template}.txt").render(context))
        message.add_alternative(
            environment.get_template(f"{template}.html").render(context), subtype="html"
        )
        return message
