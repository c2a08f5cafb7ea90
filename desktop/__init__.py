"""ModelDeck desktop app: a thin PySide6 client of the backend API."""
