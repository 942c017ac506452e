"""HTTP routes, one module per area: generate (the card's endpoint), outputs, health."""
