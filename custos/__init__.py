"""The shared core at the bottom of the import graph: what every feature (``sidecar``, ``inference``,
``alerting``) builds on and that imports none of them — config section base, errors and their OpenAI
shape, loading a YAML file into a validated model, state files and locks, user-supplied regexes."""

__version__ = "0.1.0"
