"""sugon-exporter: Prometheus exporter for the Sugon / SCNet HPC OpenAPI v2 job list."""

import platform

__version__ = "0.1.0"


def build_facts() -> dict[str, str]:
    """What ``--version`` prints and ``sugon_exporter_build_info``'s labels say: the exporter's version, the
    Python version and implementation that run it, and the platform (OS/machine, as Go exporters' goos/goarch)."""
    return {
        "version": __version__,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }
