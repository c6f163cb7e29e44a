//! (module `kafka`: under construction, see ARCHITECTURE.md)
