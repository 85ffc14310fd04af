"""The API's routes, one module per resource: jobs, the cluster, nodes, tokens, Ray's
Jobs API, and the web page."""
