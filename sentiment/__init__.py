"""sentiment: recurrent sentiment classifiers for IMDB, from YAML config to evaluated run directory."""

__version__ = "0.1.0"
