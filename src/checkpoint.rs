//! (module `checkpoint`: under construction, see ARCHITECTURE.md)
