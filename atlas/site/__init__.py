"""The generated documentation site: ``mkdocs build`` runs ``site/gen_pages.py``, which calls
:func:`atlas.site.build.generate` to write every page from papers.yaml, the published run records
and the reproductions' sources (see ``atlas.site.data``, ``atlas.site.pages``, ``atlas.site.plots``)."""
