"""Run by the mkdocs-gen-files plugin during ``mkdocs build``: every generated page of the site.

The work is done in :mod:`atlas.site.build`; nothing generated is written to the working tree.
"""

import mkdocs_gen_files

from atlas.site.build import generate

generate(mkdocs_gen_files.open, mkdocs_gen_files.config.docs_dir, mkdocs_gen_files.config)
