//! Memory-trace readers and writers: valgrind lackey text, ChampSim binary traces, the native compact format.
