"""Command-line interface: thin typer wrappers around the libraries."""
