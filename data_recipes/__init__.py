"""Data recipes: datasets -> clips -> cached preparation stages that methods and metrics consume."""
