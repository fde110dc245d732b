"""modelmill: self-hosted training of custom models behind the Clarifai v2 API."""

__version__ = "0.1.0"
