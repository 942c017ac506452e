"""HTTP routes, one module per area: generate (the card's endpoint), outputs, jobs, gallery,
health and the web page. Each parses the request, calls a service and shapes the answer."""
