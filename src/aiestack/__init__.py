"""aiestack: the AI-engineering stack as one Python package and one server."""

__version__ = "0.1.0"
