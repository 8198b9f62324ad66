"""localgpt: HuggingGPT on one machine — plan, select, execute and respond with local models.

Importing the package is cheap: heavy libraries load only inside the backends that use them.
"""

__version__ = "0.1.0"
