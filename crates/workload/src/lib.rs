//! Synthetic, seeded workloads producing access streams (gups, stream, pointer-chase, kv-zipf, bfs, churn, multi-process).
