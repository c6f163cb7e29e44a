//! (module `auth`: under construction, see ARCHITECTURE.md)
