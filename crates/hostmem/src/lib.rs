//! Hypervisor memory manager: host physical memory map, extent allocator with policies, VM segment provisioning, lifecycle (hotplug, shrink, compaction).
