"""The ML side: templates, data, embedders and metrics. Knows nothing of HTTP, gRPC or SQL."""
