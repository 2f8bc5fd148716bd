"""Networks: encoders, heads and distance functions. Every forward pass is stateless."""
