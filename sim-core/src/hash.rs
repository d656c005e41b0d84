//! Hash maps for lookups on hot paths: O(1) where a B-tree at a hub of thousands of
//! tunnels walks several cache-missing levels per lookup.
//!
//! The hasher has a fixed seed (no OS entropy), so a map's layout follows from its
//! history alone; still, its iteration order is arbitrary. The determinism rule holds:
//! nothing that reaches results iterates one of these (use a `BTreeMap` for that).
//! And only for keys the simulation picks itself (indices, our own random SPIs): with
//! a fixed seed, whoever picks the keys can make them collide.

/// A hash map with a fixed-seed fast hasher (foldhash).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
