//! (module `sim`: under construction, see ARCHITECTURE.md)
