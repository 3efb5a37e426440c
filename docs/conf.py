"""Sphinx configuration of soopervisor's documentation (built by scripts/docs)."""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import soopervisor

project = "soopervisor"
author = "the soopervisor developers"
copyright = "2026, the soopervisor developers"
version = release = soopervisor.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the example notebooks, executed at build time
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_click",
    "sphinx_copybutton",
    "sphinx_design",
    "soopervisor_docs",  # the references generated from the code, and the link checks
]

exclude_patterns = ["_build", "reference/_generated", "notebooks/.ipynb_checkpoints", "**/.ipynb_checkpoints"]
nitpicky = True
# help texts are also printed in terminals: -- stays two dashes, quotes stay straight
smartquotes = False
# names autodoc meets in signatures that have no page of their own
nitpick_ignore_regex = [
    ("py:class", r"(os\.PathLike|collections\.abc\..*|Callable|Iterable|pathlib\.Path|Path|Any|pandas\..*|datetime\..*)"),
    ("py:class", r"(typing\..*|(.*\.)?(Run|Report|Artifacts|ArtifactFile|Problem|Project|Storage|SetSummary|Comparison|FileChange))"),
    # the executor protocol's names, as annotations spell them (imported for type checking only)
    ("py:class", r"(.*\.)?(Engine|Executor|CollectTo|ContainerSpec|KeepAs|ExecResult|ImageInfo)"),
]

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist", "substitution", "attrs_inline"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# the notebooks run for real (Docker, the example project) when the docs build;
# scripts/docs --no-execute turns it off for a quick look
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = False


html_theme = "pydata_sphinx_theme"
html_title = "soopervisor"
html_static_path = ["_static"]
html_css_files = ["soopervisor.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": []}
html_show_sourcelink = False
html_last_updated_fmt = None
