"""The Discover and Library pages' state that is not about pixels: Hub results, variants, downloads, local models."""
