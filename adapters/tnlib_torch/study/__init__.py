"""The compressibility study: configuration, measurements, results."""
