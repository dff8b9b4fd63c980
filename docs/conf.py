"""Sphinx configuration: ``nox -s docs`` builds the documentation with -W -n
(every warning is an error, every reference to trioudp must resolve)."""

from __future__ import annotations

import importlib.util

import trioudp

project = "trioudp"
author = "The trioudp developers"
copyright = "2026, the trioudp developers"
release = trioudp.__version__
version = release

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "bench/*.json"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
# References to trioudp's public names must resolve; those to Python's,
# trio's and typing's would need intersphinx (a network fetch at build time),
# and those into private modules (base classes, internal types in signatures)
# have no page by design.
nitpick_ignore_regex = [(r"py:.*", r"(?!trioudp\b).*"), (r"py:.*", r"trioudp\._.*")]

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"trioudp {release}"
