"""The answer caches: exact (canonical request hash) and semantic (verified embedding match).

See :mod:`aiestack.cache.stage` for where the cache sits in the request path, and docs/caching.md.
"""
