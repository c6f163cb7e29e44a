//! (module `pipeline`: under construction, see ARCHITECTURE.md)
