"""The command line's API client: `modelmill import | train | status | predict | export |
dataset export` talk to a server (local or remote) through clarifai-grpc, never through
services, so each command is also a real client of the API."""
