//! (module `config`: under construction, see ARCHITECTURE.md)
