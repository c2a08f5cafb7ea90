"""HTTP routers, one module per feature; thin: parse, call a service, shape the answer."""
