"""sugon-exporter: Prometheus exporter for the Sugon / SCNet HPC OpenAPI v2 job list."""

__version__ = "0.1.0"
