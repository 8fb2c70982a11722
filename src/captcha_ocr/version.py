"""The package version, on the lowest floor: modules import it from here, not from the
package itself, whose ``__init__`` imports the reader (that would be a circle)."""

__version__ = "0.1.0"
