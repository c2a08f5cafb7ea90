"""ModelDeck control backend: owns the Docker engine, the model containers, the proxy and the stats."""

__version__ = "0.1.0"
