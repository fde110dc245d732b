"""The page routes, one module per part of the UI; each is thin: parse, call a service, render."""
