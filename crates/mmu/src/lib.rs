//! Timing side of translation: TLBs, page-walk caches, nested TLB, data caches, the translation schemes (native, EPT, shadow, Compromis...), statistics and the simulation engine.
