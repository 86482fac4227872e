"""Package data: prompt templates and JSON schemas, read with importlib.resources (``files("instag.prompts")``)."""
