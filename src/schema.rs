//! (module `schema`: under construction, see ARCHITECTURE.md)
