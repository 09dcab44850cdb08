//! The preloaded runtime (see docs/ARCHITECTURE.md).
