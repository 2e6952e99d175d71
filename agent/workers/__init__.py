"""Long-running participants deployed next to real meetings: the recorder and the transcriber."""
