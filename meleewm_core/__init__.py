"""meleewm core: replay parsing, manifest, encoding, shards, models, training and evaluation.

This package never imports dagster; everything here runs from the ``meleewm`` command line.
"""

__version__ = "0.1.0"
