"""Test-time compute on routes: ``[routes.NAME.sampling]`` (best-of-N, self-consistency). See docs/routes.md."""
