"""mtlschat: a chat room whose only door is a certificate."""

__version__ = "0.1.0"
