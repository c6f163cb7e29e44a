//! (module `cdc`: under construction, see ARCHITECTURE.md)
