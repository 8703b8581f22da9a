"""Where a study meets a city: its survey images, collected imagery, rating and spatial lookups."""
