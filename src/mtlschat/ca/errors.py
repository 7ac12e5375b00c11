"""Every error the CA library raises: one base class, so callers catch :class:`CAError` once.

Messages are one line, meant to be shown to a person as they are (the CLI prints them verbatim).
"""

from __future__ import annotations


class CAError(Exception):
    """Base class: a user-facing, one-line problem with the PKI or a file given to it."""


class NoCA(CAError):
    """The PKI directory holds no CA yet (``mtlschat ca init`` was never run)."""


class CAExists(CAError):
    """``init`` would overwrite an existing CA and ``force`` was not given."""


class WrongPassphrase(CAError):
    """An encrypted private key could not be decrypted with the passphrase given."""


class PassphraseRequired(WrongPassphrase):
    """An encrypted private key was found but no passphrase was given."""


class BadName(CAError):
    """A username does not satisfy the policy in :mod:`mtlschat.ca.names`."""


class NameTaken(CAError):
    """A valid, unrevoked certificate already carries this name (case-insensitively)."""


class UnknownName(CAError):
    """No (unrevoked) certificate carries this name."""


class OutputExists(CAError):
    """The output file exists and overwriting it was not asked for."""


class BadFile(CAError):
    """A file is missing, unreadable, or not what was expected (e.g. not a certificate)."""


class BundleError(BadFile):
    """A PEM bundle (key + certificate + chain) is missing, unreadable or inconsistent."""


class CSRRefused(CAError):
    """A certificate signing request asks for something the CA will not sign."""


class BadRequest(CAError):
    """An argument is out of range (days, key type, host name, reason ...)."""
