//! Datacenter scheduler: VM trace readers, cluster model, contiguity-aware placement policies, event engine and metrics.
