"""Data sets of the book, one module per source."""
