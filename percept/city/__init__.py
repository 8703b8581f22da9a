"""City work: survey database export, rating whole cities."""
