"""Speech providers behind small interfaces: recognisers, synthesisers, VAD, fallback chains."""
