"""The portal plus django-rest-knox and DRF token views, for side-by-side benchmarks only."""
