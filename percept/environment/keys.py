"""The 76 environmental keys a survey feature may carry: 38 measures at buffers of 100 m and 300 m."""

ENV_MEASURES: tuple[str, ...] = (
    "greenspace_count", "shops_count", "public_transport_count", "sustenance_count",
    "education_count", "financial_count", "healthcare_count", "entertainment_count",
    "greenspace_density_or_proportion", "shops_density_or_proportion",
    "public_transport_density_or_proportion", "sustenance_density_or_proportion",
    "education_density_or_proportion", "financial_density_or_proportion",
    "healthcare_density_or_proportion", "entertainment_density_or_proportion",
    "greenspace_shannon_entropy", "shops_shannon_entropy", "public_transport_shannon_entropy",
    "sustenance_shannon_entropy", "education_shannon_entropy", "financial_shannon_entropy",
    "healthcare_shannon_entropy", "entertainment_shannon_entropy",
    "bike_network_length", "walk_network_length", "num_nodes", "num_edges",
    "streets_per_node_avg", "streets_per_node_proportions1", "streets_per_node_proportions3",
    "streets_per_node_proportions4", "intersection_count", "street_length_total",
    "street_segment_count", "street_length_avg", "orientation_entropy", "median_speed",
)
BUFFER_SIZES: tuple[int, ...] = (100, 300)
ENV_KEYS: tuple[str, ...] = tuple(f"{m}_{size}" for size in BUFFER_SIZES for m in ENV_MEASURES)
