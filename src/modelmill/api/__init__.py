"""The clarifai.api.V2 service: one servicer, served over gRPC and over REST/JSON."""
