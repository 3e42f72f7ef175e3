"""State to bytes: the collector, the exposition, the web server and its app, the exporter's own metrics."""
