"""Methods: an episode in, named losses and query logits out."""
