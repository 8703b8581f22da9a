"""The web app: Image Demo, Map Explorer and JSON API."""
