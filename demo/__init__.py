"""Demo content, apart from the product: the demo alliance, synthetic studies and consults
that `manage.py seed_demo` loads (demo/loaders.py says which app gets what)."""
