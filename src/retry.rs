//! (module `retry`: under construction, see ARCHITECTURE.md)
