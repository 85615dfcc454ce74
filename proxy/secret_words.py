"""What counts as secret in the text the proxy writes down: wire traces (``proxy.trace.redact``)
and log lines (``proxy.logs``) redact by these lists, so a new secret-carrying table, column or
module RPC is added here once. Plain data, no I/O; the matching rules are in those two modules.
"""

from __future__ import annotations

#: Module RPCs whose *arguments* carry a secret: a statement calling one is redacted like a
#: statement on ``aws_credentials`` (its text, the values bound to it, every reply). aws_iam's
#: ``set_user_password(user, password, reset_required)`` carries the console password;
#: aws_acm's ``certificate_import(certificate, private_key, region, options, tags)`` the
#: certificate's private key. aws_ec2's ``key_pair_import(name, public_key, region)`` is *not*
#: here: its only key is the *public* half of an SSH key pair, which AWS itself returns to anyone
#: allowed to describe key pairs and which is meant to be copied to servers; its rows (name,
#: status, message) hold no secret either.
SECRET_ARGUMENT_FUNCTIONS: tuple[str, ...] = ("set_user_password", "certificate_import")

#: Module RPCs whose *results* carry a secret that AWS returns only once: aws_iam's
#: ``access_key_request(user)`` (column ``secretaccesskey``: the new key's secret) and aws_ec2's
#: ``key_pair_request(name, region, ...)`` (column ``privatekey``: the new key pair's private key).
#: Their arguments are names, so their text is recorded; their rows are redacted.
SECRET_RESULT_FUNCTIONS: tuple[str, ...] = ("access_key_request", "key_pair_request")

#: Words of statement texts that make the statement secret (matched case-insensitively, anywhere
#: in the text): the ``aws_credentials`` table and its ``secret_access_key`` column (the user's
#: AWS key pair), the word ``secret`` (aws_secrets_manager's table, whose ``value`` is a secret),
#: ``password`` (``rds.master_user_password``, ``ALTER ROLE ... PASSWORD``, ``set_user_password``)
#: and the ``SECRET_ARGUMENT_FUNCTIONS``.
SECRET_TEXT_WORDS: tuple[str, ...] = ("aws_credentials", "secret_access_key", r"\bsecret\b", "password",
                                      *SECRET_ARGUMENT_FUNCTIONS)

#: Result column names whose values are secrets, normalised (lower case, letters and digits only):
#: a column whose normalised name *contains* one is secret (``secret_access_key`` and
#: ``secretaccesskey``: an AWS secret access key, of ``aws_credentials`` or ``access_key_request``;
#: ``privatekey``: ``key_pair_request``'s private key, a ``private_key`` anywhere;
#: ``password``: ``rds.master_user_password`` and any other password column).
SECRET_COLUMN_WORDS: tuple[str, ...] = ("secretaccesskey", "privatekey", "password")

__all__ = ["SECRET_ARGUMENT_FUNCTIONS", "SECRET_RESULT_FUNCTIONS", "SECRET_TEXT_WORDS", "SECRET_COLUMN_WORDS"]
