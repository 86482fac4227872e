"""instag: the InsTag study (Lu et al., ICLR 2024) as a reusable package.

Every stage of the Snakemake workflow is a module here (``instag.data``, ``instag.tagging``, ...) with a
command under the ``instag`` console script. The package never imports Snakemake.
"""

__version__ = "0.1.0"
