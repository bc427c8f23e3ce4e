"""The search pipeline, one module per stage, in the order a search runs them.

validate (``request``) → plan (``plan``: the experiment arm's configuration, the candidate depths and
the logged slice; the encoder version is picked by ``searchapp.search``) → retrieve (``retrieve``:
CLIP and the text channels) → fuse (``fuse``) → features and rerank (``rerank``) → cut (inside
retrieval: ``collection.cut`` on the CLIP list) → slices and page (``page``) → log (``response``).

Each stage takes and returns frozen dataclasses; ``searchapp.search.SearchService`` composes them.
"""
