//! (module `demo`: under construction, see ARCHITECTURE.md)
