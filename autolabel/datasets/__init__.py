"""Dataset layout, streamed writers per format, split and finalisation."""
