//! Functional memory model of a VM: radix page tables, the guest OS (processes, demand paging, frame allocation) and the hypervisor's gPA->hPA backing (EPT table, Compromis segments).
